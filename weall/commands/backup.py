"""``weall backup``, ``weall backup --verify FILE`` and ``weall restore FILE``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from weall import config as config_module
from weall.errors import StartupError, StorageError
from weall.progress import Progress, run_watched
from weall.protocol.genesis import genesis_hash
from weall.storage.backup import (
    BackupManifest,
    prune_backups,
    restore_backup,
    take_backup,
    verify_backup,
)
from weall.storage.lock import is_locked

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backup",
        help="take a live, verified backup now (or check one with --verify)",
        description="Take a consistent backup of the running node's database at a "
        "block boundary, verify it, write its manifest and prune old backups. With "
        "--verify, check an existing backup file instead.",
    )
    parser.add_argument(
        "--verify", type=Path, metavar="FILE", help="check a backup file instead"
    )
    parser.add_argument(
        "--dir", type=Path, help="backup directory (default: WEALL_BACKUP_DIR)"
    )
    parser.add_argument(
        "--no-prune", action="store_true", help="keep every older backup"
    )
    parser.set_defaults(func=backup_command)
    restore = subparsers.add_parser(
        "restore",
        help="restore a backup into a stopped node",
        description="Verify a backup file and copy it into place as the node's "
        "database. Rejected while a producer holds the data directory.",
    )
    restore.add_argument("file", type=Path, help="the backup .db file")
    restore.add_argument(
        "--other-chain",
        action="store_true",
        help="restore a backup whose genesis differs from WEALL_GENESIS_PATH's",
    )
    restore.set_defaults(func=restore_command)


def backup_command(args: argparse.Namespace) -> int:
    config = config_module.load()
    try:
        if args.verify is not None:
            facts = _verify_with_progress(args.verify)
            print(json.dumps({"ok": True, **facts}))
            return 0
        if not config.db_path.exists():
            raise StartupError(f"database {config.db_path} not found")
        directory = args.dir or config.backup_dir
        manifest = _take_with_progress(config.db_path, directory)
        if not args.no_prune:
            prune_backups(
                directory,
                keep_daily=config.backup_keep_daily,
                keep_weekly=config.backup_keep_weekly,
            )
    except StorageError as exc:
        raise StartupError(str(exc)) from None
    print(
        json.dumps(
            {"ok": True, **asdict(manifest), "path": str(directory / manifest.file)}
        )
    )
    return 0


def _expected_genesis(config: config_module.Config) -> str | None:
    """The genesis hash the data directory belongs to, from its genesis document."""
    try:
        document = json.loads(config.genesis_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return genesis_hash(document)


def restore_command(args: argparse.Namespace) -> int:
    config = config_module.load()
    expected = _expected_genesis(config)

    def accept(facts: dict[str, Any]) -> None:
        if (
            expected is not None
            and facts["genesis_hash"] != expected
            and not args.other_chain
        ):
            raise StartupError(
                f"backup {args.file} is of genesis {facts['genesis_hash']}, but "
                f"{config.genesis_path} is genesis {expected}; pass --other-chain only if "
                "this data directory is to become that chain"
            )

    try:
        facts = _restore_with_progress(
            args.file, config.db_path, config.lock_path, accept
        )
    except StorageError as exc:
        raise StartupError(str(exc)) from None
    print(json.dumps({"ok": True, "restored": str(args.file), **facts}))
    return 0


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


class _BackupSteps:
    """The step a running ``take_backup`` is at, written by its thread."""

    def __init__(self) -> None:
        # One attribute, so a reader never sees one step's name with another's path.
        self.current: tuple[str, Path] | None = None

    def __call__(self, step: str, path: Path) -> None:
        if step == "waiting":
            holder = is_locked(path) or "unknown"
            print(
                f"weall backup: another backup (pid {holder}) is being taken into "
                f"{path.parent}; waiting for it to finish",
                file=sys.stderr,
                flush=True,
            )
        self.current = (step, path)


def _take_with_progress(db_path: Path, directory: Path) -> BackupManifest:
    """Run ``take_backup``, reporting the size of the copy it writes.

    The total is the size of the database and its WAL, an upper bound:
    ``VACUUM INTO`` leaves out free pages, so the copy may end below it.
    The copy followed is the one that this backup names, so a stale
    temporary file never shows as progress. While another backup into the
    same directory runs, it waits for that one to finish.
    """
    wal = db_path.with_name(db_path.name + "-wal")
    total = (_file_size(db_path) or 0) + (_file_size(wal) or 0)
    steps = _BackupSteps()

    def poll(progress: Progress) -> None:
        if steps.current is None:
            return
        step, path = steps.current
        if step == "copying":
            size = _file_size(path)
            if size is not None:
                progress.update(size)
        progress.set_phase(
            "waiting for another backup to finish" if step == "waiting" else step
        )

    with Progress("backup", total=total, unit="bytes") as progress:
        manifest = run_watched(
            lambda: take_backup(db_path, directory, on_step=steps, wait_s=None),
            progress,
            poll,
        )
        progress.set_total(manifest.size_bytes)
        progress.update(manifest.size_bytes)
    return manifest


def _verify_with_progress(path: Path) -> dict[str, Any]:
    with Progress("backup --verify", total=_file_size(path), unit="bytes") as progress:
        progress.set_phase("checking integrity")
        facts = run_watched(lambda: verify_backup(path), progress, lambda _: None)
        progress.update(_file_size(path) or 0)
    return facts


def _restore_with_progress(
    backup: Path,
    db_path: Path,
    lock_path: Path,
    accept: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run ``restore_backup``, reporting the size of the copy it writes."""
    temp = db_path.with_name(db_path.name + ".restore.tmp")
    size = _file_size(backup)

    def poll(progress: Progress) -> None:
        copied = _file_size(temp)
        if copied is None:
            progress.set_phase(
                "checking integrity" if not progress.statistics().count else None
            )
        else:
            progress.update(copied)
            progress.set_phase("copying")

    with Progress("restore", total=size, unit="bytes") as progress:
        facts = run_watched(
            lambda: restore_backup(backup, db_path, lock_path, accept=accept),
            progress,
            poll,
        )
        progress.update(size or 0)
    return facts
