"""``weall keygen``: write an Ed25519 key file."""

from __future__ import annotations

import argparse
from pathlib import Path

from weall.errors import ConfigError
from weall.protocol import keys
from weall.protocol.encoding import is_account_id

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="write an Ed25519 key file (mode 0600) and print its public key",
        description="Write a new Ed25519 key file, mode 0600, as JSON with the "
        "account, the public key and the 32-byte seed, and print the public key.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="path of the key file to write"
    )
    parser.add_argument("--account", help="account id the key belongs to, e.g. @alice")
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing file"
    )
    parser.set_defaults(func=keygen)


def keygen(args: argparse.Namespace) -> int:
    if args.account is not None and not is_account_id(args.account):
        raise ConfigError(
            "--account", args.account, "must be @ followed by 3 to 32 of [a-z0-9_]"
        )
    key = keys.generate(args.account)
    try:
        keys.write_key_file(args.out, key, overwrite=args.force)
    except FileExistsError as exc:
        raise ConfigError(
            "--out", str(args.out), f"{exc}; pass --force to replace it"
        ) from None
    print(key.pubkey)
    return 0
