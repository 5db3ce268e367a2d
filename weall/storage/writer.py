"""The read-write connection. Only the producer actor imports this module,
or on a follower node the follower actor, which holds the same lock.

Each public method is one SQLite transaction (``BEGIN IMMEDIATE`` ...
``COMMIT``), so a crash at any point leaves either all of it or none of it:
a block is stored with its receipts, its transactions' statuses and its state
changes, or not at all.

A block's state changes go to the small ``state_recent`` table, so its
commit writes about the same number of pages whatever the size of the
state. ``fold_recent`` moves them into ``state`` afterwards, a bounded
number of entries per transaction. The producer folds while it waits for
the next block, and any writer folds before a commit once
``FOLD_FORCE_ENTRIES`` entries are waiting.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from weall.errors import StartupError, StorageError
from weall.protocol import canonical
from weall.protocol.block import BlockResult
from weall.protocol.envelope import Envelope
from weall.storage import queries
from weall.storage.db import applied_settings, open_readwrite, translate_error
from weall.storage.schema import SCHEMA_VERSION, current_version, migrate

__all__ = ["Writer"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Entries that one fold transaction moves from state_recent into state. With
# a large state nearly every entry lands on a page of its own, so this bounds
# a fold's WAL growth to a few thousand pages.
FOLD_CHUNK_ENTRIES: Final = 2000
# Past this many waiting entries a writer folds before its next commit,
# whether or not it has idle time, so reads of state_view stay cheap.
FOLD_FORCE_ENTRIES: Final = 50_000

_FOLD_UPSERT = (
    "INSERT INTO state (kind, key, value)"
    " SELECT kind, key, value FROM state_recent"
    " WHERE value IS NOT NULL AND (kind, key) <= (?, ?) ORDER BY kind, key"
    " ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value"
)
_FOLD_DELETE = (
    "DELETE FROM state WHERE (kind, key) IN"
    " (SELECT kind, key FROM state_recent WHERE value IS NULL AND (kind, key) <= (?, ?))"
)


class Writer:
    """The producer's connection; not safe for use from two threads at once."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        autocheckpoint_pages: int | None = None,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.conn = open_readwrite(
            path, synchronous=synchronous, autocheckpoint_pages=autocheckpoint_pages
        )
        # What the producer reports over its socket, read back once here.
        self.applied = applied_settings(self.conn)
        # Reads of the producer go through a cache that every commit clears.
        self.state = queries.CachedState(queries.SqliteState(self.conn))
        # An upper bound of the entries in state_recent. Commits add their
        # change counts, and a fold that empties the table resets it to 0.
        self.recent_entries = self._count_recent()
        self.folded_entries = 0

    def close(self) -> None:
        self.conn.close()

    def _transaction(
        self, operation: str, body: Callable[[], T], *, clear_cache: bool = True
    ) -> T:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = body()
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise translate_error(exc, operation) from exc
        finally:
            # A fold changes where entries are stored, not what they contain.
            if clear_cache:
                self.state.clear()
        return result

    def _count_recent(self) -> int:
        try:
            return int(
                self.conn.execute("SELECT COUNT(*) FROM state_recent").fetchone()[0]
            )
        except sqlite3.OperationalError:
            # A database from before migration 3 has no such table until migrated.
            return 0

    # -- set-up ---------------------------------------------------------------

    def migrate(self) -> list[int]:
        try:
            applied = migrate(self.conn)
        except sqlite3.Error as exc:
            raise translate_error(exc, "migrate") from exc
        for version in applied:
            log.info("migration applied version=%s db=%s", version, self.path)
        self.recent_entries = self._count_recent()
        return applied

    def initialize(self, genesis_doc: dict[str, Any], block0: BlockResult) -> None:
        """Store the genesis document, block 0 and the genesis state in a new database.

        A producer passes the block 0 it signed; a follower passes the block 0
        it fetched from its upstream and checked against the genesis document.
        """
        if current_version(self.conn) != SCHEMA_VERSION:
            raise StorageError("initialize: migrate the schema first")

        def body() -> None:
            if self.conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]:
                raise StartupError(f"database {self.path} already holds a chain")
            rows = [
                ("chain_id", genesis_doc["chain_id"]),
                ("genesis_hash", block0.header["prev_hash"]),
                ("genesis_json", canonical.dumps(genesis_doc).decode()),
            ]
            self.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)
            self._insert_block(block0)
            self._write_changes(changes)

        changes = block0.state.raw_changes()
        self._transaction("initialize", body)
        self.recent_entries += len(changes)

    # -- reads through the write connection -------------------------------------

    def head(self) -> dict[str, Any]:
        block = queries.head_header(self.conn)
        if block is None:
            raise StorageError(f"database {self.path} has no blocks")
        return block

    def meta(self) -> dict[str, str]:
        return queries.meta(self.conn)

    def pending(self) -> list[tuple[str, bytes, int]]:
        return queries.pending_rows(self.conn)

    def tx_status(self, tx_id: str) -> dict[str, Any] | None:
        return queries.tx_row(self.conn, tx_id)

    def tx_statuses(self, tx_ids: list[str]) -> dict[str, tuple[str, int | None]]:
        return queries.tx_statuses(self.conn, tx_ids)

    # -- writes ------------------------------------------------------------------

    def store_pending(self, admitted: Sequence[tuple[Envelope, int]]) -> None:
        """Store admitted transactions as pending, durably, in one transaction."""
        rows = [
            (
                env.tx_id,
                env.signer,
                env.nonce,
                env.tx_type,
                canonical.compact(orjson.dumps(env.to_json())),
                received,
            )
            for env, received in admitted
        ]

        def body() -> None:
            self.conn.executemany(
                "INSERT INTO txs (tx_id, signer, nonce, tx_type, status, envelope, received_ms)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                rows,
            )

        self._transaction("store pending", body)

    def commit_block(self, block: BlockResult) -> None:
        """Store a block, its receipts and its state changes in one transaction."""
        self.fold_if_due()
        statuses = [
            (
                "committed" if receipt["ok"] else "rejected",
                block.height,
                index,
                canonical.compact(orjson.dumps(receipt)),
                tx_id,
            )
            for index, (tx_id, receipt) in enumerate(
                zip(block.header["tx_ids"], block.receipts, strict=True)
            )
        ]

        def body() -> None:
            self._insert_block(block)
            updated = 0
            for row in statuses:
                cursor = self.conn.execute(
                    "UPDATE txs SET status = ?, height = ?, idx = ?, receipt = ?"
                    " WHERE tx_id = ? AND status = 'pending'",
                    row,
                )
                updated += cursor.rowcount
            if updated != len(statuses):
                raise StorageError(
                    f"commit block {block.height}: {len(statuses) - updated} transactions"
                    " were not pending"
                )
            self._write_changes(changes)

        changes = block.state.raw_changes()
        self._transaction(f"commit block {block.height}", body)
        self.recent_entries += len(changes)

    def commit_verified_block(
        self, block: BlockResult, envelopes: Sequence[Envelope]
    ) -> None:
        """Store a block that a follower fetched and replayed, in one transaction.

        The follower never stores its transactions as pending, so their rows
        are inserted here as committed or rejected, with their receipts, and
        ``received_ms`` set to the block's timestamp. A transaction id that is
        already stored fails the whole block.
        """
        if [env.tx_id for env in envelopes] != block.header["tx_ids"]:
            raise StorageError(
                f"commit verified block {block.height}: envelopes do not match tx_ids"
            )
        self.fold_if_due()
        timestamp = block.header["timestamp_ms"]
        rows = [
            (
                env.tx_id,
                env.signer,
                env.nonce,
                env.tx_type,
                "committed" if receipt["ok"] else "rejected",
                canonical.compact(orjson.dumps(env.to_json())),
                timestamp,
                block.height,
                index,
                canonical.compact(orjson.dumps(receipt)),
            )
            for index, (env, receipt) in enumerate(
                zip(envelopes, block.receipts, strict=True)
            )
        ]

        def body() -> None:
            self._insert_block(block)
            self.conn.executemany(
                "INSERT INTO txs (tx_id, signer, nonce, tx_type, status, envelope, received_ms,"
                " height, idx, receipt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._write_changes(changes)

        changes = block.state.raw_changes()
        self._transaction(f"commit verified block {block.height}", body)
        self.recent_entries += len(changes)

    def expire(self, tx_ids: Iterable[str]) -> int:
        ids = [(tx_id,) for tx_id in tx_ids]

        def body() -> int:
            cursor = self.conn.executemany(
                "UPDATE txs SET status = 'expired' WHERE tx_id = ? AND status = 'pending'",
                ids,
            )
            return cursor.rowcount

        return self._transaction("expire", body)

    def fold_recent(self, limit: int = FOLD_CHUNK_ENTRIES) -> int:
        """Move up to ``limit`` entries from ``state_recent`` into ``state``, in one transaction.

        Entries move in key order, so repeated calls sweep the whole table,
        and a NULL value deletes the entry from ``state``. Readers see the
        same state before and after. Returns the number of entries moved,
        0 when none were waiting.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")

        def body() -> int:
            bound = self.conn.execute(
                "SELECT kind, key FROM state_recent ORDER BY kind, key LIMIT 1 OFFSET ?",
                (limit - 1,),
            ).fetchone()
            if bound is None:
                bound = self.conn.execute(
                    "SELECT kind, key FROM state_recent ORDER BY kind DESC, key DESC LIMIT 1"
                ).fetchone()
                if bound is None:
                    return 0
            self.conn.execute(_FOLD_UPSERT, bound)
            self.conn.execute(_FOLD_DELETE, bound)
            cursor = self.conn.execute(
                "DELETE FROM state_recent WHERE (kind, key) <= (?, ?)", bound
            )
            return int(cursor.rowcount)

        moved = self._transaction("fold recent state", body, clear_cache=False)
        if moved < limit:
            self.recent_entries = 0
        else:
            self.recent_entries = max(0, self.recent_entries - moved)
        self.folded_entries += moved
        return moved

    def fold_if_due(self) -> int:
        """Fold until fewer than ``FOLD_FORCE_ENTRIES`` entries wait, and return the entries moved."""
        moved = 0
        while self.recent_entries >= FOLD_FORCE_ENTRIES:
            step = self.fold_recent()
            if not step:
                break
            moved += step
        if moved:
            log.info("recent state folded before a commit entries=%d", moved)
        return moved

    def checkpoint(self, mode: str) -> tuple[int, int, int]:
        """Run ``PRAGMA wal_checkpoint(mode)``; returns (busy, wal pages, checkpointed)."""
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"unknown checkpoint mode {mode}")
        try:
            busy, pages, done = self.conn.execute(
                f"PRAGMA wal_checkpoint({mode})"
            ).fetchone()
        except sqlite3.Error as exc:
            raise translate_error(exc, f"checkpoint {mode}") from exc
        return int(busy), int(pages), int(done)

    def _insert_block(self, block: BlockResult) -> None:
        self.conn.execute(
            "INSERT INTO blocks (height, hash, header, sig, timestamp_ms, tx_count)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                block.height,
                block.hash,
                canonical.dumps(block.header),
                block.sig,
                block.header["timestamp_ms"],
                len(block.header["tx_ids"]),
            ),
        )

    def _write_changes(self, changes: Sequence[tuple[str, str, bytes | None]]) -> None:
        # A deletion is stored as a NULL value until the fold applies it.
        self.conn.executemany(
            "INSERT INTO state_recent (kind, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
            changes,
        )
