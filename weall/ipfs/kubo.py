"""The ``kubo`` IPFS backend: a client of the Kubo RPC API (``/api/v0``).

IPFS Cluster's proxy serves the same API, so this backend also drives a
cluster. The client also works with js-ipfs 0.66 (API version 0.18.1), whose
replies differ from Kubo's in small ways. Its ``add`` returns ``Size`` as a
number (Kubo: a string) and may add a ``Mode`` field, and its ``repo/stat``
returns numbers as strings. It prints CIDs in base58btc unless a call passes
``cid-base=base32``, which every call here that returns CIDs does.

Timeouts: every HTTP operation has a client timeout. Calls that may look for
content on the network (``cat``, ``block/stat``, ``pin/add``, ``pin/ls`` of
one CID) also pass the RPC's ``timeout=`` argument, because a daemon may
otherwise search for an absent CID forever (js-ipfs does so even offline).
The daemon then returns an error, which this client raises as ``not_found``.

Retries: connection failures and 5xx replies are retried with capped
exponential backoff and jitter. A 500 reply whose body is the RPC's error
object (``{"Message", "Code", "Type": "error"}``) is not retried, because the
daemon itself reported that the command failed (for example "not pinned").
4xx replies are never retried. ``add`` is retried only when the connection
failed before any byte of the file was read from the caller's stream, and
``cat`` only before its first byte was returned.

NOTE: the tests run this client against js-ipfs and a scripted server, not
against Kubo itself. The Kubo error texts matched here are those of boxo's
offline exchange ("block was not found locally (offline)") and of Kubo's
``pin/rm`` ("not pinned or pinned indirectly"); a Kubo release may word them
differently.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import orjson
import trio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from weall.errors import ClosedError, ConfigError, IpfsError
from weall.ipfs._types import AddResult, RepoStat
from weall.ipfs.unixfs import CHUNK_SIZE, parse_cid

__all__ = ["KuboBackend"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Parameters of every add, so that CIDs equal the local backend's.
_ADD_PARAMS: Final = {
    "cid-version": "1",
    "raw-leaves": "true",
    "cid-base": "base32",
    "chunker": f"size-{CHUNK_SIZE}",
    "hash": "sha2-256",
    "progress": "false",
}
# Transport failures after which a repeated request may succeed.
_RETRYABLE_TRANSPORT: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
# Substrings of RPC error messages (Kubo and js-ipfs 0.18) meaning that the
# content was not found locally or within the call's timeout. They count only
# in 5xx replies: a 404 "Not Found" names an unknown endpoint, not content.
_NOT_FOUND_HINTS: Final = (
    "not found",
    "could not find",
    "request timed out",
    "context deadline exceeded",
)
_NOT_PINNED_HINT: Final = "not pinned"


class _TransientError(Exception):
    """A failure after which the same request may succeed; triggers a retry."""


class _RpcError(Exception):
    """Error status and message that the daemon returned for a command."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


@dataclass(slots=True)
class _BodyProgress:
    started: bool = False
    size: int = 0


class KuboBackend:
    """Client of a Kubo (or IPFS Cluster proxy) RPC API.

    Args:
        api_url: base URL of the RPC API, for example ``http://127.0.0.1:5001``
            (``WEALL_IPFS_API_URL``).
        timeout_s: client timeout of each HTTP operation (connect, each read,
            each write), in seconds.
        stat_timeout_s: the RPC ``timeout=`` of ``block/stat`` and of
            ``pin/ls`` for one CID.
        cat_timeout_s: the RPC ``timeout=`` of ``cat``. It bounds the whole
            transfer in Kubo, not only the search for the content.
        pin_timeout_s: the RPC ``timeout=`` of ``pin/add``, which may fetch
            the whole DAG from other nodes.
        max_attempts: attempts per call, the first included.
        backoff_initial_s: delay before the first retry; it doubles each time.
        backoff_max_s: cap of the delay between attempts.
    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout_s: float = 30.0,
        stat_timeout_s: float = 10.0,
        cat_timeout_s: float = 120.0,
        pin_timeout_s: float = 600.0,
        max_attempts: int = 6,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 8.0,
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(
                "WEALL_IPFS_API_URL", api_url, "must be an http:// or https:// URL"
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1 (got {max_attempts})")
        self.api_url = api_url.rstrip("/")
        self._timeout_s = timeout_s
        self._stat_timeout_s = stat_timeout_s
        self._cat_timeout_s = cat_timeout_s
        self._pin_timeout_s = pin_timeout_s
        self._max_attempts = max_attempts
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._closed = False
        # trust_env=False: proxy variables must not send the calls elsewhere.
        self._client = httpx.AsyncClient(
            base_url=f"{self.api_url}/api/v0",
            timeout=timeout_s,
            trust_env=False,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections; later calls raise ``ClosedError``."""
        self._closed = True
        await self._client.aclose()

    async def __aenter__(self) -> KuboBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- operations ----------------------------------------------------------

    async def add(self, chunks: AsyncIterable[bytes], *, pin: bool) -> AddResult:
        """Add a file, streaming it to the daemon as it is read.

        Args:
            chunks: the file's bytes, in pieces of any size.
            pin: pin the file recursively as part of the add.

        Returns:
            The CID that the daemon computed and the file's size in bytes.

        Raises:
            IpfsError: ``ipfs_unavailable``, ``ipfs_timeout`` or ``ipfs_failed``.
        """
        self._check_open()
        boundary = secrets.token_hex(16)
        progress = _BodyProgress()
        params = dict(_ADD_PARAMS, pin="true" if pin else "false")

        async def send_once() -> httpx.Response:
            return await self._send(
                "add",
                params,
                content=_multipart_body(chunks, boundary, progress),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )

        response = await self._retry("add", send_once, lambda: not progress.started)
        cid, dag_size = _parse_add_reply(response)
        log.info(
            "ipfs kubo add cid=%s size=%d dag_size=%s pinned=%s",
            cid,
            progress.size,
            dag_size,
            pin,
        )
        return AddResult(cid, progress.size)

    async def cat(self, cid: str) -> AsyncIterator[bytes]:
        """Yield the bytes of a UnixFS file as the daemon streams them.

        Raises:
            IpfsError: ``invalid_cid``, or ``not_found`` when the daemon
                does not find the content within ``cat_timeout_s``; both are
                raised before the first piece. ``ipfs_unavailable``,
                ``ipfs_timeout`` or ``ipfs_failed``, which may also come after
                some pieces when the transfer breaks or ends short.
        """
        normalized = parse_cid(cid)
        self._check_open()
        params = {"arg": normalized, "timeout": _duration(self._cat_timeout_s)}
        timeout = httpx.Timeout(
            self._timeout_s, read=self._timeout_s + self._cat_timeout_s
        )

        async def open_once() -> httpx.Response:
            return await self._send("cat", params, http_timeout=timeout, stream=True)

        response = await self._retry("cat", open_once)
        try:
            if response.status_code != 200:
                await response.aread()
                raise _translate(_rpc_error(response), "cat", normalized)
            async for piece in _iter_checked(response, normalized):
                yield piece
        finally:
            await response.aclose()

    async def has(self, cid: str) -> bool:
        """Return whether the daemon stores the block of ``cid`` (the root only).

        Kubo looks only in its local store (``offline=true``). js-ipfs ignores
        that argument and reports an absent block after ``stat_timeout_s``.

        Raises:
            IpfsError: ``invalid_cid``, ``ipfs_unavailable``, ``ipfs_timeout``
                or ``ipfs_failed``.
        """
        normalized = parse_cid(cid)
        params = {
            "arg": normalized,
            "offline": "true",
            "cid-base": "base32",
            "timeout": _duration(self._stat_timeout_s),
        }
        try:
            await self._call(
                "block/stat", params, daemon_timeout_s=self._stat_timeout_s
            )
        except _RpcError as exc:
            if _is_not_found(exc):
                return False
            raise _translate(exc, "block/stat", normalized) from None
        return True

    async def pin(self, cid: str) -> None:
        """Pin ``cid`` recursively, fetching missing blocks if the daemon can.

        Raises:
            IpfsError: ``invalid_cid``; ``not_found`` when the DAG is not
                complete within ``pin_timeout_s``; ``ipfs_unavailable``,
                ``ipfs_timeout`` or ``ipfs_failed``.
        """
        normalized = parse_cid(cid)
        params = {
            "arg": normalized,
            "recursive": "true",
            "progress": "false",
            "cid-base": "base32",
            "timeout": _duration(self._pin_timeout_s),
        }
        try:
            await self._call("pin/add", params, daemon_timeout_s=self._pin_timeout_s)
        except _RpcError as exc:
            raise _translate(exc, "pin/add", normalized) from None
        log.info("ipfs kubo pinned cid=%s", normalized)

    async def unpin(self, cid: str) -> None:
        """Remove the recursive pin of ``cid``; a CID not pinned is a no-op.

        Raises:
            IpfsError: ``invalid_cid``, ``ipfs_unavailable``, ``ipfs_timeout``
                or ``ipfs_failed``.
        """
        normalized = parse_cid(cid)
        params = {"arg": normalized, "recursive": "true", "cid-base": "base32"}
        try:
            await self._call("pin/rm", params)
        except _RpcError as exc:
            if _NOT_PINNED_HINT in exc.message.lower():
                log.info("ipfs kubo unpin: not pinned cid=%s", normalized)
                return
            raise _translate(exc, "pin/rm", normalized) from None
        log.info("ipfs kubo unpinned cid=%s", normalized)

    async def is_pinned(self, cid: str) -> bool:
        """Return whether ``cid`` is pinned recursively.

        Raises:
            IpfsError: ``invalid_cid``, ``ipfs_unavailable``, ``ipfs_timeout``
                or ``ipfs_failed``.
        """
        normalized = parse_cid(cid)
        params = {
            "arg": normalized,
            "type": "recursive",
            "cid-base": "base32",
            "timeout": _duration(self._stat_timeout_s),
        }
        try:
            reply = await self._call(
                "pin/ls", params, daemon_timeout_s=self._stat_timeout_s
            )
        except _RpcError as exc:
            if _NOT_PINNED_HINT in exc.message.lower() or _is_not_found(exc):
                return False
            raise _translate(exc, "pin/ls", normalized) from None
        return normalized in _pinned_keys(reply)

    async def list_pins(self) -> list[str]:
        """Return the recursively pinned CIDs, sorted.

        CIDs of the kinds that ``parse_cid`` accepts are returned as CIDv1
        base32; others (pinned by other software) are returned as the daemon
        prints them.

        Raises:
            IpfsError: ``ipfs_unavailable``, ``ipfs_timeout`` or ``ipfs_failed``.
        """
        params = {"type": "recursive", "cid-base": "base32"}
        try:
            reply = await self._call("pin/ls", params)
        except _RpcError as exc:
            raise _translate(exc, "pin/ls", None) from None
        return sorted(_pinned_keys(reply))

    async def stat(self) -> RepoStat:
        """Return the daemon's repository size and number of blocks.

        Raises:
            IpfsError: ``ipfs_unavailable``, ``ipfs_timeout`` or ``ipfs_failed``.
        """
        try:
            reply = await self._call("repo/stat", {})
        except _RpcError as exc:
            raise _translate(exc, "repo/stat", None) from None
        try:
            return RepoStat(
                repo_size_bytes=int(reply["RepoSize"]),
                num_blocks=int(reply["NumObjects"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IpfsError(
                "ipfs_failed", f"repo/stat: malformed reply {reply!r}"
            ) from exc

    async def version(self) -> str:
        """Return the daemon's version string (js-ipfs reports ``0.18.1``).

        Raises:
            IpfsError: ``ipfs_unavailable``, ``ipfs_timeout`` or ``ipfs_failed``.
        """
        try:
            reply = await self._call("version", {})
        except _RpcError as exc:
            raise _translate(exc, "version", None) from None
        return str(reply.get("Version", ""))

    # --- HTTP and retries ----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"ipfs kubo client for {self.api_url} is closed")

    async def _call(
        self, op: str, params: dict[str, str], *, daemon_timeout_s: float = 0.0
    ) -> Any:
        """POST one command and return its decoded JSON reply.

        Raises:
            _RpcError: the daemon returned an error status.
            IpfsError: the daemon could not be reached or did not reply in time.
        """
        self._check_open()
        timeout = httpx.Timeout(
            self._timeout_s, read=self._timeout_s + daemon_timeout_s
        )

        async def send_once() -> httpx.Response:
            return await self._send(op, params, http_timeout=timeout)

        response = await self._retry(op, send_once)
        if response.status_code != 200:
            raise _rpc_error(response)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise IpfsError(
                "ipfs_failed", f"{op}: reply is not JSON: {response.text[:200]!r}"
            ) from exc

    async def _send(
        self,
        op: str,
        params: dict[str, str],
        *,
        http_timeout: httpx.Timeout | None = None,
        stream: bool = False,
        content: AsyncIterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; raise ``_TransientError`` when it may be retried."""
        request = self._client.build_request(
            "POST",
            f"/{op}",
            params=params,
            content=content,
            headers=headers,
            timeout=http_timeout
            if http_timeout is not None
            else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            response = await self._client.send(request, stream=stream)
        except _RETRYABLE_TRANSPORT as exc:
            raise _TransientError(f"{op}: {type(exc).__name__}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise IpfsError(
                "ipfs_timeout", f"{op} at {self.api_url} timed out: {exc!r}"
            ) from exc
        except httpx.HTTPError as exc:
            raise IpfsError("ipfs_failed", f"{op} at {self.api_url}: {exc!r}") from exc
        if response.status_code >= 500 and not await _has_rpc_error_body(response):
            await response.aclose()
            raise _TransientError(f"{op}: HTTP {response.status_code}")
        return response

    async def _retry(
        self,
        op: str,
        attempt: Callable[[], Awaitable[T]],
        may_retry: Callable[[], bool] = lambda: True,
    ) -> T:
        """Run ``attempt`` with capped exponential backoff on transient errors.

        Raises:
            IpfsError: ``ipfs_unavailable`` when the last attempt failed too.
        """
        failures: list[BaseException] = []
        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, _TransientError) and may_retry()
            ),
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential_jitter(
                initial=self._backoff_initial_s,
                max=self._backoff_max_s,
                jitter=self._backoff_initial_s,
            ),
            sleep=trio.sleep,
            before_sleep=lambda state: self._log_retry(op, state, failures),
            reraise=True,
        )
        try:
            result: T = await retrying(attempt)
        except _TransientError as exc:
            raise IpfsError(
                "ipfs_unavailable",
                f"{op} at {self.api_url} failed after {len(failures) + 1} attempts: {exc}",
            ) from exc
        if failures:
            log.info("ipfs call recovered op=%s errors=%d", op, len(failures))
        return result

    def _log_retry(
        self, op: str, state: RetryCallState, failures: list[BaseException]
    ) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        failures.append(error or RuntimeError("unknown"))
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "ipfs call failed, retrying op=%s url=%s attempt=%d retry_in=%.2fs error=%s",
            op,
            self.api_url,
            state.attempt_number,
            delay,
            error,
        )


# --- request and reply helpers ----------------------------------------------


async def _multipart_body(
    chunks: AsyncIterable[bytes], boundary: str, progress: _BodyProgress
) -> AsyncIterator[bytes]:
    """Yield a multipart/form-data body with one part, the file named "file"."""
    progress.started = True
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="file"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode("ascii")
    async for piece in chunks:
        progress.size += len(piece)
        yield bytes(piece)
    yield f"\r\n--{boundary}--\r\n".encode("ascii")


def _parse_add_reply(response: httpx.Response) -> tuple[str, int | None]:
    if response.status_code != 200:
        raise _translate(_rpc_error(response), "add", None)
    entries: list[dict[str, Any]] = []
    for line in response.content.splitlines():
        if line.strip():
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise IpfsError(
                    "ipfs_failed", f"add: reply line is not JSON: {line[:200]!r}"
                ) from exc
    with_hash = [
        entry for entry in entries if isinstance(entry, dict) and entry.get("Hash")
    ]
    if not with_hash:
        raise IpfsError(
            "ipfs_failed", f"add: reply has no Hash: {response.text[:200]!r}"
        )
    last = with_hash[-1]
    size = last.get("Size")
    # Size is the DAG's total size: a string in Kubo, a number in js-ipfs.
    dag_size = (
        int(size) if isinstance(size, int | str) and str(size).isdigit() else None
    )
    return parse_cid(str(last["Hash"])), dag_size


async def _iter_checked(response: httpx.Response, cid: str) -> AsyncIterator[bytes]:
    """Yield the body of a ``cat`` reply and check it arrived whole.

    Kubo reports an error that happens mid-stream only in the
    ``X-Stream-Error`` trailer, which httpx does not expose, so the length is
    checked against ``X-Content-Length`` when the daemon sends it (Kubo does,
    js-ipfs does not).
    """
    expected = response.headers.get("X-Content-Length")
    received = 0
    try:
        async for piece in response.aiter_bytes():
            received += len(piece)
            yield piece
    except httpx.TimeoutException as exc:
        raise IpfsError(
            "ipfs_timeout", f"cat {cid} timed out after {received} bytes", cid=cid
        ) from exc
    except httpx.HTTPError as exc:
        raise IpfsError(
            "ipfs_unavailable",
            f"cat {cid} broke after {received} bytes: {exc!r}",
            cid=cid,
        ) from exc
    if expected is not None and expected.isdigit() and int(expected) != received:
        raise IpfsError(
            "ipfs_failed",
            f"cat {cid} ended after {received} of {expected} bytes",
            cid=cid,
        )


async def _has_rpc_error_body(response: httpx.Response) -> bool:
    await response.aread()
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("Type") == "error" and "Message" in body


def _rpc_error(response: httpx.Response) -> _RpcError:
    message = response.text[:500]
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("Message"), str):
        message = body["Message"]
    return _RpcError(response.status_code, message)


def _is_not_found(exc: _RpcError) -> bool:
    if exc.status < 500:
        return False
    lowered = exc.message.lower()
    return any(hint in lowered for hint in _NOT_FOUND_HINTS)


def _translate(exc: _RpcError, op: str, cid: str | None) -> IpfsError:
    target = f" {cid}" if cid else ""
    if _is_not_found(exc):
        return IpfsError("not_found", f"{op}{target}: {exc.message}", cid=cid)
    return IpfsError("ipfs_failed", f"{op}{target}: {exc}", cid=cid)


def _pinned_keys(reply: Any) -> set[str]:
    keys = reply.get("Keys") if isinstance(reply, dict) else None
    if not isinstance(keys, dict):
        raise IpfsError("ipfs_failed", f"pin/ls: malformed reply {str(reply)[:200]!r}")
    pinned: set[str] = set()
    for key in keys:
        try:
            pinned.add(parse_cid(key))
        except IpfsError:
            pinned.add(key)
    return pinned


def _duration(seconds: float) -> str:
    """Format seconds as a duration that Kubo (Go) and js-ipfs both parse."""
    return f"{max(1, round(seconds * 1000))}ms"
