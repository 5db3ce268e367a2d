"""A large chunked upload leaves the api process's memory bounded.

One node with ``WEALL_IPFS_MAX_UPLOAD_BYTES`` raised to 128 MiB takes a
64 MiB body sent with ``Transfer-Encoding: chunked``. A thread samples the
api process's resident set size (``VmRSS`` in ``/proc/PID/status``) every
10 ms during the upload, and ``VmHWM`` (its peak) is read before and after.
Both must stay within ``MAX_GROWTH_BYTES`` of the resident size before the
upload.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e.node import Node, running_node

from weall.ipfs.unixfs import compute_cid
from weall.protocol import keys
from weall.protocol.encoding import encode_hash

from ._support import Chain, session_headers, write_chain

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BODY_BYTES = 64 * MIB
PIECE_BYTES = 1 * MIB
MAX_GROWTH_BYTES = 12 * MIB


def _pieces(seed: int) -> Iterator[bytes]:
    generator = random.Random(seed)
    for _ in range(BODY_BYTES // PIECE_BYTES):
        yield generator.randbytes(PIECE_BYTES)


def _status_kib(pid: int, field: str) -> int:
    """Return a ``kB`` field of ``/proc/PID/status``, such as ``VmRSS``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class RssSampler(threading.Thread):
    """Samples one process's ``VmRSS`` until stopped; ``peak`` is the largest, in bytes."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _status_kib(self.pid, "VmRSS") * 1024)
            self.samples += 1
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    workdir = tmp_path_factory.mktemp("upload-memory")
    chain = write_chain(workdir, {"@alice": (2, [])}, {"heartbeat_ms": 500})
    env = {
        "WEALL_IPFS_MAX_UPLOAD_BYTES": str(128 * MIB),
        "WEALL_BLOCK_INTERVAL_MS": "200",
        "WEALL_RATE_LIMIT_PER_S": "0",
    }
    with running_node(workdir, env=env) as node:
        chain.node = node
        yield chain
    assert "Traceback" not in node.log(), node.log()[-5000:]


@pytest.fixture(scope="module")
def session(chain: Chain) -> keys.KeyPair:
    session = chain.issue_session("@alice", ["IPFS_PIN_REQUEST"])
    # A first upload opens the backend and loads every module the route uses.
    warm_up = chain.upload(session, "@alice", random.Random(1).randbytes(300_000))
    assert warm_up.status_code == 200, warm_up.text
    return session


def _node(chain: Chain) -> Node:
    assert chain.node is not None
    return chain.node


def _post_upload(node: Node, headers: dict[str, str], *, seed: int) -> httpx.Response:
    """POST the body of ``seed`` to the upload route, chunked: a generator has no length.

    The pieces are made before the request, so the client sends as fast as
    the node reads.
    """
    pieces = list(_pieces(seed))
    return httpx.post(
        f"{node.url}/v1/media/upload",
        content=iter(pieces),
        headers=headers,
        timeout=300.0,
    )


def test_chunked_upload_memory_bounded(chain: Chain, session: keys.KeyPair) -> None:
    node = _node(chain)
    digest = hashlib.sha256()
    for piece in _pieces(2):
        digest.update(piece)
    headers = session_headers(
        session, "@alice", b"", signed_hash=encode_hash(digest.digest())
    )
    headers["Content-Type"] = "application/octet-stream"

    pid = node.actor_pids()["api"]
    rss_before = _status_kib(pid, "VmRSS") * 1024
    hwm_before = _status_kib(pid, "VmHWM") * 1024
    sampler = RssSampler(pid)
    sampler.start()
    started = time.monotonic()
    try:
        response = _post_upload(node, headers, seed=2)
    finally:
        sampler.stop()
    seconds = time.monotonic() - started
    hwm_after = _status_kib(pid, "VmHWM") * 1024

    # A VmHWM that rose during the upload is the upload's peak; one that did
    # not is a peak from before it.
    peak = max(sampler.peak, hwm_after if hwm_after > hwm_before else 0)
    growth = peak - rss_before
    print(
        f"\n64 MiB chunked upload in {seconds:.1f} s: api RSS before "
        f"{rss_before / MIB:.1f} MiB, sampled peak {sampler.peak / MIB:.1f} MiB "
        f"({sampler.samples} samples), VmHWM {hwm_before / MIB:.1f} -> "
        f"{hwm_after / MIB:.1f} MiB, growth {growth / MIB:.1f} MiB"
    )
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["size_bytes"] == BODY_BYTES
    assert document["cid"] == compute_cid(b"".join(_pieces(2)))
    assert sampler.samples >= 10
    assert growth < MAX_GROWTH_BYTES


@pytest.mark.parametrize(
    ("signed", "code"),
    [
        pytest.param(False, "session_missing", id="before-body"),
        pytest.param(True, "session_bad_signature", id="after-body"),
    ],
)
def test_large_upload_rejected_without_hang(
    chain: Chain, session: keys.KeyPair, signed: bool, code: str
) -> None:
    """A 401 before the held-back body is read, or after it, ends the request."""
    node = _node(chain)
    headers = {"Content-Type": "application/octet-stream"}
    if signed:
        wrong_hash = encode_hash(b"\0" * 32)
        headers |= session_headers(session, "@alice", b"", signed_hash=wrong_hash)

    try:
        response = _post_upload(node, headers, seed=3)
    except httpx.WriteError:
        # The node responded and closed the connection while the body was
        # still being sent; the client never read the response.
        assert not signed
    else:
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == code
    # The node still serves the next request.
    assert node.get("/v1/readyz").status_code == 200
