"""The follower: the only writer of a follower node's database.

A follower node (``WEALL_UPSTREAM_URL`` set) runs this actor in the
producer's place. It holds the producer lock on its own database, pulls the
upstream's blocks, verifies each one by replaying its transactions
(``weall.follow.sync``) and commits it. It serves the producer socket's
operations, so the other actors run unchanged:

``status``
    height, tip, sync state, the upstream's height and any rejection.
``checkpoint``
    a WAL checkpoint between blocks, as the producer runs it.
``wait_block``
    waits until the next block is committed.
``submit``
    forwards envelopes to the upstream's ``/v1/tx/batch``.
``system_tx``
    signs an ``IPFS_PIN_CONFIRM`` (or a pin request for itself) with the
    operator key and submits it to the upstream. ``IPFS_PIN_HEAL`` is
    rejected, because only the producer signs it.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import trio

from weall import ipc
from weall.actors._base import stop_event
from weall.bootstrap import load_genesis
from weall.config import Config
from weall.errors import StartupError, StorageError, StorageFullError, UpstreamError
from weall.follow.operator import OperatorSigner, batch_results
from weall.follow.sync import Syncer
from weall.follow.upstream import UpstreamClient
from weall.protocol import keys
from weall.protocol.genesis import genesis_hash
from weall.storage.db import BUSY_TIMEOUT_MS, check_tip
from weall.storage.lock import ProducerLock
from weall.storage.writer import Writer

__all__ = ["Follower", "run"]

log = logging.getLogger(__name__)

MAX_BATCH: Final = 1000
CHECKPOINT_MODES: Final = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")
CHECKPOINT_BUSY_TIMEOUT_MS: Final = 50


def _invalid(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "invalid_request", "message": message}}


class Follower:
    """The socket operations of the follower actor, around one ``Syncer``."""

    def __init__(
        self,
        config: Config,
        writer: Writer,
        genesis_doc: dict[str, Any],
        client: UpstreamClient,
        key: keys.KeyPair | None,
    ) -> None:
        self.writer = writer
        self.client = client
        self.limiter = trio.CapacityLimiter(1)
        self.syncer = Syncer(config, writer, genesis_doc, client, self.limiter)
        self.operator = OperatorSigner(key, genesis_doc["chain_id"], client)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {
                "ok": True,
                "role": "follower",
                "pool_size": 0,
                "recent_state_entries": self.writer.recent_entries,
                "folded_state_entries": self.writer.folded_entries,
                **self.syncer.statistics(),
                **self.writer.applied,
            }
        if op == "checkpoint":
            return await self._checkpoint(str(request.get("mode", "PASSIVE")))
        if op == "wait_block":
            await self.syncer.block_event.wait()
            return {"ok": True, "height": self.syncer.head["height"]}
        if op == "submit":
            return await self._submit(request.get("envelopes"))
        if op == "system_tx":
            return await self.operator.submit(
                request.get("tx_type"), request.get("payload")
            )
        return _invalid(f"unknown op {op!r}")

    async def _checkpoint(self, mode: str) -> dict[str, Any]:
        if mode not in CHECKPOINT_MODES:
            return _invalid(
                f"checkpoint mode must be one of {', '.join(CHECKPOINT_MODES)}"
            )
        try:
            busy, pages, done = await trio.to_thread.run_sync(
                self._checkpoint_sync, mode, limiter=self.limiter
            )
        except StorageError as exc:
            log.warning("checkpoint failed mode=%s: %s", mode, exc)
            code = (
                "storage_full" if isinstance(exc, StorageFullError) else "unavailable"
            )
            return {"ok": False, "error": {"code": code, "message": str(exc)}}
        return {"ok": True, "busy": busy, "wal_pages": pages, "checkpointed": done}

    def _checkpoint_sync(self, mode: str) -> tuple[int, int, int]:
        # A short busy timeout, as on the producer: a reader holding an old
        # snapshot makes the checkpoint report busy instead of stalling the sync.
        conn = self.writer.conn
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")
        try:
            return self.writer.checkpoint(mode)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    async def _submit(self, envelopes: Any) -> dict[str, Any]:
        if not isinstance(envelopes, list) or not 1 <= len(envelopes) <= MAX_BATCH:
            return _invalid(f"envelopes: 1 to {MAX_BATCH}")
        try:
            status, document = await self.client.post_json(
                "/v1/tx/batch", {"envelopes": envelopes}
            )
        except UpstreamError as exc:
            log.warning("forward to upstream failed count=%d: %s", len(envelopes), exc)
            return {
                "ok": False,
                "error": {
                    "code": "unavailable",
                    "message": "the upstream is not reachable; retry shortly",
                },
            }
        return batch_results(status, document)


def _open(config: Config) -> tuple[ProducerLock, Writer, dict[str, Any]]:
    if config.upstream_url is None:
        raise StartupError(
            "the follower actor needs WEALL_UPSTREAM_URL, the node it follows"
        )
    lock = ProducerLock(config.lock_path)
    lock.acquire()
    try:
        document = load_genesis(config)
        if not config.db_path.exists():
            raise StartupError(
                f"database {config.db_path} not found; `weall supervise` creates it on a "
                "follower's first start"
            )
        writer = Writer(
            config.db_path,
            synchronous=config.synchronous,
            autocheckpoint_pages=config.autocheckpoint_pages,
        )
        writer.migrate()
        if writer.meta().get("genesis_hash") != genesis_hash(document):
            writer.close()
            raise StartupError(
                f"database {config.db_path} is of another chain than the genesis document "
                f"{config.genesis_path}; set WEALL_GENESIS_PATH to that chain's document"
            )
        try:
            # A restarted follower skips the supervisor's start-up checks.
            check_tip(config.db_path, writer.conn)
        except StartupError:
            writer.close()
            raise
    except BaseException:
        lock.release()
        raise
    return lock, writer, document


def _operator_key(config: Config) -> keys.KeyPair | None:
    """Load the operator key, or return ``None`` when this node has none."""
    if not config.node_key_path.exists():
        log.info(
            "no operator key path=%s; operator transactions are off",
            config.node_key_path,
        )
        return None
    key = keys.load_key_file(config.node_key_path)
    log.info(
        "operator key loaded path=%s account=%s", config.node_key_path, key.account
    )
    return key


async def run(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    lock, writer, document = _open(config)
    assert config.upstream_url is not None
    client = UpstreamClient(config.upstream_url)
    try:
        follower = Follower(config, writer, document, client, _operator_key(config))
        async with trio.open_nursery() as nursery:
            await nursery.start(ipc.serve, config.producer_socket, follower.handle)
            nursery.start_soon(follower.syncer.run)
            log.info(
                "follower ready height=%d upstream=%s synchronous=%s",
                follower.syncer.head["height"],
                config.upstream_url,
                config.synchronous,
            )
            task_status.started()
            await stop_event().wait()
            log.info("follower stopping height=%d", follower.syncer.head["height"])
            nursery.cancel_scope.cancel()
        # Blocks commit atomically, so a cancelled sync leaves no half block.
        with trio.move_on_after(5):
            await trio.to_thread.run_sync(
                writer.checkpoint, "PASSIVE", limiter=follower.limiter
            )
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
        writer.close()
        lock.release()
