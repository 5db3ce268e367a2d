"""The newest backup in ``/v1/node/status``: its recorded checks and its file's state."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from weall import config as config_module
from weall.api.dashboard import BackupFileCheck, FileFacts, status_document
from weall.storage.backup import BackupManifest, take_backup

from ._support import StorageNode

VERIFICATION_FIELDS = (
    "verified_at_ms",
    "duration_s",
    "integrity_check",
    "schema_version",
    "genesis_hash",
    "tip_hash",
    "height",
)


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def _move_mtime(path: Path, seconds: int) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 10**9))


def test_file_check_hashes_only_after_change(small_db: Path, tmp_path: Path) -> None:
    manifest = take_backup(small_db, tmp_path / "backups")
    path = tmp_path / "backups" / manifest.file
    check = BackupFileCheck()

    # The modification time is the manifest's: no hashing.
    assert check.state(path, manifest) == "present"
    assert check.hashes == 0

    # A new modification time: hashed once, then served from the cache.
    _move_mtime(path, 10)
    assert check.state(path, manifest) == "present"
    assert check.state(path, manifest) == "present"
    assert check.hashes == 1

    # Same size, other bytes, other modification time.
    _flip_byte(path, path.stat().st_size - 10)
    _move_mtime(path, 20)
    assert check.state(path, manifest) == "changed"
    assert check.state(path, manifest) == "changed"
    assert check.hashes == 2

    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - 4096)
    assert check.state(path, manifest) == "changed"
    assert check.hashes == 2, "a size change needs no hash"

    path.unlink()
    assert check.state(path, manifest) == "missing"


def test_file_check_old_manifest_hashed_once(small_db: Path, tmp_path: Path) -> None:
    manifest = take_backup(small_db, tmp_path / "backups")
    path = tmp_path / "backups" / manifest.file
    # A manifest from before modification times were recorded.
    old = dataclasses.replace(manifest, mtime_ns=None, verification=None)
    check = BackupFileCheck()
    assert check.state(path, old) == "present"
    assert check.state(path, old) == "present"
    assert check.hashes == 1


def _backup_status(manifest: BackupManifest, file_state: str) -> dict[str, Any]:
    config = config_module.load({})
    files = FileFacts(
        actors={},
        db_bytes=None,
        wal_bytes=None,
        backup_count=1,
        last_backup=manifest,
        last_backup_file=file_state,
    )
    document = status_document(config, None, files, manifest.created_ms + 1000)
    last: dict[str, Any] = document["backup"]["last"]
    return last


def test_status_verified_from_manifest(small_db: Path, tmp_path: Path) -> None:
    manifest = take_backup(small_db, tmp_path / "backups")
    assert manifest.verification is not None

    last = _backup_status(manifest, "present")
    assert last["verified"] is True
    assert last["verification"] == {
        name: manifest.verification[name] for name in VERIFICATION_FIELDS
    }
    assert last["file"] == "present"

    unrecorded = _backup_status(
        dataclasses.replace(manifest, verification=None), "present"
    )
    assert unrecorded["verified"] is False
    assert unrecorded["verification"] is None

    failed = dataclasses.replace(
        manifest,
        verification={**manifest.verification, "integrity_check": "*** in page 2"},
    )
    assert _backup_status(failed, "present")["verified"] is False
    other_tip = dataclasses.replace(
        manifest, verification={**manifest.verification, "tip_hash": "0" * 64}
    )
    assert _backup_status(other_tip, "present")["verified"] is False
    assert _backup_status(manifest, "missing")["file"] == "missing"


@pytest.mark.slow
def test_status_reports_backup_file_state(tmp_path: Path) -> None:
    node = StorageNode(tmp_path)
    node.start()
    try:
        node.wait_ready()
        manifest = node.cli_json("backup")
        path = node.data / "backups" / manifest["file"]

        def last() -> dict[str, Any]:
            response = node.get("/v1/node/status")
            assert response.status_code == 200, response.text
            document: dict[str, Any] = response.json()["backup"]["last"]
            assert document["height"] == manifest["height"]
            return document

        shown = last()
        assert shown["verified"] is True
        assert shown["file"] == "present"
        assert shown["verification"] == {
            name: manifest["verification"][name] for name in VERIFICATION_FIELDS
        }
        assert shown["verification"]["integrity_check"] == "ok"

        _move_mtime(path, 10)
        assert last()["file"] == "present"

        _flip_byte(path, manifest["size_bytes"] - 10)
        _move_mtime(path, 20)
        changed = last()
        assert changed["file"] == "changed"
        # The checks recorded at backup time stay as they were.
        assert changed["verified"] is True

        with path.open("r+b") as handle:
            handle.truncate(manifest["size_bytes"] - 4096)
        assert last()["file"] == "changed"

        path.unlink()
        assert last()["file"] == "missing"
    finally:
        assert node.stop() == 0
