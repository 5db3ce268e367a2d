"""``GET /metrics`` on a live node, parsed as Prometheus text."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from e2e.node import Node
from prometheus_client.parser import text_string_to_metric_families

from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .conftest import Live, post, wait_for

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: Node) -> tuple[dict[str, Any], Samples]:
    response = node.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {
        family.name: family for family in text_string_to_metric_families(response.text)
    }
    samples: Samples = {}
    for family in families.values():
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_expose_every_family(live: Live) -> None:
    families, _ = scrape(live.node)
    expected = {
        "weall_node_info": "gauge",
        "weall_block_height": "gauge",
        "weall_blocks_committed": "counter",
        "weall_transactions_committed": "counter",
        "weall_mempool_transactions": "gauge",
        "weall_admission_rejections": "counter",
        "weall_http_requests": "counter",
        "weall_http_request_duration_seconds": "histogram",
        "weall_actor_restarts": "counter",
        "weall_actor_running": "gauge",
        "weall_wal_bytes": "gauge",
        "weall_backup_age_seconds": "gauge",
        "weall_pins": "gauge",
    }
    for name, kind in expected.items():
        assert name in families, name
        assert families[name].type == kind, name
    (info,) = families["weall_node_info"].samples
    assert info.labels["mode"] == "dev"
    assert info.labels["role"] == "producer"
    assert not any(name.startswith("weall_follower_") for name in families)


def test_chain_metrics_match_database(live: Live) -> None:
    node = live.node
    post(node, "counted by the metrics")
    head = node.get("/v1/chain/head").json()["height"]
    _, samples = scrape(node)
    height = value(samples, "weall_block_height")
    assert height >= head
    assert value(samples, "weall_blocks_committed_total") == height + 1
    blocks = node.get("/v1/blocks?from=0&limit=100").json()["blocks"]
    in_blocks = sum(len(block["txs"]) for block in blocks if block["height"] <= height)
    assert value(samples, "weall_transactions_committed_total") == in_blocks
    assert value(samples, "weall_mempool_transactions") >= 0


def test_transactions_total_grows_with_commits(live: Live) -> None:
    _, before = scrape(live.node)
    post(live.node, "one more committed transaction")
    _, after = scrape(live.node)
    grown = value(after, "weall_transactions_committed_total") - value(
        before, "weall_transactions_committed_total"
    )
    assert grown >= 1


def test_rejections_counted_by_code(live: Live) -> None:
    node = live.node
    founder = keys.load_key_file(node.workdir / "data" / "keys" / "founder.key")
    wrong_chain = build_envelope(
        founder,
        chain_id="weall-other",
        tx_type="CONTENT_POST_CREATE",
        signer="@founder",
        nonce=10_000,
        payload={"body": "elsewhere"},
    )
    _, before = scrape(node)
    assert node.post("/v1/tx/submit", json=wrong_chain).status_code == 400
    assert (
        node.post(
            "/v1/tx/batch", json={"envelopes": [wrong_chain, wrong_chain]}
        ).status_code
        == 200
    )
    invalid = node.post(
        "/v1/tx/submit",
        content=b'{"a": 1, "a": 2}',
        headers={"content-type": "application/json"},
    )
    assert invalid.status_code == 400
    _, after = scrape(node)
    for code, count in (("wrong_chain", 3), ("invalid_json", 1)):
        grown = value(after, "weall_admission_rejections_total", code=code) - value(
            before, "weall_admission_rejections_total", code=code
        )
        assert grown == count, code


def test_requests_counted_by_route_template(live: Live) -> None:
    node = live.node
    _, before = scrape(node)
    for height in range(3):
        assert node.get(f"/v1/blocks/{height}").status_code == 200
    assert node.get("/no/such/route").status_code == 404
    _, after = scrape(node)
    labels = {"method": "GET", "route": "/v1/blocks/<height>", "status": "200"}
    assert (
        value(after, "weall_http_requests_total", **labels)
        - value(before, "weall_http_requests_total", **labels)
        == 3
    )
    count = {"method": "GET", "route": "/v1/blocks/<height>"}
    assert (
        value(after, "weall_http_request_duration_seconds_count", **count)
        - value(before, "weall_http_request_duration_seconds_count", **count)
        == 3
    )
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "weall_http_requests_total", **unmatched) >= 1
    routes = {
        dict(key[1]).get("route")
        for key in after
        if key[0] == "weall_http_requests_total"
    }
    assert not any(
        route and route.startswith("/v1/blocks/") and route[11:].isdigit()
        for route in routes
    )


def test_storage_and_backup_metrics(live: Live) -> None:
    node = live.node
    _, samples = scrape(node)
    assert value(samples, "weall_wal_bytes") > 0
    age = value(samples, "weall_backup_age_seconds")
    assert 0 <= age < 3600
    pins = {
        state: value(samples, "weall_pins", state=state)
        for state in ("durable", "pending", "shortfall", "unchecked")
    }
    snapshot = node.get("/v1/state/snapshot").json()
    assert sum(pins.values()) == snapshot["counts"]["pins"] == 1
    assert pins["unchecked"] == 0


def test_actor_restarts_after_kill(live: Live) -> None:
    node = live.node
    _, before = scrape(node)
    restarts = value(before, "weall_actor_restarts_total", actor="healer")
    pid = node.actor_pids()["healer"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> Samples | None:
        _, samples = scrape(node)
        grown = value(samples, "weall_actor_restarts_total", actor="healer") > restarts
        running = value(samples, "weall_actor_running", actor="healer") == 1
        return samples if grown and running else None

    after = wait_for(restarted, timeout=60.0, what="the healer restart in /metrics")
    assert value(after, "weall_actor_restarts_total", actor="healer") == restarts + 1
    assert value(after, "weall_actor_restarts_total", actor="producer") == value(
        before, "weall_actor_restarts_total", actor="producer"
    )
