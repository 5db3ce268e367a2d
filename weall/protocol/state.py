"""The state as the protocol sees it: entries ``(kind, key) -> JSON object``.

The protocol reads the committed state through ``StateReader`` (SQLite in the
node, a dict in tests and replays) and writes only into an ``Overlay``. The
changes of an overlay are what a block commits and what its state root
covers, so a block costs in proportion to what it changes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Final, Protocol

import orjson

from weall.protocol import canonical
from weall.protocol.encoding import hash_bytes

__all__ = [
    "MemoryState",
    "Overlay",
    "StateReader",
    "next_state_root",
    "state_root_of_raw",
]

Entry = tuple[str, str]
Value = dict[str, Any]
RawChange = tuple[str, str, bytes | None]

_SORTED: Final = orjson.OPT_SORT_KEYS


class StateReader(Protocol):
    def get(self, kind: str, key: str) -> Value | None: ...

    def scan(
        self,
        kind: str,
        prefix: str = "",
        *,
        after: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, Value]]:
        """Entries of ``kind`` whose key starts with ``prefix``, ordered by key.

        ``after`` is an exclusive bound in the scan direction (a cursor).
        """
        ...


class MemoryState:
    """A ``StateReader`` over a dict, for tests and replays."""

    def __init__(self, entries: dict[Entry, Value] | None = None) -> None:
        self.entries: dict[Entry, Value] = dict(entries or {})

    def get(self, kind: str, key: str) -> Value | None:
        value = self.entries.get((kind, key))
        return None if value is None else copy.deepcopy(value)

    def scan(
        self,
        kind: str,
        prefix: str = "",
        *,
        after: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, Value]]:
        keys = sorted(
            key for (k, key) in self.entries if k == kind and key.startswith(prefix)
        )
        if reverse:
            keys.reverse()
        if after is not None:
            keys = [k for k in keys if (k < after if reverse else k > after)]
        if limit is not None:
            keys = keys[:limit]
        return [(key, copy.deepcopy(self.entries[(kind, key)])) for key in keys]

    def apply(self, changes: Iterable[tuple[str, str, Value | None]]) -> None:
        for kind, key, value in changes:
            if value is None:
                self.entries.pop((kind, key), None)
            else:
                self.entries[(kind, key)] = copy.deepcopy(value)


class Overlay:
    """Uncommitted writes over a ``StateReader``.

    Writes are kept as canonical JSON bytes: storing bytes makes every read a
    fresh object (handlers may mutate what they read), costs less than a deep
    copy, and is already the form that the writer stores and the state root
    hashes. ``child()`` makes a nested overlay whose writes reach this one
    only on ``merge_into_parent()``, so a transaction that fails half way
    leaves nothing behind.
    """

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.writes: dict[Entry, bytes | None] = {}

    def get(self, kind: str, key: str) -> Value | None:
        entry = (kind, key)
        if entry in self.writes:
            raw = self.writes[entry]
            return None if raw is None else orjson.loads(raw)
        return self.base.get(kind, key)

    def put(self, kind: str, key: str, value: Value) -> None:
        # Values come from the handlers, which build them from validated
        # payloads, so the plain orjson form is canonical JSON.
        self.writes[(kind, key)] = canonical.compact(
            orjson.dumps(value, option=_SORTED)
        )

    def delete(self, kind: str, key: str) -> None:
        self.writes[(kind, key)] = None

    def scan(
        self,
        kind: str,
        prefix: str = "",
        *,
        after: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, Value]]:
        mine = {
            key: raw
            for (k, key), raw in self.writes.items()
            if k == kind and key.startswith(prefix)
        }
        # Read enough from the base to make up for entries this overlay deletes.
        base_limit = None if limit is None else limit + len(mine)
        merged = {
            key: value
            for key, value in self.base.scan(
                kind, prefix, after=after, limit=base_limit, reverse=reverse
            )
        }
        for key, raw in mine.items():
            if after is not None and (key >= after if reverse else key <= after):
                continue
            if raw is None:
                merged.pop(key, None)
            else:
                merged[key] = orjson.loads(raw)
        keys = sorted(merged, reverse=reverse)
        if limit is not None:
            keys = keys[:limit]
        return [(key, merged[key]) for key in keys]

    def child(self) -> Overlay:
        return Overlay(self)

    def merge_into_parent(self) -> None:
        parent = self.base
        assert isinstance(parent, Overlay), "only a child overlay merges"
        parent.writes.update(self.writes)

    def raw_changes(self) -> list[RawChange]:
        """The writes as ``(kind, key, canonical JSON or None)``, sorted by kind and key."""
        return [
            (kind, key, self.writes[(kind, key)]) for kind, key in sorted(self.writes)
        ]

    def changes(self) -> list[tuple[str, str, Value | None]]:
        """The writes as ``(kind, key, value or None)``, sorted by kind and key."""
        return [
            (kind, key, None if raw is None else orjson.loads(raw))
            for kind, key, raw in self.raw_changes()
        ]


def state_root_of_raw(prev_root: str, changes: list[RawChange]) -> str:
    """``next_state_root`` over changes whose values are canonical JSON bytes already."""
    parts = [
        b"["
        + orjson.dumps(kind)
        + b","
        + orjson.dumps(key)
        + b","
        + (b"null" if raw is None else raw)
        + b"]"
        for kind, key, raw in changes
    ]
    return hash_bytes(prev_root.encode("ascii") + b"[" + b",".join(parts) + b"]")


def next_state_root(
    prev_root: str, changes: list[tuple[str, str, Value | None]]
) -> str:
    """The running commitment: hash of the previous root followed by the changes.

    The bytes hashed are the ASCII text of ``prev_root`` followed by the
    canonical JSON list of ``[kind, key, value or null]`` sorted by kind and key.
    """
    listed = [[kind, key, value] for kind, key, value in changes]
    return hash_bytes(prev_root.encode("ascii") + canonical.dumps(listed))
