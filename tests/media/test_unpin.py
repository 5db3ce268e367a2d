"""End to end: a withdrawn operator's pinner unpins what a heal released.

A node and three standalone pinners (``@op_a``, ``@op_b``, ``@op_c``), with
a replication factor of 2. Only ``@op_a`` and ``@op_b`` are operators when
two files are uploaded, so both are targets of both pins. Before its pinner
starts, ``@op_a``'s store already pins the second file. Then ``@op_c``
enrolls and ``@op_a`` withdraws: the healer replaces ``@op_a`` by ``@op_c``
in both pins. ``WEALL_PIN_UNPIN_GRACE_S`` later, ``@op_a``'s pinner unpins the
first file and leaves the second, which it did not pin, in place.

``@op_a``'s store is a local one, or, when the IPFS test daemon runs
(``scripts/run-tests.sh``), the daemon, read back through its pin list.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import trio
from e2e.node import running_node

from weall.ipfs import KuboBackend, LocalBackend
from weall.ipfs.unixfs import compute_cid

from ._support import Chain, Pinner, wait_for, write_chain

# Read at import, before the fixture that clears WEALL_* variables runs.
IPFS_API: Final = os.environ.get("WEALL_TEST_IPFS_API", "")

pytestmark = pytest.mark.slow

GRACE_S = 1.0
NODE_ENV = {
    "WEALL_BLOCK_INTERVAL_MS": "300",
    "WEALL_IPFS_HEAL_INTERVAL_BLOCKS": "2",
    "WEALL_PINNER_POLL_S": "0.2",
    "WEALL_RATE_LIMIT_PER_S": "0",
}
PINNER_ENV = {
    "WEALL_PINNER_POLL_S": "0.2",
    "WEALL_PIN_RECHECK_S": "0.5",
    "WEALL_PIN_UNPIN_GRACE_S": str(GRACE_S),
}
RELEASED = re.compile(
    r"unpinned released content cid=(\S+) account=@op_a released_s=(\S+)"
)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    accounts = {name: (2, []) for name in ("@op_a", "@op_b", "@op_c", "@alice")}
    params = {
        "heartbeat_ms": 500,
        "replication_factor": 2,
        "pin_confirm_timeout_blocks": 100_000,
    }
    chain = write_chain(tmp_path, accounts, params, producer_roles=("producer",))
    with running_node(tmp_path, env=NODE_ENV) as node:
        chain.node = node
        yield chain
    assert "Traceback" not in node.log(), node.log()[-5000:]


def _open_store(store: Path | None) -> LocalBackend | KuboBackend:
    if store is None:
        return KuboBackend(IPFS_API, timeout_s=30.0, stat_timeout_s=2.0)
    return LocalBackend(store)


def _in_store(store: Path | None, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call one backend method on ``@op_a``'s store (``None``: the test daemon)."""

    async def call() -> Any:
        async with _open_store(store) as backend:
            return await getattr(backend, method)(*args, **kwargs)

    return trio.run(call)


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _wait_targets(chain: Chain, cid: str, operators: set[str]) -> None:
    """Wait until the pin of ``cid`` is durable with exactly ``operators`` as targets."""

    def reached() -> bool:
        status = chain.status(cid)
        return (
            status is not None
            and status["durable"]
            and {t["operator"] for t in status["targets"]} == operators
        )

    wait_for(reached, 90)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("local", id="local"),
        pytest.param(
            "kubo",
            id="kubo",
            marks=[
                pytest.mark.ipfs,
                pytest.mark.skipif(
                    not IPFS_API,
                    reason="WEALL_TEST_IPFS_API is not set; run scripts/run-tests.sh",
                ),
            ],
        ),
    ],
)
def test_withdrawn_operator_unpins_released(chain: Chain, backend: str) -> None:
    # Unique per run, so that a pin left in the shared daemon never counts.
    seed = int.from_bytes(os.urandom(4), "big")
    first = random.Random(seed).randbytes(300_000)
    prepinned = random.Random(seed + 1).randbytes(40_000)
    op_a_env = dict(PINNER_ENV)
    if backend == "kubo":
        op_a_env |= {"WEALL_IPFS_BACKEND": "kubo", "WEALL_IPFS_API_URL": IPFS_API}
    pinners = {
        "@op_a": Pinner(chain, "@op_a", op_a_env),
        "@op_b": Pinner(chain, "@op_b", PINNER_ENV),
        "@op_c": Pinner(chain, "@op_c", PINNER_ENV),
    }
    store = pinners["@op_a"].store if backend == "local" else None
    added = _in_store(store, "add", _pieces(prepinned), pin=True)
    assert added.cid == compute_cid(prepinned)

    for pinner in pinners.values():
        pinner.start()
    try:
        _run_release(chain, pinners, store, first, prepinned)
    finally:
        for pinner in pinners.values():
            pinner.stop()
    for name, pinner in pinners.items():
        assert "Traceback" not in pinner.log(), (name, pinner.log()[-3000:])


def _run_release(
    chain: Chain,
    pinners: dict[str, Pinner],
    store: Path | None,
    first: bytes,
    prepinned: bytes,
) -> None:
    for name in ("@op_a", "@op_b"):
        chain.commit(name, "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 10**9})
    session = chain.issue_session("@alice", ["IPFS_PIN_REQUEST"])
    cids = []
    for body in (first, prepinned):
        upload = chain.upload(session, "@alice", body)
        assert upload.status_code == 200, upload.text
        cids.append(upload.json()["cid"])
    released, kept = cids
    for cid in cids:
        _wait_targets(chain, cid, {"@op_a", "@op_b"})
        assert _in_store(store, "is_pinned", cid)

    chain.commit("@op_c", "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 10**9})
    # @op_a's pinner has signed confirmations since, so its nonce is read again.
    chain.nonces.pop("@op_a")
    chain.commit("@op_a", "STORAGE_OPERATOR_WITHDRAW", {})
    for cid in cids:
        _wait_targets(chain, cid, {"@op_b", "@op_c"})

    op_a = pinners["@op_a"]
    match = wait_for(lambda: RELEASED.search(op_a.log()), 60)
    assert match.group(1) == released
    assert float(match.group(2)) >= GRACE_S
    assert not _in_store(store, "is_pinned", released)
    assert released not in _in_store(store, "list_pins")
    wait_for(lambda: f"released pin left in place cid={kept}" in op_a.log(), 30)
    assert _in_store(store, "is_pinned", kept)

    log = op_a.log()
    assert f"pin no longer assigned cid={released} account=@op_a" in log
    assert f"pin no longer assigned cid={kept} account=@op_a" in log
    assert len(RELEASED.findall(log)) == 1
    assert "pin ledger not saved" not in log
    assert _ledger(pinners["@op_a"]) == {}
    # The other targets keep both files, and their ledgers list them.
    for name in ("@op_b", "@op_c"):
        assert set(cids) <= pinners[name].pinned()
        assert _ledger(pinners[name]) == {
            cid: {"owned": True, "released_at_ms": None} for cid in cids
        }


def _ledger(pinner: Pinner) -> dict[str, Any]:
    path = pinner.home / "data" / "pinner" / f"pins-{pinner.account.lstrip('@')}.json"
    pins: dict[str, Any] = json.loads(path.read_text())["pins"]
    return pins
