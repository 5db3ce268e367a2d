"""The session replay cache on real SQLite files, and the session checks.

Each ``ReplayCache`` here is what one api process holds; two caches over one
file are two processes sharing it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from weall.api.session import (
    CLOCK_SKEW_MS,
    ReplayCache,
    SessionError,
    SessionHeaders,
    request_signing_bytes,
    verify_session,
)
from weall.protocol import keys
from weall.protocol.encoding import hash_bytes

NOW = 1_700_000_000_000


def _sig(n: int) -> str:
    return f"u{n:086d}"


def _error(call: Any) -> SessionError:
    with pytest.raises(SessionError) as caught:
        call()
    return caught.value


def test_replay_cache_rejects_second_use(tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path / "replay.db")
    cache.check_and_add(_sig(1), NOW, NOW)
    error = _error(lambda: cache.check_and_add(_sig(1), NOW, NOW + 1000))
    assert error.code == "session_replay"
    assert error.status == 401
    assert len(cache) == 1


def test_replay_cache_shared_by_processes(tmp_path: Path) -> None:
    path = tmp_path / "replay.db"
    first, second = ReplayCache(path), ReplayCache(path)
    first.check_and_add(_sig(1), NOW, NOW)
    assert _error(lambda: second.check_and_add(_sig(1), NOW, NOW)).code == (
        "session_replay"
    )
    second.check_and_add(_sig(2), NOW, NOW)
    assert _error(lambda: first.check_and_add(_sig(2), NOW, NOW)).code == (
        "session_replay"
    )
    # Another interpreter, as a second api worker would be.
    script = (
        "import sys; from pathlib import Path; "
        "from weall.api.session import ReplayCache, SessionError\n"
        "cache = ReplayCache(Path(sys.argv[1]))\n"
        "try:\n"
        f"    cache.check_and_add({_sig(2)!r}, {NOW}, {NOW})\n"
        "except SessionError as exc:\n"
        "    print(exc.code)\n"
        f"cache.check_and_add({_sig(3)!r}, {NOW}, {NOW})\n"
        "print('added')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["session_replay", "added"]
    assert _error(lambda: first.check_and_add(_sig(3), NOW, NOW)).code == (
        "session_replay"
    )


def test_replay_cache_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "run" / "replay.db"
    cache = ReplayCache(path)
    cache.check_and_add(_sig(1), NOW, NOW)
    cache.close()
    reopened = ReplayCache(path)
    error = _error(lambda: reopened.check_and_add(_sig(1), NOW, NOW + 60_000))
    assert error.code == "session_replay"


def test_replay_cache_file_is_wal_with_signature_key(tmp_path: Path) -> None:
    path = tmp_path / "replay.db"
    ReplayCache(path).check_and_add(_sig(1), NOW, NOW)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = conn.execute("PRAGMA table_info(seen)").fetchall()
        primary = [row[1] for row in columns if row[5]]
        assert primary == ["signature"]
        assert conn.execute("SELECT * FROM seen").fetchall() == [(_sig(1), NOW)]
    finally:
        conn.close()


def test_replay_cache_prunes_only_outside_window(tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path / "replay.db")
    cache.check_and_add(_sig(1), NOW - 1000, NOW)
    # A timestamp 5 minutes ahead stays acceptable until 5 minutes after it.
    cache.check_and_add(_sig(2), NOW + CLOCK_SKEW_MS, NOW)
    later = NOW - 1000 + CLOCK_SKEW_MS
    cache.check_and_add(_sig(3), later, later)
    assert len(cache) == 3
    beyond = later + 1
    cache.check_and_add(_sig(4), beyond, beyond)
    # Only the first left the window and was pruned.
    assert len(cache) == 3
    assert _error(lambda: cache.check_and_add(_sig(2), NOW, beyond)).code == (
        "session_replay"
    )


def test_replay_cache_full_never_evicts(tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path / "replay.db", max_entries=3)
    for n in range(3):
        cache.check_and_add(_sig(n), NOW + n * 1000, NOW + n * 1000)
    now = NOW + 10_000
    error = _error(lambda: cache.check_and_add(_sig(9), now, now))
    assert error.code == "unavailable"
    assert error.status == 503
    # The oldest entry leaves the window 5 minutes after its timestamp.
    assert error.retry_after_s == (NOW + CLOCK_SKEW_MS - now) // 1000
    # Every remembered signature is still a replay while the cache is full.
    for n in range(3):
        replayed = _error(lambda n=n: cache.check_and_add(_sig(n), now, now))
        assert replayed.code == "session_replay"
    assert len(cache) == 3
    # Once the oldest leaves the window there is room for one more.
    free_at = NOW + CLOCK_SKEW_MS + 1
    cache.check_and_add(_sig(9), free_at, free_at)
    assert len(cache) == 3
    assert _error(lambda: cache.check_and_add(_sig(9), free_at, free_at)).code == (
        "session_replay"
    )


def test_replay_cache_unwritable_file_is_503(tmp_path: Path) -> None:
    path = tmp_path / "replay.db"
    path.mkdir()
    error = _error(lambda: ReplayCache(path).check_and_add(_sig(1), NOW, NOW))
    assert error.code == "unavailable"
    assert error.status == 503
    assert error.retry_after_s == 5


# -- verify_session -------------------------------------------------------------------

PATH = "/v1/media/upload"
SCOPE = "IPFS_PIN_REQUEST"


def _account(session: keys.KeyPair, **changes: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "id": "@alice",
        "keys": [keys.generate().pubkey],
        "session_keys": [
            {"pubkey": session.pubkey, "scope": [SCOPE], "expires_at_ms": NOW + 60_000}
        ],
        "poh_tier": 1,
        "roles": [],
    }
    account.update(changes)
    return account


def _check(
    session: keys.KeyPair,
    account: dict[str, Any],
    replay: ReplayCache | None,
    *,
    revoked: bool = False,
    now_ms: int = NOW,
) -> dict[str, Any]:
    body_hash = hash_bytes(b"media")
    headers = SessionHeaders(
        account="@alice",
        pubkey=session.pubkey,
        timestamp_ms=NOW,
        signature=session.sign(request_signing_bytes("POST", PATH, NOW, body_hash)),
    )
    return verify_session(
        headers,
        account=account,
        revoked=revoked,
        required_scope=SCOPE,
        params={"gates": {}},
        method="POST",
        path_with_query=PATH,
        body_hash=body_hash,
        replay=replay,
        now_ms=now_ms,
    )


def test_verify_session_records_once(tmp_path: Path) -> None:
    session = keys.generate()
    replay = ReplayCache(tmp_path / "replay.db")
    assert _check(session, _account(session), replay)["pubkey"] == session.pubkey
    error = _error(lambda: _check(session, _account(session), replay))
    assert error.code == "session_replay"


def test_verify_session_without_cache_records_nothing(tmp_path: Path) -> None:
    session = keys.generate()
    replay = ReplayCache(tmp_path / "replay.db")
    _check(session, _account(session), None)
    _check(session, _account(session), replay)
    assert len(replay) == 1


def test_verify_session_expired_key_dropped_from_list() -> None:
    session = keys.generate()
    account = _account(
        session,
        session_keys=[],
        expired_session_keys=[{"pubkey": session.pubkey, "expires_at_ms": NOW - 1}],
    )
    assert _error(lambda: _check(session, account, None)).code == "session_expired"


def test_verify_session_expired_key_still_listed() -> None:
    session = keys.generate()
    account = _account(session)
    _check(session, account, None, now_ms=NOW + 59_999)
    error = _error(lambda: _check(session, account, None, now_ms=NOW + 60_000))
    assert error.code == "session_expired"


def test_verify_session_unknown_key_is_invalid() -> None:
    session = keys.generate()
    account = _account(session, session_keys=[])
    assert _error(lambda: _check(session, account, None)).code == "session_invalid"


def test_verify_session_revoked_first() -> None:
    session = keys.generate()
    account = _account(session, session_keys=[])
    error = _error(lambda: _check(session, account, None, revoked=True))
    assert error.code == "session_revoked"
