"""Helpers of the media tests: a test genesis, signed transactions, signed uploads.

Every node here is a real ``weall supervise`` (``e2e.node.Node``) on
loopback, and every pinner a real ``weall actor pinner`` process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx
from e2e.node import Node

from weall.protocol import keys
from weall.protocol.encoding import encode_hash
from weall.protocol.envelope import build_envelope
from weall.protocol.params import DEV_OVERRIDES

__all__ = [
    "CHAIN_ID",
    "Chain",
    "Pinner",
    "body_hash",
    "session_headers",
    "wait_for",
    "write_chain",
]

T = TypeVar("T")

CHAIN_ID: Final = "weall-dev"
FINAL: Final = ("committed", "rejected", "expired")


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.1
) -> T:
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def body_hash(body: bytes) -> str:
    """Return the hash form of the body's SHA-256, as the signed lines carry it."""
    return encode_hash(hashlib.sha256(body).digest())


def session_headers(
    session: keys.KeyPair,
    account: str,
    body: bytes,
    *,
    path: str = "/v1/media/upload",
    method: str = "POST",
    timestamp_ms: int | None = None,
    signed_hash: str | None = None,
) -> dict[str, str]:
    """Return the four session headers of a request signed by ``session``."""
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    lines = (
        "weall/request/v1",
        method,
        path,
        str(timestamp),
        signed_hash or body_hash(body),
    )
    return {
        "X-WeAll-Account": account,
        "X-WeAll-Session-Key": session.pubkey,
        "X-WeAll-Timestamp": str(timestamp),
        "X-WeAll-Signature": session.sign("\n".join(lines).encode("utf-8")),
    }


@dataclass
class Chain:
    """The keys of a test chain and a client for its node."""

    workdir: Path
    keys: dict[str, keys.KeyPair]
    node: Node | None = None
    nonces: dict[str, int] = field(default_factory=dict)

    def key_path(self, account: str) -> Path:
        return self.workdir / "keys" / f"{account.lstrip('@')}.key"

    def submit(
        self,
        account: str,
        tx_type: str,
        payload: dict[str, Any],
        *,
        key: keys.KeyPair | None = None,
    ) -> str:
        """Sign with the account's next nonce and submit; return the tx id."""
        assert self.node is not None
        nonce = self.nonces.get(account)
        if nonce is None:
            nonce = int(self.node.get(f"/v1/accounts/{account}").json()["next_nonce"])
        envelope = build_envelope(
            key or self.keys[account],
            chain_id=CHAIN_ID,
            tx_type=tx_type,
            signer=account,
            nonce=nonce,
            payload=payload,
        )
        response = self.node.post("/v1/tx/submit", json=envelope)
        assert response.status_code == 202, response.text
        self.nonces[account] = nonce + 1
        return str(response.json()["tx_id"])

    def wait_tx(self, tx_id: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.node is not None
        node = self.node

        def final() -> dict[str, Any] | None:
            response = node.get(f"/v1/tx/{tx_id}")
            document: dict[str, Any] = response.json()
            return (
                document
                if response.status_code == 200 and document["status"] in FINAL
                else None
            )

        return wait_for(final, timeout)

    def commit(
        self,
        account: str,
        tx_type: str,
        payload: dict[str, Any],
        *,
        key: keys.KeyPair | None = None,
    ) -> dict[str, Any]:
        """Submit, wait for the commit, and return the receipt, which must be ok."""
        status = self.wait_tx(self.submit(account, tx_type, payload, key=key))
        assert status["status"] == "committed", status
        assert status["receipt"]["ok"], status
        receipt: dict[str, Any] = status["receipt"]
        return receipt

    def issue_session(
        self, account: str, scope: Iterable[str], ttl_ms: int = 3_600_000
    ) -> keys.KeyPair:
        session = keys.generate()
        expires = int(time.time() * 1000) + ttl_ms
        self.commit(
            account,
            "ACCOUNT_SESSION_KEY_ISSUE",
            {
                "pubkey": session.pubkey,
                "scope": sorted(scope),
                "expires_at_ms": expires,
            },
        )
        return session

    def upload(
        self,
        session: keys.KeyPair,
        account: str,
        body: bytes,
        content_type: str = "application/octet-stream",
    ) -> httpx.Response:
        assert self.node is not None
        headers = session_headers(session, account, body)
        headers["Content-Type"] = content_type
        return self.node.post("/v1/media/upload", content=body, headers=headers)

    def status(self, cid: str) -> dict[str, Any] | None:
        assert self.node is not None
        response = self.node.get(f"/v1/media/{cid}/status")
        return response.json() if response.status_code == 200 else None


def write_chain(
    workdir: Path,
    accounts: dict[str, tuple[int, list[str]]],
    params: dict[str, Any],
    *,
    producer_roles: tuple[str, ...] = ("node_operator", "producer"),
) -> Chain:
    """Write node and account keys and a genesis into ``workdir/data`` for a dev start.

    ``accounts`` maps each id to its PoH tier and roles; ``@node`` is the
    producer with ``producer_roles``. ``params`` is merged over the dev ones.
    """
    data = workdir / "data"
    chain_keys = {"@node": keys.generate("@node")}
    keys.write_key_file(data / "keys" / "node.key", chain_keys["@node"])
    entries = [
        {
            "id": "@node",
            "pubkey": chain_keys["@node"].pubkey,
            "poh_tier": 2,
            "roles": list(producer_roles),
            "balance": 0,
        }
    ]
    chain = Chain(workdir, chain_keys)
    for account, (tier, roles) in accounts.items():
        key = chain_keys[account] = keys.generate(account)
        keys.write_key_file(chain.key_path(account), key)
        entries.append(
            {
                "id": account,
                "pubkey": key.pubkey,
                "poh_tier": tier,
                "roles": roles,
                "balance": 0,
            }
        )
    document = {
        "chain_id": CHAIN_ID,
        "genesis_time_ms": int(time.time() * 1000),
        "producer": chain_keys["@node"].pubkey,
        "params": {**DEV_OVERRIDES, **params},
        "accounts": entries,
    }
    (data / "genesis.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return chain


class Pinner:
    """A standalone ``weall actor pinner`` process with its own key and store."""

    def __init__(self, chain: Chain, account: str, env: dict[str, str]) -> None:
        assert chain.node is not None
        self.account = account
        self.home = chain.workdir / f"pinner-{account.lstrip('@')}"
        self.store = self.home / "data" / "ipfs"
        self.log_path = self.home / "pinner.log"
        self.run_dir = Path(tempfile.mkdtemp(prefix="weall-pin-", dir="/tmp"))
        self.home.mkdir(parents=True, exist_ok=True)
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WEALL_") and k != "PORT"
        }
        self.env = {
            **base,
            "WEALL_PINNER_NODE_URL": chain.node.url,
            "WEALL_NODE_KEY_PATH": str(chain.key_path(account)),
            "WEALL_DB_PATH": str(self.home / "data" / "weall.db"),
            "WEALL_RUN_DIR": str(self.run_dir),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "weall", "actor", "pinner"],
                cwd=self.home,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def pinned(self) -> set[str]:
        pins = self.store / "pins"
        return {path.name for path in pins.iterdir()} if pins.is_dir() else set()
