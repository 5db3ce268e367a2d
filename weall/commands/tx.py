"""``weall tx``: build, sign and submit transactions over HTTP.

The nonce comes from the account's ``next_nonce`` and the chain id from
``/v1/state/snapshot`` unless ``--nonce`` / ``--chain-id`` are given. It prints
the tx id and, with ``--wait``, the committed receipt. The exit status is 0
when the transaction was accepted (and, with ``--wait``, its receipt is ok).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from weall.errors import ConfigError, StartupError
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

__all__ = ["register"]


def _default_url() -> str:
    """The local node's api, from the same settings the node binds with."""
    host = os.environ.get("WEALL_API_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    port = os.environ.get("WEALL_API_PORT") or os.environ.get("PORT") or "8000"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


DEFAULT_URL = _default_url()
FINAL_STATUSES = ("committed", "rejected", "expired")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, required=True, help="key file that signs")
    parser.add_argument(
        "--account", help="signer account id (default: the key file's account)"
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"node API base URL (default from WEALL_API_HOST/WEALL_API_PORT: {DEFAULT_URL})",
    )
    parser.add_argument(
        "--nonce", type=int, help="nonce to use (default: the account's next nonce)"
    )
    parser.add_argument("--chain-id", help="chain id to sign for (default: the node's)")
    parser.add_argument(
        "--wait", action="store_true", help="wait for the commit and print the receipt"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the commit with --wait (default: 30)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("tx", help="build, sign and submit a transaction")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    sub = kinds.add_parser("register", help="ACCOUNT_REGISTER the key's account")
    _common(sub)
    sub = kinds.add_parser("profile", help="PROFILE_UPDATE")
    _common(sub)
    sub.add_argument("--display-name", help="the name shown for the account")
    sub.add_argument("--bio", help="a short text about the account")
    sub.add_argument("--avatar-cid", help="CID of an uploaded image")
    sub = kinds.add_parser("post", help="CONTENT_POST_CREATE")
    _common(sub)
    sub.add_argument("body", help="the post's text")
    sub.add_argument("--group", help="group id to post in")
    sub.add_argument(
        "--media", action="append", default=[], help="CID of uploaded media"
    )
    sub = kinds.add_parser("comment", help="CONTENT_COMMENT_CREATE")
    _common(sub)
    sub.add_argument("parent_id", help="id of the post or comment replied to")
    sub.add_argument("body", help="the comment's text")
    sub = kinds.add_parser("follow", help="FOLLOW_SET")
    _common(sub)
    sub.add_argument("target", help="account id to follow")
    sub.add_argument(
        "--unfollow", action="store_true", help="stop following the account instead"
    )
    sub = kinds.add_parser("transfer", help="BALANCE_TRANSFER")
    _common(sub)
    sub.add_argument("to", help="account id that receives the amount")
    sub.add_argument("amount", type=int, help="amount, a whole number of units")
    sub = kinds.add_parser("raw", help="any type, with its payload as JSON")
    _common(sub)
    sub.add_argument("tx_type", help="transaction type, e.g. GROUP_CREATE")
    sub.add_argument("payload", help='payload JSON object, e.g. \'{"body": "hi"}\'')
    parser.set_defaults(func=run_tx)


def _payload(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.kind == "register":
        return "ACCOUNT_REGISTER", {}
    if args.kind == "profile":
        payload = {
            name: value
            for name, value in (
                ("display_name", args.display_name),
                ("bio", args.bio),
                ("avatar_cid", args.avatar_cid),
            )
            if value is not None
        }
        return "PROFILE_UPDATE", payload
    if args.kind == "post":
        payload = {"body": args.body}
        if args.group:
            payload["group_id"] = args.group
        if args.media:
            payload["media"] = args.media
        return "CONTENT_POST_CREATE", payload
    if args.kind == "comment":
        return "CONTENT_COMMENT_CREATE", {
            "parent_id": args.parent_id,
            "body": args.body,
        }
    if args.kind == "follow":
        return "FOLLOW_SET", {"target": args.target, "following": not args.unfollow}
    if args.kind == "transfer":
        return "BALANCE_TRANSFER", {"to": args.to, "amount": args.amount}
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        raise ConfigError(
            "PAYLOAD", args.payload, f"must be a JSON object ({exc})"
        ) from None
    if not isinstance(payload, dict):
        raise ConfigError("PAYLOAD", args.payload, "must be a JSON object")
    return args.tx_type, payload


def _get(client: httpx.Client, path: str) -> httpx.Response:
    try:
        return client.get(path)
    except httpx.HTTPError as exc:
        raise StartupError(
            f"cannot reach the node at {client.base_url}: {exc}"
        ) from None


def run_tx(args: argparse.Namespace) -> int:
    key = keys.load_key_file(args.key)
    signer = args.account or key.account
    if signer is None:
        raise ConfigError(
            "--account", None, "required when the key file has no account"
        )
    tx_type, payload = _payload(args)
    with httpx.Client(base_url=args.url, timeout=30.0) as client:
        chain_id = (
            args.chain_id or _get(client, "/v1/state/snapshot").json()["chain_id"]
        )
        nonce = args.nonce
        if nonce is None:
            if tx_type == "ACCOUNT_REGISTER":
                nonce = 0
            else:
                response = _get(client, f"/v1/accounts/{signer}")
                if response.status_code != 200:
                    print(response.text, file=sys.stderr)
                    return 1
                nonce = int(response.json()["next_nonce"])
        envelope = build_envelope(
            key,
            chain_id=chain_id,
            tx_type=tx_type,
            signer=signer,
            nonce=nonce,
            payload=payload,
        )
        try:
            response = client.post("/v1/tx/submit", json=envelope)
        except httpx.HTTPError as exc:
            raise StartupError(f"cannot reach the node at {args.url}: {exc}") from None
        result = response.json()
        if response.status_code not in (200, 202):
            print(json.dumps(result), file=sys.stderr)
            return 1
        print(result["tx_id"])
        if not args.wait:
            return 0
        return _wait(client, result["tx_id"], args.timeout)


def _wait(client: httpx.Client, tx_id: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = _get(client, f"/v1/tx/{tx_id}")
        if response.status_code == 200:
            status = response.json()
            if status["status"] in FINAL_STATUSES:
                print(json.dumps(status))
                receipt = status.get("receipt") or {}
                return 0 if status["status"] == "committed" and receipt.get("ok") else 1
        time.sleep(0.2)
    print(f"weall tx: {tx_id} was not committed within {timeout} s", file=sys.stderr)
    return 1
