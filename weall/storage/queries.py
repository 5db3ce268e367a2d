"""Queries shared by the writer's connection and the read-only readers.

Every function takes a connection and runs inside whatever transaction the
caller holds, so a caller that needs a consistent view of several reads
wraps them in one ``BEGIN`` ... ``COMMIT``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

__all__ = [
    "CachedState",
    "SqliteState",
    "block_at",
    "blocks_from",
    "head_header",
    "meta",
    "pending_rows",
    "tx_row",
    "tx_statuses",
    "txs_in_block",
]

Value = dict[str, Any]


def _upper_bound(prefix: str) -> str | None:
    if not prefix:
        return None
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# One statement reads one snapshot. It returns the recent entry when there is
# one (a NULL value is a deletion not folded yet), and the folded entry otherwise.
_GET_SQL = (
    "SELECT value FROM state_recent WHERE kind = ?1 AND key = ?2"
    " UNION ALL SELECT value FROM state WHERE kind = ?1 AND key = ?2"
    " AND NOT EXISTS (SELECT 1 FROM state_recent WHERE kind = ?1 AND key = ?2)"
)


class SqliteState:
    """A ``StateReader`` over the state of one connection.

    The state is the ``state`` table overlaid by ``state_recent``, which
    contains the changes of the blocks not folded into ``state`` yet. The
    ``state_view`` view is that overlay.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, kind: str, key: str) -> Value | None:
        raw = self.get_raw(kind, key)
        return None if raw is None else orjson.loads(raw)

    def get_raw(self, kind: str, key: str) -> bytes | None:
        row = self.conn.execute(_GET_SQL, (kind, key)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def scan(
        self,
        kind: str,
        prefix: str = "",
        *,
        after: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, Value]]:
        clauses = ["kind = ?"]
        args: list[Any] = [kind]
        if prefix:
            clauses.append("key >= ?")
            args.append(prefix)
            upper = _upper_bound(prefix)
            clauses.append("key < ?")
            args.append(upper)
        if after is not None:
            clauses.append("key < ?" if reverse else "key > ?")
            args.append(after)
        order = "DESC" if reverse else "ASC"
        sql = f"SELECT key, value FROM state_view WHERE {' AND '.join(clauses)} ORDER BY key {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            (key, orjson.loads(value)) for key, value in self.conn.execute(sql, args)
        ]


class CachedState:
    """A read cache over ``SqliteState`` for the producer, between two commits.

    The producer is the only writer, so what it read stays true until its
    next commit; ``clear()`` must be called after every commit. Values are
    kept as JSON bytes and parsed on each read, so callers may mutate them.
    """

    def __init__(self, base: SqliteState) -> None:
        self.base = base
        self._cache: dict[tuple[str, str], bytes | None] = {}

    def get(self, kind: str, key: str) -> Value | None:
        entry = (kind, key)
        if entry in self._cache:
            raw = self._cache[entry]
        else:
            raw = self._cache[entry] = self.base.get_raw(kind, key)
        return None if raw is None else orjson.loads(raw)

    def scan(
        self,
        kind: str,
        prefix: str = "",
        *,
        after: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, Value]]:
        return self.base.scan(kind, prefix, after=after, limit=limit, reverse=reverse)

    def clear(self) -> None:
        self._cache.clear()


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _block(row: tuple[Any, ...] | None) -> Value | None:
    if row is None:
        return None
    header = orjson.loads(row[1])
    return {"height": row[0], "hash": row[2], "header": header, "sig": row[3]}


def head_header(conn: sqlite3.Connection) -> Value | None:
    return _block(
        conn.execute(
            "SELECT height, header, hash, sig FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
    )


def block_at(conn: sqlite3.Connection, height: int) -> Value | None:
    return _block(
        conn.execute(
            "SELECT height, header, hash, sig FROM blocks WHERE height = ?", (height,)
        ).fetchone()
    )


def blocks_from(conn: sqlite3.Connection, start: int, limit: int) -> list[Value]:
    rows = conn.execute(
        "SELECT height, header, hash, sig FROM blocks WHERE height >= ? ORDER BY height LIMIT ?",
        (start, limit),
    ).fetchall()
    return [block for row in rows if (block := _block(row)) is not None]


def txs_in_block(conn: sqlite3.Connection, height: int) -> list[Value]:
    rows = conn.execute(
        "SELECT tx_id, status, envelope, receipt FROM txs WHERE height = ? ORDER BY idx",
        (height,),
    ).fetchall()
    return [
        {
            "tx_id": tx_id,
            "status": status,
            "envelope": orjson.loads(envelope),
            "receipt": orjson.loads(receipt) if receipt else None,
        }
        for tx_id, status, envelope, receipt in rows
    ]


def tx_row(conn: sqlite3.Connection, tx_id: str) -> Value | None:
    row = conn.execute(
        "SELECT tx_id, status, height, receipt, signer, nonce, tx_type, received_ms, envelope"
        " FROM txs WHERE tx_id = ?",
        (tx_id,),
    ).fetchone()
    if row is None:
        return None
    result: Value = {
        "tx_id": row[0],
        "status": row[1],
        "signer": row[4],
        "nonce": row[5],
        "tx_type": row[6],
        "received_ms": row[7],
        "envelope": orjson.loads(row[8]),
    }
    if row[2] is not None:
        result["height"] = row[2]
    if row[3] is not None:
        result["receipt"] = orjson.loads(row[3])
    return result


# SQLite before 3.32 allows at most 999 bound parameters in one statement.
_IN_CHUNK = 900


def tx_statuses(
    conn: sqlite3.Connection, tx_ids: list[str]
) -> dict[str, tuple[str, int | None]]:
    """``tx_id -> (status, height)`` for the ids of ``tx_ids`` that are stored."""
    found: dict[str, tuple[str, int | None]] = {}
    for start in range(0, len(tx_ids), _IN_CHUNK):
        chunk = tx_ids[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT tx_id, status, height FROM txs WHERE tx_id IN ({marks})", chunk
        )
        for tx_id, status, height in rows:
            found[tx_id] = (status, height)
    return found


def pending_rows(conn: sqlite3.Connection) -> list[tuple[str, bytes, int]]:
    """``(tx_id, envelope JSON, received_ms)`` of every pending transaction."""
    return conn.execute(
        "SELECT tx_id, envelope, received_ms FROM txs WHERE status = 'pending'"
        " ORDER BY received_ms, tx_id"
    ).fetchall()
