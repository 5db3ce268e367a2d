"""Queries shared by the writer and the readers, over a real database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from helpers import Chain

from weall.protocol.block import BlockResult
from weall.protocol.state import MemoryState
from weall.storage import queries
from weall.storage.writer import Writer

CommitBlock = Callable[..., BlockResult]

# Keys chosen to probe prefix bounds and code point order, including non-ASCII.
SCAN_KEYS = [
    "a",
    "a/",
    "a/1",
    "a/2",
    "a/10",
    "a/z",
    "a/é",
    "a/\U0001f600",
    "a0",
    "a~",
    "ab",
    "b/1",
    "é/1",
    "\U0001f600",
]


@pytest.fixture
def scan_states(writer: Writer) -> tuple[queries.SqliteState, MemoryState]:
    """The same ``item`` entries in SQLite and in memory, plus an ``other`` kind."""
    entries = {("item", key): {"key": key} for key in SCAN_KEYS}
    entries[("other", "a/1")] = {"key": "other"}
    writer.conn.executemany(
        "INSERT INTO state (kind, key, value) VALUES (?, ?, ?)",
        [(kind, key, orjson.dumps(value)) for (kind, key), value in entries.items()],
    )
    return writer.state, MemoryState(entries)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="all"),
        pytest.param({"prefix": "a/"}, id="prefix"),
        pytest.param({"prefix": "a"}, id="prefix-short"),
        pytest.param({"prefix": "é"}, id="prefix-non-ascii"),
        pytest.param({"prefix": "zzz"}, id="prefix-none"),
        pytest.param({"prefix": "a/", "limit": 2}, id="limit"),
        pytest.param({"prefix": "a/", "limit": 0}, id="limit-0"),
        pytest.param({"prefix": "a/", "after": "a/2"}, id="after"),
        pytest.param({"prefix": "a/", "reverse": True}, id="reverse"),
        pytest.param(
            {"prefix": "a/", "reverse": True, "after": "a/z", "limit": 3},
            id="reverse-after",
        ),
        pytest.param({"after": "a~", "limit": 3}, id="after-no-prefix"),
        pytest.param({"after": "é/1"}, id="after-non-ascii"),
    ],
)
def test_sqlite_scan_matches_memory(
    scan_states: tuple[queries.SqliteState, MemoryState], options: dict[str, Any]
) -> None:
    sqlite_state, memory = scan_states
    prefix = options.pop("prefix", "")
    assert sqlite_state.scan("item", prefix, **options) == memory.scan(
        "item", prefix, **options
    )


def test_sqlite_scan_filters_kind(
    scan_states: tuple[queries.SqliteState, MemoryState],
) -> None:
    sqlite_state, _ = scan_states
    assert sqlite_state.scan("other") == [("a/1", {"key": "other"})]


def test_sqlite_get(scan_states: tuple[queries.SqliteState, MemoryState]) -> None:
    sqlite_state, _ = scan_states
    assert sqlite_state.get("item", "a/é") == {"key": "a/é"}


def test_sqlite_get_missing(
    scan_states: tuple[queries.SqliteState, MemoryState],
) -> None:
    sqlite_state, _ = scan_states
    assert sqlite_state.get("item", "a/3") is None


def test_sqlite_get_other_kind(
    scan_states: tuple[queries.SqliteState, MemoryState],
) -> None:
    sqlite_state, _ = scan_states
    assert sqlite_state.get("other", "a/2") is None


# -- blocks and transactions ---------------------------------------------------------------


def test_head_header(writer: Writer, commit: CommitBlock) -> None:
    commit()
    second = commit()
    head = queries.head_header(writer.conn)
    assert head == {
        "height": 2,
        "hash": second.hash,
        "header": second.header,
        "sig": second.sig,
    }


def test_block_at(writer: Writer, chain: Chain, commit: CommitBlock) -> None:
    commit()
    assert queries.block_at(writer.conn, 0)["hash"] == chain.genesis.hash


def test_block_at_missing(writer: Writer) -> None:
    assert queries.block_at(writer.conn, 5) is None


def test_blocks_from(writer: Writer, commit: CommitBlock) -> None:
    for _ in range(4):
        commit()
    assert [b["height"] for b in queries.blocks_from(writer.conn, 1, 2)] == [1, 2]


def test_blocks_from_past_head(writer: Writer) -> None:
    assert queries.blocks_from(writer.conn, 3, 10) == []


def test_txs_in_block(writer: Writer, chain: Chain, commit: CommitBlock) -> None:
    first = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    second = chain.tx("@bob", "PROFILE_UPDATE", {})
    result = commit(first, second)
    txs = queries.txs_in_block(writer.conn, 1)
    assert [t["tx_id"] for t in txs] == [first.tx_id, second.tx_id]
    assert [t["status"] for t in txs] == ["committed", "rejected"]
    assert [t["receipt"] for t in txs] == result.receipts
    assert txs[0]["envelope"] == first.to_json()


def test_txs_in_empty_block(writer: Writer, commit: CommitBlock) -> None:
    commit()
    assert queries.txs_in_block(writer.conn, 1) == []


def test_tx_row_committed(writer: Writer, chain: Chain, commit: CommitBlock) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    commit(env)
    row = queries.tx_row(writer.conn, env.tx_id)
    assert row["status"] == "committed"
    assert row["height"] == 1
    assert row["receipt"] == {"ok": True}
    assert row["tx_type"] == "PROFILE_UPDATE"


def test_tx_row_missing(writer: Writer) -> None:
    assert queries.tx_row(writer.conn, "b" + "a" * 52) is None


def test_pending_rows_order(writer: Writer, chain: Chain) -> None:
    envs = [
        chain.tx(s, "PROFILE_UPDATE", {"bio": s}) for s in ("@alice", "@bob", "@carol")
    ]
    writer.store_pending([(envs[0], 30), (envs[1], 10), (envs[2], 10)])
    same_time = sorted([envs[1].tx_id, envs[2].tx_id])
    assert [row[0] for row in queries.pending_rows(writer.conn)] == [
        *same_time,
        envs[0].tx_id,
    ]


def test_pending_rows_envelope_bytes(writer: Writer, chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    writer.store_pending([(env, 1)])
    ((_, envelope, received),) = queries.pending_rows(writer.conn)
    assert orjson.loads(envelope) == env.to_json()
    assert received == 1


def test_meta(writer: Writer, chain: Chain) -> None:
    assert set(queries.meta(writer.conn)) == {
        "chain_id",
        "genesis_hash",
        "genesis_json",
    }
