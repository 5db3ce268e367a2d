"""A follower's sync summary, for ``/health``, the dashboard, metrics and ``weall status``.

The follower actor replies to ``status`` on the producer socket with its
``Syncer.statistics()``. The api and the CLI read it from there with a short
timeout, and a follower that does not respond is shown as ``unavailable``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from weall import ipc
from weall.errors import IpcError
from weall.ipc import IpcClient
from weall.progress import format_duration

__all__ = [
    "STATES",
    "SUMMARY_FIELDS",
    "describe_follower",
    "follower_health",
    "read_follower_summary",
]

log = logging.getLogger(__name__)

STATUS_TIMEOUT_S: Final = 2.0
# The values of ``state``: those of ``weall.follow.sync.SyncState``, and
# ``unavailable`` when the follower actor did not reply.
STATES: Final = (
    "checking",
    "syncing",
    "caught_up",
    "unreachable",
    "rejected",
    "unavailable",
)
# The fields of the follower actor's ``status`` reply that are shown.
SUMMARY_FIELDS: Final = (
    "state",
    "state_since_ms",
    "upstream",
    "height",
    "upstream_height",
    "blocks_behind",
    "sync_blocks_per_s",
    "sync_tx_per_s",
    "sync_eta_s",
    "last_sync_tx_per_s",
    "last_error",
    "rejected",
    "storage_full",
)


async def follower_health(follower: IpcClient) -> dict[str, Any]:
    """Return the follower actor's sync summary, or ``{"state": "unavailable"}``.

    ``unavailable`` means that the actor did not reply within
    ``STATUS_TIMEOUT_S``: it is starting, restarting or stuck.
    """
    try:
        reply = await follower.call("status", timeout=STATUS_TIMEOUT_S)
    except IpcError as exc:
        log.debug("follower status unavailable: %s", exc)
        return {"state": "unavailable"}
    if not reply.get("ok"):
        return {"state": "unavailable"}
    return {name: reply.get(name) for name in SUMMARY_FIELDS}


async def read_follower_summary(producer_socket: Path) -> dict[str, Any]:
    """Connect to the follower actor's socket and return its sync summary."""
    async with ipc.open_client(producer_socket) as client:
        return await follower_health(client)


def _since(at_ms: Any, now_ms: int) -> str:
    if not isinstance(at_ms, int):
        return "-"
    return format_duration(max(0, now_ms - at_ms) / 1000)


def _rate(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _height_line(summary: Mapping[str, Any]) -> str:
    height = summary.get("height")
    upstream = summary.get("upstream_height")
    if upstream is None:
        text = f"height {height}, upstream height unknown"
    else:
        text = f"height {height} of {upstream}"
        behind = summary.get("blocks_behind")
        if behind:
            text += f" ({behind} behind)"
    rate = summary.get("sync_blocks_per_s")
    if rate is not None:
        text += f", {_rate(rate)} blocks/s"
    tx_rate = summary.get("sync_tx_per_s")
    if tx_rate is not None:
        text += f", {_rate(tx_rate)} tx/s"
    eta = summary.get("sync_eta_s")
    if eta is not None:
        text += f", {format_duration(eta)} left"
    last = summary.get("last_sync_tx_per_s")
    if summary.get("state") == "caught_up" and last is not None:
        text += f", last catch-up {_rate(last)} tx/s"
    return text


def describe_follower(summary: Mapping[str, Any], now_ms: int | None = None) -> str:
    """Render a sync summary as the lines that ``weall status`` prints."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    state = summary.get("state", "unavailable")
    if state == "unavailable":
        return "follower state=unavailable (the follower actor did not reply)"
    lines = [
        f"follower state={state} for {_since(summary.get('state_since_ms'), now)} "
        f"upstream={summary.get('upstream')}",
        "  " + _height_line(summary),
    ]
    if summary.get("last_error"):
        lines.append(f"  last error: {summary['last_error']}")
    if summary.get("storage_full"):
        lines.append("  storage full: the sync is paused until space is freed")
    rejected = summary.get("rejected")
    if isinstance(rejected, Mapping):
        at = rejected.get("height")
        where = "the chain identity" if at is None else f"height {at}"
        lines.append(
            f"  REJECTED at {where}: {rejected.get('reason')} "
            f"({_since(rejected.get('at_ms'), now)} ago); nothing more is synced "
            "until the upstream is fixed or replaced and the follower restarted"
        )
    return "\n".join(lines)
