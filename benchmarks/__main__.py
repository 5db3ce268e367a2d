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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from benchmarks._load import percentile, post_all, summary
from benchmarks._setup import BenchChain, write_chain
from tests.e2e.node import Node, free_port

SCENARIOS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def scenario(function: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable[[argparse.Namespace], dict[str, Any]]:
    SCENARIOS[function.__name__] = function
    return function


def start_bench_node(workdir: Path, *, accounts: int, extra: dict[str, str] | None = None) -> tuple[Node, BenchChain]:
    chain, env = write_chain(workdir, accounts=accounts)
    env = {"WEALL_MODE": "genesis", **env, **(extra or {})}
    node = Node(workdir, env=env)
    node.start()
    node.wait_ready(60)
    return node, chain


def start_bare(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind", f"127.0.0.1:{port}",
         "benchmarks.bare_app:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def wait_committed(node: Node, tx_ids: list[str], timeout: float = 120.0) -> float:
    """Wait until every tx is final; return the time it took."""
    started = time.perf_counter()
    remaining = list(tx_ids)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        last = remaining[-1]
        status = node.get(f"/v1/tx/{last}").json().get("status")
        if status in ("committed", "rejected", "expired"):
            remaining = [t for t in remaining if node.get(f"/v1/tx/{t}").json().get("status") == "pending"]
            if not remaining:
                break
        time.sleep(0.05)
    return time.perf_counter() - started


@scenario
def ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Single-transaction submits, acknowledged durably, against the bare app."""
    count = args.count
    with tempfile.TemporaryDirectory(prefix="weall-bench-") as tmp:
        node, chain = start_bench_node(Path(tmp), accounts=max(64, count // 50))
        bare_port = free_port()
        bare = start_bare(bare_port)
        node_rates, bare_rates, committed_rates = [], [], []
        try:
            for _ in range(args.rounds):
                bodies = chain.envelopes(count)
                result = trio.run(lambda: post_all(node.url, "/v1/tx/submit", bodies,
                                                   concurrency=args.concurrency, timeout_s=120))
                acked = [t for t in result.acked_at_ms]
                settle = wait_committed(node, acked)
                node_rates.append(result.rate)
                committed_rates.append(len(acked) / (result.elapsed_s + settle))
                baseline = trio.run(lambda: post_all(f"http://127.0.0.1:{bare_port}", "/v1/tx/submit",
                                                     bodies, concurrency=args.concurrency, timeout_s=120))
                bare_rates.append(baseline.rate)
        finally:
            bare.send_signal(signal.SIGTERM)
            bare.wait(10)
            node.stop()
    ratios = [n / b for n, b in zip(node_rates, bare_rates, strict=True)]
    return {
        "node_acked_tx_per_s": summary(node_rates),
        "node_committed_tx_per_s": summary(committed_rates),
        "bare_posts_per_s": summary(bare_rates),
        "ratio_node_to_bare": summary(ratios),
        "target_ratio": ">= 0.7",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS), help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                   "platform": platform.platform()}}))
    for name in args.scenarios:
        result = SCENARIOS[name](args)
        print(json.dumps({"scenario": name, **result}), flush=True)


if __name__ == "__main__":
    main()
