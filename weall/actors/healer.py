"""The healer: finds pins short of replicas and has the producer reassign them.

With ``WEALL_IPFS_ENABLE_HEAL=1`` it follows the committed head over a
read-only connection, polled every ``HEAD_POLL_S``. It runs a round at start
and then at the first head it reads whose height is at least
``WEALL_IPFS_HEAL_INTERVAL_BLOCKS`` past the height of the previous round. A
round reads ``pins_with_shortfall``, judged at the next block's height as the
heal rule judges it, and submits ``IPFS_PIN_HEAL`` for each pin through the
producer socket's ``system_tx``, at most ``MAX_HEALS_PER_ROUND`` per round.
After a full round the next one continues after the last pin id it reached.
A pin whose heal is still pending is skipped. With ``WEALL_IPFS_ENABLE_HEAL=0`` it does
nothing but wait to be stopped. On a follower node it only logs shortfalls,
because only the producer signs ``IPFS_PIN_HEAL``.

Bound: let I be the heal interval in blocks and L the number of blocks
committed during one head poll plus one round (L = 1 while blocks are
slower than ``HEAD_POLL_S`` plus a round's reads). A shortfall that begins in
block h (a confirmation with ok false, a withdrawal, or a target becoming
overdue) is seen by a round at a height of at most h + I + L - 1, and the heal
is admitted before the producer builds the next block, so it is committed at
height at most h + I + L. With L = 1 that is h + I + 1, which the media
end-to-end test asserts. This holds while the producer is reachable, another
operator is eligible, and the shortfall is among the first
``MAX_HEALS_PER_ROUND`` pins of the round.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

import trio

from weall import ipc
from weall.actors._base import stop_event
from weall.actors._chain import follow_heads
from weall.config import Config
from weall.errors import IpcError, StorageError
from weall.protocol.rules.storage import pins_with_shortfall
from weall.storage import queries
from weall.storage.reader import ReadPool

__all__ = ["HealRound", "Healer", "run"]

log = logging.getLogger(__name__)

HEAD_POLL_S: Final = 0.1
MAX_HEALS_PER_ROUND: Final = 500
SUBMIT_TIMEOUT_S: Final = 30.0
# Rounds between two warnings about the same pin that cannot be healed.
REPEAT_LOG_ROUNDS: Final = 50


@dataclass(frozen=True)
class HealRound:
    """The outcome of one round."""

    height: int
    shortfalls: int
    submitted: int
    skipped_pending: int
    failed: int


def _read_shortfalls(
    conn: sqlite3.Connection, after: str | None, pending: list[str]
) -> tuple[int, list[dict[str, Any]], set[str]]:
    """Return the head height, the pins with a shortfall, and the heal txs still pending."""
    head = queries.head_header(conn)
    state = queries.SqliteState(conn)
    params = state.get("chain", "params")
    if head is None or params is None:
        return -1, [], set()
    found = pins_with_shortfall(
        state, head["height"] + 1, params, MAX_HEALS_PER_ROUND, after=after
    )
    still_pending = set()
    for tx_id in pending:
        row = queries.tx_row(conn, tx_id)
        if row is not None and row["status"] == "pending":
            still_pending.add(tx_id)
    return head["height"], found, still_pending


class Healer:
    """Runs heal rounds against one database and one producer socket."""

    def __init__(
        self, config: Config, pool: ReadPool, producer: ipc.IpcClient | None
    ) -> None:
        self.interval = config.ipfs_heal_interval_blocks
        self.pool = pool
        self.producer = producer
        self.last_round: int | None = None
        self.cursor: str | None = None
        # pin id -> tx id of its heal admitted and not yet committed
        self.in_flight: dict[str, str] = {}
        self.unhealable: dict[str, int] = {}
        self.rounds = 0

    def due(self, height: int) -> bool:
        return self.last_round is None or height >= self.last_round + self.interval

    async def round(self, height: int) -> HealRound | None:
        """Run one round; ``None`` when the database could not be read."""
        try:
            read_height, found, pending = await self.pool.run(
                lambda conn: _read_shortfalls(
                    conn, self.cursor, list(self.in_flight.values())
                )
            )
        except StorageError as exc:
            log.warning("heal round skipped height=%d error=%s", height, exc)
            return None
        self.last_round = max(height, read_height)
        self.rounds += 1
        self.in_flight = {p: t for p, t in self.in_flight.items() if t in pending}
        self.cursor = found[-1]["pin_id"] if len(found) == MAX_HEALS_PER_ROUND else None

        submitted = skipped = failed = 0
        for status in found:
            if status["pin_id"] in self.in_flight:
                skipped += 1
                continue
            if await self._heal(status):
                submitted += 1
            else:
                failed += 1

        # Forget pins that healed or left the shortfall list, so the map stays bounded.
        listed = {status["pin_id"] for status in found}
        self.unhealable = {p: r for p, r in self.unhealable.items() if p in listed}
        outcome = HealRound(self.last_round, len(found), submitted, skipped, failed)
        if found:
            log.info(
                "heal round height=%d shortfalls=%d submitted=%d pending=%d failed=%d",
                outcome.height,
                outcome.shortfalls,
                submitted,
                skipped,
                failed,
            )
        return outcome

    async def _heal(self, status: dict[str, Any]) -> bool:
        pin_id = status["pin_id"]
        bad = [
            t["operator"]
            for t in status["targets"]
            if t["state"] not in ("ok", "pending")
        ]
        if self.producer is None:
            log.info(
                "pin shortfall pin_id=%s cid=%s bad_targets=%s (a follower does not heal)",
                pin_id,
                status["cid"],
                ",".join(bad),
            )
            return False
        try:
            answer = await self.producer.call(
                "system_tx",
                timeout=SUBMIT_TIMEOUT_S,
                tx_type="IPFS_PIN_HEAL",
                payload={"pin_id": pin_id},
            )
        except IpcError as exc:
            self._log_failure(pin_id, status["cid"], "unavailable", str(exc))
            return False
        result = answer.get("result") if answer.get("ok") else answer
        result = result if isinstance(result, dict) else {}
        if result.get("ok"):
            self.in_flight[pin_id] = str(result.get("tx_id"))
            self.unhealable.pop(pin_id, None)
            log.info(
                "heal submitted pin_id=%s cid=%s bad_targets=%s tx_id=%s",
                pin_id,
                status["cid"],
                ",".join(bad),
                result.get("tx_id"),
            )
            return True
        error = result.get("error") or {}
        self._log_failure(
            pin_id, status["cid"], error.get("code"), error.get("message")
        )
        return False

    def _log_failure(
        self, pin_id: str, cid: str, code: object, message: object
    ) -> None:
        first_round = self.unhealable.setdefault(pin_id, self.rounds)
        if (self.rounds - first_round) % REPEAT_LOG_ROUNDS == 0:
            log.warning(
                "heal not submitted pin_id=%s cid=%s code=%s error=%s",
                pin_id,
                cid,
                code,
                message,
            )


async def _follow(healer: Healer, config: Config) -> None:
    async for head in follow_heads(config, healer.pool, poll_s=HEAD_POLL_S):
        height = int(head["height"])
        if healer.due(height):
            await healer.round(height)


async def run(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    if not config.ipfs_enable_heal:
        log.info("healing disabled (WEALL_IPFS_ENABLE_HEAL=0); idle")
        task_status.started()
        await stop_event().wait()
        return
    pool = ReadPool(config.db_path, threads=1)
    log.info(
        "healer started interval_blocks=%d follower=%s",
        config.ipfs_heal_interval_blocks,
        config.follower,
    )
    try:
        if config.follower:
            task_status.started()
            await _follow(Healer(config, pool, None), config)
            return
        async with ipc.open_client(config.producer_socket) as producer:
            task_status.started()
            await _follow(Healer(config, pool, producer), config)
    finally:
        pool.close()
