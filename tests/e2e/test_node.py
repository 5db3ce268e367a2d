"""End to end: a real ``weall supervise``, driven only through the CLI and HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .node import Node, running_node

pytestmark = pytest.mark.slow

ACTORS = ("producer", "checkpointer", "pinner", "healer", "api")


def _wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def _register(node: Node, name: str) -> Path:
    key_path = node.workdir / f"{name}.key"
    node.cli("keygen", "--out", str(key_path), "--account", f"@{name}", check=True)
    result = node.tx("register", key=str(key_path))
    assert result.returncode == 0, result.stderr
    return key_path


def _open_flags(pid: int, target: Path) -> list[int]:
    flags = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != str(target):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("flags:"):
                        flags.append(int(line.split()[1], 8))
        except OSError:
            continue
    return flags


def test_node_end_to_end(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        data = tmp_path / "data"
        for name in ("genesis.json", "keys/node.key", "keys/founder.key", "weall.db"):
            assert (data / name).exists(), name
        assert os.stat(data / "keys/founder.key").st_mode & 0o777 == 0o600
        conn = sqlite3.connect(data / "weall.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

        pids = node.actor_pids()
        assert sorted(pids) == sorted(ACTORS)
        assert len(set(pids.values())) == 5

        # The founder posts.
        posted = node.tx("post", "hello from the founder")
        assert posted.returncode == 0, posted.stderr
        founder_post = posted.stdout.split()[0]
        receipt = json.loads(posted.stdout.splitlines()[1])
        assert receipt["receipt"]["post_id"] == founder_post

        # A new account registers and updates its profile.
        alice = _register(node, "alice")
        profile = node.tx(
            "profile", "--display-name", "Alice", "--bio", "hi", key=str(alice)
        )
        assert profile.returncode == 0, profile.stderr
        account = node.get("/v1/accounts/@alice").json()
        assert account["profile"]["display_name"] == "Alice"
        assert account["poh_tier"] == 0
        assert account["next_nonce"] == 2

        # Its post attempt is rejected by the tier gate, with 403.
        attempt = node.tx("post", "too early", key=str(alice), wait=False)
        assert attempt.returncode == 1
        error = json.loads(attempt.stderr.strip().splitlines()[-1])
        assert error["error"]["code"] == "tier_required"
        alice_post = build_envelope(
            keys.load_key_file(alice),
            chain_id="weall-dev",
            tx_type="CONTENT_POST_CREATE",
            signer="@alice",
            nonce=2,
            payload={"body": "too early"},
        )
        rejected = node.post("/v1/tx/submit", json=alice_post)
        assert rejected.status_code == 403
        assert rejected.json()["error"]["code"] == "tier_required"

        # A transfer is rejected by the economics lock.
        transfer = node.tx("transfer", "@alice", "5", wait=False)
        assert transfer.returncode == 1
        error = json.loads(transfer.stderr.strip().splitlines()[-1])
        assert error["error"]["code"] == "economics_locked"
        assert error["error"]["details"]["unlock_at_ms"] > int(time.time() * 1000)

        # A replayed envelope is a duplicate; one for another chain is rejected.
        founder_key = keys.load_key_file(data / "keys/founder.key")
        next_nonce = node.get("/v1/accounts/@founder").json()["next_nonce"]
        height_before = node.get("/v1/chain/head").json()["height"]
        envelope = build_envelope(
            founder_key,
            chain_id="weall-dev",
            tx_type="CONTENT_POST_CREATE",
            signer="@founder",
            nonce=next_nonce,
            payload={"body": "second post"},
        )
        first = node.post("/v1/tx/submit", json=envelope)
        assert first.status_code == 202
        again = node.post("/v1/tx/submit", json=envelope)
        assert again.status_code == 200
        assert again.json()["duplicate"] is True
        other_chain = build_envelope(
            founder_key,
            chain_id="weall-other",
            tx_type="CONTENT_POST_CREATE",
            signer="@founder",
            nonce=next_nonce + 1,
            payload={"body": "elsewhere"},
        )
        wrong = node.post("/v1/tx/submit", json=other_chain)
        assert wrong.status_code == 400
        assert wrong.json()["error"]["code"] == "wrong_chain"

        # The posts appear in the feed and the height grows: the block that
        # commits the second post comes after the head read before it.
        tx_id = first.json()["tx_id"]
        _wait_for(lambda: node.get(f"/v1/tx/{tx_id}").json()["status"] == "committed")
        feed = node.get("/v1/feed").json()["items"]
        bodies = [item["body"] for item in feed]
        assert "second post" in bodies
        assert "hello from the founder" in bodies
        committed_at = node.get(f"/v1/tx/{tx_id}").json()["height"]
        assert committed_at > height_before
        assert node.get("/v1/chain/head").json()["height"] > height_before
        assert (
            node.get("/v1/accounts/@founder/posts").json()["items"][0]["body"]
            == "second post"
        )

        # Acknowledged but not yet committed, then a power cut of the whole tree.
        pending = []
        base = node.get("/v1/accounts/@founder").json()["next_nonce"]
        for offset in range(5):
            env = build_envelope(
                founder_key,
                chain_id="weall-dev",
                tx_type="CONTENT_POST_CREATE",
                signer="@founder",
                nonce=base + offset,
                payload={"body": f"burst {offset}"},
            )
            response = node.post("/v1/tx/submit", json=env)
            assert response.status_code == 202
            pending.append(response.json()["tx_id"])
        tip_before = node.get("/v1/chain/head").json()
        node.kill_tree()

    with running_node(tmp_path) as node:
        for tx_id in pending:
            _wait_for(
                lambda tx_id=tx_id: (
                    node.get(f"/v1/tx/{tx_id}").json()["status"] == "committed"
                )
            )
        tip_after = node.get("/v1/chain/head").json()
        assert tip_after["height"] >= tip_before["height"]
        verify = node.cli("verify")
        assert verify.returncode == 0, verify.stderr


def test_supervise_stops_in_reverse_order(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.start()
    node.wait_ready()
    code = node.stop()
    assert code == 0
    log = node.log()
    for name in ACTORS:
        assert f"{name} |" in log, name
    stopped = [
        line for line in log.splitlines() if "stopped" in line and "actor=" in line
    ]
    order = []
    for line in stopped:
        for name in ACTORS:
            if f"actor={name}" in line and name not in order:
                order.append(name)
    assert order == list(reversed(ACTORS))


def test_killed_actor_restarts_alone(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        before = node.actor_pids()
        os.kill(before["checkpointer"], signal.SIGKILL)

        def restarted() -> dict[str, int] | None:
            pids = node.actor_pids()
            return (
                pids
                if pids.get("checkpointer") not in (None, before["checkpointer"])
                else None
            )

        after = _wait_for(restarted)
        for name in ACTORS:
            if name != "checkpointer":
                assert after[name] == before[name], name
        node.wait_ready()


def test_only_producer_writes(tmp_path: Path) -> None:
    # A backup every second makes the checkpointer open the database too.
    env = {"WEALL_BACKUP_INTERVAL_S": "1"}
    with running_node(tmp_path, env=env) as node:
        db = (tmp_path / "data" / "weall.db").resolve()
        node.tx("post", "make every actor read")
        pids = node.actor_pids()
        producer_flags = _open_flags(pids["producer"], db)
        assert producer_flags, "the producer has the database open"
        assert all(flags & os.O_ACCMODE == os.O_RDWR for flags in producer_flags)
        for name in ("api", "pinner", "healer"):
            flags = _wait_for(lambda name=name: _open_flags(pids[name], db))
            assert all(f & os.O_ACCMODE == os.O_RDONLY for f in flags), name

        # The checkpointer requests checkpoints from the producer and opens the
        # database only while it takes a backup, so its descriptors are
        # sampled across several backups until one is seen open. SQLite opens
        # the -wal file read-write even for a read-only connection, so the
        # main file's flags are the connection's mode.
        seen: list[int] = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline or not seen:
            seen.extend(_open_flags(pids["checkpointer"], db))
            assert time.monotonic() < deadline + 20.0, "checkpointer never read"
            time.sleep(0.002)
        writable = [f for f in seen if f & os.O_ACCMODE != os.O_RDONLY]
        assert writable == [], f"checkpointer opened the database writable: {seen}"
        assert list((tmp_path / "data" / "backups").glob("*"))
        assert node.actor_pids()["checkpointer"] == pids["checkpointer"]


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_refuses_other_chain_id(tmp_path: Path) -> None:
    with running_node(tmp_path):
        pass
    data = tmp_path / "data"
    before = _file_hashes(data)
    node = Node(tmp_path, env={"WEALL_CHAIN_ID": "weall-other"}, log_name="refused.log")
    node.start(stderr_path=tmp_path / "refused.stderr")
    assert node.process is not None
    code = node.process.wait(30)
    assert code == 78
    lines = (tmp_path / "refused.stderr").read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("weall supervise: ")
    assert "'weall-other'" in lines[0]
    assert "spawned actor=" not in node.log()
    assert _file_hashes(data) == before


def test_second_producer_refused(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        producer = node.actor_pids()["producer"]
        # Its own control socket, as the second service of a Compose file has,
        # so only the producer lock is left to stop it.
        second = Node(
            tmp_path,
            args=["--actors", "producer"],
            env={"WEALL_CONTROL_SOCKET": str(node.run_dir / "second.sock")},
            run_dir=node.run_dir,
            log_name="second.log",
        )
        begun = time.monotonic()
        second.start(stderr_path=tmp_path / "second.stderr")
        assert second.process is not None
        code = second.process.wait(60)
        elapsed = time.monotonic() - begun
        assert code == 78
        lines = (tmp_path / "second.stderr").read_text().splitlines()
        assert lines == [
            f"weall supervise: another producer (pid {producer}) holds "
            "data/weall.db.lock; only one producer or follower may write "
            "data/weall.db: stop it first, or leave the producer out of --actors"
        ]
        assert "spawned actor=" not in second.log()
        # Refused at start-up, not after rounds of restarts with backoff.
        assert elapsed < 30.0
        assert node.actor_pids()["producer"] == producer
        posted = node.tx("post", "still the only producer")
        assert posted.returncode == 0, posted.stderr


def test_port_binds_all_interfaces(tmp_path: Path) -> None:
    node = Node(tmp_path)
    # PORT alone decides the bind; WEALL_API_PORT (set by Node) names the same port.
    node.extra_env = {"PORT": str(node.port)}
    node.start()
    try:
        node.wait_ready()
        assert httpx.get(f"{node.url}/health").json()["ok"] is True
        assert f"0.0.0.0:{node.port}" in node.log()
    finally:
        node.stop()


def test_api_workers_share_port(tmp_path: Path) -> None:
    with running_node(tmp_path, env={"WEALL_API_WORKERS": "2"}) as node:
        pids = node.actor_pids()
        assert "api-2" in pids
        assert pids["api"] != pids["api-2"]
        for _ in range(20):
            assert node.get("/health").status_code == 200
        os.kill(pids["api-2"], signal.SIGKILL)
        _wait_for(lambda: node.actor_pids().get("api-2") not in (None, pids["api-2"]))
        assert node.actor_pids()["api"] == pids["api"]


def test_cli_comment_follow_and_paging(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        bodies = [f"page post {index}" for index in range(5)]
        post_ids = []
        for body in bodies:
            result = node.tx("post", body)
            assert result.returncode == 0, result.stderr
            post_ids.append(result.stdout.split()[0])
        commented = node.tx("comment", post_ids[0], "a comment")
        assert commented.returncode == 0, commented.stderr
        comment_id = commented.stdout.split()[0]
        content = node.get(f"/v1/content/{post_ids[0]}").json()
        assert [c["id"] for c in content["comments"]] == [comment_id]
        assert content["comment_count"] == 1

        alice = _register(node, "alice")
        followed = node.tx("follow", "@alice")
        assert followed.returncode == 0, followed.stderr
        assert node.get("/v1/accounts/@alice").json()["counts"]["followers"] == 1
        assert node.get("/v1/accounts/@founder").json()["counts"]["following"] == 1
        refused = node.tx("follow", "@founder", key=str(alice), wait=False)
        assert refused.returncode == 1
        assert "tier_required" in refused.stderr

        for path in ("/v1/feed", "/v1/accounts/@founder/posts"):
            seen: list[str] = []
            cursor = None
            for _ in range(10):
                query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
                page = node.get(path + query).json()
                assert len(page["items"]) <= 2
                seen.extend(item["id"] for item in page["items"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == list(reversed(post_ids)), path
