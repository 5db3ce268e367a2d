"""The pinner: pins what the state assigns to its operator account, and confirms it.

It runs in one of two modes:

- in a node (``WEALL_PINNER_NODE_URL`` unset): the operator account is the
  account of the node key (``WEALL_NODE_KEY_PATH``; ``@node`` in dev). It
  reads its assignments from the database and confirms through the producer
  socket's ``system_tx``, which the producer signs with that same key (a
  follower signs with its operator key). Content comes from the node's own
  backend: the api's uploads for ``local``, the IPFS network for ``kubo``.
- standalone (``WEALL_PINNER_NODE_URL`` set, ``weall actor pinner``): the
  operator key and the IPFS store (``ipfs/`` beside ``WEALL_DB_PATH``, which
  need not exist, or a Kubo daemon) are its own.
  It reads ``GET /v1/operators/{id}/pins``, fetches content it lacks from
  ``GET /v1/media/{cid}``, adds it and checks that the CID matches, and signs
  and submits its confirmations itself (``weall.media.remote``).

Every ``WEALL_PINNER_POLL_S`` it reads the whole list of its assignments,
so a poll costs in proportion to the pins assigned to the operator, and it
handles each pin that is due:

- not confirmed yet: pin it, then submit ``IPFS_PIN_CONFIRM`` with ok true.
  A failure is retried with capped exponential backoff (``RETRY_FIRST_S``
  doubling to ``RETRY_MAX_S``). Bytes that do not hash to the assigned CID
  are confirmed ok false at once, because fetching them again gives the same
  bytes. Content found nowhere is never confirmed, and the target becomes
  overdue after ``pin_confirm_timeout_blocks``.
- confirmed ok: checked every ``WEALL_PIN_RECHECK_S`` (and once at start).
  When the backend no longer lists the pin or its root block, the pinner
  confirms ok false and leaves the pin to the healer. A backend that cannot
  be asked (an ``IpfsError``) is logged and never reported as a loss.
- confirmed not ok: left alone until a heal releases it.

An accepted confirmation is not sent again while its transaction is
pending, for at most ``CONFIRM_RESEND_S``.

Unpinning: the pinner records each CID it pins in a ``PinLedger``
(``pinner/pins-<account>.json`` beside ``WEALL_DB_PATH``). When a poll finds
a recorded CID that no current assignment of the operator names (a heal
released the target, or replaced a withdrawn operator), it notes the time,
and ``WEALL_PIN_UNPIN_GRACE_S`` later it unpins the CID and logs it. A CID
assigned again within the grace period stays pinned. A CID that was already
pinned when the pinner came to pin it (by the api's
``WEALL_IPFS_PIN_ON_UPLOAD``, or by hand) is never unpinned. Releases are
looked for only while the operator account exists on the chain, so a
pinner pointed at the wrong node unpins nothing. Assignments that this
operator confirmed before the ledger existed are added to it at first
sight, except in a node with ``WEALL_IPFS_PIN_ON_UPLOAD=1``, where they may
be the api's pins. Unpinning frees no space in the ``local`` backend, which
never deletes blocks, while Kubo frees it at its next garbage collection.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from weall import ipc
from weall.actors._base import stop_event
from weall.config import Config
from weall.errors import IpfsError, StartupError
from weall.ipfs import IpfsBackend, open_backend
from weall.ipfs.unixfs import parse_cid
from weall.media.backoff import Backoff
from weall.media.chain import Assignments, DbPinSource, PinSource, SourceError
from weall.media.ledger import PinLedger
from weall.media.remote import HttpPinSource, NodeClient
from weall.protocol import keys
from weall.storage.reader import ReadPool

__all__ = ["PinStatistics", "Pinner", "run"]

log = logging.getLogger(__name__)

RETRY_FIRST_S: Final = 1.0
RETRY_MAX_S: Final = 60.0
POLL_RETRY_MAX_S: Final = 30.0
CONFIRM_RESEND_S: Final = 60.0
# Pins worked on at once, so one slow fetch does not hold up the others.
PIN_CONCURRENCY: Final = 4
# Bound of one pin's fetch, add and pin; Kubo's own pin timeout is 600 s.
WORK_TIMEOUT_S: Final = 900.0


class CidMismatchError(Exception):
    """The fetched bytes hash to another CID than the one assigned."""


@dataclass
class _PinState:
    """State that this process keeps for one assigned pin."""

    pin_id: str
    cid: str
    backoff: Backoff = field(
        default_factory=lambda: Backoff(RETRY_FIRST_S, RETRY_MAX_S)
    )
    retry_at: float = 0.0
    # The confirmation accepted by the node and not yet seen in the state.
    sent_ok: bool | None = None
    sent_tx: str | None = None
    sent_at: float = 0.0
    checked_at: float = -math.inf


@dataclass(frozen=True)
class PinStatistics:
    """Counters of one pinner since it started."""

    assigned: int
    confirmed_ok: int
    confirmed_lost: int
    failures: int
    unpinned: int


@dataclass(frozen=True)
class Unpinning:
    """The settings and ledger with which a pinner undoes pins that the chain released."""

    ledger: PinLedger
    grace_s: float
    # Whether confirmed pins missing from the ledger are taken as this pinner's.
    adopt_confirmed: bool


class Pinner:
    """Pins the assignments of one operator account and confirms them."""

    def __init__(
        self,
        backend: IpfsBackend,
        source: PinSource,
        account: str,
        *,
        poll_s: float,
        recheck_s: float,
        unpinning: Unpinning,
    ) -> None:
        self.backend = backend
        self.source = source
        self.account = account
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self.unpinning = unpinning
        self.ledger = unpinning.ledger
        self.pins: dict[str, _PinState] = {}
        self.active: bool | None = None
        self._limiter = trio.CapacityLimiter(PIN_CONCURRENCY)
        self._ledger_lock = trio.Lock()
        self._confirmed_ok = 0
        self._confirmed_lost = 0
        self._failures = 0
        self._unpinned = 0

    def statistics(self) -> PinStatistics:
        return PinStatistics(
            assigned=len(self.pins),
            confirmed_ok=self._confirmed_ok,
            confirmed_lost=self._confirmed_lost,
            failures=self._failures,
            unpinned=self._unpinned,
        )

    async def run_loop(self) -> None:
        """Poll every ``poll_s`` until the actor stops; back off while the chain is unreachable."""
        backoff = Backoff(self.poll_s, POLL_RETRY_MAX_S)
        while not stop_event().is_set():
            delay = self.poll_s
            try:
                await self.poll_once()
            except SourceError as exc:
                delay = backoff.fail()
                if backoff.should_log():
                    log.warning(
                        "pinner poll failed account=%s attempt=%d retry_in=%.1f error=%s",
                        self.account,
                        backoff.failures,
                        delay,
                        exc,
                    )
            else:
                errors = backoff.succeed()
                if errors:
                    log.info(
                        "pinner poll recovered account=%s errors=%d",
                        self.account,
                        errors,
                    )
            with trio.move_on_after(delay):
                await stop_event().wait()

    async def poll_once(self) -> None:
        """Read the assignments once and work on every pin that is due.

        Raises:
            SourceError: the assignments could not be read.
        """
        assignments = await self.source.assignments(self.account)
        self._note_role(assignments.exists, assignments.active)
        current = {entry["pin_id"]: entry for entry in assignments.pins}
        for pin_id in [p for p in self.pins if p not in current]:
            state = self.pins.pop(pin_id)
            log.info("pin released pin_id=%s cid=%s", pin_id, state.cid)
        if assignments.exists:
            await self._unpin_released(assignments)
        now = trio.current_time()
        async with trio.open_nursery() as nursery:
            for pin_id, entry in current.items():
                if pin_id not in self.pins:
                    self.pins[pin_id] = _PinState(pin_id, entry["cid"])
                    log.info(
                        "pin assigned pin_id=%s cid=%s size_bytes=%s height=%s",
                        pin_id,
                        entry["cid"],
                        entry["size_bytes"],
                        entry["assigned_height"],
                    )
                if self._is_due(entry, self.pins[pin_id], now):
                    nursery.start_soon(self._work, entry, self.pins[pin_id])

    async def _unpin_released(self, assignments: Assignments) -> None:
        """Note ledger CIDs that no assignment names, and unpin those released long enough."""
        assigned = {parse_cid(entry["cid"]) for entry in assignments.pins}
        if self.unpinning.adopt_confirmed:
            for entry in assignments.pins:
                if entry["ok"] is True:
                    self.ledger.record(parse_cid(entry["cid"]), owned=True)
        now_ms = int(time.time() * 1000)
        grace_ms = self.unpinning.grace_s * 1000
        due = []
        for cid, held in self.ledger.pins.items():
            if cid in assigned:
                if held.released_at_ms is not None:
                    self.ledger.clear_released(cid)
                    log.info("pin assigned again cid=%s; it stays pinned", cid)
            elif held.released_at_ms is None:
                self.ledger.mark_released(cid, now_ms)
                log.info(
                    "pin no longer assigned cid=%s account=%s unpin_in_s=%.0f",
                    cid,
                    self.account,
                    self.unpinning.grace_s,
                )
            elif now_ms - held.released_at_ms >= grace_ms:
                due.append(cid)
        for cid in due:
            await self._unpin(cid, now_ms)
        await self._save_ledger()

    async def _unpin(self, cid: str, now_ms: int) -> None:
        held = self.ledger.pins[cid]
        released_s = (now_ms - (held.released_at_ms or now_ms)) / 1000
        if not held.owned:
            log.info(
                "released pin left in place cid=%s: it was pinned before this pinner pinned it",
                cid,
            )
            self.ledger.remove(cid)
            return
        try:
            await self.backend.unpin(cid)
        except IpfsError as exc:
            log.warning("unpin failed cid=%s; retrying at the next poll: %s", cid, exc)
            return
        self.ledger.remove(cid)
        self._unpinned += 1
        log.info(
            "unpinned released content cid=%s account=%s released_s=%.1f",
            cid,
            self.account,
            released_s,
        )

    async def _save_ledger(self) -> None:
        # Pins are worked on concurrently, and two writes would share one
        # temporary file.
        async with self._ledger_lock:
            text = self.ledger.take_changes()
            if text is None:
                return
            try:
                await trio.to_thread.run_sync(self.ledger.write, text)
            except OSError as exc:
                self.ledger.keep_unsaved()
                log.warning(
                    "pin ledger not saved path=%s error=%s", self.ledger.path, exc
                )

    def _is_due(self, entry: dict[str, Any], state: _PinState, now: float) -> bool:
        """Return whether a pin needs work now, so that idle pins cost no task."""
        if state.sent_ok is not None:
            return True
        if entry["ok"] is None:
            return now >= state.retry_at
        if entry["ok"] is True:
            return now - state.checked_at >= self.recheck_s
        return False

    def _note_role(self, exists: bool, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        if active:
            log.info("pinner serving operator account=%s", self.account)
        elif not exists:
            log.warning(
                "pinner account does not exist on the chain account=%s", self.account
            )
        else:
            log.info("pinner account lacks role node_operator account=%s", self.account)

    async def _work(self, entry: dict[str, Any], state: _PinState) -> None:
        async with self._limiter:
            if state.sent_ok is not None and not await self._settle_sent(entry, state):
                return
            with trio.move_on_after(WORK_TIMEOUT_S) as scope:
                if entry["ok"] is None:
                    await self._pin_and_confirm(state)
                elif entry["ok"] is True:
                    await self._recheck(state)
            if scope.cancelled_caught:
                self._retry_later(state, f"timed out after {WORK_TIMEOUT_S} s")

    async def _settle_sent(self, entry: dict[str, Any], state: _PinState) -> bool:
        """Return whether the pin may be worked on, given the confirmation in flight."""
        if entry["ok"] == state.sent_ok:
            log.info(
                "pin confirmation committed pin_id=%s cid=%s ok=%s tx_id=%s",
                state.pin_id,
                state.cid,
                state.sent_ok,
                state.sent_tx,
            )
            if state.sent_ok:
                state.checked_at = trio.current_time()
            self._clear_sent(state)
            return False
        if (
            trio.current_time() - state.sent_at < CONFIRM_RESEND_S
            and state.sent_tx is not None
        ):
            try:
                status = await self.source.tx_status(state.sent_tx)
            except SourceError:
                return False
            if status in (None, "pending"):
                return False
            log.info(
                "pin confirmation not applied pin_id=%s tx_id=%s status=%s",
                state.pin_id,
                state.sent_tx,
                status,
            )
        self._clear_sent(state)
        return True

    @staticmethod
    def _clear_sent(state: _PinState) -> None:
        state.sent_ok = None
        state.sent_tx = None

    def _retry_later(self, state: _PinState, error: object) -> None:
        self._failures += 1
        delay = state.backoff.fail()
        state.retry_at = trio.current_time() + delay
        if state.backoff.should_log():
            log.warning(
                "pin failed pin_id=%s cid=%s attempt=%d retry_in=%.1f error=%s",
                state.pin_id,
                state.cid,
                state.backoff.failures,
                delay,
                error,
            )

    async def _pin_and_confirm(self, state: _PinState) -> None:
        if trio.current_time() < state.retry_at:
            return
        try:
            await self._note_pinning(state.cid)
            await self._acquire(state.cid)
        except CidMismatchError as exc:
            log.warning(
                "pin content mismatch pin_id=%s cid=%s error=%s",
                state.pin_id,
                state.cid,
                exc,
            )
            await self._send(state, ok=False)
            return
        except (IpfsError, SourceError) as exc:
            self._retry_later(state, exc)
            return
        errors = state.backoff.succeed()
        if errors:
            log.info(
                "pin recovered pin_id=%s cid=%s errors=%d",
                state.pin_id,
                state.cid,
                errors,
            )
        await self._send(state, ok=True)

    async def _note_pinning(self, cid: str) -> None:
        """Record ``cid`` in the ledger before pinning it, so that a crash after the pin leaves it recorded.

        Raises:
            IpfsError: the backend could not tell whether the CID is pinned.
        """
        normalized = parse_cid(cid)
        if normalized in self.ledger:
            return
        already = await self.backend.is_pinned(normalized)
        self.ledger.record(normalized, owned=not already)
        await self._save_ledger()

    async def _acquire(self, cid: str) -> None:
        """Make the backend hold ``cid`` pinned, fetching it from the node when the source can.

        Raises:
            IpfsError: the backend failed, or has not got the content.
            SourceError: the node could not send the content.
            CidMismatchError: the node's bytes hash to another CID.
        """
        opener = self.source.open_media(cid)
        if opener is None or await self.backend.has(cid):
            try:
                await self.backend.pin(cid)
                return
            except IpfsError as exc:
                # A stored root with missing blocks below it: fetch it whole.
                if opener is None or exc.code != "not_found":
                    raise
        async with opener as chunks:
            result = await self.backend.add(chunks, pin=False)
        if result.cid != parse_cid(cid):
            raise CidMismatchError(f"the node's bytes have CID {result.cid}")
        await self.backend.pin(cid)

    async def _is_kept(self, cid: str) -> bool:
        return await self.backend.is_pinned(cid) and await self.backend.has(cid)

    async def _recheck(self, state: _PinState) -> None:
        now = trio.current_time()
        if now - state.checked_at < self.recheck_s:
            return
        state.checked_at = now
        try:
            still_pinned = await self._is_kept(state.cid)
        except IpfsError as exc:
            log.warning(
                "pin check failed pin_id=%s cid=%s error=%s",
                state.pin_id,
                state.cid,
                exc,
            )
            return
        if not still_pinned:
            log.warning(
                "pin lost pin_id=%s cid=%s; confirming ok=false",
                state.pin_id,
                state.cid,
            )
            await self._send(state, ok=False)

    async def _send(self, state: _PinState, *, ok: bool) -> None:
        try:
            result = await self.source.confirm(state.pin_id, ok)
        except SourceError as exc:
            self._retry_later(state, f"confirm not submitted: {exc}")
            return
        error = result.get("error") or {}
        code = error.get("code")
        if result.get("ok"):
            state.sent_ok, state.sent_tx = ok, result.get("tx_id")
            state.sent_at = trio.current_time()
            if ok:
                self._confirmed_ok += 1
            else:
                self._confirmed_lost += 1
            log.info(
                "pin confirm submitted pin_id=%s cid=%s ok=%s tx_id=%s",
                state.pin_id,
                state.cid,
                ok,
                state.sent_tx,
            )
        elif code == "conflict":
            # The state already records this report.
            log.debug("pin confirm already recorded pin_id=%s ok=%s", state.pin_id, ok)
        elif code in ("not_assigned", "not_found"):
            log.info(
                "pin no longer assigned pin_id=%s cid=%s code=%s",
                state.pin_id,
                state.cid,
                code,
            )
        else:
            self._retry_later(
                state, f"confirm rejected: {code}: {error.get('message')}"
            )


def _unpinning(config: Config, account: str, *, adopt_confirmed: bool) -> Unpinning:
    path = config.data_dir / "pinner" / f"pins-{account.lstrip('@')}.json"
    return Unpinning(
        ledger=PinLedger.load(path, account),
        grace_s=config.pin_unpin_grace_s,
        adopt_confirmed=adopt_confirmed,
    )


def _explicit_chain_id(config: Config) -> str | None:
    return config.chain_id if config.extra.get("WEALL_CHAIN_ID") else None


async def _idle(task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await stop_event().wait()


async def _run_in_node(config: Config, task_status: trio.TaskStatus[None]) -> None:
    key = keys.load_key_file(config.node_key_path, require_private=False)
    if key.account is None:
        log.warning("pinner idle: node key %s names no account", config.node_key_path)
        await _idle(task_status)
        return
    pool = ReadPool(config.db_path, threads=2)
    try:
        async with (
            ipc.open_client(config.producer_socket) as producer,
            open_backend(config) as backend,
        ):
            pinner = Pinner(
                backend,
                DbPinSource(pool, producer),
                key.account,
                poll_s=config.pinner_poll_s,
                recheck_s=config.pin_recheck_s,
                # With pins on upload, the api's pins share this store.
                unpinning=_unpinning(
                    config,
                    key.account,
                    adopt_confirmed=not config.ipfs_pin_on_upload,
                ),
            )
            log.info(
                "pinner started mode=node account=%s backend=%s poll_s=%s recheck_s=%s "
                "unpin_grace_s=%s",
                key.account,
                config.ipfs_backend,
                config.pinner_poll_s,
                config.pin_recheck_s,
                config.pin_unpin_grace_s,
            )
            task_status.started()
            await pinner.run_loop()
    finally:
        pool.close()


async def _run_standalone(config: Config, task_status: trio.TaskStatus[None]) -> None:
    assert config.pinner_node_url is not None
    key = keys.load_key_file(config.node_key_path)
    if key.account is None:
        raise StartupError(
            f"operator key {config.node_key_path} names no account; a standalone pinner "
            "signs its confirmations, so set WEALL_NODE_KEY_PATH to an account's key file"
        )
    client = NodeClient(config.pinner_node_url)
    try:
        async with open_backend(config) as backend:
            source = HttpPinSource(
                client, key, expected_chain_id=_explicit_chain_id(config)
            )
            pinner = Pinner(
                backend,
                source,
                key.account,
                poll_s=config.pinner_poll_s,
                recheck_s=config.pin_recheck_s,
                unpinning=_unpinning(config, key.account, adopt_confirmed=True),
            )
            log.info(
                "pinner started mode=standalone account=%s node_url=%s backend=%s poll_s=%s "
                "recheck_s=%s unpin_grace_s=%s",
                key.account,
                config.pinner_node_url,
                config.ipfs_backend,
                config.pinner_poll_s,
                config.pin_recheck_s,
                config.pin_unpin_grace_s,
            )
            task_status.started()
            await pinner.run_loop()
    finally:
        await client.aclose()


async def run(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    if config.pinner_node_url is not None:
        await _run_standalone(config, task_status)
    else:
        await _run_in_node(config, task_status)
