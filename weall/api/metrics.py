"""``GET /metrics``: the node's metrics in the Prometheus text format.

Two kinds of metric are exposed:

- Counted by request hooks: requests and their latency by route template,
  and admission rejections by error code, taken from the responses of
  ``POST /v1/tx/submit`` and ``POST /v1/tx/batch``. Under ``weall
  supervise`` every api process writes them to shared files
  (``weall.api.metrics_dir``) and a scrape sums the files of all api
  processes, so the totals cover every worker and survive an api restart.
  They start from zero when the supervisor starts. An api run alone
  (``weall actor api``) counts in memory, from zero at each start.
  NOTE: requests that the ASGI middleware answers itself (rate limited, or
  a body over its limit) never reach these hooks and are not counted.
- Read at scrape time, with bounded queries: height, blocks and transactions
  committed, pending transactions, pins by state, from files the actors'
  restarts, the WAL size and the age of the newest backup, and on a
  follower node the follower actor's sync state.

Transactions committed are summed from ``blocks.tx_count`` incrementally: the
first scrape reads every block row once, later scrapes only the new ones.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from quart import Response, g, request

from weall import __version__
from weall.api.dashboard import FileFacts, read_file_facts, read_or_none
from weall.api.metrics_dir import METRICS_DIR_ENV
from weall.config import Config
from weall.errors import HTTP_STATUS
from weall.follow.status import STATES, follower_health
from weall.storage import queries

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from weall.api.app import NodeReader
    from weall.ipc import IpcClient

__all__ = ["register_metrics"]

# At most this many unsettled pins are classified as pending or shortfall per
# scrape. The rest are reported as state "unchecked".
PIN_CLASSIFY_MAX: Final = 200
# At most this many unsettled pins are counted per scrape.
PIN_COUNT_MAX: Final = 100_000
_SUBMIT_ROUTES: Final = frozenset({"/v1/tx/submit", "/v1/tx/batch"})
_UNMATCHED_ROUTE: Final = "unmatched"


@dataclass
class _TxTotal:
    """The count of transactions in blocks up to ``height`` (-1 before any scrape)."""

    height: int = -1
    total: int = 0


@dataclass(frozen=True)
class _ChainSample:
    height: int | None
    last_block_ms: int | None
    tx_total: int
    pending: int
    pins: dict[str, int]


def _count_txs(conn: sqlite3.Connection, after: int, upto: int) -> int:
    row = conn.execute(
        "SELECT COALESCE(SUM(tx_count), 0) FROM blocks WHERE height > ? AND height <= ?",
        (after, upto),
    ).fetchone()
    return int(row[0])


def _pin_states(conn: sqlite3.Connection, height: int) -> dict[str, int]:
    from weall.protocol.rules.storage import pin_status

    state = queries.SqliteState(conn)
    counter = state.get("counter", "pins")
    total = 0 if counter is None else int(counter["n"])
    unsettled = conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM state_view WHERE kind = 'pin_unsettled' LIMIT ?)",
        (PIN_COUNT_MAX,),
    ).fetchone()[0]
    params = state.get("chain", "params")
    pending = shortfall = 0
    if params is not None:
        for pin_id, _ in state.scan("pin_unsettled", limit=PIN_CLASSIFY_MAX):
            status = pin_status(state, pin_id, height + 1, params)
            if status is not None and status["shortfall"]:
                shortfall += 1
            elif status is not None:
                pending += 1
    return {
        "durable": max(0, total - unsettled),
        "pending": pending,
        "shortfall": shortfall,
        "unchecked": max(0, unsettled - pending - shortfall),
    }


def _read_sample(
    conn: sqlite3.Connection, known: _TxTotal
) -> tuple[_ChainSample, _TxTotal]:
    head = queries.head_header(conn)
    pending = int(
        conn.execute("SELECT COUNT(*) FROM txs WHERE status = 'pending'").fetchone()[0]
    )
    if head is None:
        return _ChainSample(None, None, 0, pending, {}), _TxTotal()
    height = int(head["height"])
    # A restore may move the head below what was counted, so count again.
    base = known if known.height <= height else _TxTotal()
    total = base.total + _count_txs(conn, base.height, height)
    sample = _ChainSample(
        height=height,
        last_block_ms=int(head["header"]["timestamp_ms"]),
        tx_total=total,
        pending=pending,
        pins=_pin_states(conn, height),
    )
    return sample, _TxTotal(height, total)


class _NodeCollector(Collector):
    """Metric families built from the latest scrape's reads."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.chain: _ChainSample | None = None
        self.files: FileFacts | None = None
        self.follower: dict[str, Any] | None = None
        self.now_s = 0.0

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "weall_node_info",
            "Node version, chain id, mode (dev or genesis) and role (producer or follower)",
            labels=["version", "chain_id", "mode", "role"],
        )
        role = "follower" if self.config.follower else "producer"
        info.add_metric([__version__, self.config.chain_id, self.config.mode, role], 1)
        yield info
        if self.chain is not None:
            yield from self._chain_metrics(self.chain)
        if self.files is not None:
            yield from self._actor_metrics(self.files)
        if self.follower is not None:
            yield from _follower_metrics(self.follower)

    def _chain_metrics(self, chain: _ChainSample) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "weall_mempool_transactions",
            "Transactions admitted and not yet in a block",
            value=chain.pending,
        )
        if chain.height is None:
            return
        yield GaugeMetricFamily(
            "weall_block_height",
            "Height of the newest committed block",
            value=chain.height,
        )
        yield CounterMetricFamily(
            "weall_blocks_committed",
            "Blocks committed, genesis block included",
            value=chain.height + 1,
        )
        yield CounterMetricFamily(
            "weall_transactions_committed",
            "Transactions included in committed blocks, with ok or failed receipts",
            value=chain.tx_total,
        )
        if chain.last_block_ms is not None:
            yield GaugeMetricFamily(
                "weall_last_block_timestamp_seconds",
                "Chain time of the newest block, Unix seconds",
                value=chain.last_block_ms / 1000,
            )
        pins = GaugeMetricFamily(
            "weall_pins",
            "Pins by replication state: durable, pending, shortfall or unchecked",
            labels=["state"],
        )
        for state, count in chain.pins.items():
            pins.add_metric([state], count)
        yield pins

    def _actor_metrics(self, files: FileFacts) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "weall_actor_restarts",
            "Restarts of each actor since the supervisor started",
            labels=["actor"],
        )
        running = GaugeMetricFamily(
            "weall_actor_running",
            "1 when the actor is in state running",
            labels=["actor"],
        )
        for name, entry in files.actors.items():
            restarts.add_metric([name], entry["restarts"])
            running.add_metric([name], 1 if entry["state"] == "running" else 0)
        yield restarts
        yield running
        yield from self._storage_metrics(files)

    def _storage_metrics(self, files: FileFacts) -> Iterator[Metric]:
        if files.wal_bytes is not None:
            yield GaugeMetricFamily(
                "weall_wal_bytes",
                "Size of the database's -wal file",
                value=files.wal_bytes,
            )
        if files.db_bytes is not None:
            yield GaugeMetricFamily(
                "weall_db_bytes", "Size of the database file", value=files.db_bytes
            )
        yield GaugeMetricFamily(
            "weall_backups",
            "Backups with a manifest in the backup directory",
            value=files.backup_count,
        )
        last = files.last_backup
        if last is not None:
            yield GaugeMetricFamily(
                "weall_backup_age_seconds",
                "Seconds since the newest backup was taken",
                value=max(0.0, self.now_s - last.created_ms / 1000),
            )
            yield GaugeMetricFamily(
                "weall_backup_height", "Height of the newest backup", value=last.height
            )


# Gauges copied from the follower's sync summary when it has a number:
# (summary field, metric name, help text).
_FOLLOWER_NUMBERS: Final = (
    ("upstream_height", "weall_follower_upstream_height", "Upstream's height"),
    (
        "blocks_behind",
        "weall_follower_blocks_behind",
        "Blocks the upstream has and this follower lacks",
    ),
    (
        "sync_blocks_per_s",
        "weall_follower_sync_blocks_per_second",
        "Blocks committed per second while syncing, over the last few seconds",
    ),
    (
        "sync_eta_s",
        "weall_follower_sync_eta_seconds",
        "Estimated seconds until the follower reaches the upstream's height",
    ),
)


def _follower_metrics(summary: dict[str, Any]) -> Iterator[Metric]:
    """Build the follower families from the follower actor's sync summary."""
    current = summary.get("state")
    state = GaugeMetricFamily(
        "weall_follower_state",
        "1 for the follower's current sync state: " + ", ".join(STATES),
        labels=["state"],
    )
    for name in STATES:
        state.add_metric([name], 1 if name == current else 0)
    yield state

    yield from _rejection_metrics(summary.get("rejected"))

    upstream = summary.get("upstream")
    if isinstance(upstream, str):
        info = GaugeMetricFamily(
            "weall_follower_upstream_info",
            "The upstream node that this follower syncs from",
            labels=["upstream"],
        )
        info.add_metric([upstream], 1)
        yield info

    for field_name, name, documentation in _FOLLOWER_NUMBERS:
        number = summary.get(field_name)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            yield GaugeMetricFamily(name, documentation, value=number)

    if "storage_full" in summary:
        yield GaugeMetricFamily(
            "weall_follower_storage_full",
            "1 while the sync is paused because the disk is full",
            value=1 if summary["storage_full"] else 0,
        )


def _rejection_metrics(rejected: Any) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "weall_follower_rejected",
        "1 when the follower rejected its upstream and syncs nothing until restarted",
        value=1 if rejected else 0,
    )
    if isinstance(rejected, dict) and isinstance(rejected.get("height"), int):
        yield GaugeMetricFamily(
            "weall_follower_rejected_height",
            "Height of the block at which the upstream was rejected",
            value=rejected["height"],
        )


class _RequestMetrics:
    """Counters and the latency histogram kept by the request hooks.

    With ``registry`` None they are registered nowhere, which is how
    prometheus_client's multiprocess mode wants them: their values go to the
    shared files, and a ``MultiProcessCollector`` reads them back.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "weall_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "weall_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            ["method", "route"],
            registry=registry,
        )
        self.rejections = Counter(
            "weall_admission_rejections",
            "Submitted transactions rejected at admission, by error code",
            ["code"],
            registry=registry,
        )
        # Every stable code starts at 0, so that its series exists before the
        # first rejection, because a multiprocess scrape omits unused series.
        for code in HTTP_STATUS:
            self.rejections.labels(code=code)

    def count_rejections(self, route: str, status: int, body: bytes) -> None:
        try:
            document: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(document, dict):
            return
        results = (
            document.get("results")
            if route == "/v1/tx/batch" and status == 200
            else [document]
        )
        for result in results if isinstance(results, list) else []:
            error = (
                result.get("error")
                if isinstance(result, dict) and not result.get("ok")
                else None
            )
            if isinstance(error, dict):
                self.rejections.labels(
                    code=str(error.get("code", "unknown"))[:64]
                ).inc()


def _request_metrics(registry: CollectorRegistry) -> _RequestMetrics:
    """Create the request metrics, in the shared files when the supervisor set them up."""
    shared = os.environ.get(METRICS_DIR_ENV)
    if not shared:
        return _RequestMetrics(registry)
    # The supervisor creates the directory; an api started by hand with the
    # variable set may find none.
    os.makedirs(shared, mode=0o700, exist_ok=True)
    MultiProcessCollector(registry, path=shared)  # type: ignore[no-untyped-call]
    return _RequestMetrics(None)


def register_metrics(
    app: QuartTrio, reader: NodeReader, config: Config, producer: IpcClient
) -> Callable[[str, str, int, float, bytes], None]:
    """Add ``GET /metrics`` and the request hooks that count and time every request.

    ``producer`` is the client of the producer socket, which the follower
    actor serves on a follower node. Returns the function that records one
    request, ``(method, route template, status, seconds, response body)``,
    for requests served outside Quart.
    """
    registry = CollectorRegistry()
    node = _NodeCollector(config)
    registry.register(node)
    counters = _request_metrics(registry)
    tx_total = _TxTotal()

    def observe(
        method: str, route: str, status: int, seconds: float, body: bytes
    ) -> None:
        counters.latency.labels(method, route).observe(seconds)
        counters.requests.labels(method, route, str(status)).inc()
        # A 202 from a single submit is an admission, so only other
        # responses of the submit routes need parsing for rejections.
        if route in _SUBMIT_ROUTES and not (status == 202 and route == "/v1/tx/submit"):
            counters.count_rejections(route, status, body)

    @app.before_request
    async def start_request_timer() -> None:
        g.weall_metrics_started = time.perf_counter()

    @app.after_request
    async def record_request(response: Response) -> Response:
        route = (
            request.url_rule.rule if request.url_rule is not None else _UNMATCHED_ROUTE
        )
        started = g.get("weall_metrics_started")
        seconds = 0.0 if started is None else time.perf_counter() - started
        body = (
            await response.get_data(as_text=False) if route in _SUBMIT_ROUTES else b""
        )
        observe(request.method, route, response.status_code, seconds, body)
        return response

    @app.get("/metrics")
    async def metrics() -> Response:
        nonlocal tx_total
        known = tx_total
        result = await read_or_none(reader, lambda conn: _read_sample(conn, known))
        if result is not None:
            # Two concurrent scrapes both count from ``known``, and either result is correct.
            tx_total = result[1]
        node.files = await trio.to_thread.run_sync(read_file_facts, config)
        node.follower = await follower_health(producer) if config.follower else None
        node.chain = None if result is None else result[0]
        node.now_s = time.time()
        return Response(
            generate_latest(registry), status=200, content_type=CONTENT_TYPE_LATEST
        )

    return observe
