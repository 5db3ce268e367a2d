"""A bounded HTTP load generator on Trio and httpx, and summary statistics."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio

__all__ = ["LoadResult", "percentile", "post_all", "summary"]


@dataclass
class LoadResult:
    elapsed_s: float
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    acked_at_ms: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float], digits: int = 1) -> str:
    """Median with its spread (min..max) over rounds, to ``digits`` decimals."""
    if not values:
        return "n/a"
    median, low, high = statistics.median(values), min(values), max(values)
    return (
        f"{median:.{digits}f} (min {low:.{digits}f}, max {high:.{digits}f}, "
        f"n={len(values)})"
    )


class _RawConnection:
    """A minimal HTTP/1.1 keep-alive client, so the load generator costs the
    server's core as little as possible (httpx spends several times more CPU
    per request than the bare server it measures)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer = b""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        await self.stream.send_all(head + body)
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif (
                name.strip().lower() == b"connection"
                and value.strip().lower() == b"close"
            ):
                close = True
        while len(self.buffer) < length:
            await self._fill()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        if close:
            await self.stream.aclose()
            self.stream = None
        return status, payload

    async def _fill(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data


async def post_all(
    url: str,
    path: str,
    bodies: Sequence[Any],
    *,
    concurrency: int,
    timeout_s: float,
    rate_per_s: float | None = None,
) -> LoadResult:
    """POST every body once, ``concurrency`` at a time, stopping at ``timeout_s``.

    With ``rate_per_s`` the requests start at that fixed rate (open loop);
    otherwise each worker sends its next request as soon as one returns.
    """
    result = LoadResult(elapsed_s=0.0)
    queue = list(reversed(bodies))
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    started = time.perf_counter()
    deadline = trio.current_time() + timeout_s
    pool = [
        _RawConnection(host, port)
        for _ in range(concurrency * (4 if rate_per_s else 1))
    ]

    async def one(connection: _RawConnection, body: Any) -> None:
        sent = time.perf_counter()
        try:
            status, payload = await connection.post(path, orjson.dumps(body))
            if status in (200, 202) and path.endswith("submit"):
                result.acked_at_ms[orjson.loads(payload)["tx_id"]] = time.time() * 1000
        except (OSError, ConnectionError, ValueError, KeyError):
            status = 0
            connection.stream = None
        result.latencies_ms.append((time.perf_counter() - sent) * 1000)
        result.statuses[status] = result.statuses.get(status, 0) + 1

    async def worker(connection: _RawConnection) -> None:
        while queue and trio.current_time() < deadline:
            await one(connection, queue.pop())

    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:
            if rate_per_s is None:
                for connection in pool:
                    nursery.start_soon(worker, connection)
            else:
                free = list(pool)
                slots = trio.Semaphore(len(pool))
                interval = 1.0 / rate_per_s

                async def paced(body: Any) -> None:
                    async with slots:
                        connection = free.pop()
                        try:
                            await one(connection, body)
                        finally:
                            free.append(connection)

                next_at = trio.current_time()
                while queue:
                    await trio.sleep_until(next_at)
                    nursery.start_soon(paced, queue.pop())
                    next_at += interval
    result.elapsed_s = time.perf_counter() - started
    return result
