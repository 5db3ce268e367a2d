"""SIGKILL each actor in turn under a steady load of signed transactions."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .node import Node, running_node

pytestmark = pytest.mark.slow

ACTORS = ("producer", "checkpointer", "pinner", "healer", "api")


class Submitter(threading.Thread):
    """Posts as the founder, one nonce after another, and records every 202/200."""

    def __init__(self, node: Node) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.key = keys.load_key_file(node.workdir / "data" / "keys" / "founder.key")
        self.acked: list[str] = []
        self.stopping = threading.Event()
        self.nonce = node.get("/v1/accounts/@founder").json()["next_nonce"]

    def run(self) -> None:
        client = httpx.Client(base_url=self.node.url, timeout=5.0)
        envelope = self._next()
        while not self.stopping.is_set():
            try:
                response = client.post("/v1/tx/submit", json=envelope)
            except httpx.HTTPError:
                time.sleep(0.05)  # the api is restarting; send the same envelope again
                continue
            if response.status_code in (200, 202):
                self.acked.append(response.json()["tx_id"])
                self.nonce += 1
                envelope = self._next()
            elif response.json()["error"]["code"] == "nonce_too_high":
                time.sleep(0.1)  # the window is full until the next block
            else:
                time.sleep(0.05)
        client.close()

    def _next(self) -> dict[str, object]:
        return build_envelope(
            self.key,
            chain_id="weall-dev",
            tx_type="CONTENT_POST_CREATE",
            signer="@founder",
            nonce=self.nonce,
            payload={"body": f"storm {self.nonce}"},
        )


def _wait_restarted(
    node: Node, name: str, old_pid: int, timeout: float = 30.0
) -> dict[str, int]:
    """Wait until ``name`` runs again under a new pid; return every actor's pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = node.actor_status()
        except (OSError, ValueError):
            status = {}
        entry = status.get(name, {})
        if entry.get("state") == "running" and entry.get("pid") not in (None, old_pid):
            return {other: info["pid"] for other, info in status.items()}
        time.sleep(0.01)
    raise AssertionError(
        f"{name} was not restarted within {timeout} s:\n{node.log()[-3000:]}"
    )


def _committed(node: Node, tx_ids: set[str]) -> set[str]:
    """The ids among ``tx_ids`` that the database holds as committed."""
    path = node.workdir / "data" / "weall.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT tx_id FROM txs WHERE status = 'committed'"
        ).fetchall()
    finally:
        conn.close()
    return tx_ids & {row[0] for row in rows}


def _storm(tmp_path: Path, seconds: float) -> None:
    rng = random.Random(7)
    with running_node(tmp_path, env={"WEALL_BLOCK_INTERVAL_MS": "300"}) as node:
        submitter = Submitter(node)
        submitter.start()
        latencies: dict[str, list[float]] = {name: [] for name in ACTORS}
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                for name in rng.sample(ACTORS, len(ACTORS)):
                    time.sleep(rng.uniform(0.3, 1.5))
                    # An earlier kill may still be in its backoff, so kill only
                    # once every actor runs and each kill is alone.
                    before = node.wait_all_running(ACTORS)
                    os.kill(before[name], signal.SIGKILL)
                    killed_at = time.monotonic()
                    after = _wait_restarted(node, name, before[name])
                    latencies[name].append(time.monotonic() - killed_at)
                    for other in ACTORS:
                        if other != name:
                            assert after.get(other) == before[other], (
                                name,
                                other,
                                node.log()[-4000:],
                            )
                    node.wait_ready(30)
                    if time.monotonic() >= deadline:
                        break
        finally:
            submitter.stopping.set()
            submitter.join(10)
        for name in ACTORS:
            assert latencies[name], f"{name} was never killed"
            # Printed for the record; pytest shows it with -s.
            print(
                f"restart latency after SIGKILL actor={name} kills={len(latencies[name])} "
                f"median_s={statistics.median(latencies[name]):.3f} "
                f"max_s={max(latencies[name]):.3f}"
            )
        # Every exit during the storm is a SIGKILL of the test. An exit code
        # means an actor died on its own, for example because a peer was killed.
        crashes = re.findall(
            r"exited unexpectedly actor=\S+ pid=\d+ code=\d+", node.log()
        )
        assert crashes == [], crashes
        assert submitter.acked, "the load never got an acknowledgement"
        node.wait_ready(30)
        deadline = time.monotonic() + 60
        remaining = set(submitter.acked)
        while remaining and time.monotonic() < deadline:
            remaining -= _committed(node, remaining)
            time.sleep(0.3)
        assert not remaining, (
            f"{len(remaining)} acknowledged transactions not committed"
        )


def test_kill_each_actor_under_load(tmp_path: Path) -> None:
    _storm(tmp_path, seconds=35)


@pytest.mark.long
def test_kill_each_actor_long(tmp_path: Path) -> None:
    _storm(tmp_path, seconds=600)


# A client of the producer's socket that sends status requests as fast as it
# can and never reads a response, so that the responses pile up unread.
_FLOODING_CLIENT = """
import socket, struct, sys
import orjson
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
for request_id in range(1, 200):
    body = orjson.dumps({"id": request_id, "op": "status"})
    sock.sendall(struct.pack(">I", len(body)) + body)
print("sent", flush=True)
sys.stdin.read()
"""


def test_producer_survives_killed_client(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        before = node.wait_all_running(ACTORS)
        with subprocess.Popen(
            [
                sys.executable,
                "-c",
                _FLOODING_CLIENT,
                str(node.run_dir / "producer.sock"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as client:
            try:
                assert client.stdout is not None
                assert client.stdout.readline() == b"sent\n"
                # Let the producer respond, so that the responses wait unread.
                time.sleep(1.0)
            finally:
                client.kill()
        # The reset shows at the producer's next read. Two seconds give it
        # time to fail, if it does.
        time.sleep(2.0)
        assert node.actor_pids()["producer"] == before["producer"], node.log()[-3000:]
        posted = node.tx("post", "after a client reset")
        assert posted.returncode == 0, posted.stderr
        assert "crashed" not in node.log()
