"""A follower rejects an upstream on another chain: other genesis hash or chain id."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.node import Node

from .chain_builder import write_chain_files
from .support import (
    committed_heights,
    follower_node,
    follower_status,
    start,
    wait_for,
    wait_synced,
)

pytestmark = pytest.mark.slow


def _dev_producer(workdir: Path, chain_id: str = "weall-dev") -> Node:
    return start(
        Node(
            workdir, env={"WEALL_CHAIN_ID": chain_id}, args=["--actors", "producer,api"]
        )
    )


@pytest.fixture(scope="module")
def producers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    nodes = {
        "dev": _dev_producer(tmp_path_factory.mktemp("dev")),
        "other-genesis": _dev_producer(tmp_path_factory.mktemp("other-genesis")),
        "other-chain": _dev_producer(
            tmp_path_factory.mktemp("other-chain"), "weall-other"
        ),
    }
    try:
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def _first_start_output(follower: Node) -> tuple[int, str]:
    follower.start()
    assert follower.process is not None
    try:
        code = follower.process.wait(60)
    except subprocess.TimeoutExpired:
        follower.kill_tree()
        raise
    return code, follower.log()


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        pytest.param("other-genesis", "upstream genesis hash is", id="other-genesis"),
        pytest.param(
            "other-chain", "upstream serves chain 'weall-other'", id="other-chain-id"
        ),
    ],
)
def test_first_start_rejects_other_chain(
    tmp_path: Path, producers: dict[str, Node], upstream: str, expected: str
) -> None:
    # The follower is given the genesis document of the "dev" producer.
    genesis = producers["dev"].workdir / "data" / "genesis.json"
    follower = follower_node(tmp_path / "follower", producers[upstream], genesis)
    code, output = _first_start_output(follower)
    lines = [
        line for line in output.splitlines() if "is not on this node's chain" in line
    ]
    assert code == 78, output
    assert len(lines) == 1, output
    assert lines[0].startswith("weall supervise: upstream ")
    assert expected in lines[0]
    assert "Traceback" not in output
    assert not (tmp_path / "follower" / "data" / "weall.db").exists()


def test_first_start_rejects_local_chain_id_mismatch(
    tmp_path: Path, producers: dict[str, Node]
) -> None:
    chain = write_chain_files(tmp_path / "other", chain_id="weall-third")
    follower = follower_node(
        tmp_path / "follower",
        producers["dev"],
        chain.genesis_path,
        env={"WEALL_CHAIN_ID": "weall-dev"},
    )
    code, output = _first_start_output(follower)
    assert code == 78, output
    assert "is for chain 'weall-third' but WEALL_CHAIN_ID is 'weall-dev'" in output


def test_synced_follower_rejects_other_upstream(
    tmp_path: Path, producers: dict[str, Node]
) -> None:
    genesis = producers["dev"].workdir / "data" / "genesis.json"
    follower = start(follower_node(tmp_path / "follower", producers["dev"], genesis))
    try:
        height = wait_synced(follower, producers["dev"])
    finally:
        follower.stop()
    db = tmp_path / "follower" / "data" / "weall.db"
    before = committed_heights(db)

    follower.extra_env["WEALL_UPSTREAM_URL"] = producers["other-genesis"].url
    start(follower)
    try:
        status = wait_for(
            lambda: (s := follower_status(follower))["state"] == "rejected" and s,
            condition="follower rejects the other upstream",
        )
        health = follower.get("/health").json()
        reads = follower.get("/v1/chain/head")
    finally:
        follower.stop()
    assert status["rejected"]["height"] is None
    assert "genesis hash" in status["rejected"]["reason"]
    assert status["height"] == height
    assert committed_heights(db) == before
    assert health["ok"] is False
    assert reads.status_code == 200
    lines = [
        line for line in follower.log().splitlines() if "upstream rejected" in line
    ]
    assert len(lines) == 1
    assert "height=None" in lines[0]
