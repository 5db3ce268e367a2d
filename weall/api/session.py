"""Session-gated HTTP requests.

A request carries ``X-WeAll-Account``, ``X-WeAll-Session-Key``,
``X-WeAll-Timestamp`` (ms) and ``X-WeAll-Signature``: the session key's
Ed25519 signature of five lines joined by ``\\n`` with no final newline:
``weall/request/v1``, the method, the path with its query string, the
timestamp, and the hash of the body. Every failure of the request is a 401
with its own code.

The replay cache is a small SQLite file in the node's run directory
(``session-replay.db``), apart from the chain database, so every api process
shares it and an api restart keeps it. Its primary key is the signature, so
an insert that conflicts is a replay. A signature is kept while its
timestamp is inside the accepted window and pruned after, when the clock
check rejects the request anyway. No entry inside the window is ever
evicted. When the cache contains ``max_entries`` of them, a new request is
rejected with 503 ``unavailable`` and ``Retry-After`` instead.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from weall.errors import EncodingError
from weall.protocol.encoding import decode_pubkey, decode_sig, is_account_id
from weall.protocol.keys import verify
from weall.protocol.txtypes import gate_tier

__all__ = [
    "CLOCK_SKEW_MS",
    "MAX_REPLAY_ENTRIES",
    "REPLAY_FILE_NAME",
    "ReplayCache",
    "SessionError",
    "SessionHeaders",
    "request_signing_bytes",
    "verify_session",
]

log = logging.getLogger(__name__)

CLOCK_SKEW_MS: Final = 5 * 60 * 1000
REQUEST_PREFIX: Final = "weall/request/v1"
MAX_REPLAY_ENTRIES: Final = 200_000
REPLAY_FILE_NAME: Final = "session-replay.db"
# Writers are the api processes, each holding the lock for well under a
# millisecond per request, so a long wait means the file is in trouble.
REPLAY_BUSY_TIMEOUT_MS: Final = 2000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS seen (
    signature TEXT PRIMARY KEY,
    timestamp_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_timestamp ON seen (timestamp_ms);
CREATE TABLE IF NOT EXISTS seen_count (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO seen_count (id, n) VALUES (0, 0);
"""


class SessionError(Exception):
    """A session-gated request failed; ``status`` is 401 unless the node is at fault."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 401,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


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
    """Request signatures seen within the clock window, in a SQLite file.

    Every api process opens the same file, and each check is one
    ``BEGIN IMMEDIATE`` transaction, so two processes never both accept one
    signature. The file is opened on first use and created with its
    directory when missing.
    """

    def __init__(self, path: Path, *, max_entries: int = MAX_REPLAY_ENTRIES) -> None:
        self.path = path
        self.max_entries = max_entries
        self._conn: sqlite3.Connection | None = None
        # The api serves requests on one trio thread, but tests and tools may
        # share a cache between threads.
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {REPLAY_BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                # A commit survives a crash of the api process, which is what
                # a restart needs; a power loss may lose the last commits.
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __len__(self) -> int:
        with self._lock:
            row = self._connect().execute("SELECT n FROM seen_count").fetchone()
        return int(row[0])

    def check_and_add(self, signature: str, timestamp_ms: int, now_ms: int) -> None:
        """Record ``signature``, or raise ``session_replay`` when it was seen before.

        Raises:
            SessionError: ``session_replay`` (401) for a signature already
                recorded. ``unavailable`` (503, with ``retry_after_s``) when
                the cache is full of signatures still inside the window, or
                when the file cannot be written.
        """
        try:
            with self._lock:
                outcome, oldest = self._record(signature, timestamp_ms, now_ms)
        except sqlite3.Error as exc:
            full_disk = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            log.warning("session replay cache failed path=%s error=%s", self.path, exc)
            raise SessionError(
                "storage_full" if full_disk else "unavailable",
                "the session replay cache cannot be written; retry later",
                status=503,
                retry_after_s=5,
            ) from None
        except OSError as exc:
            log.warning("session replay cache failed path=%s error=%s", self.path, exc)
            raise SessionError(
                "storage_full" if exc.errno == errno.ENOSPC else "unavailable",
                "the session replay cache cannot be opened; retry later",
                status=503,
                retry_after_s=5,
            ) from None
        if outcome == "replay":
            raise SessionError(
                "session_replay", "this request signature was already used"
            )
        if outcome == "full":
            wait_s = max(1, -(-(oldest + CLOCK_SKEW_MS - now_ms) // 1000))
            log.warning(
                "session replay cache full entries=%d retry_after_s=%d",
                self.max_entries,
                wait_s,
            )
            raise SessionError(
                "unavailable",
                f"the node has {self.max_entries} session requests inside the "
                "replay window; retry later",
                status=503,
                retry_after_s=wait_s,
            )

    def _record(
        self, signature: str, timestamp_ms: int, now_ms: int
    ) -> tuple[str, int]:
        """Prune, then insert; return ``("added" | "replay" | "full", oldest timestamp)``.

        The pruning commits even when the insert does not happen, because it
        is what frees room in a full cache.
        """
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            pruned = conn.execute(
                "DELETE FROM seen WHERE timestamp_ms < ?", (now_ms - CLOCK_SKEW_MS,)
            ).rowcount
            count = int(conn.execute("SELECT n FROM seen_count").fetchone()[0])
            count = max(0, count - pruned)
            outcome = "added"
            if count < self.max_entries:
                try:
                    conn.execute(
                        "INSERT INTO seen (signature, timestamp_ms) VALUES (?, ?)",
                        (signature, timestamp_ms),
                    )
                    count += 1
                except sqlite3.IntegrityError:
                    outcome = "replay"
            else:
                seen = conn.execute(
                    "SELECT 1 FROM seen WHERE signature = ?", (signature,)
                ).fetchone()
                outcome = "replay" if seen is not None else "full"
            conn.execute("UPDATE seen_count SET n = ? WHERE id = 0", (count,))
            oldest = conn.execute("SELECT min(timestamp_ms) FROM seen").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcome, int(oldest if oldest is not None else now_ms)


def _find_session(account: dict[str, Any], pubkey: str, now: int) -> dict[str, Any]:
    """Return the account's session key record for ``pubkey``, or raise."""
    session = next(
        (s for s in account.get("session_keys", []) if s["pubkey"] == pubkey),
        None,
    )
    if session is None:
        # An issue drops expired keys from session_keys, but the account
        # record remembers the most recent of them.
        expired = any(
            e["pubkey"] == pubkey for e in account.get("expired_session_keys", [])
        )
        if expired:
            raise SessionError("session_expired", "the session key has expired")
        raise SessionError(
            "session_invalid", "the key is not a session key of the account"
        )
    if now >= session["expires_at_ms"]:
        raise SessionError("session_expired", "the session key has expired")
    record: dict[str, Any] = session
    return record


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
    replay: ReplayCache | None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Check a session-signed request; return the session key record.

    ``account`` is the signer's committed record, ``revoked`` whether the
    state records the key as revoked. With ``replay`` set to ``None`` the
    signature is checked but not recorded, for a check that runs before the
    body's hash is known.
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
    session = _find_session(account, headers.pubkey, now)
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
    if replay is not None:
        replay.check_and_add(headers.signature, headers.timestamp_ms, now)
    return session
