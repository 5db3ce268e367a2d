"""A full disk: production pauses, writes get 503, reads go on, nothing is lost.

The node runs in a private mount namespace whose data directory is a 20 MiB
tmpfs that the test mounts itself (``unshare --mount``, with
``--map-root-user`` when not root). The test reaches the files inside that
namespace through ``/proc/PID/root`` and the node through loopback HTTP.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from weall.protocol import keys

from ._support import (
    Poster,
    ReadLoop,
    StorageNode,
    env_without_weall,
    wait_for,
)

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parents[1]
TMPFS_MIB = 20
MOUNT_SCRIPT = 'mount -t tmpfs -o size="$0" tmpfs "$1" && shift && exec "$@"'
READ_PATHS = (
    "/health",
    "/v1/chain/head",
    "/v1/accounts/@founder",
    "/v1/feed",
    "/v1/blocks?from=0",
)


def _unshare_prefix() -> list[str] | None:
    """The ``unshare`` command that can mount a tmpfs here, or None.

    ``nsenter`` is needed too, for the final check inside the namespace.
    """
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--mount", "--map-root-user"]):
        with tempfile.TemporaryDirectory() as target:
            probe = subprocess.run(
                [*prefix, "sh", "-c", MOUNT_SCRIPT, "1m", target, "true"],
                capture_output=True,
                timeout=30,
            )
        if probe.returncode == 0:
            return prefix
    return None


class TmpfsNode(StorageNode):
    """A node whose data directory is a size-limited tmpfs in its own mount namespace."""

    def __init__(
        self, workdir: Path, prefix: list[str], *, env: dict[str, str]
    ) -> None:
        super().__init__(workdir, env=env)
        self.prefix = prefix

    def start(self) -> None:
        self.data.mkdir(exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *self.prefix,
                "sh",
                "-c",
                MOUNT_SCRIPT,
                f"{TMPFS_MIB}m",
                str(self.data.absolute()),
                sys.executable,
                "-m",
                "weall",
                "supervise",
            ],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def inside(self, path: Path) -> Path:
        """``path`` as seen from the node's mount namespace."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/root") / path.absolute().relative_to("/")

    def founder(self) -> keys.KeyPair:
        return keys.load_key_file(self.inside(self.data / "keys" / "founder.key"))


def _fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; return the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as handle:
        for chunk in (bytes(1 << 20), bytes(4096), bytes(512)):
            while True:
                try:
                    written += handle.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def _submit(node: TmpfsNode, poster: Poster) -> tuple[int, dict[str, object]]:
    (envelope,) = poster.envelopes(1)
    response = node.post("/v1/tx/submit", json=envelope)
    if response.status_code == 202:
        poster.next_nonce += 1
    document: dict[str, object] = response.json()
    return response.status_code, document


def _rejected_headers(node: TmpfsNode, poster: Poster) -> dict[str, str]:
    """Submit one post and return the response's headers; the post must not be accepted."""
    (envelope,) = poster.envelopes(1)
    response = node.post("/v1/tx/submit", json=envelope)
    assert response.status_code == 503, response.text
    return dict(response.headers)


def _paused_lines(node: TmpfsNode) -> list[str]:
    return [
        line for line in node.log().splitlines() if "block production paused" in line
    ]


def test_disk_full_pauses_and_resumes(tmp_path: Path) -> None:
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip(
            "cannot create a mount namespace with a tmpfs here "
            "(unshare --mount failed, or unshare or nsenter is missing)"
        )
    node = TmpfsNode(
        tmp_path,
        prefix,
        env={
            "WEALL_BLOCK_INTERVAL_MS": "200",
            # A small limit keeps the -wal file short, so it must grow soon after the fill.
            "WEALL_WAL_MAX_BYTES": str(64 * 1024),
            "WEALL_CHECKPOINT_INTERVAL_S": "0.5",
        },
    )
    node.start()
    try:
        node.wait_ready()
        _run_disk_full(node)
    finally:
        node.stop()
    assert "Traceback" not in node.log()


def _run_disk_full(node: TmpfsNode) -> None:
    poster = Poster(node.founder(), node.next_nonce(), body_chars=4000)
    committed = []
    for _ in range(20):
        status, document = _submit(node, poster)
        assert status == 202, document
        committed.append(str(document["tx_id"]))
    wait_for(
        lambda: node.get(f"/v1/tx/{committed[-1]}").json().get("status") == "committed",
        timeout=30,
        what="the first posts to commit",
    )
    head_before = node.head()
    # Acknowledged just before the fill: they may still be pending when it lands.
    acknowledged: list[str] = []
    for _ in range(10):
        status, document = _submit(node, poster)
        assert status == 202, document
        acknowledged.append(str(document["tx_id"]))

    filler = node.inside(node.data / "filler")
    filled = _fill(filler)
    reads = ReadLoop(node, duration_s=120)
    reads.start()

    # Writes go on until SQLite needs a page that the disk cannot give.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, document = _submit(node, poster)
        if status == 202:
            acknowledged.append(str(document["tx_id"]))
            continue
        assert status == 503, document
        assert document["error"]["code"] == "storage_full", document  # type: ignore[index]
        break
    else:
        raise AssertionError("the node never reported storage_full")
    assert _rejected_headers(node, poster).get("retry-after") == "5"
    paused_at = time.monotonic()
    height_paused = wait_for(
        lambda: _paused_lines(node) and node.head()["height"],
        timeout=10,
        what="the pause line",
    )

    # Paused: every write gets 503, reads get 200, no block is made, one log line.
    time.sleep(3.5)
    for _ in range(5):
        status, document = _submit(node, poster)
        assert (status, document["error"]["code"]) == (503, "storage_full")  # type: ignore[index]
    for path in READ_PATHS:
        assert node.get(path).status_code == 200, path
    for tx_id in committed:
        assert node.get(f"/v1/tx/{tx_id}").json()["status"] == "committed"
    assert node.head()["height"] == height_paused
    assert len(_paused_lines(node)) == 1, _paused_lines(node)
    assert node.get("/health").json()["storage"]["storage_full"] is True

    filler.unlink()
    wait_for(
        lambda: "block production resumed" in node.log(),
        timeout=30,
        what="production to resume",
    )
    resumed_after = time.monotonic() - paused_at
    for tx_id in acknowledged:
        wait_for(
            lambda tx_id=tx_id: (
                node.get(f"/v1/tx/{tx_id}").json().get("status") == "committed"
            ),
            timeout=60,
            what=f"acknowledged {tx_id} to commit",
        )
    status, document = _submit(node, poster)
    assert status == 202, document
    assert node.get("/health").json()["storage"]["storage_full"] is False
    reads.stop()
    assert set(reads.statuses) == {200}, reads.statuses
    assert not reads.errors, reads.errors[:3]
    assert len(_paused_lines(node)) == 1
    print(
        f"\nfilled {filled / 2**20:.1f} MiB; {len(acknowledged)} posts acknowledged around the "
        f"fill; paused at height {height_paused} (from {head_before['height']}); "
        f"{reads.count} reads, all 200; resumed {resumed_after:.1f} s after the pause"
    )
    _check_database(node, committed + acknowledged)


def _check_database(node: TmpfsNode, tx_ids: list[str]) -> None:
    """Run ``_check_db`` inside the node's mount namespace (see its docstring)."""
    assert node.process is not None
    enter = ["nsenter", "--target", str(node.process.pid), "--mount"]
    if "--map-root-user" in node.prefix:
        enter += ["--user", "--preserve-credentials"]
    ids_file = node.workdir / "acknowledged.json"
    ids_file.write_text(json.dumps(tx_ids), encoding="utf-8")
    env = {**env_without_weall(), "PYTHONPATH": str(TESTS_DIR)}
    result = subprocess.run(
        [
            *enter,
            sys.executable,
            "-m",
            "storage_robustness._check_db",
            str(node.db_path.absolute()),
            str(ids_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["integrity"] == "ok"
    assert len(report["statuses"]) == len(tx_ids)
    assert set(report["statuses"].values()) == {"committed"}
    assert report["replayed"]["height"] == report["head"]
