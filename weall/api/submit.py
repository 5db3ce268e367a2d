"""Submissions from the api to the producer, coalesced into shared calls.

Every ``POST /v1/tx/submit`` and ``/v1/tx/batch`` request parses and
signature-checks its envelopes, then hands the ones that passed to
``SubmitCoalescer.submit``. At most one producer call per api process is in
flight at a time: requests that arrive meanwhile queue up, and the first of
them to get the lock sends the whole queue (up to ``MAX_BATCH`` envelopes) in
one call. The producer stores each call's admitted envelopes in one SQLite
transaction, so under load many requests share one frame, one commit and one
fsync, while a lone request still goes out at once.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from weall.errors import IpcError
from weall.ipc import IpcClient

__all__ = ["MAX_BATCH", "ProducerRejected", "SubmitCoalescer"]

log = logging.getLogger(__name__)

# The producer accepts at most this many envelopes in one call.
MAX_BATCH: Final = 1000
SUBMIT_TIMEOUT_S: Final = 30.0


class ProducerRejected(Exception):
    """The producer rejected a whole call with an error."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "producer error")))
        self.error = error


@dataclass
class _Slot:
    """One request's envelopes waiting to be sent, and the producer's results."""

    envelopes: list[Any]
    tx_ids: list[str]
    results: list[dict[str, Any]] | None = None
    failure: Exception | None = None
    done: bool = field(default=False)


class SubmitCoalescer:
    """Send envelopes to the producer, many requests per call."""

    def __init__(self, producer: IpcClient) -> None:
        self.producer = producer
        self._queue: deque[_Slot] = deque()
        # trio.Lock is fair: waiters get it in the order they requested it.
        self._lock = trio.Lock()
        self.calls = 0
        self.envelopes_sent = 0

    async def submit(
        self, envelopes: list[Any], tx_ids: list[str]
    ) -> list[dict[str, Any]]:
        """Admit ``envelopes`` (already verified, with their tx ids); one result each.

        Raises:
            IpcError: the producer could not be reached or did not respond.
            ProducerRejected: the producer rejected the call as a whole.
        """
        slot = _Slot(envelopes, tx_ids)
        self._queue.append(slot)
        async with self._lock:
            # Requests queued before this one go first; a full call may leave
            # this one for the next call.
            while not slot.done:
                await self._send_queued()
        if slot.failure is not None:
            raise slot.failure
        assert slot.results is not None
        return slot.results

    def _take_batch(self) -> list[_Slot]:
        batch: list[_Slot] = []
        count = 0
        while self._queue:
            size = len(self._queue[0].envelopes)
            if batch and count + size > MAX_BATCH:
                break
            batch.append(self._queue.popleft())
            count += size
        return batch

    async def _send_queued(self) -> None:
        batch = self._take_batch()
        envelopes = [doc for slot in batch for doc in slot.envelopes]
        tx_ids = [tx_id for slot in batch for tx_id in slot.tx_ids]
        try:
            results = await self._call(envelopes, tx_ids)
        except (IpcError, ProducerRejected) as exc:
            log.warning(
                "producer submit failed requests=%d count=%d: %s",
                len(batch),
                len(envelopes),
                exc,
            )
            self._finish(batch, failure=exc)
            return
        offset = 0
        for slot in batch:
            slot.results = results[offset : offset + len(slot.envelopes)]
            offset += len(slot.envelopes)
            slot.done = True

    async def _call(
        self, envelopes: list[Any], tx_ids: list[str]
    ) -> list[dict[str, Any]]:
        # The call carries other requests than the caller's own, so a client
        # that disconnects must not cancel it half way.
        with trio.CancelScope(shield=True):
            # verified: the producer socket is owner-only (mode 0600), so its
            # clients are this node's own actors, which checked the signatures
            # and computed the tx ids.
            response = await self.producer.call(
                "submit",
                timeout=SUBMIT_TIMEOUT_S,
                envelopes=envelopes,
                verified=True,
                tx_ids=tx_ids,
            )
        self.calls += 1
        self.envelopes_sent += len(envelopes)
        if not response.get("ok"):
            error = response.get("error")
            raise ProducerRejected(error if isinstance(error, dict) else {})
        results = response.get("results")
        if not isinstance(results, list) or len(results) != len(envelopes):
            count = len(results) if isinstance(results, list) else None
            raise IpcError(
                f"producer returned {count} results for {len(envelopes)} envelopes"
            )
        return results

    @staticmethod
    def _finish(batch: list[_Slot], *, failure: Exception) -> None:
        for slot in batch:
            slot.failure = failure
            slot.done = True
