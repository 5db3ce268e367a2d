"""A follower's sync state where an operator looks: ``weall status``, the dashboard, /metrics.

A follower syncs through a proxy that serves two blocks a page, each page
0.3 s late, so the sync lasts long enough to be watched. Another follower
syncs through a proxy that breaks a block's signature, so it rejects its
upstream: the rejection shows in every place, and its log repeats it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.node import Node

from .chain_builder import BuiltChain, build_chain
from .support import follower_node, start, wait_for, wait_synced
from .tamper_proxy import TamperProxy

pytestmark = pytest.mark.slow

T = TypeVar("T")

BLOCKS = 80
BAD_HEIGHT = 4
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_chain(
        tmp_path_factory.mktemp("producer"), posters=8, blocks=BLOCKS, txs_per_block=4
    )


@pytest.fixture(scope="module")
def producer(chain: BuiltChain) -> Iterator[Node]:
    node = start(Node(chain.workdir, args=["--actors", "producer,api"]))
    try:
        yield node
    finally:
        node.stop()


def _status_json(node: Node) -> dict[str, Any]:
    result = node.cli("status", "--json", check=True)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _status_text(node: Node) -> str:
    return node.cli("status", check=True).stdout


def _samples(node: Node) -> Samples:
    response = node.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _syncing(summary: dict[str, Any]) -> bool:
    return (
        summary.get("state") == "syncing"
        and summary.get("sync_blocks_per_s") is not None
        and summary.get("sync_eta_s") is not None
    )


def _poll(read: Callable[[], T], accept: Callable[[T], bool], condition: str) -> T:
    def check() -> T | None:
        value = read()
        return value if accept(value) else None

    return wait_for(check, timeout=90.0, interval=0.1, condition=condition)


def test_sync_state_shown_while_syncing(
    tmp_path: Path, chain: BuiltChain, producer: Node
) -> None:
    with TamperProxy(producer.url, page_limit=2, delay_s=0.3) as proxy:
        follower = start(
            follower_node(tmp_path / "follower", proxy, chain.genesis_path)
        )
        try:
            status = _poll(
                lambda: _status_json(follower),
                lambda document: _syncing(document["follower"]),
                "weall status --json shows the sync with a rate and a time left",
            )
            text = _poll(
                lambda: _status_text(follower),
                lambda output: (
                    "follower state=syncing" in output
                    and "blocks/s" in output
                    and " left" in output
                ),
                "weall status shows the sync with a rate and a time left",
            )
            document = _poll(
                lambda: follower.get("/v1/node/status").json(),
                lambda document: _syncing(document["follower"]),
                "/v1/node/status shows the sync",
            )
            samples = _poll(
                lambda: _samples(follower),
                lambda samples: (
                    _value(samples, "weall_follower_state", state="syncing") == 1
                    and _value(samples, "weall_follower_sync_eta_seconds") is not None
                ),
                "/metrics shows the sync",
            )
            height = wait_synced(follower, producer, timeout=180.0)
            caught_up = _poll(
                lambda: _status_json(follower),
                lambda document: document["follower"]["state"] == "caught_up",
                "weall status shows the follower caught up",
            )
            caught_up_text = _status_text(follower)
            caught_up_samples = _samples(follower)
        finally:
            follower.stop()

    summary = status["follower"]
    assert summary["upstream"] == proxy.url
    assert 0 <= summary["height"] < summary["upstream_height"]
    assert summary["upstream_height"] >= BLOCKS
    assert summary["blocks_behind"] == summary["upstream_height"] - summary["height"]
    assert summary["sync_blocks_per_s"] > 0
    assert summary["sync_eta_s"] >= 0
    assert summary["rejected"] is None
    assert [actor["name"] for actor in status["actors"]] == ["follower", "api"]

    assert f"upstream={proxy.url}" in text
    assert "REJECTED" not in text

    assert document["role"] == "follower"
    assert document["follower"]["upstream"] == proxy.url
    assert document["follower"]["upstream_height"] >= BLOCKS

    assert _value(samples, "weall_follower_state", state="caught_up") == 0
    assert _value(samples, "weall_follower_rejected") == 0
    assert (_value(samples, "weall_follower_upstream_height") or 0) >= BLOCKS
    assert _value(samples, "weall_follower_upstream_info", upstream=proxy.url) == 1

    after = caught_up["follower"]
    assert after["height"] == after["upstream_height"] >= height
    assert after["blocks_behind"] == 0
    assert after["sync_blocks_per_s"] is None
    assert after["sync_eta_s"] is None
    assert after["last_sync_tx_per_s"] > 0
    assert "follower state=caught_up" in caught_up_text
    assert "last catch-up" in caught_up_text
    assert _value(caught_up_samples, "weall_follower_state", state="caught_up") == 1
    assert _value(caught_up_samples, "weall_follower_blocks_behind") == 0


def _lines_twice(node: Node, text: str) -> list[str] | None:
    """Return the log lines that contain ``text`` once there are two or more."""
    lines = [line for line in node.log().splitlines() if text in line]
    return lines if len(lines) >= 2 else None


def test_rejection_shown_everywhere_and_logged_again(
    tmp_path: Path, chain: BuiltChain, producer: Node
) -> None:
    def bad_signature(block: dict[str, Any]) -> None:
        block["sig"] = chain.node.sign(b"bytes other than the header")

    with TamperProxy(producer.url, BAD_HEIGHT, bad_signature) as proxy:
        follower = follower_node(
            tmp_path / "follower",
            proxy,
            chain.genesis_path,
            env={"WEALL_FOLLOWER_REJECTED_LOG_S": "1"},
        )
        start(follower)
        try:
            status = _poll(
                lambda: _status_json(follower),
                lambda document: document["follower"]["state"] == "rejected",
                "weall status shows the rejection",
            )
            text = _status_text(follower)
            document = follower.get("/v1/node/status").json()
            health = follower.get("/health").json()
            samples = _samples(follower)
            repeated = wait_for(
                lambda: _lines_twice(follower, "upstream still rejected"),
                timeout=60.0,
                condition="the rejection logged again twice",
            )
        finally:
            follower.stop()

    rejected = status["follower"]["rejected"]
    assert rejected["height"] == BAD_HEIGHT
    assert rejected["reason"] == "producer signature does not verify"
    assert isinstance(rejected["at_ms"], int)
    assert status["follower"]["height"] == BAD_HEIGHT - 1
    assert status["follower"]["upstream"] == proxy.url

    assert (
        f"REJECTED at height {BAD_HEIGHT}: producer signature does not verify" in text
    )
    assert f"upstream={proxy.url}" in text

    assert document["role"] == "follower"
    assert document["follower"]["state"] == "rejected"
    assert document["follower"]["rejected"] == rejected
    assert health["ok"] is False

    assert _value(samples, "weall_follower_rejected") == 1
    assert _value(samples, "weall_follower_rejected_height") == BAD_HEIGHT
    assert _value(samples, "weall_follower_state", state="rejected") == 1
    assert _value(samples, "weall_follower_state", state="caught_up") == 0
    roles = [
        dict(labels)["role"] for (name, labels) in samples if name == "weall_node_info"
    ]
    assert roles == ["follower"]

    first = [
        line for line in follower.log().splitlines() if "upstream rejected" in line
    ]
    assert len(first) == 1
    assert "ERROR" in first[0]
    assert f"height={BAD_HEIGHT}" in first[0]
    for line in repeated:
        assert "ERROR" in line
        assert f"height={BAD_HEIGHT}" in line
        assert "reason=producer signature does not verify" in line
