"""The ``weall`` command line.

Each subcommand lives in its own module and is imported only when used, so
``weall tx`` does not pay for the supervisor's imports and the reverse.
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys
from collections.abc import Sequence

from weall import __version__
from weall.errors import WeallError

__all__ = ["main"]

# subcommand -> (module, help). Each module has register(subparsers) and the
# parser it registers sets ``func``.
_COMMANDS: dict[str, tuple[str, str]] = {
    "supervise": ("weall.supervisor.cli", "run the whole node, every actor supervised"),
    "actor": ("weall.actors.cli", "run one actor in the foreground"),
    "status": ("weall.supervisor.cli", "show the actors of a running supervisor"),
    "restart": ("weall.supervisor.cli", "restart one actor of a running supervisor"),
    "stop": ("weall.supervisor.cli", "stop a running supervisor"),
    "genesis": ("weall.commands.genesis", "write a genesis document"),
    "init": ("weall.commands.genesis", "create the database for a chain"),
    "keygen": ("weall.commands.keys", "write an Ed25519 key file"),
    "tx": ("weall.commands.tx", "build, sign and submit transactions"),
    "backup": ("weall.commands.backup", "take or verify a live backup"),
    "restore": ("weall.commands.backup", "restore a backup into a stopped node"),
    "verify": ("weall.commands.verify", "replay the chain and check every block"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weall", description="WeAll protocol node and client tools"
    )
    parser.add_argument("--version", action="version", version=f"weall {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((arg for arg in argv if not arg.startswith("-")), None)
    if wanted in _COMMANDS:
        module_names = [_COMMANDS[wanted][0]]
    else:
        module_names = list(dict.fromkeys(module for module, _ in _COMMANDS.values()))
    for module_name in module_names:
        importlib.import_module(module_name).register(subparsers)
    for name, (_, help_text) in _COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        raise SystemExit(2)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except WeallError as exc:
        print(f"weall {args.command}: {exc}", file=sys.stderr)
        code = 1
    except sqlite3.DatabaseError as exc:
        print(
            f"weall {args.command}: database error: {exc}; is it a WeAll database?",
            file=sys.stderr,
        )
        code = 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"weall {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        code = 1
    raise SystemExit(code or 0)
