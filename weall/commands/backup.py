"""``weall backup``, ``weall backup --verify FILE`` and ``weall restore FILE``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from weall import config as config_module
from weall.errors import StartupError, StorageError
from weall.storage.backup import prune_backups, restore_backup, take_backup, verify_backup

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backup", help="take a live, verified backup now (or check one with --verify)"
    )
    parser.add_argument("--verify", type=Path, metavar="FILE", help="check a backup file instead")
    parser.add_argument("--dir", type=Path, help="backup directory (default: WEALL_BACKUP_DIR)")
    parser.add_argument("--no-prune", action="store_true", help="keep every older backup")
    parser.set_defaults(func=backup_command)
    restore = subparsers.add_parser("restore", help="restore a backup into a stopped node")
    restore.add_argument("file", type=Path, help="the backup .db file")
    restore.set_defaults(func=restore_command)


def backup_command(args: argparse.Namespace) -> int:
    config = config_module.load()
    try:
        if args.verify is not None:
            facts = verify_backup(args.verify)
            print(json.dumps({"ok": True, **facts}))
            return 0
        if not config.db_path.exists():
            raise StartupError(f"database {config.db_path} not found")
        directory = args.dir or config.backup_dir
        manifest = take_backup(config.db_path, directory)
        if not args.no_prune:
            prune_backups(directory, keep_daily=config.backup_keep_daily,
                          keep_weekly=config.backup_keep_weekly)
    except StorageError as exc:
        raise StartupError(str(exc)) from None
    print(json.dumps({"ok": True, **asdict(manifest), "path": str(directory / manifest.file)}))
    return 0


def restore_command(args: argparse.Namespace) -> int:
    config = config_module.load()
    try:
        facts = restore_backup(args.file, config.db_path, config.lock_path)
    except StorageError as exc:
        raise StartupError(str(exc)) from None
    print(json.dumps({"ok": True, "restored": str(args.file), **facts}))
    return 0
