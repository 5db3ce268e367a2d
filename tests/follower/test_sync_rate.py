"""An empty follower syncs a whole chain, and the test prints its sync rate.

The producer's chain is built offline by ``chain_builder`` (the real writer
and protocol), then served by a real producer node. The rate is measured
from the follower's start to the moment its head equals the producer's, so
it includes the process start-up. The long form syncs 100,000 transactions:

    .venv/bin/python -m pytest tests/follower/test_sync_rate.py --run-long -s
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.node import Node

from .chain_builder import build_chain
from .support import (
    committed_heights,
    follower_node,
    follower_status,
    same_reads,
    start,
    wait_synced,
)

pytestmark = pytest.mark.slow

SIZES = [
    pytest.param(20, 250, id="5k-txs"),
    pytest.param(100, 1000, id="100k-txs", marks=pytest.mark.long),
]


@pytest.mark.parametrize(("blocks", "txs_per_block"), SIZES)
def test_empty_follower_syncs_chain(
    tmp_path: Path, blocks: int, txs_per_block: int
) -> None:
    started = time.monotonic()
    chain = build_chain(
        tmp_path / "producer",
        posters=min(1000, txs_per_block),
        blocks=blocks,
        txs_per_block=txs_per_block,
    )
    build_s = time.monotonic() - started

    producer = start(Node(chain.workdir, args=["--actors", "producer,api"]))
    try:
        follower = follower_node(tmp_path / "follower", producer, chain.genesis_path)
        began = time.monotonic()
        start(follower)
        try:
            height = wait_synced(follower, producer, timeout=1800)
            elapsed = time.monotonic() - began
            same_reads(
                producer, follower, ["/v1/chain/head", "/v1/state/snapshot", "/v1/feed"]
            )
            status = follower_status(follower)
            # At the tip the follower folds the recent state it wrote.
            deadline = time.monotonic() + 120
            while follower_status(follower)["recent_state_entries"]:
                assert time.monotonic() < deadline, "recent state was never folded"
                time.sleep(0.2)
            same_reads(producer, follower, ["/v1/state/snapshot", "/v1/feed"])
        finally:
            follower.stop()
    finally:
        producer.stop()

    rate = chain.txs / elapsed
    caught_up = re.findall(
        r"caught up height=\d+ txs=(\d+) elapsed_s=([\d.]+) tx_per_s=(\d+)",
        follower.log(),
    )
    print(
        f"\nsync: {chain.txs} transactions in {blocks} blocks, built offline in {build_s:.1f} s; "
        f"follower start to caught up {elapsed:.1f} s = {rate:.0f} tx/s; "
        f"follower's own measure (fetch, verify, commit): {caught_up}"
    )

    assert height >= chain.height
    assert committed_heights(tmp_path / "follower" / "data" / "weall.db")[-1] == height
    assert status["txs_committed"] == chain.txs
    assert caught_up, follower.log()

    # A replay of 100,000 transactions takes minutes on a loaded machine.
    verify = follower.cli("verify", timeout=1800)
    assert verify.returncode == 0, verify.stderr
    assert f"{chain.txs} transactions verified" in verify.stdout
