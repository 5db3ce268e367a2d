"""The producer: the only writer of the database.

It admits transactions that the api forwards over the producer socket,
stores them as pending before it answers (so an acknowledged transaction
survives any crash), and every ``block_interval_ms`` commits one block of the
pending transactions that can be included: block, receipts, statuses and
state changes in one SQLite transaction.

All database work, and every change to the in-memory pool, runs in one
worker thread at a time (a capacity limiter of 1), so admission batches,
blocks and checkpoints never interleave.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import trio

from weall import ipc
from weall.actors._base import stop_event
from weall.bootstrap import load_genesis
from weall.config import Config
from weall.errors import (
    HTTP_STATUS,
    ProtocolError,
    StartupError,
    StorageError,
    StorageFullError,
)
from weall.protocol import keys
from weall.protocol.block import build_block
from weall.protocol.envelope import (
    Envelope,
    build_envelope,
    checked_envelope,
    parse_envelope,
)
from weall.protocol.execute import admit, chain_params
from weall.protocol.genesis import genesis_hash, genesis_info
from weall.protocol.txtypes import GenesisInfo
from weall.storage.db import BUSY_TIMEOUT_MS, check_tip, has_free_space, write_tip
from weall.storage.fold import fold_until
from weall.storage.lock import ProducerLock
from weall.storage.writer import Writer

__all__ = ["Producer", "run"]

log = logging.getLogger(__name__)

# A transaction waiting for an earlier nonce leaves the pool after this long.
GAP_EXPIRY_MS: Final = 10 * 60 * 1000
MAX_BATCH: Final = 1000
STORAGE_RETRY_S: Final = 1.0
# While transactions wait for the next block, recent state is folded only
# while that block is at least this far away (or half the block interval,
# if less), because one fold of a large state takes tens of ms. With no
# transactions waiting, folds may run this long past the next block's time.
FOLD_IDLE_MARGIN_S: Final = 0.1
# A checkpoint waits at most this long for readers, so that a reader holding
# an old snapshot delays the next block by no more than this.
CHECKPOINT_BUSY_TIMEOUT_MS: Final = 20
CHECKPOINT_MODES: Final = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PoolEntry:
    env: Envelope
    received_ms: int


@dataclass
class Pool:
    """Pending transactions by signer and nonce; mirrors the ``pending`` rows."""

    by_signer: dict[str, dict[int, PoolEntry]] = field(default_factory=dict)
    by_id: dict[str, PoolEntry] = field(default_factory=dict)

    def add(self, entry: PoolEntry) -> None:
        self.by_signer.setdefault(entry.env.signer, {})[entry.env.nonce] = entry
        self.by_id[entry.env.tx_id] = entry

    def remove(self, tx_id: str) -> None:
        entry = self.by_id.pop(tx_id, None)
        if entry is None:
            return
        nonces = self.by_signer.get(entry.env.signer, {})
        nonces.pop(entry.env.nonce, None)
        if not nonces:
            self.by_signer.pop(entry.env.signer, None)

    def at(self, signer: str, nonce: int) -> PoolEntry | None:
        return self.by_signer.get(signer, {}).get(nonce)

    def __len__(self) -> int:
        return len(self.by_id)


# (envelopes, signatures verified by the sender, their tx ids or None, reply channel)
_Request = tuple[list[Any], bool, list[str | None] | None, trio.MemorySendChannel[Any]]


def _storage_full(message: str) -> dict[str, Any]:
    return {
        "ok": False,
        "http": HTTP_STATUS["storage_full"],
        "error": {"code": "storage_full", "message": message, "details": {}},
    }


def _error(exc: ProtocolError) -> dict[str, Any]:
    return {
        "ok": False,
        "http": exc.http_status,
        "error": {"code": exc.code, "message": exc.message, "details": exc.details},
    }


class Producer:
    def __init__(
        self,
        config: Config,
        writer: Writer,
        genesis_doc: dict[str, Any],
        key: keys.KeyPair,
    ) -> None:
        self.config = config
        self.writer = writer
        self.genesis: GenesisInfo = genesis_info(genesis_doc)
        self.key = key
        self.pool = Pool()
        self.limiter = trio.CapacityLimiter(1)
        self.head = writer.head()
        # Set while the disk is full: block production waits for space and
        # admission returns storage_full without touching the database.
        self.storage_full = False
        self.paused_at = 0.0
        self.rejected_while_full = 0
        self.tip_failures = 0
        self.blocks_committed = 0
        self.last_block_monotonic = time.monotonic()
        self.requests: trio.MemorySendChannel[_Request]
        self._receive: trio.MemoryReceiveChannel[_Request]
        self.requests, self._receive = trio.open_memory_channel(10_000)
        self.block_event = trio.Event()
        # Serialises the producer account's own transactions, so two of them
        # never pick the same nonce.
        self.system_lock = trio.Lock()

    # -- pool ----------------------------------------------------------------------

    def load_pool(self) -> None:
        allow_unsigned = self.config.allow_unsigned_txs and self.config.mode == "dev"
        for tx_id, envelope, received in self.writer.pending():
            env = parse_envelope(orjson.loads(envelope), allow_unsigned=allow_unsigned)
            if env.tx_id != tx_id:
                raise StorageError(
                    f"pending transaction {tx_id} does not match its envelope"
                )
            self.pool.add(PoolEntry(env, received))
        log.info(
            "pool loaded pending=%d height=%d", len(self.pool), self.head["height"]
        )

    # -- admission -------------------------------------------------------------------

    def _parse(self, document: Any, verified: bool, tx_id: str | None) -> Envelope:
        """Parse one submitted envelope and check its chain id and signature.

        An envelope that the api already parsed and verified arrives with its
        tx id and is rebuilt without encoding and hashing it again.
        """
        allow_unsigned = self.config.allow_unsigned_txs and self.config.mode == "dev"
        if verified and tx_id is not None and isinstance(document, dict):
            env = checked_envelope(document, tx_id)
        else:
            env = parse_envelope(document, allow_unsigned=allow_unsigned)
        if env.chain_id != self.genesis.chain_id:
            raise ProtocolError(
                "wrong_chain",
                f"chain_id {env.chain_id!r} is not {self.genesis.chain_id!r}",
            )
        if not verified and (env.sig is not None or not allow_unsigned):
            env.verify_signature()
        return env

    def _check_one(
        self,
        env: Envelope,
        stored: dict[str, tuple[str, int | None]],
        staged: dict[str, PoolEntry],
        staged_nonces: dict[tuple[str, int], PoolEntry],
        now: int,
    ) -> dict[str, Any]:
        if env.tx_id in self.pool.by_id or env.tx_id in staged:
            return {
                "ok": True,
                "http": 200,
                "tx_id": env.tx_id,
                "status": "pending",
                "duplicate": True,
            }
        known = stored.get(env.tx_id)
        if known is not None:
            status, height = known
            return {
                "ok": True,
                "http": 200,
                "tx_id": env.tx_id,
                "status": status,
                "duplicate": True,
                **({"height": height} if height is not None else {}),
            }
        rival = self.pool.at(env.signer, env.nonce) or staged_nonces.get(
            (env.signer, env.nonce)
        )
        if rival is not None:
            raise ProtocolError(
                "nonce_conflict",
                f"another transaction of {env.signer} has nonce {env.nonce}",
                {"tx_id": rival.env.tx_id},
            )
        admit(
            self.writer.state,
            env,
            now_ms=now,
            height=self.head["height"] + 1,
            genesis=self.genesis,
        )
        entry = PoolEntry(env, now)
        staged[env.tx_id] = entry
        staged_nonces[(env.signer, env.nonce)] = entry
        return {"ok": True, "http": 202, "tx_id": env.tx_id, "status": "pending"}

    def admit_batch_sync(
        self,
        documents: list[Any],
        verified: bool | list[bool] = False,
        tx_ids: list[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Check every envelope, store the admitted ones in one transaction, answer each."""
        if self.storage_full:
            self.rejected_while_full += len(documents)
            return [
                _storage_full("the disk is full; retry once the operator frees space")
                for _ in documents
            ]
        now = now_ms()
        flags = verified if isinstance(verified, list) else [verified] * len(documents)
        ids = tx_ids if tx_ids is not None else [None] * len(documents)
        parsed: list[Envelope | dict[str, Any]] = []
        for document, checked, tx_id in zip(documents, flags, ids, strict=True):
            try:
                parsed.append(self._parse(document, checked, tx_id))
            except ProtocolError as exc:
                parsed.append(_error(exc))
        # One query finds every envelope of the batch that is already stored.
        stored = self.writer.tx_statuses(
            [env.tx_id for env in parsed if isinstance(env, Envelope)]
        )
        staged: dict[str, PoolEntry] = {}
        staged_nonces: dict[tuple[str, int], PoolEntry] = {}
        results: list[dict[str, Any]] = []
        for item in parsed:
            if not isinstance(item, Envelope):
                results.append(item)
                continue
            try:
                results.append(
                    self._check_one(item, stored, staged, staged_nonces, now)
                )
            except ProtocolError as exc:
                results.append(_error(exc))
        if not staged:
            return results
        try:
            self.writer.store_pending([(e.env, e.received_ms) for e in staged.values()])
        except StorageError as exc:
            full = isinstance(exc, StorageFullError)
            if full:
                self.pause_production(f"{exc} count={len(staged)}")
            else:
                log.error("store pending failed count=%d: %s", len(staged), exc)
            code = "storage_full" if full else "unavailable"
            failure = {
                "ok": False,
                "http": HTTP_STATUS[code],
                "error": {"code": code, "message": str(exc), "details": {}},
            }
            return [failure if r.get("http") == 202 else r for r in results]
        for entry in staged.values():
            self.pool.add(entry)
        return results

    async def admission_loop(self) -> None:
        """Group commit: every request waiting when a batch starts shares one SQLite commit."""
        while True:
            batch = [await self._receive.receive()]
            total = len(batch[0][0])
            while total < MAX_BATCH:
                try:
                    item = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                total += len(item[0])
            documents = [doc for docs, _, _, _ in batch for doc in docs]
            flags = [checked for docs, checked, _, _ in batch for _ in docs]
            ids = [
                tx_id
                for docs, _, tx_ids, _ in batch
                for tx_id in (tx_ids if tx_ids is not None else [None] * len(docs))
            ]
            results = await trio.to_thread.run_sync(
                self.admit_batch_sync, documents, flags, ids, limiter=self.limiter
            )
            offset = 0
            for docs, _, _, reply in batch:
                reply.send_nowait(results[offset : offset + len(docs)])
                offset += len(docs)

    async def submit(
        self,
        documents: list[Any],
        verified: bool = False,
        tx_ids: list[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Admit ``documents``.

        ``verified`` when the sender already checked their signatures, and
        then ``tx_ids`` may give the id the sender computed for each one.
        """
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        await self.requests.send((documents, verified, tx_ids, reply_send))
        result: list[dict[str, Any]] = await reply_receive.receive()
        return result

    def _next_own_nonce(self) -> int:
        account = self.key.account
        assert account is not None
        committed = self.writer.state.get("account", account)
        nonce = 0 if committed is None else int(committed["next_nonce"])
        pending = self.pool.by_signer.get(account, {})
        while nonce in pending:
            nonce += 1
        return nonce

    async def submit_own(self, tx_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign a transaction of the producer account (system transactions) and admit it."""
        if self.key.account is None:
            raise StartupError(f"node key {self.config.node_key_path} names no account")
        async with self.system_lock:
            nonce = await trio.to_thread.run_sync(
                self._next_own_nonce, limiter=self.limiter
            )
            envelope = build_envelope(
                self.key,
                chain_id=self.genesis.chain_id,
                tx_type=tx_type,
                signer=self.key.account,
                nonce=nonce,
                payload=payload,
            )
            (result,) = await self.submit([envelope])
        log.info(
            "system transaction submitted type=%s nonce=%d tx_id=%s code=%s",
            tx_type,
            nonce,
            result.get("tx_id"),
            result.get("error", {}).get("code"),
        )
        return result

    # -- blocks ------------------------------------------------------------------------

    def _select(self) -> tuple[list[Envelope], list[str]]:
        """Pick includable transactions and find the ones to expire.

        Signers are served in the order of their oldest pending transaction;
        each contributes its run of consecutive nonces from its next nonce.
        """
        limit = int(chain_params(self.writer.state)["max_block_txs"])
        now = now_ms()
        signers = sorted(
            self.pool.by_signer.items(),
            key=lambda item: min(entry.received_ms for entry in item[1].values()),
        )
        selected: list[Envelope] = []
        expired: list[str] = []
        for signer, nonces in signers:
            account = self.writer.state.get("account", signer)
            next_nonce = 0 if account is None else account["next_nonce"]
            nonce = next_nonce
            while nonce in nonces and len(selected) < limit:
                selected.append(nonces[nonce].env)
                nonce += 1
            for other, entry in nonces.items():
                stale = other < next_nonce
                waiting = other > nonce and now - entry.received_ms > GAP_EXPIRY_MS
                if stale or (waiting and nonce not in nonces):
                    expired.append(entry.env.tx_id)
        return selected, expired

    def produce_sync(self) -> dict[str, Any] | None:
        """Build and commit one block if one is due; return its summary."""
        params = chain_params(self.writer.state)
        txs, expired = self._select()
        if expired:
            count = self.writer.expire(expired)
            for tx_id in expired:
                self.pool.remove(tx_id)
            log.info("expired pending transactions count=%d", count)
        idle_ms = (time.monotonic() - self.last_block_monotonic) * 1000
        if not txs and idle_ms < params["heartbeat_ms"]:
            return None
        timestamp = max(now_ms(), self.head["header"]["timestamp_ms"] + 1)
        block = build_block(
            self.writer.state,
            self.head["header"],
            txs,
            timestamp_ms=timestamp,
            genesis=self.genesis,
            producer_pubkey=self.key.pubkey,
            sign=self.key.sign,
        )
        self.writer.commit_block(block)
        self._record_tip(block.height, block.hash)
        for env in txs:
            self.pool.remove(env.tx_id)
        self.head = {
            "height": block.height,
            "hash": block.hash,
            "header": block.header,
            "sig": block.sig,
        }
        self.last_block_monotonic = time.monotonic()
        self.blocks_committed += 1
        return {"height": block.height, "hash": block.hash, "txs": len(txs)}

    def block_interval_s(self) -> float:
        if self.config.block_interval_ms is not None:
            return self.config.block_interval_ms / 1000
        return float(chain_params(self.writer.state)["block_interval_ms"]) / 1000

    def _record_tip(self, height: int, block_hash: str) -> None:
        # A tip file that lags behind the database is harmless: start-up
        # rejects only a database that lacks the block the file records.
        try:
            write_tip(self.config.db_path, height, block_hash)
        except OSError as exc:
            self.tip_failures += 1
            if self.tip_failures == 1 or self.tip_failures % 100 == 0:
                log.warning(
                    "tip file not written height=%d failures=%d: %s",
                    height,
                    self.tip_failures,
                    exc,
                )
            return
        if self.tip_failures:
            log.info("tip file recovered errors=%d", self.tip_failures)
            self.tip_failures = 0

    def pause_production(self, reason: str) -> None:
        """Stop block production and admission until space is free; logs once per pause."""
        if self.storage_full:
            return
        self.storage_full = True
        self.paused_at = time.monotonic()
        self.rejected_while_full = 0
        log.error(
            "block production paused: %s; writes get 503 storage_full, reads go on, "
            "retrying every %.0f s until space is free",
            reason,
            STORAGE_RETRY_S,
        )

    async def wait_for_space(self) -> None:
        """Probe for free space every ``STORAGE_RETRY_S``, then lift the pause."""
        probes = 1
        while not await trio.to_thread.run_sync(has_free_space, self.config.db_path):
            await trio.sleep(STORAGE_RETRY_S)
            probes += 1
        self.storage_full = False
        log.info(
            "block production resumed height=%d paused_s=%.1f probes=%d rejected=%d",
            self.head["height"],
            time.monotonic() - self.paused_at,
            probes,
            self.rejected_while_full,
        )

    async def block_loop(self) -> None:
        next_at = trio.current_time()
        while True:
            next_at += self.block_interval_s()
            await trio.sleep_until(max(next_at, trio.current_time()))
            if self.storage_full:
                await self.wait_for_space()
                next_at = trio.current_time()
            try:
                summary = await trio.to_thread.run_sync(
                    self.produce_sync, limiter=self.limiter
                )
            except StorageFullError as exc:
                self.pause_production(str(exc))
                continue
            if summary is not None:
                log.info(
                    "block committed height=%d txs=%d hash=%s",
                    summary["height"],
                    summary["txs"],
                    summary["hash"],
                )
                self.block_event.set()
                self.block_event = trio.Event()
            await self.fold_while_idle(next_at + self.block_interval_s())

    async def fold_while_idle(self, next_block_at: float) -> None:
        """Fold recent state into the state table, a chunk at a time, until the next block is near.

        With an empty pool the next block has nothing to include, so the
        fold may delay it by about ``FOLD_IDLE_MARGIN_S`` plus one chunk.
        That keeps the fold going on an idle node whose block interval is
        shorter than one chunk.
        """
        if self.storage_full:
            return
        started = trio.current_time()
        if self.pool:
            deadline = next_block_at
            margin = min(FOLD_IDLE_MARGIN_S, self.block_interval_s() / 2)
        else:
            deadline = max(next_block_at, started + FOLD_IDLE_MARGIN_S)
            margin = 0.0
        try:
            moved = await fold_until(
                self.writer, self.limiter, deadline, margin_s=margin
            )
        except StorageFullError as exc:
            self.pause_production(str(exc))
            return
        if moved:
            log.debug(
                "recent state folded entries=%d ms=%.0f waiting=%d height=%d",
                moved,
                (trio.current_time() - started) * 1000,
                self.writer.recent_entries,
                self.head["height"],
            )

    # -- socket ------------------------------------------------------------------------------

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "submit":
            envelopes = request.get("envelopes")
            if not isinstance(envelopes, list) or not 1 <= len(envelopes) <= MAX_BATCH:
                return {
                    "ok": False,
                    "error": {
                        "code": "invalid_request",
                        "message": "envelopes: 1 to 1000",
                    },
                }
            verified = request.get("verified") is True
            tx_ids = request.get("tx_ids")
            if tx_ids is not None and not (
                verified
                and isinstance(tx_ids, list)
                and len(tx_ids) == len(envelopes)
                and all(isinstance(tx_id, str) for tx_id in tx_ids)
            ):
                return {
                    "ok": False,
                    "error": {
                        "code": "invalid_request",
                        "message": "tx_ids: one string per envelope, only when verified",
                    },
                }
            return {
                "ok": True,
                "results": await self.submit(envelopes, verified, tx_ids),
            }
        if op == "system_tx":
            tx_type = request.get("tx_type")
            payload = request.get("payload")
            if tx_type not in (
                "IPFS_PIN_REQUEST",
                "IPFS_PIN_HEAL",
                "IPFS_PIN_CONFIRM",
            ) or not isinstance(payload, dict):
                return {
                    "ok": False,
                    "error": {
                        "code": "invalid_request",
                        "message": "system_tx: tx_type and payload",
                    },
                }
            return {"ok": True, "result": await self.submit_own(tx_type, payload)}
        if op == "status":
            return {"ok": True, **self.statistics()}
        if op == "checkpoint":
            return await self.checkpoint(request.get("mode", "PASSIVE"))
        if op == "wait_block":
            await self.block_event.wait()
            return {"ok": True, "height": self.head["height"]}
        return {
            "ok": False,
            "error": {"code": "invalid_request", "message": f"unknown op {op!r}"},
        }

    async def checkpoint(self, mode: Any) -> dict[str, Any]:
        if mode not in CHECKPOINT_MODES:
            return {
                "ok": False,
                "error": {
                    "code": "invalid_request",
                    "message": f"mode must be one of {', '.join(CHECKPOINT_MODES)}",
                },
            }
        try:
            busy, pages, done = await trio.to_thread.run_sync(
                self.checkpoint_sync, mode, limiter=self.limiter
            )
        except StorageError as exc:
            code = (
                "storage_full" if isinstance(exc, StorageFullError) else "unavailable"
            )
            return {"ok": False, "error": {"code": code, "message": str(exc)}}
        return {"ok": True, "busy": busy, "wal_pages": pages, "checkpointed": done}

    def checkpoint_sync(self, mode: str) -> tuple[int, int, int]:
        conn = self.writer.conn
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")
        try:
            return self.writer.checkpoint(mode)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def statistics(self) -> dict[str, Any]:
        return {
            "height": self.head["height"],
            "tip": self.head["hash"],
            "pool_size": len(self.pool),
            "storage_full": self.storage_full,
            "blocks_committed": self.blocks_committed,
            "recent_state_entries": self.writer.recent_entries,
            "folded_state_entries": self.writer.folded_entries,
            **self.writer.applied,
        }


def _open(config: Config) -> tuple[ProducerLock, Writer, dict[str, Any], keys.KeyPair]:
    if config.follower:
        raise StartupError(
            "WEALL_UPSTREAM_URL is set, so this node is a follower and runs the follower actor; "
            "unset it to run the producer"
        )
    lock = ProducerLock(config.lock_path)
    lock.acquire()
    try:
        document = load_genesis(config)
        key = keys.load_key_file(config.node_key_path)
        if key.pubkey != document["producer"]:
            raise StartupError(
                f"node key {config.node_key_path} is not the genesis producer key"
            )
        writer = Writer(
            config.db_path,
            synchronous=config.synchronous,
            autocheckpoint_pages=config.autocheckpoint_pages,
        )
        writer.migrate()
        stored = writer.meta()
        if stored.get("genesis_hash") != genesis_hash(document):
            writer.close()
            raise StartupError(f"database {config.db_path} holds another genesis")
        try:
            # A restarted producer skips the supervisor's start-up checks.
            check_tip(config.db_path, writer.conn)
        except StartupError:
            writer.close()
            raise
    except BaseException:
        lock.release()
        raise
    return lock, writer, document, key


async def run(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    lock, writer, document, key = _open(config)
    producer = Producer(config, writer, document, key)
    try:
        producer.load_pool()
        async with trio.open_nursery() as nursery:
            await nursery.start(ipc.serve, config.producer_socket, producer.handle)
            nursery.start_soon(producer.admission_loop)
            nursery.start_soon(producer.block_loop)
            log.info(
                "producer ready height=%d synchronous=%s",
                producer.head["height"],
                config.synchronous,
            )
            task_status.started()
            await stop_event().wait()
            log.info(
                "producer stopping height=%d pool=%d",
                producer.head["height"],
                len(producer.pool),
            )
            nursery.cancel_scope.cancel()
        # Blocks commit atomically, so a cancelled block loop leaves no half
        # block; a final PASSIVE checkpoint folds the WAL into the database.
        with trio.move_on_after(5):
            try:
                await trio.to_thread.run_sync(
                    writer.checkpoint, "PASSIVE", limiter=producer.limiter
                )
            except StorageError as exc:
                log.warning("final checkpoint failed: %s", exc)
    finally:
        writer.close()
        lock.release()
