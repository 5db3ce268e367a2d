"""The pins that one pinner made, kept on disk so that it can undo them later.

An IPFS backend does not record who pinned a CID. A node's pinner shares its
store with the api's ``WEALL_IPFS_PIN_ON_UPLOAD`` pins, and an operator may
pin content by hand, so the pinner unpins only what this ledger records as
pinned by itself. Each entry is a CID with:

- ``owned``: the pinner made the pin. It is false when the CID was already
  pinned before the pinner pinned it, and then the pinner never unpins it.
- ``released_at_ms``: when the pinner first saw that the chain no longer
  assigns the CID to its operator, or ``None`` while it does.

The file is JSON, replaced atomically (temporary file, fsync, rename) by
``save``. A file that cannot be parsed is set aside as ``NAME.invalid`` and
the ledger starts empty, so its pins are kept rather than unpinned.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["HeldPin", "PinLedger"]

log = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1


@dataclass
class HeldPin:
    """A CID in the ledger."""

    owned: bool
    released_at_ms: int | None = None


class PinLedger:
    """The CIDs that one pinner pinned, read from and saved to ``path``."""

    def __init__(self, path: Path, account: str) -> None:
        self.path = path
        self.account = account
        self.pins: dict[str, HeldPin] = {}
        self._dirty = False

    @classmethod
    def load(cls, path: Path, account: str) -> PinLedger:
        """Read the ledger at ``path``; a missing file gives an empty one.

        Raises:
            OSError: the file exists but cannot be read, or cannot be set aside.
        """
        ledger = cls(path, account)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ledger
        try:
            ledger.pins = _parse(text, account)
        except (ValueError, TypeError, KeyError) as exc:
            aside = path.with_name(path.name + ".invalid")
            os.replace(path, aside)
            log.error(
                "pin ledger unreadable path=%s moved_to=%s error=%s; "
                "the pins it listed stay pinned",
                path,
                aside,
                exc,
            )
        return ledger

    def __contains__(self, cid: str) -> bool:
        return cid in self.pins

    def record(self, cid: str, *, owned: bool) -> None:
        """Add ``cid``, unless it is there already."""
        if cid not in self.pins:
            self.pins[cid] = HeldPin(owned=owned)
            self._dirty = True

    def mark_released(self, cid: str, now_ms: int) -> None:
        self.pins[cid].released_at_ms = now_ms
        self._dirty = True

    def clear_released(self, cid: str) -> None:
        self.pins[cid].released_at_ms = None
        self._dirty = True

    def remove(self, cid: str) -> None:
        if self.pins.pop(cid, None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write the ledger if it changed since it was read or last saved.

        Raises:
            OSError: the file could not be written.
        """
        text = self.take_changes()
        if text is None:
            return
        try:
            self.write(text)
        except OSError:
            self._dirty = True
            raise

    def take_changes(self) -> str | None:
        """Return the file's new text and count it as saved, or ``None`` when nothing changed.

        Call ``write`` with the text next, in any thread. If that fails, call
        ``keep_unsaved``. The text is made here, in the caller's thread, so
        that ``write`` never reads ``pins`` while the caller changes it.
        """
        if not self._dirty:
            return None
        self._dirty = False
        document = {
            "version": FORMAT_VERSION,
            "account": self.account,
            "pins": {
                cid: {"owned": held.owned, "released_at_ms": held.released_at_ms}
                for cid, held in sorted(self.pins.items())
            },
        }
        return json.dumps(document, indent=1) + "\n"

    def keep_unsaved(self) -> None:
        """Mark the ledger as changed again, after a failed ``write``."""
        self._dirty = True

    def write(self, text: str) -> None:
        """Replace the file with ``text``: temporary file, fsync, rename, fsync of the directory.

        Raises:
            OSError: the file could not be written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".tmp")
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _parse(text: str, account: str) -> dict[str, HeldPin]:
    """Parse a ledger file.

    Raises:
        ValueError: the text is not a ledger of ``account`` in this format.
    """
    document: Any = json.loads(text)
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError(f"not a version {FORMAT_VERSION} pin ledger")
    if document.get("account") != account:
        raise ValueError(f"the ledger of {document.get('account')!r}, not {account}")
    pins: dict[str, HeldPin] = {}
    for cid, entry in document["pins"].items():
        released = entry["released_at_ms"]
        if not isinstance(entry["owned"], bool) or not (
            released is None or isinstance(released, int)
        ):
            raise ValueError(f"invalid entry for {cid}")
        pins[str(cid)] = HeldPin(owned=entry["owned"], released_at_ms=released)
    return pins
