"""Recent state: block changes land in state_recent and are folded into state.

Reads must see the same state whatever part of it has been folded, and a
fold must never lose or resurrect an entry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from helpers import Chain
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weall.protocol.block import BlockResult
from weall.storage import queries
from weall.storage import writer as writer_module
from weall.storage.reader import read_once
from weall.storage.writer import Writer

CommitBlock = Callable[..., BlockResult]


def rows(conn: sqlite3.Connection, table: str) -> dict[tuple[str, str], bytes | None]:
    return {
        (kind, key): value
        for kind, key, value in conn.execute(f"SELECT kind, key, value FROM {table}")
    }


def view(conn: sqlite3.Connection) -> dict[tuple[str, str], dict]:
    return {
        key: orjson.loads(value)
        for key, value in rows(conn, "state_view").items()
        if value is not None
    }


def post(chain: Chain, commit: CommitBlock, author: str, body: str) -> str:
    block = commit(chain.tx(author, "CONTENT_POST_CREATE", {"body": body}))
    return str(block.receipts[0]["post_id"])


def test_commit_writes_only_recent_state(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    folded_before = rows(writer.conn, "state")
    post(chain, commit, "@alice", "hello")
    assert rows(writer.conn, "state") == folded_before
    assert writer.recent_entries >= len(rows(writer.conn, "state_recent")) > 0
    assert view(writer.conn) == chain.state.entries


def test_fold_in_chunks_keeps_every_read(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    post_id = post(chain, commit, "@alice", "first")
    commit(
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": "like"}
        )
    )
    post(chain, commit, "@bob", "second")
    expected = chain.state.entries
    feed = queries.SqliteState(writer.conn).scan("feed", reverse=True)
    waiting = len(rows(writer.conn, "state_recent"))
    moved = 0
    while step := writer.fold_recent(limit=3):
        assert step <= 3
        moved += step
        assert view(writer.conn) == expected
        assert queries.SqliteState(writer.conn).scan("feed", reverse=True) == feed
    assert moved == waiting
    assert rows(writer.conn, "state_recent") == {}
    assert writer.recent_entries == 0
    assert writer.folded_entries == moved
    folded = {
        key: orjson.loads(value) for key, value in rows(writer.conn, "state").items()
    }
    assert folded == expected


def test_deletion_waits_as_null_then_deletes(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    post_id = post(chain, commit, "@alice", "p")
    commit(
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": "like"}
        )
    )
    while writer.fold_recent():
        pass
    reaction_keys = [key for key in rows(writer.conn, "state") if key[0] == "reaction"]
    assert len(reaction_keys) == 1
    commit(
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": None}
        )
    )
    # Still in the state table, hidden by the NULL in state_recent.
    assert reaction_keys[0] in rows(writer.conn, "state")
    assert rows(writer.conn, "state_recent")[reaction_keys[0]] is None
    state = queries.SqliteState(writer.conn)
    assert state.get(*reaction_keys[0]) is None
    assert state.scan("reaction") == []
    while writer.fold_recent():
        pass
    assert reaction_keys[0] not in rows(writer.conn, "state")
    assert view(writer.conn) == chain.state.entries


def test_readers_see_recent_state(
    writer: Writer, chain: Chain, commit: CommitBlock, db_path: Path
) -> None:
    post_id = post(chain, commit, "@alice", "unfolded")
    stored = read_once(
        db_path, lambda conn: queries.SqliteState(conn).get("post", post_id)
    )
    assert stored is not None
    assert stored["body"] == "unfolded"


def test_writer_reopened_counts_waiting_entries(
    writer: Writer, chain: Chain, commit: CommitBlock, db_path: Path
) -> None:
    post(chain, commit, "@alice", "p")
    waiting = len(rows(writer.conn, "state_recent"))
    reopened = Writer(db_path, synchronous="NORMAL")
    try:
        assert reopened.recent_entries == waiting
    finally:
        reopened.close()


def test_commit_folds_first_past_the_force_limit(
    writer: Writer,
    chain: Chain,
    commit: CommitBlock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    post(chain, commit, "@alice", "one")
    waiting = rows(writer.conn, "state_recent")
    monkeypatch.setattr(writer_module, "FOLD_FORCE_ENTRIES", 1)
    monkeypatch.setattr(writer_module, "FOLD_CHUNK_ENTRIES", 2)
    post(chain, commit, "@bob", "two")
    # The first block's entries were folded before the second was stored.
    assert set(waiting) <= set(rows(writer.conn, "state"))
    assert view(writer.conn) == chain.state.entries


def test_fold_rejects_a_limit_below_one(writer: Writer) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        writer.fold_recent(limit=0)


def test_fold_of_nothing_moves_nothing(writer: Writer) -> None:
    while writer.fold_recent():
        pass
    assert writer.fold_recent() == 0
    assert writer.recent_entries == 0


# -- the overlay against a model --------------------------------------------------------------

KINDS = ("a", "b")
KEYS = [f"{n:02d}" for n in range(12)] + ["0", "1/x", "1/y", "2"]
change = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(KEYS),
    st.one_of(st.none(), st.integers(0, 9)),
)
step = st.one_of(
    st.tuples(st.just("block"), st.lists(change, max_size=8)),
    st.tuples(st.just("fold"), st.integers(1, 6)),
)


def store(writer: Writer, changes: list[tuple[str, str, int | None]]) -> None:
    # A block's changes contain each key once, sorted, as BlockResult gives them.
    latest = {(kind, key): value for kind, key, value in changes}
    raw = [
        (kind, key, None if value is None else orjson.dumps({"v": value}))
        for (kind, key), value in sorted(latest.items())
    ]
    writer._transaction("test changes", lambda: writer._write_changes(raw))
    writer.recent_entries += len(raw)


def expected_scan(
    model: dict[tuple[str, str], int],
    kind: str,
    prefix: str,
    after: str | None,
    limit: int | None,
    reverse: bool,
) -> list[tuple[str, dict]]:
    keys = sorted(
        (key for k, key in model if k == kind and key.startswith(prefix)),
        reverse=reverse,
    )
    if after is not None:
        keys = [key for key in keys if (key < after if reverse else key > after)]
    if limit is not None:
        keys = keys[:limit]
    return [(key, {"v": model[(kind, key)]}) for key in keys]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(step, max_size=12))
def test_overlay_reads_match_a_model(tmp_path: Path, steps: list) -> None:
    path = tmp_path / f"model-{len(list(tmp_path.iterdir()))}.db"
    writer = Writer(path, synchronous="NORMAL")
    try:
        writer.migrate()
        model: dict[tuple[str, str], int] = {}
        for action, argument in steps:
            if action == "block":
                store(writer, argument)
                for kind, key, value in argument:
                    if value is None:
                        model.pop((kind, key), None)
                    else:
                        model[(kind, key)] = value
            else:
                writer.fold_recent(limit=argument)
            state = queries.SqliteState(writer.conn)
            for kind in KINDS:
                for key in KEYS:
                    value = model.get((kind, key))
                    assert state.get(kind, key) == (
                        None if value is None else {"v": value}
                    )
                for prefix in ("", "0", "1/"):
                    for after in (None, "05", "1/x"):
                        for limit in (None, 3):
                            for reverse in (False, True):
                                assert state.scan(
                                    kind,
                                    prefix,
                                    after=after,
                                    limit=limit,
                                    reverse=reverse,
                                ) == expected_scan(
                                    model, kind, prefix, after, limit, reverse
                                )
        while writer.fold_recent(limit=5):
            pass
        assert rows(writer.conn, "state_recent") == {}
        assert {
            key: orjson.loads(value)["v"]
            for key, value in rows(writer.conn, "state").items()
        } == model
    finally:
        writer.close()
