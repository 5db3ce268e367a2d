"""Folding recent state into the state table in a writer's idle time, from Trio."""

from __future__ import annotations

import trio

from weall.storage.writer import Writer

__all__ = ["fold_until"]


async def fold_until(
    writer: Writer,
    limiter: trio.CapacityLimiter,
    deadline: float,
    *,
    margin_s: float = 0.0,
) -> int:
    """Fold recent state a chunk at a time while more than ``margin_s`` is left before ``deadline``.

    ``deadline`` is on Trio's clock. Each chunk runs in a worker thread under
    ``limiter``, the one that serialises every use of ``writer``. Returns
    the entries moved. ``StorageFullError`` and other storage errors
    propagate, and the chunks folded before them stay folded.
    """
    moved = 0
    while writer.recent_entries and deadline - trio.current_time() > margin_s:
        step = await trio.to_thread.run_sync(writer.fold_recent, limiter=limiter)
        if not step:
            break
        moved += step
    return moved
