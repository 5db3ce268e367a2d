"""Fixtures of the api tests: one populated live node shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.node import Node

from ._live import World, populate

# The shared node has no rate limit, so that fuzzing and the schemathesis
# run measure the routes, not the limiter; the limiter has its own node.
LIVE_ENV = {
    "WEALL_RATE_LIMIT_PER_S": "0",
    "WEALL_BLOCK_INTERVAL_MS": "200",
}


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    node = Node(tmp_path_factory.mktemp("live-node"), env=dict(LIVE_ENV))
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        yield populate(node)
    finally:
        if node.process is not None and node.process.poll() is None:
            node.stop()
