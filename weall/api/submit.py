"""The submission routes, ``POST /v1/tx/submit`` and ``POST /v1/tx/batch``.

- ``SubmitService`` takes a request body to its reply: strict JSON, then
  each envelope's shape, chain id and signature, then the producer.
- ``SubmitCoalescer`` sends the envelopes that passed to the producer. At
  most one producer call per api process is in flight at a time: requests
  that arrive meanwhile queue up, and the first of them to get the lock
  sends the whole queue (up to ``MAX_BATCH`` envelopes) in one call. The
  producer stores each call's admitted envelopes in one SQLite transaction,
  so under load many requests share one frame, one commit and one fsync,
  while a lone request still goes out at once.
- ``SubmitEndpoint`` serves the two routes at the ASGI layer, ahead of
  Quart, with the same service.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import orjson
import trio

from weall.api.limits import AsgiApp, Message, Receive, Send
from weall.errors import HTTP_STATUS, IpcError, ProtocolError, TxRejected
from weall.ipc import IpcClient
from weall.protocol import canonical
from weall.protocol.envelope import parse_envelope

__all__ = [
    "MAX_BATCH",
    "ROUTES",
    "ProducerRejected",
    "Reply",
    "SubmitCoalescer",
    "SubmitEndpoint",
    "SubmitService",
    "check_envelopes",
    "error_reply",
]

log = logging.getLogger(__name__)

# The producer accepts at most this many envelopes in one call, and a batch
# request may list at most this many.
MAX_BATCH: Final = 1000
SUBMIT_TIMEOUT_S: Final = 30.0
SUBMIT_PATH: Final = "/v1/tx/submit"
BATCH_PATH: Final = "/v1/tx/batch"
ROUTES: Final = frozenset({SUBMIT_PATH, BATCH_PATH})
# Batches up to this size have their signatures checked on the event loop.
INLINE_CHECKS: Final = 4
STORAGE_FULL_RETRY_AFTER_S: Final = 5


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


@dataclass(frozen=True)
class Reply:
    """An HTTP response of a submission route: status, JSON document, extra headers."""

    status: int
    document: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        return orjson.dumps(self.document)


def error_reply(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Reply:
    return Reply(
        status,
        {
            "ok": False,
            "error": {"code": code, "message": message, "details": details or {}},
        },
    )


def _failure(exc: ProtocolError) -> dict[str, Any]:
    return {
        "ok": False,
        "http": exc.http_status,
        "error": {"code": exc.code, "message": exc.message, "details": exc.details},
    }


def check_envelopes(
    envelopes: list[Any], *, allow_unsigned: bool, chain_id: str
) -> list[dict[str, Any] | str]:
    """Check shape, chain id and signature of each envelope.

    Returns, for each envelope, its tx id where it passed, or its error
    result where it failed. The chain id is checked before the signature, in
    the protocol's admission order, so an envelope of another chain is
    ``wrong_chain`` even when its signature is bad too. The envelopes come
    from ``canonical.loads_strict``, so their values are not checked again.
    """
    outcomes: list[dict[str, Any] | str] = []
    for envelope in envelopes:
        try:
            env = parse_envelope(envelope, allow_unsigned=allow_unsigned, checked=True)
            if env.chain_id != chain_id:
                raise TxRejected(
                    "wrong_chain", f"chain_id {env.chain_id!r} is not {chain_id!r}"
                )
            if env.sig is not None or not allow_unsigned:
                env.verify_signature()
        except ProtocolError as exc:
            outcomes.append(_failure(exc))
        else:
            outcomes.append(env.tx_id)
    return outcomes


class SubmitService:
    """``POST /v1/tx/submit`` and ``POST /v1/tx/batch`` from the body to the reply.

    Framework-free, so that the Quart routes and ``SubmitEndpoint`` share it.
    ``chain_id`` returns the chain id of the stored genesis, or ``None``
    while the database is not ready.
    """

    def __init__(
        self,
        coalescer: SubmitCoalescer,
        *,
        allow_unsigned: bool,
        chain_id: Callable[[], Awaitable[str | None]],
    ) -> None:
        self.coalescer = coalescer
        self.allow_unsigned = allow_unsigned
        self.chain_id = chain_id

    async def handle(self, path: str, body: bytes) -> Reply:
        """Return the reply to a POST of ``body`` to ``path`` (one of ``ROUTES``)."""
        try:
            document = canonical.loads_strict(body)
        except ProtocolError as exc:
            return error_reply(exc.http_status, exc.code, exc.message, exc.details)
        if path == SUBMIT_PATH:
            envelopes = [document]
        else:
            listed = (
                document.get("envelopes") if isinstance(document, dict) else document
            )
            if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_BATCH:
                return error_reply(
                    400, "invalid_request", f"body must list 1 to {MAX_BATCH} envelopes"
                )
            envelopes = listed
        chain_id = await self.chain_id()
        if chain_id is None:
            return error_reply(503, "unavailable", "the chain is not initialised yet")
        try:
            results = await self._forward(envelopes, chain_id)
        except IpcError:
            return error_reply(
                503, "unavailable", "the producer is not reachable; retry shortly"
            )
        except ProducerRejected as exc:
            code = str(exc.error.get("code", "unavailable"))
            return error_reply(
                503 if code == "unavailable" else HTTP_STATUS.get(code, 400),
                code,
                str(exc.error.get("message", "producer error")),
            )
        if path == SUBMIT_PATH:
            return self._single_reply(results[0])
        documents = []
        for result in results:
            status = int(result.pop("http", 400))
            documents.append({**result, "http_status": status})
        return Reply(200, {"ok": True, "results": documents})

    @staticmethod
    def _single_reply(result: dict[str, Any]) -> Reply:
        status = int(result.pop("http", 400))
        if result.get("error", {}).get("code") == "storage_full":
            # A full disk stays full until an operator frees space, so
            # clients should retry at a slow pace.
            return Reply(
                status, result, (("Retry-After", str(STORAGE_FULL_RETRY_AFTER_S)),)
            )
        return Reply(status, result)

    async def _forward(
        self, envelopes: list[Any], chain_id: str
    ) -> list[dict[str, Any]]:
        if len(envelopes) <= INLINE_CHECKS:
            # A thread hop costs more than a few signature checks.
            outcomes = check_envelopes(
                envelopes, allow_unsigned=self.allow_unsigned, chain_id=chain_id
            )
        else:
            outcomes = await trio.to_thread.run_sync(
                partial(
                    check_envelopes,
                    envelopes,
                    allow_unsigned=self.allow_unsigned,
                    chain_id=chain_id,
                )
            )
        passed = [
            (doc, outcome)
            for doc, outcome in zip(envelopes, outcomes, strict=True)
            if isinstance(outcome, str)
        ]
        results: list[dict[str, Any]] = []
        if passed:
            results = await self.coalescer.submit(
                [doc for doc, _ in passed], [tx_id for _, tx_id in passed]
            )
        admitted = iter(results)
        return [
            next(admitted) if isinstance(outcome, str) else outcome
            for outcome in outcomes
        ]


# (method, route, status, seconds taken, response body) of each request served.
Observer = Callable[[str, str, int, float, bytes], None]


class SubmitEndpoint:
    """ASGI middleware that serves the two submission routes ahead of Quart.

    Submissions are the node's busiest requests, and Quart's request and
    response objects, contexts and hooks cost more CPU than the submission's
    own work. This serves ``POST`` to ``ROUTES`` with the same
    ``SubmitService`` that the Quart routes use, and passes every other
    request to ``app``. It sits inside the body-limit and rate-limit
    middlewares, so their limits apply. ``observe`` records each request as
    the Quart hooks do for the others (metrics and access log).
    """

    def __init__(self, app: AsgiApp, service: SubmitService, observe: Observer) -> None:
        self.app = app
        self.service = service
        self.observe = observe

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in ROUTES:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body = await _read_body(receive)
        if body is None:
            # The client went away, or a limit middleware stopped the body
            # and responds itself.
            return
        try:
            reply = await self.service.handle(path, body)
        except Exception:
            log.exception("submission failed path=%s", path)
            reply = error_reply(
                503, "unavailable", "internal error; the node logged it"
            )
        payload = reply.body()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in reply.headers),
        ]
        await send(
            {"type": "http.response.start", "status": reply.status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        self.observe("POST", path, reply.status, time.perf_counter() - started, payload)


async def _read_body(receive: Receive) -> bytes | None:
    """Read a whole request body; ``None`` when the client disconnects first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
