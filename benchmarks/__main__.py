"""Benchmarks of a real node, side by side with baselines measured in the same run.

Usage: ``python -m benchmarks [SCENARIO ...] [--rounds N]``. Each figure is
printed as a median over rounds with its spread, and as a ratio against the
baseline of the same run. Every load is bounded in count and time, and goes
only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from benchmarks._load import percentile, post_all, summary
from benchmarks._setup import BenchChain, write_chain
from tests.e2e.node import Node, free_port

SCENARIOS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}
# Settings every bench node gets, from the command line.
NODE_ENV: dict[str, str] = {}


def scenario(
    function: Callable[[argparse.Namespace], dict[str, Any]],
) -> Callable[[argparse.Namespace], dict[str, Any]]:
    SCENARIOS[function.__name__] = function
    return function


def start_bench_node(
    workdir: Path, *, accounts: int, extra: dict[str, str] | None = None
) -> tuple[Node, BenchChain]:
    chain, env = write_chain(workdir, accounts=accounts)
    env = {"WEALL_MODE": "genesis", **env, **NODE_ENV, **(extra or {})}
    node = Node(workdir, env=env)
    node.start()
    node.wait_ready(60)
    return node, chain


def start_bare(port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    """Start the bare app under hypercorn with ``workers`` worker processes."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "--worker-class",
            "trio",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "benchmarks.bare_app:app",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/tx/submit", json={}, timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("bare app did not start")


def pending_count(node: Node) -> int:
    conn = sqlite3.connect(
        f"file:{node.workdir / 'data' / 'weall.db'}?mode=ro", uri=True
    )
    try:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM txs WHERE status = 'pending'"
            ).fetchone()[0]
        )
    finally:
        conn.close()


def wait_committed(node: Node, timeout: float = 300.0) -> float:
    """Wait until no transaction is pending; return the time it took."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while pending_count(node) and time.monotonic() < deadline:
        time.sleep(0.02)
    return time.perf_counter() - started


def block_times(node: Node) -> dict[str, int]:
    """tx id -> timestamp of the block that committed it."""
    conn = sqlite3.connect(
        f"file:{node.workdir / 'data' / 'weall.db'}?mode=ro", uri=True
    )
    try:
        rows = conn.execute(
            "SELECT txs.tx_id, blocks.timestamp_ms FROM txs JOIN blocks ON blocks.height = txs.height"
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


@scenario
def ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Single-transaction submits, acknowledged durably, against the bare app.

    The bare app runs with as many worker processes as the node has api
    processes (``--api-workers``), and also with one, since the figure to
    compare with is given per worker process.
    """
    count = args.count
    workers = args.api_workers
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        node, chain = start_bench_node(Path(tmp), accounts=max(64, count // 50))
        bare_port = free_port()
        bare = start_bare(bare_port, workers)
        single_port = free_port()
        single = start_bare(single_port, 1) if workers > 1 else None
        node_rates, bare_rates, committed_rates = [], [], []
        single_rates: list[float] = []
        try:
            for _ in range(args.rounds):
                bodies = chain.envelopes(count)

                def submit_all(url: str, bodies: list[Any] = bodies) -> Any:
                    return trio.run(
                        lambda: post_all(
                            url,
                            "/v1/tx/submit",
                            bodies,
                            concurrency=args.concurrency,
                            timeout_s=120,
                        )
                    )

                result = submit_all(node.url)
                acked = list(result.acked_at_ms)
                settle = wait_committed(node)
                node_rates.append(result.rate)
                committed_rates.append(len(acked) / (result.elapsed_s + settle))
                bare_rates.append(submit_all(f"http://127.0.0.1:{bare_port}").rate)
                if single is not None:
                    single_rates.append(
                        submit_all(f"http://127.0.0.1:{single_port}").rate
                    )
        finally:
            for process in (bare, single):
                if process is not None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(10)
            node.stop()
    ratios = [n / b for n, b in zip(node_rates, bare_rates, strict=True)]
    result = {
        "api_workers": workers,
        "node_acked_tx_per_s": summary(node_rates),
        "node_committed_tx_per_s": summary(committed_rates),
        f"bare_posts_per_s_{workers}_workers": summary(bare_rates),
        "ratio_node_to_bare_same_workers": summary(ratios, 2),
        "target_ratio": ">= 0.7",
    }
    if single_rates:
        result["bare_posts_per_s_1_worker"] = summary(single_rates)
        result["ratio_node_to_bare_1_worker"] = summary(
            [n / b for n, b in zip(node_rates, single_rates, strict=True)], 2
        )
    return result


def _rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def _child_pids(pid: int) -> list[int]:
    """Return the direct children of ``pid`` (hypercorn's worker processes)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def _node_pids(node: Node) -> list[int]:
    assert node.process is not None
    return [node.process.pid, *node.actor_pids().values()]


def _batch_load(
    node: Node, chain: BenchChain, total: int, clients: int
) -> tuple[float, float]:
    """Send ``total`` posts in batches of 1000; return (ack rate, committed rate)."""
    batches = [{"envelopes": chain.envelopes(1000)} for _ in range(total // 1000)]
    started = time.perf_counter()
    result = trio.run(
        lambda: post_all(
            node.url, "/v1/tx/batch", batches, concurrency=clients, timeout_s=300
        )
    )
    acked = result.elapsed_s
    wait_committed(node)
    elapsed = time.perf_counter() - started
    return total / acked, total / elapsed


@scenario
def batch(args: argparse.Namespace) -> dict[str, Any]:
    """Batches of 1000 through /v1/tx/batch, synchronous=FULL, until committed."""
    total = max(10_000, args.count * 10)
    committed, acked_rates = [], []
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        node, chain = start_bench_node(
            Path(tmp), accounts=max(200, total * args.rounds // 50)
        )
        try:
            for _ in range(args.rounds):
                acked, done = _batch_load(node, chain, total, clients=2)
                acked_rates.append(acked)
                committed.append(done)
        finally:
            node.stop()
    return {
        "committed_tx_per_s": summary(committed),
        "acked_tx_per_s": summary(acked_rates),
        "target": ">= 5000 tx/s committed",
        "ratio_to_target": summary([c / 5000 for c in committed], 2),
    }


@scenario
def latency(args: argparse.Namespace) -> dict[str, Any]:
    """202-to-committed latency at half of the maximum single-submit rate."""
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        node, chain = start_bench_node(
            Path(tmp), accounts=max(100, args.count * (args.rounds + 1) // 40)
        )
        try:
            probe = trio.run(
                lambda: post_all(
                    node.url,
                    "/v1/tx/submit",
                    chain.envelopes(args.count),
                    concurrency=args.concurrency,
                    timeout_s=120,
                )
            )
            wait_committed(node)
            rate = probe.rate / 2
            p50s, p99s = [], []
            for _ in range(args.rounds):
                result = trio.run(
                    lambda: post_all(
                        node.url,
                        "/v1/tx/submit",
                        chain.envelopes(int(rate * 5)),
                        concurrency=args.concurrency,
                        timeout_s=60,
                        rate_per_s=rate,
                    )
                )
                wait_committed(node)
                committed_at = block_times(node)
                delays = [
                    committed_at[t] - acked
                    for t, acked in result.acked_at_ms.items()
                    if t in committed_at
                ]
                p50s.append(percentile(delays, 0.5))
                p99s.append(percentile(delays, 0.99))
        finally:
            node.stop()
    return {
        "rate_tx_per_s": round(rate, 1),
        "p50_ms": summary(p50s),
        "p99_ms": summary(p99s),
        "target_p99_ms": "<= block_interval_ms + 100 = 1100",
    }


async def _read_loop(url: str, paths: list[str], seconds: float) -> list[float]:
    """Time GET requests from a separate process for ``seconds``; latencies in ms."""
    result = await trio.run_process(
        [sys.executable, "-m", "benchmarks._reader", url, str(seconds), *paths],
        capture_stdout=True,
    )
    latencies: list[float] = json.loads(result.stdout)
    return latencies


@scenario
def reads(args: argparse.Namespace) -> dict[str, Any]:
    """p99 of account and feed reads at rest and under full batch write load."""
    rest, loaded = [], []
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        node, chain = start_bench_node(Path(tmp), accounts=2000)
        paths = [f"/v1/accounts/@bench{i:05d}" for i in range(0, 2000, 97)] + [
            "/v1/feed"
        ]
        try:
            _batch_load(node, chain, 5000, clients=2)
            for _ in range(args.rounds):
                rest.append(
                    percentile(trio.run(_read_loop, node.url, paths, 3.0), 0.99)
                )
                batches = [{"envelopes": chain.envelopes(1000)} for _ in range(15)]

                async def both(batches: list[Any]) -> list[float]:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            partial(
                                post_all,
                                node.url,
                                "/v1/tx/batch",
                                batches,
                                concurrency=2,
                                timeout_s=60,
                            )
                        )
                        found = await _read_loop(node.url, paths, 5.0)
                    return found

                loaded.append(percentile(trio.run(both, batches), 0.99))
                wait_committed(node)
        finally:
            node.stop()
    return {
        "p99_ms_at_rest": summary(rest),
        "p99_ms_under_write_load": summary(loaded),
        "ratio_loaded_to_rest": summary(
            [b / a for a, b in zip(rest, loaded, strict=True)]
        ),
        "target_p99_ms": "< 25",
    }


@scenario
def restart_rss(args: argparse.Namespace) -> dict[str, Any]:
    """Restart latency of each actor after SIGKILL, and RSS of the whole node."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        # Many kills in a row on purpose: lift the restart budget for this run.
        node, chain = start_bench_node(
            Path(tmp), accounts=500, extra={"WEALL_RESTART_MAX": "1000"}
        )
        bare_port = free_port()
        bare = start_bare(bare_port)
        try:
            time.sleep(2)
            figures["rss_mb_at_rest"] = round(_rss_mb(_node_pids(node)), 1)
            figures["bare_app_rss_mb"] = round(
                _rss_mb([bare.pid, *_child_pids(bare.pid)]), 1
            )
            peak = 0.0

            async def load_and_sample() -> None:
                nonlocal peak
                batches = [{"envelopes": chain.envelopes(1000)} for _ in range(10)]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        lambda: post_all(
                            node.url,
                            "/v1/tx/batch",
                            batches,
                            concurrency=2,
                            timeout_s=60,
                        )
                    )
                    for _ in range(40):
                        peak = max(peak, _rss_mb(_node_pids(node)))
                        await trio.sleep(0.25)

            trio.run(load_and_sample)
            wait_committed(node)
            figures["rss_mb_under_load_peak"] = round(peak, 1)
            figures["rss_target_mb"] = "< 400"
            for name in ("producer", "checkpointer", "pinner", "healer", "api"):
                times = []
                for _ in range(args.rounds):
                    old = node.actor_pids()[name]
                    started = time.perf_counter()
                    os.kill(old, signal.SIGKILL)
                    while True:
                        try:
                            document = json.loads(
                                (node.run_dir / "actors.json").read_text()
                            )
                        except (OSError, ValueError):
                            document = {}
                        info = document.get(name, {})
                        if (
                            info.get("pid") not in (None, old)
                            and info.get("state") == "running"
                        ):
                            break
                        time.sleep(0.005)
                    times.append((time.perf_counter() - started) * 1000)
                    node.wait_ready(30)
                    time.sleep(1.0)
                figures[f"restart_ms_{name}"] = summary(times)
        finally:
            bare.send_signal(signal.SIGTERM)
            bare.wait(10)
            node.stop()
    return figures


def _fill_state(writer: Any, count: int) -> None:
    """Insert ``count`` accounts, posts and committed transactions, as a long chain stores them.

    Rows go straight into the folded ``state`` table and into ``txs`` in
    chain order, where a node that committed them block by block would have
    stored them. Each step inserts its rows in key order, which packs their
    pages fully, the costlier case for a later insert.
    """
    import orjson

    from weall.protocol.encoding import hash_bytes
    from weall.protocol.rules.accounts import new_account
    from weall.protocol.rules.content import index_key

    pubkey = "z6MkeTG3bFFSLYVU7VqhgZxqr6YzpaGrQtFMh1uvqGy1vDnP"
    # Shaped like a signed post envelope.
    envelope = orjson.dumps(
        {
            "chain_id": "weall-bench",
            "nonce": 1,
            "payload": {"body": "filler post", "media": []},
            "pubkey": pubkey,
            "sig": "z" + "5" * 87,
            "signer": "@filler00000000",
            "type": "CONTENT_POST_CREATE",
            "version": 1,
        }
    )
    # Heights far above the chain's own, so the filler never meets its blocks.
    first_height = 10**9
    step = 50_000
    for start in range(0, count, step):
        rows = []
        txs = []
        for index in range(start, min(count, start + step)):
            account_id = f"@filler{index:08d}"
            rows.append(
                (
                    "account",
                    account_id,
                    orjson.dumps(new_account(account_id, pubkey, tier=2)),
                )
            )
            # Real ids are hashes, so new posts land among the old ones.
            post_id = hash_bytes(f"filler post {index}".encode())
            post = {
                "id": post_id,
                "kind": "post",
                "author": account_id,
                "body": "filler post",
                "media": [],
                "group_id": None,
                "height": 1,
                "timestamp_ms": 1,
                "edited_at_ms": None,
                "deleted": False,
                "hidden": False,
                "comment_count": 0,
                "reactions": {},
                "flag_count": 0,
            }
            key = index_key(1, post_id)
            rows.append(("post", post_id, orjson.dumps(post)))
            rows.append(("feed", key, orjson.dumps({"post_id": post_id})))
            rows.append(
                (
                    "account_post",
                    f"{account_id}/{key}",
                    orjson.dumps({"post_id": post_id}),
                )
            )
            receipt = orjson.dumps({"ok": True, "post_id": post_id})
            txs.append(
                (
                    post_id,
                    account_id,
                    1,
                    envelope,
                    first_height + index // 1000,
                    index % 1000,
                    receipt,
                )
            )
        rows.sort()
        writer.conn.execute("BEGIN IMMEDIATE")
        writer.conn.executemany(
            "INSERT OR REPLACE INTO state (kind, key, value) VALUES (?, ?, ?)", rows
        )
        writer.conn.executemany(
            "INSERT INTO txs (tx_id, signer, nonce, tx_type, status, envelope,"
            " received_ms, height, idx, receipt)"
            " VALUES (?, ?, ?, 'CONTENT_POST_CREATE', 'committed', ?, 1, ?, ?, ?)",
            txs,
        )
        writer.conn.execute("COMMIT")


@dataclass
class _GrowthTimes:
    """Per block: apply, commit, checkpoint and fold times in ms, and the WAL pages of the commit."""

    apply_ms: list[float] = field(default_factory=list)
    commit_ms: list[float] = field(default_factory=list)
    fold_ms: list[float] = field(default_factory=list)
    checkpoint_ms: list[float] = field(default_factory=list)
    wal_pages: list[float] = field(default_factory=list)


@dataclass
class _GrowthState:
    """A database filled to one size, with the chain that posts to it."""

    size: int
    writer: Any
    chain: BenchChain
    info: Any
    node_key: Any
    times: dict[int, _GrowthTimes]


def _growth_state(workdir: Path, size: int, sizes: list[int]) -> _GrowthState:
    from weall.bootstrap import create_database
    from weall.config import load as load_config
    from weall.protocol import keys as keys_module
    from weall.protocol.genesis import genesis_info
    from weall.storage.writer import Writer

    chain, env = write_chain(workdir, accounts=100)
    config = load_config(
        {
            **env,
            "WEALL_MODE": "genesis",
            "WEALL_DB_PATH": str(workdir / "data" / "weall.db"),
        }
    )
    document = json.loads(config.genesis_path.read_text())
    node_key = keys_module.load_key_file(config.node_key_path)
    create_database(config, document, node_key)
    writer = Writer(config.db_path, synchronous="FULL", autocheckpoint_pages=0)
    _fill_state(writer, size)
    while writer.fold_recent():
        pass
    writer.checkpoint("TRUNCATE")
    return _GrowthState(
        size=size,
        writer=writer,
        chain=chain,
        info=genesis_info(document),
        node_key=node_key,
        times={per_block: _GrowthTimes() for per_block in sizes},
    )


def _growth_block(state: _GrowthState, per_block: int) -> None:
    """Apply, commit and fold one block of ``per_block`` posts, timing each step.

    The commit is timed alone: the admitted transactions are stored and the
    WAL is folded into the database first. After the commit the recent
    state is folded into the state table, as the producer does while it
    waits for the next block, and the WAL by a PASSIVE checkpoint, as the
    checkpointer does. Automatic checkpoints are off, so none lands inside
    a timed step.
    """
    from weall.protocol.block import build_block
    from weall.protocol.envelope import parse_envelope

    writer = state.writer
    envs = [parse_envelope(e) for e in state.chain.envelopes(per_block)]
    writer.store_pending([(e, 0) for e in envs])
    writer.checkpoint("TRUNCATE")
    head = writer.head()
    started = time.perf_counter()
    block = build_block(
        writer.state,
        head["header"],
        envs,
        timestamp_ms=head["header"]["timestamp_ms"] + 1000,
        genesis=state.info,
        producer_pubkey=state.node_key.pubkey,
        sign=state.node_key.sign,
    )
    applied = time.perf_counter()
    writer.commit_block(block)
    committed = time.perf_counter()
    _, pages, _ = writer.checkpoint("PASSIVE")
    checkpointed = time.perf_counter()
    while writer.fold_recent():
        pass
    folded = time.perf_counter()
    writer.checkpoint("TRUNCATE")
    assert all(r["ok"] for r in block.receipts)
    record = state.times[per_block]
    record.apply_ms.append((applied - started) * 1000)
    record.commit_ms.append((committed - applied) * 1000)
    record.checkpoint_ms.append((checkpointed - committed) * 1000)
    record.fold_ms.append((folded - checkpointed) * 1000)
    record.wal_pages.append(pages)


def _ratio(large: list[float], small: list[float]) -> float:
    import statistics

    return round(statistics.median(large) / statistics.median(small), 2)


@scenario
def growth(args: argparse.Namespace) -> dict[str, Any]:
    """Block apply, commit and fold time with a small and a large state, for two block sizes.

    All states are filled first, then the blocks run in turns over them
    (each round runs one block of each size on each state), so the
    machine's noise falls on every state alike.
    """
    sizes = [100, 1000]
    # The middle size shows where the fold's cost stops growing, which is once
    # the state's tables have many more pages than a block writes to.
    state_sizes = [10_000, 100_000, args.growth_size]
    with tempfile.TemporaryDirectory(prefix="weall-growth-") as tmp:
        states = [
            _growth_state(Path(tmp) / f"state{index}", size, sizes)
            for index, size in enumerate(state_sizes)
        ]
        os.sync()
        try:
            for _ in range(args.rounds * 4):
                for per_block in sizes:
                    for state in states:
                        _growth_block(state, per_block)
        finally:
            for state in states:
                state.writer.close()
    result: dict[str, Any] = {"state_sizes": state_sizes, "target_ratio": "<= 1.3"}
    for per_block in sizes:
        times = [state.times[per_block] for state in states]
        small, middle, large = times
        result[f"txs_{per_block}"] = {
            "apply_ms": [summary(t.apply_ms) for t in times],
            "commit_ms": [summary(t.commit_ms) for t in times],
            "checkpoint_ms": [summary(t.checkpoint_ms) for t in times],
            "fold_ms": [summary(t.fold_ms) for t in times],
            "wal_pages": [summary(t.wal_pages, 0) for t in times],
            "ratio_apply_largest_to_smallest": _ratio(large.apply_ms, small.apply_ms),
            "ratio_commit_largest_to_smallest": _ratio(
                large.commit_ms, small.commit_ms
            ),
            "ratio_fold_largest_to_smallest": _ratio(large.fold_ms, small.fold_ms),
            "ratio_fold_largest_to_middle": _ratio(large.fold_ms, middle.fold_ms),
        }
    return result


@scenario
def verify(args: argparse.Namespace) -> dict[str, Any]:
    """Replay speed of weall verify, against raw signature checks in the same run."""
    import nacl.signing

    rates = []
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        node, chain = start_bench_node(Path(tmp), accounts=400)
        try:
            _batch_load(node, chain, 20_000, clients=2)
        finally:
            node.stop()
        for _ in range(args.rounds):
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "weall",
                    "verify",
                    "--db",
                    str(Path(tmp) / "data" / "weall.db"),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, **{"WEALL_CHAIN_ID": "weall-bench"}},
            )
            line = result.stdout.strip().splitlines()[-1]
            rates.append(float(line.split("(")[1].split()[0]))
    key = nacl.signing.SigningKey.generate()
    signed = key.sign(b"x" * 200)
    started = time.perf_counter()
    for _ in range(20_000):
        key.verify_key.verify(signed)
    sig_rate = 20_000 / (time.perf_counter() - started)
    return {
        "verify_tx_per_s": summary(rates),
        "bare_signature_checks_per_s": round(sig_rate),
        "ratio_to_signature_checks": summary([r / sig_rate for r in rates], 2),
    }


@scenario
def wal_backup(args: argparse.Namespace) -> dict[str, Any]:
    """WAL size under sustained load, and the longest block gap during a live backup."""
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        node, chain = start_bench_node(
            Path(tmp),
            accounts=1000,
            extra={
                "WEALL_WAL_MAX_BYTES": str(16 * 1024 * 1024),
                "WEALL_CHECKPOINT_INTERVAL_S": "1",
            },
        )
        wal = Path(tmp) / "data" / "weall.db-wal"
        wal_sizes: list[int] = []
        window: list[float] = []
        load: list[float] = []
        try:
            _batch_load(node, chain, 20_000, clients=2)

            async def sustained() -> None:
                batches = [{"envelopes": chain.envelopes(1000)} for _ in range(30)]
                load.append(time.time() * 1000)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        lambda: post_all(
                            node.url,
                            "/v1/tx/batch",
                            batches,
                            concurrency=1,
                            timeout_s=120,
                            rate_per_s=2.0,
                        )
                    )

                    async def sample() -> None:
                        for _ in range(300):
                            wal_sizes.append(wal.stat().st_size if wal.exists() else 0)
                            await trio.sleep(0.05)

                    nursery.start_soon(sample)
                    await trio.sleep(4)
                    window.append(time.time() * 1000)
                    await trio.to_thread.run_sync(
                        lambda: node.cli("backup", check=True, timeout=300)
                    )
                    window.append(time.time() * 1000)

            trio.run(sustained)
            load.append(time.time() * 1000)
            wait_committed(node)
        finally:
            node.stop()
        conn = sqlite3.connect(
            f"file:{Path(tmp) / 'data' / 'weall.db'}?mode=ro", uri=True
        )
        stamps = [
            row[0]
            for row in conn.execute("SELECT timestamp_ms FROM blocks ORDER BY height")
        ]
        conn.close()
    gaps_during = [
        b - a
        for a, b in zip(stamps, stamps[1:], strict=False)
        if b >= window[0] and a <= window[1]
    ]
    # Gaps while the sustained load ran, outside the backup. Before the load
    # the chain is idle, and an idle chain makes blocks only every heartbeat.
    gaps_other = [
        b - a
        for a, b in zip(stamps, stamps[1:], strict=False)
        if a >= load[0] and b <= load[1] and (b < window[0] or a > window[1])
    ]
    return {
        "wal_max_mb": round(max(wal_sizes) / 2**20, 1),
        "wal_limit_mb": 16,
        "backup_s": round((window[1] - window[0]) / 1000, 2),
        "longest_gap_ms_during_backup": max(gaps_during) if gaps_during else None,
        "longest_gap_ms_otherwise": max(gaps_other) if gaps_other else None,
        "target_gap_ms": "<= 2 x block_interval_ms = 2000",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=list(SCENARIOS),
        help=f"any of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--growth-size",
        type=int,
        default=1_000_000,
        help="accounts and posts in the large state of the growth scenario",
    )
    parser.add_argument(
        "--api-workers", type=int, default=1, help="WEALL_API_WORKERS of the node"
    )
    args = parser.parse_args()
    NODE_ENV["WEALL_API_WORKERS"] = str(args.api_workers)
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average": os.getloadavg(),
                },
                "node_env": NODE_ENV,
            }
        )
    )
    for name in args.scenarios:
        result = SCENARIOS[name](args)
        print(json.dumps({"scenario": name, **result}), flush=True)


if __name__ == "__main__":
    main()
