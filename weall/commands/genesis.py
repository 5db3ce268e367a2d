"""``weall genesis new`` and ``weall init``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from weall import config as config_module
from weall.bootstrap import (
    _write_json_atomic,
    create_database,
    fund_accounts,
    load_genesis,
)
from weall.errors import ConfigError, ProtocolError, StartupError
from weall.protocol import keys
from weall.protocol.genesis import genesis_hash, validate_genesis
from weall.protocol.params import DEV_OVERRIDES

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("genesis", help="write a genesis document")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="write a genesis document (genesis-posture params) and print its hash",
    )
    new.add_argument("--chain-id", required=True, help="chain id, e.g. weall-main")
    new.add_argument(
        "--producer-key",
        type=Path,
        required=True,
        help="key file of the producer account (its account must be set)",
    )
    new.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID:PUBKEY:TIER:ROLES:BALANCE",
        help="a bootstrap account; ROLES is comma-separated or empty; repeatable",
    )
    new.add_argument(
        "--params", type=Path, help="JSON file of params overriding the defaults"
    )
    new.add_argument(
        "--dev-params",
        action="store_true",
        help="juror counts, thresholds and replication factor of 1",
    )
    new.add_argument(
        "--reward-pool",
        type=int,
        default=0,
        metavar="BALANCE",
        help="add the reward pool account (params.reward_pool_account, @rewards by "
        "default) with this balance; its key's secret is discarded",
    )
    new.add_argument(
        "--treasury",
        type=int,
        default=0,
        metavar="BALANCE",
        help="add the treasury account (params.treasury_account, @treasury by "
        "default) with this balance; its key's secret is discarded",
    )
    new.add_argument("--time-ms", type=int, help="genesis_time_ms (default: now)")
    new.add_argument(
        "--out", type=Path, required=True, help="where to write the document"
    )
    new.set_defaults(func=genesis_new)

    init = subparsers.add_parser(
        "init",
        help="create the database for a chain; rejects an existing one",
        description="Create the database of WEALL_DB_PATH from a genesis document "
        "and print the genesis hash. An existing database is never replaced.",
    )
    init.add_argument(
        "--genesis", type=Path, required=True, help="the genesis document"
    )
    init.set_defaults(func=init_database)


def _parse_account(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) != 5:
        raise ConfigError("--account", text, "expected ID:PUBKEY:TIER:ROLES:BALANCE")
    account_id, pubkey, tier, roles, balance = parts
    try:
        return {
            "id": account_id,
            "pubkey": pubkey,
            "poh_tier": int(tier),
            "roles": [r for r in roles.split(",") if r],
            "balance": int(balance),
        }
    except ValueError:
        raise ConfigError(
            "--account", text, "TIER and BALANCE must be integers"
        ) from None


def genesis_new(args: argparse.Namespace) -> int:
    producer = keys.load_key_file(args.producer_key)
    if producer.account is None:
        raise ConfigError(
            "--producer-key",
            str(args.producer_key),
            "the key file must name its account",
        )
    params: dict[str, Any] = dict(DEV_OVERRIDES) if args.dev_params else {}
    if args.params:
        params.update(json.loads(args.params.read_text(encoding="utf-8")))
    accounts = [_parse_account(text) for text in args.account]
    for option, balance in (
        ("--reward-pool", args.reward_pool),
        ("--treasury", args.treasury),
    ):
        if balance < 0:
            raise ConfigError(option, str(balance), "a balance of 0 or more")
    funds = fund_accounts(params, rewards=args.reward_pool, treasury=args.treasury)
    taken = {a["id"] for a in accounts}
    for fund in funds:
        if fund["id"] in taken:
            raise ConfigError(
                "--account",
                fund["id"],
                "the reward pool and treasury accounts are added by --reward-pool "
                "and --treasury, not --account",
            )
    accounts.extend(funds)
    if not any(a["id"] == producer.account for a in accounts):
        accounts.insert(
            0,
            {
                "id": producer.account,
                "pubkey": producer.pubkey,
                "poh_tier": 2,
                "roles": ["node_operator", "producer"],
                "balance": 0,
            },
        )
    document = {
        "chain_id": args.chain_id,
        "genesis_time_ms": args.time_ms
        if args.time_ms is not None
        else int(time.time() * 1000),
        "producer": producer.pubkey,
        "params": params,
        "accounts": accounts,
    }
    try:
        validate_genesis(document)
    except ProtocolError as exc:
        raise StartupError(f"invalid genesis: {exc.message}") from None
    if args.out.exists():
        raise StartupError(
            f"{args.out} exists; refusing to overwrite a genesis document"
        )
    _write_json_atomic(args.out, document)
    print(genesis_hash(document))
    return 0


def init_database(args: argparse.Namespace) -> int:
    config = config_module.load().with_changes(
        genesis_path=args.genesis, genesis_path_set=True
    )
    if config.db_path.exists():
        raise StartupError(
            f"database {config.db_path} exists; there is one chain per database"
        )
    document = load_genesis(config)
    create_database(config, document, keys.load_key_file(config.node_key_path))
    print(genesis_hash(document))
    return 0
