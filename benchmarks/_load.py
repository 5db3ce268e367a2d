"""A bounded HTTP load generator on Trio and httpx, and summary statistics."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
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


def summary(values: Sequence[float]) -> str:
    """Median with its spread (min..max) over rounds."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


async def post_all(
    url: str, path: str, bodies: Sequence[Any], *, concurrency: int, timeout_s: float,
    rate_per_s: float | None = None,
) -> LoadResult:
    """POST every body once, ``concurrency`` at a time, stopping at ``timeout_s``.

    With ``rate_per_s`` the requests start at that fixed rate (open loop);
    otherwise each worker sends its next request as soon as one returns.
    """
    result = LoadResult(elapsed_s=0.0)
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    deadline = trio.current_time() + timeout_s
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def one(body: Any) -> None:
            sent = time.perf_counter()
            try:
                response = await client.post(path, json=body)
                status = response.status_code
                if status in (200, 202) and path.endswith("submit"):
                    result.acked_at_ms[response.json()["tx_id"]] = time.time() * 1000
            except httpx.HTTPError:
                status = 0
            result.latencies_ms.append((time.perf_counter() - sent) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1

        async def worker() -> None:
            while queue and trio.current_time() < deadline:
                await one(queue.pop())

        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:
                if rate_per_s is None:
                    for _ in range(concurrency):
                        nursery.start_soon(worker)
                else:
                    limiter = trio.CapacityLimiter(concurrency * 4)
                    interval = 1.0 / rate_per_s

                    async def paced(body: Any) -> None:
                        async with limiter:
                            await one(body)

                    next_at = trio.current_time()
                    while queue:
                        await trio.sleep_until(next_at)
                        nursery.start_soon(paced, queue.pop())
                        next_at += interval
    result.elapsed_s = time.perf_counter() - started
    return result
