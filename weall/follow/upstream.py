"""HTTP client of a follower's upstream node (``WEALL_UPSTREAM_URL``).

Every request has timeouts: ``timeout_s`` for each read and write, 5 s to
connect, and ``deadline_s`` for a whole attempt. Reads are retried with capped exponential backoff and jitter after
a transport failure, a 429 or a 5xx reply. Submissions are retried only after
a transport failure, and any status from the upstream is relayed as it is.
A retry never submits a transaction twice, because a node replies to a
repeated envelope with HTTP 200 and ``duplicate``. Replies larger than
``max_response_bytes`` are cut off and reported as an error, so an upstream
cannot make the follower buffer without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import httpx
import orjson
import trio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from weall import __version__
from weall.errors import UpstreamError

__all__ = ["MAX_RESPONSE_BYTES", "UpstreamClient"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# httpx logs every request at INFO. A follower polls its upstream twice a
# second, so only httpx's warnings are kept; this module logs retries itself.
logging.getLogger("httpx").setLevel(logging.WARNING)

# NOTE: one block whose page is larger than this cannot be synced: the sync
# loop then reports the upstream unreachable and retries. Blocks of up to
# max_block_txs (10,000) envelopes of a few KiB each fit with a wide margin.
MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024
CONNECT_TIMEOUT_S: Final = 5.0
_TRANSPORT_ERRORS: Final = (httpx.TransportError,)


class _Transient(Exception):
    """A failure after which the same request may succeed."""


class UpstreamClient:
    """Requests to one upstream node.

    Args:
        base_url: the upstream's base URL, without a trailing slash.
        timeout_s: timeout of each read and write, in seconds.
        max_attempts: attempts per read request, the first included.
        backoff_initial_s: delay before the first retry; it doubles each time.
        backoff_max_s: the cap of the delay between attempts.
        max_response_bytes: the largest reply body that is read.
        deadline_s: the time limit of one attempt, from connecting to the
            last byte of the reply, in seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 8.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        deadline_s: float = 300.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1 (got {max_attempts})")
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_response_bytes = max_response_bytes
        self.deadline_s = deadline_s
        # trust_env=False: proxy variables must not send the requests elsewhere.
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            trust_env=False,
            headers={"User-Agent": f"weall-follower/{__version__}"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- reads ------------------------------------------------------------------

    async def get_json(
        self, path: str, params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """GET ``path`` and return the status and the parsed JSON body.

        Raises:
            UpstreamError: unreachable, or a 429 or 5xx reply, after every
                attempt; or a reply that is too large or not JSON.
        """

        async def attempt() -> tuple[int, Any]:
            status, body = await self._send("GET", path, params=params)
            if status == 429 or status >= 500:
                raise _Transient(f"HTTP {status}")
            return status, _parse(body, f"GET {path}")

        return await self._retry(f"GET {path}", attempt, self.max_attempts)

    async def snapshot(self) -> Any:
        return await self._expect_ok("/v1/state/snapshot")

    async def block(self, height: int) -> Any | None:
        """Return block ``height`` as served, or ``None`` when the upstream has none."""
        status, document = await self.get_json(f"/v1/blocks/{height}")
        if status == 404:
            return None
        if status != 200:
            raise UpstreamError(
                f"GET /v1/blocks/{height} at {self.base_url}: HTTP {status}"
            )
        return document

    async def blocks_page(self, start: int, limit: int) -> Any:
        return await self._expect_ok("/v1/blocks", {"from": start, "limit": limit})

    async def _expect_ok(self, path: str, params: dict[str, Any] | None = None) -> Any:
        status, document = await self.get_json(path, params)
        if status != 200:
            raise UpstreamError(f"GET {path} at {self.base_url}: HTTP {status}")
        return document

    # -- submissions --------------------------------------------------------------

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        attempts: int = 3,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """POST a JSON body and return the upstream's status and body unchanged.

        Raises:
            UpstreamError: the upstream could not be reached after ``attempts``.
        """

        async def attempt() -> tuple[int, bytes]:
            return await self._send(
                "POST",
                path,
                content=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            )

        return await self._retry(f"POST {path}", attempt, attempts)

    async def post_json(self, path: str, document: Any) -> tuple[int, Any]:
        status, body = await self.post(path, orjson.dumps(document))
        return status, _parse(body, f"POST {path}")

    # -- plumbing -------------------------------------------------------------------

    async def _send(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        # httpx's timeouts bound each read, so an upstream that trickles
        # bytes could hold a request open; the deadline bounds the whole of it.
        with trio.move_on_after(self.deadline_s):
            try:
                return await self._read_reply(method, path, **kwargs)
            except _TRANSPORT_ERRORS as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        raise _Transient(f"no complete reply within {self.deadline_s:g} s")

    async def _read_reply(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, bytes]:
        async with self._client.stream(method, path, **kwargs) as response:
            chunks = bytearray()
            async for chunk in response.aiter_bytes():
                chunks += chunk
                if len(chunks) > self.max_response_bytes:
                    raise UpstreamError(
                        f"{method} {path} at {self.base_url}: reply larger than "
                        f"{self.max_response_bytes} bytes"
                    )
            return response.status_code, bytes(chunks)

    async def _retry(
        self, op: str, attempt: Callable[[], Awaitable[T]], max_attempts: int
    ) -> T:
        failures = 0

        def before_sleep(state: RetryCallState) -> None:
            nonlocal failures
            failures += 1
            error = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "upstream request failed, retrying op=%r url=%s attempt=%d retry_in=%.2fs error=%s",
                op,
                self.base_url,
                state.attempt_number,
                delay,
                error,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(max_attempts),
            wait=wait_exponential_jitter(
                initial=self.backoff_initial_s,
                max=self.backoff_max_s,
                jitter=self.backoff_initial_s,
            ),
            sleep=trio.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result: T = await retrying(attempt)
        except _Transient as exc:
            raise UpstreamError(
                f"{op} at {self.base_url} failed after {failures + 1} attempts: {exc}"
            ) from exc
        if failures:
            log.info("upstream request recovered op=%r errors=%d", op, failures)
        return result


def _parse(body: bytes, op: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{op}: the upstream's reply is not JSON") from None
