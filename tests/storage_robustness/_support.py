"""Helpers for the storage robustness tests.

- ``StorageNode``: the end-to-end ``Node`` with rate limits and scheduled
  backups off, plus paths into its data directory.
- ``Poster``, ``LoadThread``, ``ReadLoop``: signed founder posts sent through
  ``/v1/tx/batch`` and a read loop over ``/v1/accounts`` and ``/v1/feed``,
  each a thread bounded in time.
- ``WalSampler``: the size of the ``-wal`` file, sampled every few ms.
- ``build_chain``: a data directory whose chain is built in-process with the
  real writer and block builder, to make large databases quickly.
- ``check_blocks_whole``: no block row without exactly its transactions.
- ``ProducerProcess``: a data directory and ``weall actor producer`` runs on it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import trio
from e2e.node import Node

from weall import config as config_module
from weall.bootstrap import create_database, dev_genesis, prepare_node
from weall.protocol import keys
from weall.protocol.block import build_block
from weall.protocol.envelope import build_envelope, parse_envelope
from weall.protocol.genesis import genesis_info
from weall.storage.db import write_tip

T = TypeVar("T")

CHAIN_ID = "weall-dev"
POST = "CONTENT_POST_CREATE"


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Poll ``predicate`` until it returns a true value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class StorageNode(Node):
    """A ``weall supervise`` with rate limits and scheduled backups off.

    The load comes from one address, and the tests take their own backups.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        defaults = {"WEALL_RATE_LIMIT_PER_S": "0", "WEALL_BACKUP_INTERVAL_S": "0"}
        super().__init__(workdir, env={**defaults, **(env or {})}, args=args)

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def db_path(self) -> Path:
        return self.data / "weall.db"

    def founder(self) -> keys.KeyPair:
        return keys.load_key_file(self.data / "keys" / "founder.key")

    def head(self) -> dict[str, Any]:
        response = self.get("/v1/chain/head")
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    def next_nonce(self, account: str = "@founder") -> int:
        return int(self.get(f"/v1/accounts/{account}").json()["next_nonce"])

    def cli_json(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        """Run ``weall ARGS``, expect exit 0, and parse the last line of stdout."""
        result = self.cli(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"weall {' '.join(args)}: {result.stdout}\n{result.stderr}"
        )
        document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return document


# Four-byte UTF-8 characters: a body of N characters stores 4N bytes, and
# the protocol's per-character checks cost a quarter as much per byte.
WIDE_ALPHABET = [chr(code) for code in range(0x1F300, 0x1F600)]


@dataclass
class Poster:
    """Signed founder posts with consecutive nonces.

    ``wide`` bodies use four-byte characters, to make large databases fast.
    """

    key: keys.KeyPair
    next_nonce: int
    body_chars: int = 500
    chain_id: str = CHAIN_ID
    wide: bool = False

    def _body(self, nonce: int) -> str:
        if self.wide:
            rng = random.Random(nonce)
            return f"{nonce} " + "".join(
                rng.choices(WIDE_ALPHABET, k=self.body_chars - 12)
            )
        return (f"{nonce} " + secrets.token_hex(self.body_chars // 2))[
            : self.body_chars
        ]

    def envelopes(self, count: int) -> list[dict[str, Any]]:
        batch = []
        for offset in range(count):
            body = self._body(self.next_nonce + offset)
            batch.append(
                build_envelope(
                    self.key,
                    chain_id=self.chain_id,
                    tx_type=POST,
                    signer="@founder",
                    nonce=self.next_nonce + offset,
                    payload={"body": body},
                )
            )
        return batch


@dataclass
class LoadStats:
    """What a ``LoadThread`` sent and what the node acknowledged."""

    batches: int = 0
    # Envelopes rejected as nonce_too_high: the signer's window of pending
    # nonces was full, so the thread waited for a block and sent them again.
    window_waits: int = 0
    acknowledged: list[str] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class LoadThread(threading.Thread):
    """Sends batches of founder posts until ``stop()`` or ``duration_s`` passes.

    A rejected envelope ends its batch's use of nonces: the next batch starts
    at the first rejected nonce, so a full disk never leaves a nonce gap. One
    signer may have ``NONCE_WINDOW`` (64) transactions pending, so a batch
    larger than that is rejected in part until blocks commit.
    """

    def __init__(
        self,
        node: StorageNode,
        poster: Poster,
        *,
        batch: int,
        pause_s: float,
        duration_s: float,
    ) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.poster = poster
        self.batch = batch
        self.pause_s = pause_s
        self.deadline = time.monotonic() + duration_s
        self.stats = LoadStats()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        assert not self.is_alive(), "load thread did not stop"

    def run(self) -> None:
        with httpx.Client(base_url=self.node.url, timeout=30.0) as client:
            while not self._stop_event.is_set() and time.monotonic() < self.deadline:
                try:
                    self._send(client)
                except httpx.HTTPError as exc:
                    self.stats.errors.append(repr(exc))
                self._stop_event.wait(self.pause_s)

    def _send(self, client: httpx.Client) -> None:
        envelopes = self.poster.envelopes(self.batch)
        response = client.post("/v1/tx/batch", json={"envelopes": envelopes})
        self.stats.batches += 1
        if response.status_code != 200:
            self.stats.rejected[str(response.status_code)] = self.stats.rejected.get(
                str(response.status_code), 0
            ) + len(envelopes)
            return
        accepted = 0
        for result in response.json()["results"]:
            if result.get("http_status") != 202:
                code = result.get("error", {}).get(
                    "code", str(result.get("http_status"))
                )
                if code == "nonce_too_high":
                    self.stats.window_waits += 1
                    self._stop_event.wait(0.05)
                else:
                    self.stats.rejected[code] = self.stats.rejected.get(code, 0) + 1
                break
            self.stats.acknowledged.append(result["tx_id"])
            accepted += 1
        self.poster.next_nonce += accepted


class ReadLoop(threading.Thread):
    """GET ``/v1/accounts/@founder`` and ``/v1/feed`` in turn, recording each status."""

    PATHS = ("/v1/accounts/@founder", "/v1/feed?limit=20")

    def __init__(self, node: StorageNode, *, duration_s: float) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.deadline = time.monotonic() + duration_s
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        assert not self.is_alive(), "read loop did not stop"

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    def run(self) -> None:
        with httpx.Client(base_url=self.node.url, timeout=30.0) as client:
            index = 0
            while not self._stop_event.is_set() and time.monotonic() < self.deadline:
                try:
                    status = client.get(self.PATHS[index % len(self.PATHS)]).status_code
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    self._stop_event.wait(0.05)
                index += 1


class WalSampler(threading.Thread):
    """Records ``(monotonic time, -wal size)`` every ``interval_s`` until stopped."""

    def __init__(
        self, db_path: Path, *, interval_s: float = 0.01, duration_s: float = 300
    ) -> None:
        super().__init__(daemon=True)
        self.wal = db_path.with_name(db_path.name + "-wal")
        self.interval_s = interval_s
        self.deadline = time.monotonic() + duration_s
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    def size(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    def run(self) -> None:
        while not self._stop_event.is_set() and time.monotonic() < self.deadline:
            self.samples.append((time.monotonic(), self.size()))
            self._stop_event.wait(self.interval_s)

    def max_size(self, since: float = 0.0) -> int:
        return max(
            (size for moment, size in self.samples if moment >= since), default=0
        )


# -- databases built in-process ------------------------------------------------


@dataclass(frozen=True)
class BuiltChain:
    """A data directory made by ``build_chain``."""

    data: Path
    height: int
    posts: int
    founder_next_nonce: int
    seconds: float


def build_chain(
    data: Path, *, blocks: int, posts_per_block: int, body_chars: int
) -> BuiltChain:
    """Write keys, a dev genesis and a chain of signed founder posts into ``data``.

    Every block goes through ``build_block`` and ``Writer.commit_block``, as in
    the producer, with timestamps one second apart ending before now.
    """
    from weall.storage.writer import Writer  # the producer's module, used as it does

    started = time.monotonic()
    node, founder = keys.generate("@node"), keys.generate("@founder")
    keys.write_key_file(data / "keys" / "node.key", node)
    keys.write_key_file(data / "keys" / "founder.key", founder)
    genesis_time = int(time.time() * 1000) - (blocks + 60) * 1000
    document = dev_genesis(node, founder, chain_id=CHAIN_ID)
    document["genesis_time_ms"] = genesis_time
    document["params"]["max_post_chars"] = max(body_chars, 5000)
    (data / "genesis.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    config = config_module.load({"WEALL_DB_PATH": str(data / "weall.db")})
    create_database(config, document, node)

    writer = Writer(config.db_path, synchronous="NORMAL")
    # Bulk loading only: a crash here loses a test fixture, never a chain.
    writer.conn.execute("PRAGMA synchronous = OFF")
    info = genesis_info(document)
    first_nonce = int(writer.state.get("account", "@founder")["next_nonce"])
    poster = Poster(founder, first_nonce, body_chars=body_chars, wide=True)
    head = writer.head()
    for number in range(1, blocks + 1):
        envelopes = [parse_envelope(doc) for doc in poster.envelopes(posts_per_block)]
        poster.next_nonce += posts_per_block
        timestamp = genesis_time + number * 1000
        writer.store_pending([(env, timestamp) for env in envelopes])
        block = build_block(
            writer.state,
            head["header"],
            envelopes,
            timestamp_ms=timestamp,
            genesis=info,
            producer_pubkey=node.pubkey,
            sign=node.sign,
        )
        assert all(receipt["ok"] for receipt in block.receipts), block.receipts[:1]
        writer.commit_block(block)
        head = {"height": block.height, "header": block.header}
    writer.checkpoint("TRUNCATE")
    writer.close()
    write_tip(
        config.db_path, head["height"], _block_hash(config.db_path, head["height"])
    )
    return BuiltChain(
        data,
        head["height"],
        blocks * posts_per_block,
        poster.next_nonce,
        time.monotonic() - started,
    )


def _block_hash(db_path: Path, height: int) -> str:
    conn = sqlite3.connect(db_path)
    try:
        return str(
            conn.execute(
                "SELECT hash FROM blocks WHERE height = ?", (height,)
            ).fetchone()[0]
        )
    finally:
        conn.close()


# -- checks on a database -------------------------------------------------------


def check_blocks_whole(conn: sqlite3.Connection, *, from_height: int = 0) -> int:
    """Assert that every block contains exactly its transactions; return the head height.

    Counts and places are checked for every block; the transaction ids
    against the header for the blocks at or above ``from_height``.
    """
    heights = [
        row[0] for row in conn.execute("SELECT height FROM blocks ORDER BY height")
    ]
    assert heights == list(range(len(heights))), "block heights are not 0..head"
    bad = conn.execute(
        "SELECT b.height, b.tx_count, COUNT(t.tx_id), MIN(t.idx), MAX(t.idx) FROM blocks b"
        " LEFT JOIN txs t ON t.height = b.height GROUP BY b.height"
        " HAVING COUNT(t.tx_id) != b.tx_count"
        " OR (b.tx_count > 0 AND (MIN(t.idx) != 0 OR MAX(t.idx) != b.tx_count - 1))"
    ).fetchall()
    assert not bad, (
        f"blocks whose transactions do not match (height, count, rows, idx): {bad[:5]}"
    )
    strays = conn.execute(
        "SELECT COUNT(*) FROM txs WHERE (status IN ('committed', 'rejected')) !="
        " (height IS NOT NULL)"
    ).fetchone()[0]
    assert strays == 0, f"{strays} transactions whose status and height disagree"
    beyond = conn.execute(
        "SELECT COUNT(*) FROM txs WHERE height > (SELECT MAX(height) FROM blocks)"
    ).fetchone()[0]
    assert beyond == 0, f"{beyond} transactions point past the last block"
    for height, header in conn.execute(
        "SELECT height, header FROM blocks WHERE height >= ? ORDER BY height",
        (from_height,),
    ).fetchall():
        stored = [
            row[0]
            for row in conn.execute(
                "SELECT tx_id FROM txs WHERE height = ? ORDER BY idx", (height,)
            )
        ]
        assert stored == orjson.loads(header)["tx_ids"], (
            f"block {height}: tx_ids differ"
        )
    return heights[-1]


def statuses(conn: sqlite3.Connection, tx_ids: list[str]) -> dict[str, str]:
    """The status of each of ``tx_ids`` that the database contains."""
    found: dict[str, str] = {}
    for start in range(0, len(tx_ids), 500):
        chunk = tx_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            conn.execute(
                f"SELECT tx_id, status FROM txs WHERE tx_id IN ({marks})", chunk
            ).fetchall()
        )
    return found


def env_without_weall() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WEALL_") and k != "PORT"
    }


class ProducerProcess:
    """A dev data directory under ``workdir`` and ``weall actor producer`` runs on it.

    Each ``start`` launches a new producer process, appending its output to
    ``workdir/producer.log``, and returns once its socket exists.
    """

    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.data = workdir / "data"
        # Unix socket paths must stay short, so the run directory lives in /tmp.
        self.run_dir = Path(tempfile.mkdtemp(prefix="weall-producer-", dir="/tmp"))
        self.env = {
            **env_without_weall(),
            "WEALL_DB_PATH": str(self.data / "weall.db"),
            "WEALL_RUN_DIR": str(self.run_dir),
            **(env or {}),
        }
        self.config = config_module.load(self.env)
        prepare_node(self.config, ["producer"])
        self.log_path = workdir / "producer.log"

    def founder(self) -> keys.KeyPair:
        return keys.load_key_file(self.data / "keys" / "founder.key")

    def close(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)

    async def start(self) -> trio.Process:
        # A killed producer leaves its socket file behind.
        self.config.producer_socket.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "weall", "actor", "producer"],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        with trio.fail_after(60):
            while not self.config.producer_socket.exists():
                if process.poll() is not None:
                    raise AssertionError(
                        f"producer exited {process.returncode}; see {self.log_path}"
                    )
                await trio.sleep(0.01)
        return process
