"""``GET /metrics`` on a live node, parsed as Prometheus text."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Final

import pytest
from e2e.node import Node
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from weall.api.metrics_dir import metrics_dir
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .conftest import Live, post, wait_for

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SCRAPE_ROUNDS: Final = 40
REQUESTS_PER_ROUND: Final = 5


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
    # One pin whose CID no operator has, and one the node's pinner confirmed.
    assert sum(pins.values()) == snapshot["counts"]["pins"] == 2
    assert pins["durable"] == 1
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


def _count(node: Node, route: str) -> float:
    _, samples = scrape(node)
    labels = {"method": "GET", "route": route, "status": "200"}
    return value(samples, "weall_http_requests_total", **labels)


def test_counters_sum_every_api_worker(tmp_path: Path) -> None:
    node = Node(
        tmp_path,
        env={"WEALL_API_WORKERS": "2", "WEALL_RATE_LIMIT_PER_S": "0"},
        args=["--actors", "producer,api"],
    )
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        first_pids = node.actor_pids()
        shared = metrics_dir(node.run_dir / "supervisor.sock")
        seen = []
        sent = 0
        for round_number in range(SCRAPE_ROUNDS):
            if round_number == SCRAPE_ROUNDS // 2:
                # Live-gauge files, as a gauge in livesum mode would write
                # them; the supervisor removes those of an exited process.
                for pid in (first_pids["api"], first_pids["api-2"]):
                    MmapedDict(str(shared / f"gauge_livesum_{pid}.db")).close()
                restart = node.cli("restart", "api-2", timeout=90.0)
                assert restart.returncode == 0, restart.stderr
                node.wait_ready(timeout=60.0)
            for _ in range(REQUESTS_PER_ROUND):
                # httpx.get opens a new connection each time, so the kernel
                # spreads the requests over both SO_REUSEPORT listeners.
                assert node.get("/v1/chain/head").status_code == 200
                sent += 1
            seen.append((sent, _count(node, "/v1/chain/head")))
        files = sorted(path.name for path in shared.iterdir())
        pids = node.actor_pids()
    finally:
        assert node.stop() == 0

    # Every scrape, whichever worker served it, counts every request sent.
    counts = [count for _, count in seen]
    assert counts == sorted(counts)
    for expected, count in seen:
        assert count == expected
    assert pids["api"] == first_pids["api"]
    assert pids["api-2"] != first_pids["api-2"]
    for pid in (first_pids["api"], first_pids["api-2"], pids["api-2"]):
        assert f"counter_{pid}.db" in files, (pid, files)
        assert f"histogram_{pid}.db" in files, (pid, files)
    assert f"gauge_livesum_{first_pids['api']}.db" in files
    assert f"gauge_livesum_{first_pids['api-2']}.db" not in files

    # A new supervisor starts the counts again from zero.
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        after_start = _count(node, "/v1/chain/head")
        files_after = sorted(path.name for path in shared.iterdir())
    finally:
        node.stop()
    assert after_start == 0
    for pid in (first_pids["api"], first_pids["api-2"], pids["api-2"]):
        assert f"counter_{pid}.db" not in files_after


def test_second_supervisor_keeps_api_metrics(tmp_path: Path) -> None:
    """Two supervisors share a run directory, as in docker-compose.prod.yml."""
    run_dir = Path(tempfile.mkdtemp(prefix="weall-run-", dir="/tmp"))

    def node(name: str, actors: str) -> Node:
        supervisor = Node(
            tmp_path,
            env={
                "WEALL_RUN_DIR": str(run_dir),
                "WEALL_CONTROL_SOCKET": str(run_dir / f"supervisor-{name}.sock"),
                "WEALL_RATE_LIMIT_PER_S": "0",
            },
            args=["--actors", actors],
        )
        supervisor.log_path = tmp_path / f"{name}.log"
        return supervisor

    api = node("api", "api")
    producer = node("producer", "producer,checkpointer")
    # The producer's supervisor creates the database, then the api's starts.
    producer.start()
    try:
        wait_for(
            lambda: (tmp_path / "data" / "weall.db").exists(),
            timeout=60.0,
            what="the producer's database",
        )
        api.start()
        try:
            api.wait_ready(timeout=90.0)
            for _ in range(REQUESTS_PER_ROUND):
                assert api.get("/v1/chain/head").status_code == 200
            before = _count(api, "/v1/chain/head")
            # A restart of the other supervisor leaves the api's files alone.
            assert producer.stop() == 0
            producer.start()
            wait_for(
                lambda: producer.log().count("all actors started") >= 2,
                timeout=90.0,
                what="the producer's supervisor started again",
            )
            after = _count(api, "/v1/chain/head")
            api_files_while_running = metrics_dir(run_dir / "supervisor-api.sock")
            assert api_files_while_running.is_dir()
        finally:
            api.stop()
    finally:
        producer.stop()
    assert before == REQUESTS_PER_ROUND
    assert after == before
    assert not metrics_dir(run_dir / "supervisor-producer.sock").exists()
    # A stopped supervisor removes its files from memory-backed storage.
    assert not api_files_while_running.exists()


def test_metric_files_off_the_data_disk(tmp_path: Path) -> None:
    """Memory-mapped metric files must not share the data directory's filesystem.

    Writing a new page of one on a full filesystem kills the api with SIGBUS.
    """
    shared = metrics_dir(tmp_path / "data" / "run" / "supervisor.sock")
    assert tmp_path not in shared.parents
    assert shared.parent in (Path("/dev/shm"), Path(tempfile.gettempdir()))
    other = metrics_dir(tmp_path / "other" / "supervisor.sock")
    assert other != shared
