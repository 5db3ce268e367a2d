"""What a pinner reads from the chain and how it confirms, inside the node.

A pinner works against a ``PinSource``: the pins assigned to its operator
account, the status of the transactions it sent, and a way to submit
``IPFS_PIN_CONFIRM``. Two implementations exist:

- ``DbPinSource`` (this module), for the pinner actor of a node: it reads
  through a read-only connection and confirms through the producer socket's
  ``system_tx``, which signs with the node key, so the pinner's account is
  the node key's account;
- ``weall.media.remote.HttpPinSource``, for a pinner that runs on its own
  against a node's HTTP API and signs with its own key.

``operator_pins_view`` builds the page that ``GET /v1/operators/{id}/pins``
returns, so both sources read the same document.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from weall import ipc
from weall.errors import IpcError, StorageError
from weall.protocol.rules._assign import has_role
from weall.protocol.rules.storage import assigned_pins, operator_record
from weall.protocol.txtypes import NODE_OPERATOR
from weall.storage import queries
from weall.storage.reader import ReadPool

__all__ = [
    "MAX_PINS_PAGE",
    "Assignments",
    "DbPinSource",
    "PinSource",
    "SourceError",
    "operator_pins_view",
]

log = logging.getLogger(__name__)

MAX_PINS_PAGE: Final = 1000
SUBMIT_TIMEOUT_S: Final = 30.0


class SourceError(Exception):
    """The chain could not be read or a transaction could not be submitted; retry later."""


@dataclass(frozen=True)
class Assignments:
    """The pins assigned to one operator account at one height.

    Attributes:
        height: the committed height the list was read at.
        exists: whether the account exists at all.
        active: whether the account holds role node_operator.
        pins: ``{"pin_id", "cid", "size_bytes", "assigned_height", "ok"}``
            entries in pin id order, ``ok`` being ``None`` until confirmed.
    """

    height: int
    exists: bool
    active: bool
    pins: list[dict[str, Any]] = field(default_factory=list)


class PinSource(Protocol):
    """The chain as a pinner sees it."""

    async def assignments(self, operator: str) -> Assignments:
        """Return every pin assigned to ``operator``; raise ``SourceError`` on failure."""
        ...

    async def tx_status(self, tx_id: str) -> str | None:
        """Return ``pending``, ``committed``, ``rejected``, ``expired`` or ``None`` when unknown."""
        ...

    async def confirm(self, pin_id: str, ok: bool) -> dict[str, Any]:
        """Submit ``IPFS_PIN_CONFIRM``; return the admission result (``ok``, ``tx_id`` or ``error``)."""
        ...

    def open_media(
        self, cid: str
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]] | None:
        """Return a context that streams the content of ``cid`` from the node, or ``None``.

        ``None`` means the source has no copy to offer, so the pinner relies
        on its backend finding the content (the node's own store, or the IPFS
        network for Kubo).
        """
        ...


def operator_pins_view(
    conn: sqlite3.Connection, operator: str, after: str | None, limit: int
) -> dict[str, Any] | None:
    """Return one page of the pins assigned to ``operator``, or ``None`` for an unknown account.

    The page has ``operator``, ``active`` (holds role node_operator),
    ``capacity_bytes`` and ``used_bytes`` (``null`` for an account that never
    was an operator), ``height``, ``pins`` and ``next_cursor`` (the last pin
    id when the page is full, to pass as ``cursor`` for the next page).
    """
    state = queries.SqliteState(conn)
    if state.get("account", operator) is None:
        return None
    head = queries.head_header(conn)
    record = operator_record(state, operator)
    pins = assigned_pins(state, operator, after=after, limit=limit)
    return {
        "operator": operator,
        "active": has_role(state, NODE_OPERATOR, operator),
        "capacity_bytes": None if record is None else record["capacity_bytes"],
        "used_bytes": None if record is None else record["used_bytes"],
        "height": 0 if head is None else head["height"],
        "pins": pins,
        "next_cursor": pins[-1]["pin_id"] if len(pins) == limit else None,
    }


def _all_assignments(conn: sqlite3.Connection, operator: str) -> Assignments:
    """Read every page in one read transaction, so the list is one height's."""
    pins: list[dict[str, Any]] = []
    cursor: str | None = None
    height = 0
    while True:
        page = operator_pins_view(conn, operator, cursor, MAX_PINS_PAGE)
        if page is None:
            return Assignments(height=height, exists=False, active=False)
        height = page["height"]
        pins.extend(page["pins"])
        cursor = page["next_cursor"]
        if cursor is None:
            return Assignments(
                height=height, exists=True, active=page["active"], pins=pins
            )


class DbPinSource:
    """The pinner's view inside a node: the local database and the producer socket."""

    def __init__(self, pool: ReadPool, producer: ipc.IpcClient) -> None:
        self.pool = pool
        self.producer = producer

    async def assignments(self, operator: str) -> Assignments:
        if not self.pool.path.exists():
            raise SourceError(f"database {self.pool.path} does not exist yet")
        try:
            return await self.pool.run(lambda conn: _all_assignments(conn, operator))
        except StorageError as exc:
            raise SourceError(str(exc)) from exc

    async def tx_status(self, tx_id: str) -> str | None:
        try:
            row = await self.pool.run(lambda conn: queries.tx_row(conn, tx_id))
        except StorageError as exc:
            raise SourceError(str(exc)) from exc
        return None if row is None else str(row["status"])

    async def confirm(self, pin_id: str, ok: bool) -> dict[str, Any]:
        try:
            answer = await self.producer.call(
                "system_tx",
                timeout=SUBMIT_TIMEOUT_S,
                tx_type="IPFS_PIN_CONFIRM",
                payload={"pin_id": pin_id, "ok": ok},
            )
        except IpcError as exc:
            raise SourceError(f"producer socket: {exc}") from exc
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise SourceError(
                f"system_tx failed: {error.get('code')}: {error.get('message')}"
            )
        result: dict[str, Any] = answer["result"]
        return result

    def open_media(self, cid: str) -> None:
        return None
