"""SIGKILL each actor in turn under a steady load of signed transactions."""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .node import Node, Submitter, running_node, wait_committed

pytestmark = pytest.mark.slow

ACTORS = ("producer", "checkpointer", "pinner", "healer", "api")


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
        wait_committed(node, submitter.acked)


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
