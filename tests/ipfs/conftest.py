"""Fixtures for the IPFS tests.

Tests marked ``ipfs`` talk to the daemon at ``WEALL_TEST_IPFS_API``, which
``scripts/run-tests.sh`` starts inside a loopback-only network namespace.
Without that variable they are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from weall.ipfs import KuboBackend, LocalBackend

from ._support import (
    IPFS_API,
    free_port_block,
    only_loopback,
    start_daemon,
    stop_daemon,
)


@pytest.fixture(autouse=True)
def _skip_without_daemon(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("ipfs") and not IPFS_API:
        pytest.skip("WEALL_TEST_IPFS_API is not set; run scripts/run-tests.sh")


@pytest.fixture
async def local_backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    async with LocalBackend(tmp_path / "ipfs") as backend:
        yield backend


@pytest.fixture
async def kubo() -> AsyncIterator[KuboBackend]:
    """A client of the test daemon with short timeouts for absent content."""
    backend = KuboBackend(
        IPFS_API,
        timeout_s=30.0,
        stat_timeout_s=1.0,
        cat_timeout_s=2.0,
        pin_timeout_s=2.0,
        max_attempts=3,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    async with backend:
        yield backend


@pytest.fixture
async def private_daemon(tmp_path: Path) -> AsyncIterator[str]:
    """URL of a daemon of the test's own, for tests that fill or stop a daemon."""
    if not only_loopback():
        pytest.skip("starts a daemon, so it runs only in a loopback-only namespace")
    port = free_port_block(4)
    pid = await start_daemon(tmp_path / "private-daemon", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await stop_daemon(pid)
