"""Per-client rate limits: a token bucket per client address.

Each client starts with ``WEALL_RATE_LIMIT_BURST`` tokens; a request takes
one and the bucket refills at ``WEALL_RATE_LIMIT_PER_S`` tokens a second up
to the burst. A request that finds less than one token gets 429
``rate_limited`` with ``Retry-After`` (whole seconds until a token is back).
``WEALL_RATE_LIMIT_PER_S=0`` turns the limit off. ``/health`` and
``/v1/readyz`` are never limited, so probes keep working under load.

The client is the address ``weall.api.proxy.client_address`` returns. IPv6
clients are grouped by their /64 network, because one host is usually given a
whole /64 and could otherwise take a fresh address for every request.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from weall.api.limits import AsgiApp, Receive, Send, send_error
from weall.api.proxy import IpAddress, TrustedProxies, client_address

__all__ = ["EXEMPT_PATHS", "RateLimitMiddleware", "TokenBuckets"]

log = logging.getLogger(__name__)

EXEMPT_PATHS: Final = frozenset({"/health", "/v1/readyz"})
# Buckets kept at once; the least recently used one is dropped past this.
# A dropped bucket was idle the longest, so it had most likely refilled.
MAX_CLIENTS: Final = 100_000
LOG_INTERVAL_S: Final = 10.0


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets keyed by client; ``take`` returns the wait in seconds, 0 when allowed."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(address: IpAddress | None) -> str:
    """Return the bucket key of a client address (its /64 for IPv6)."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimitMiddleware:
    """ASGI middleware that responds with 429 ``rate_limited`` before the app runs."""

    def __init__(
        self,
        app: AsgiApp,
        *,
        rate_per_s: float,
        burst: int,
        trusted: TrustedProxies,
        forwarded_header: str,
    ) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate_per_s, burst) if rate_per_s > 0 else None
        self.trusted = trusted
        self.forwarded_header = forwarded_header
        self.rejected = 0
        self._last_log = 0.0

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        if (
            self.buckets is None
            or scope["type"] != "http"
            or scope.get("path") in EXEMPT_PATHS
        ):
            await self.app(scope, receive, send)
            return
        key = client_key(client_address(scope, self.trusted, self.forwarded_header))
        wait_s = self.buckets.take(key)
        if wait_s <= 0:
            await self.app(scope, receive, send)
            return
        self._note_rejection(key)
        retry_after = max(1, math.ceil(wait_s))
        await send_error(
            send,
            429,
            "rate_limited",
            f"too many requests from this client; retry in {retry_after} s",
            details={"retry_after_s": retry_after},
            headers=[(b"retry-after", str(retry_after).encode())],
        )

    def _note_rejection(self, key: str) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_S:
            self._last_log = now
            log.info(
                "rate limited requests total=%d last_client=%s", self.rejected, key
            )
