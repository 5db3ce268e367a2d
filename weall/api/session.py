"""Session-gated HTTP requests.

A request carries ``X-WeAll-Account``, ``X-WeAll-Session-Key``,
``X-WeAll-Timestamp`` (ms) and ``X-WeAll-Signature``: the session key's
Ed25519 signature of five lines joined by ``\\n`` with no final newline:
``weall/request/v1``, the method, the path with its query string, the
timestamp, and the hash of the body. Every failure is a 401 with its own code.

The replay cache lives in the api process. A signature is remembered until
its timestamp leaves the accepted window, after which the clock check
rejects it anyway.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from weall.errors import EncodingError
from weall.protocol.encoding import decode_pubkey, decode_sig, is_account_id
from weall.protocol.keys import verify
from weall.protocol.txtypes import gate_tier

__all__ = [
    "CLOCK_SKEW_MS",
    "ReplayCache",
    "SessionError",
    "SessionHeaders",
    "request_signing_bytes",
    "verify_session",
]

CLOCK_SKEW_MS: Final = 5 * 60 * 1000
REQUEST_PREFIX: Final = "weall/request/v1"
MAX_REPLAY_ENTRIES: Final = 200_000


class SessionError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SessionHeaders:
    account: str
    pubkey: str
    timestamp_ms: int
    signature: str

    @classmethod
    def from_headers(cls, headers: Any) -> SessionHeaders:
        names = (
            "X-WeAll-Account",
            "X-WeAll-Session-Key",
            "X-WeAll-Timestamp",
            "X-WeAll-Signature",
        )
        values = [headers.get(name) for name in names]
        missing = [name for name, value in zip(names, values, strict=True) if not value]
        if missing:
            raise SessionError(
                "session_missing", f"missing headers: {', '.join(missing)}"
            )
        account, pubkey, timestamp, signature = values
        if not is_account_id(account):
            raise SessionError(
                "session_invalid", "X-WeAll-Account is not an account id"
            )
        if not timestamp.isdigit() or len(timestamp) > 16:
            raise SessionError(
                "session_invalid", "X-WeAll-Timestamp must be milliseconds"
            )
        return cls(account, pubkey, int(timestamp), signature)


def request_signing_bytes(
    method: str, path_with_query: str, timestamp_ms: int, body_hash: str
) -> bytes:
    lines = (
        REQUEST_PREFIX,
        method.upper(),
        path_with_query,
        str(timestamp_ms),
        body_hash,
    )
    return "\n".join(lines).encode("utf-8")


class ReplayCache:
    """Signatures seen within the clock window, oldest first."""

    def __init__(self, max_entries: int = MAX_REPLAY_ENTRIES) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.max_entries = max_entries

    def check_and_add(self, signature: str, timestamp_ms: int, now_ms: int) -> None:
        while self._seen:
            oldest_sig, oldest_ts = next(iter(self._seen.items()))
            if (
                oldest_ts >= now_ms - CLOCK_SKEW_MS
                and len(self._seen) < self.max_entries
            ):
                break
            self._seen.pop(oldest_sig)
        if signature in self._seen:
            raise SessionError(
                "session_replay", "this request signature was already used"
            )
        self._seen[signature] = timestamp_ms


def verify_session(
    headers: SessionHeaders,
    *,
    account: dict[str, Any] | None,
    revoked: bool,
    required_scope: str,
    params: dict[str, Any],
    method: str,
    path_with_query: str,
    body_hash: str,
    replay: ReplayCache,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Check a session-signed request; return the session key record.

    ``account`` is the signer's committed record, ``revoked`` whether the
    state records the key as revoked.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - headers.timestamp_ms) > CLOCK_SKEW_MS:
        raise SessionError(
            "session_clock_skew", "X-WeAll-Timestamp is more than 5 minutes off"
        )
    if account is None:
        raise SessionError(
            "session_invalid", f"account {headers.account} does not exist"
        )
    try:
        raw_key = decode_pubkey(headers.pubkey, code="session_invalid")
        raw_sig = decode_sig(headers.signature, code="session_bad_signature")
    except EncodingError as exc:
        raise SessionError(exc.code, exc.message) from None
    if revoked:
        raise SessionError("session_revoked", "the session key was revoked")
    session = next(
        (s for s in account.get("session_keys", []) if s["pubkey"] == headers.pubkey),
        None,
    )
    if session is None:
        raise SessionError(
            "session_invalid", "the key is not a session key of the account"
        )
    if now >= session["expires_at_ms"]:
        raise SessionError("session_expired", "the session key has expired")
    if required_scope not in session["scope"]:
        raise SessionError(
            "session_scope", f"the session key's scope lacks {required_scope}"
        )
    tier = gate_tier(params, required_scope)
    if (
        tier is not None
        and account["poh_tier"] < tier
        and "producer" not in account.get("roles", [])
    ):
        raise SessionError("tier_required", f"{required_scope} needs PoH tier {tier}")
    message = request_signing_bytes(
        method, path_with_query, headers.timestamp_ms, body_hash
    )
    if not verify(raw_key, message, raw_sig):
        raise SessionError("session_bad_signature", "the signature does not verify")
    replay.check_and_add(headers.signature, headers.timestamp_ms, now)
    record: dict[str, Any] = session
    return record
