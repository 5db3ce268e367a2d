"""The pinner's ledger of the pins it made: saving, loading, damaged files."""

from __future__ import annotations

import json
from pathlib import Path

from weall.ipfs.unixfs import compute_cid
from weall.media.ledger import HeldPin, PinLedger

CID_A = compute_cid(b"a")
CID_B = compute_cid(b"b")


def test_ledger_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pinner" / "pins-op.json"
    ledger = PinLedger.load(path, "@op")
    assert ledger.pins == {}

    ledger.record(CID_A, owned=True)
    ledger.record(CID_B, owned=False)
    ledger.mark_released(CID_A, 1_700_000_000_000)
    ledger.save()
    loaded = PinLedger.load(path, "@op")

    assert loaded.pins == {
        CID_A: HeldPin(owned=True, released_at_ms=1_700_000_000_000),
        CID_B: HeldPin(owned=False, released_at_ms=None),
    }
    assert not path.with_name(path.name + ".tmp").exists()


def test_ledger_record_keeps_first_owner(tmp_path: Path) -> None:
    ledger = PinLedger(tmp_path / "pins.json", "@op")
    ledger.record(CID_A, owned=False)
    ledger.record(CID_A, owned=True)
    assert ledger.pins[CID_A].owned is False


def test_ledger_saves_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    ledger = PinLedger(path, "@op")
    ledger.save()
    assert not path.exists()

    ledger.record(CID_A, owned=True)
    ledger.save()
    assert CID_A in json.loads(path.read_text())["pins"]
    # Nothing changed since, so a save leaves the file alone.
    path.write_text("marker")
    ledger.save()
    assert path.read_text() == "marker"

    ledger.remove(CID_A)
    ledger.save()
    assert json.loads(path.read_text())["pins"] == {}


def test_ledger_damaged_file_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    path.write_text('{"version": 1, "account": "@op", "pins": {"x": {"owned": 1}}}')

    ledger = PinLedger.load(path, "@op")

    assert ledger.pins == {}
    assert not path.exists()
    assert path.with_name("pins.json.invalid").exists()


def test_ledger_of_other_account_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    other = PinLedger(path, "@other")
    other.record(CID_A, owned=True)
    other.save()

    ledger = PinLedger.load(path, "@op")

    assert ledger.pins == {}
    assert path.with_name("pins.json.invalid").exists()
