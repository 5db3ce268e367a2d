"""The operator dashboard: the page at ``/``, its assets, ``GET /v1/node/status``.

The page (``weall/static/``) is plain HTML, CSS and JavaScript shipped in the
package and served from memory. It loads nothing from elsewhere, and the
Content-Security-Policy sent with it allows nothing else. It only reads: it
polls ``/v1/node/status`` and the chain read routes and has no control that
submits anything.

``/v1/node/status`` adds what those routes do not show: the actors from the
supervisor's ``actors.json``, the WAL size, the newest backup manifest, the
storage settings and, on a follower node, the follower actor's sync summary
(``weall.follow.status``). It never includes a key, a secret or a file path.

The newest backup is shown with the verification its manifest records and
with the state of its file: ``present``, ``missing``, or ``changed`` when
its size or SHA-256 no longer matches the manifest. The SHA-256 is computed
only when the file's size or modification time differs from what the
manifest (or the previous check) recorded, so a status request costs a
``stat`` in the usual case.
"""

from __future__ import annotations

import importlib.resources
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
import trio
from quart import Response
from quart_schema import hide
from werkzeug.exceptions import NotFound

from weall import __version__
from weall.config import ALL_ACTOR_NAMES, Config
from weall.follow.status import follower_health
from weall.storage import queries
from weall.storage.backup import BackupManifest, list_manifests, sha256_file

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from weall.api.app import NodeReader
    from weall.ipc import IpcClient

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "BackupFileCheck",
    "FileFacts",
    "read_actors",
    "read_chain_facts",
    "read_file_facts",
    "read_or_none",
    "register_dashboard",
    "status_document",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# The page and its assets load only from this origin. Inline scripts and
# styles, frames, form submissions and plugins are all blocked.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSET_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The block rate is measured over this many of the newest blocks.
RATE_BLOCKS: Final = 20
_EXIT_FIELDS: Final = ("code", "signal", "reason", "at_ms")


@dataclass(frozen=True)
class FileFacts:
    """Facts read from the node's files: actors, database and WAL sizes, backups."""

    actors: dict[str, dict[str, Any]]
    db_bytes: int | None
    wal_bytes: int | None
    backup_count: int
    last_backup: BackupManifest | None
    # "present", "missing" or "changed"; None when there is no backup.
    last_backup_file: str | None


def _load_assets() -> dict[str, bytes]:
    folder = importlib.resources.files("weall") / "static"
    return {name: (folder / name).read_bytes() for name in _ASSET_TYPES}


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _clean_actor(entry: dict[str, Any]) -> dict[str, Any]:
    last_exit = entry.get("last_exit")
    if isinstance(last_exit, dict):
        last_exit = {name: last_exit.get(name) for name in _EXIT_FIELDS}
    else:
        last_exit = None
    return {
        "state": str(entry.get("state", "unknown")),
        "pid": _int_or_none(entry.get("pid")),
        "restarts": _int_or_none(entry.get("restarts")) or 0,
        "started_at_ms": _int_or_none(entry.get("started_at_ms")),
        "last_exit": last_exit,
    }


def read_actors(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Read ``actors.json``: each actor's state, pid, restarts, start time, last exit.

    Returns the known actors in start order, then any others by name. A
    missing or invalid file gives an empty dict.
    """
    try:
        document = orjson.loads((run_dir / "actors.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(document, dict):
        return {}
    names = [n for n in ALL_ACTOR_NAMES if n in document]
    names += sorted(n for n in document if n not in ALL_ACTOR_NAMES)
    return {
        str(name): _clean_actor(document[name])
        for name in names
        if isinstance(document[name], dict)
    }


# backup dir -> (its mtime_ns, its manifests). A new, renamed or deleted file
# changes the directory's mtime, so the cache never serves a stale listing.
_manifest_cache: dict[Path, tuple[int, list[BackupManifest]]] = {}


def _manifests(backup_dir: Path) -> list[BackupManifest]:
    try:
        mtime = backup_dir.stat().st_mtime_ns
    except OSError:
        return []
    cached = _manifest_cache.get(backup_dir)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    manifests = sorted(list_manifests(backup_dir), key=lambda m: m.created_ms)
    _manifest_cache[backup_dir] = (mtime, manifests)
    return manifests


class BackupFileCheck:
    """Compares a backup file with its manifest, hashing it only when it may have changed.

    The file is ``missing`` when it cannot be read, ``changed`` when its size
    or SHA-256 differs from the manifest, and ``present`` otherwise. When its
    modification time equals the manifest's ``mtime_ns``, the file is taken
    as unchanged without reading it. Otherwise its SHA-256 is computed once
    and the result kept until its size or modification time changes again.
    ``hashes`` counts the files hashed. Safe to call from several threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (path, size, mtime_ns, manifest SHA-256) -> state of the last file hashed.
        self._last: tuple[tuple[Path, int, int, str], str] | None = None
        self.hashes = 0

    def state(self, path: Path, manifest: BackupManifest) -> str:
        try:
            info = path.stat()
        except OSError:
            return "missing"
        if info.st_size != manifest.size_bytes:
            return "changed"
        if manifest.mtime_ns is not None and info.st_mtime_ns == manifest.mtime_ns:
            return "present"
        key = (path, info.st_size, info.st_mtime_ns, manifest.sha256)
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
            try:
                digest = sha256_file(path)
            except OSError as exc:
                log.warning("backup file unreadable path=%s: %s", path.name, exc)
                return "missing"
            self.hashes += 1
            state = "present" if digest == manifest.sha256 else "changed"
            if state == "changed":
                log.warning(
                    "backup file does not match its manifest file=%s sha256=%s",
                    path.name,
                    digest,
                )
            self._last = (key, state)
            return state


_backup_file_check = BackupFileCheck()


def read_file_facts(
    config: Config, backup_check: BackupFileCheck = _backup_file_check
) -> FileFacts:
    """Read the status file, stat the database and read the backup manifests.

    It blocks (and may hash the newest backup), so the routes call it in a
    worker thread.
    """
    manifests = _manifests(config.backup_dir)
    last = manifests[-1] if manifests else None
    file_state = (
        None
        if last is None
        else backup_check.state(config.backup_dir / last.file, last)
    )
    return FileFacts(
        actors=read_actors(config.run_dir),
        db_bytes=_file_size(config.db_path),
        wal_bytes=_file_size(config.db_path.with_name(config.db_path.name + "-wal")),
        backup_count=len(manifests),
        last_backup=last,
        last_backup_file=file_state,
    )


def read_chain_facts(conn: sqlite3.Connection) -> dict[str, Any]:
    """Read the head, the newest blocks' times, the pending count and the counters."""
    head = queries.head_header(conn)
    recent = conn.execute(
        "SELECT height, timestamp_ms, tx_count FROM blocks ORDER BY height DESC LIMIT ?",
        (RATE_BLOCKS,),
    ).fetchall()
    pending = conn.execute(
        "SELECT COUNT(*) FROM txs WHERE status = 'pending'"
    ).fetchone()[0]
    counts = {
        key: value["n"] for key, value in queries.SqliteState(conn).scan("counter")
    }
    return {"head": head, "recent": recent, "pending": int(pending), "counts": counts}


async def read_or_none(
    reader: NodeReader, fn: Callable[[sqlite3.Connection], T]
) -> T | None:
    """Run ``fn`` through ``reader``, or return ``None`` while the database cannot be read."""
    # Imported here because weall.api.app imports this module.
    from weall.api.app import ApiError

    try:
        return await reader.run(fn)
    except ApiError as exc:
        log.debug("status read skipped code=%s", exc.code)
        return None


def _block_rate(recent: list[tuple[int, int, int]]) -> dict[str, Any] | None:
    if len(recent) < 2:
        return None
    newest, oldest = recent[0], recent[-1]
    span_ms = newest[1] - oldest[1]
    blocks = newest[0] - oldest[0]
    txs = sum(row[2] for row in recent[:-1])
    if span_ms <= 0:
        return None
    return {
        "blocks": blocks,
        "span_s": round(span_ms / 1000, 3),
        "blocks_per_min": round(blocks * 60000 / span_ms, 2),
        "txs_per_s": round(txs * 1000 / span_ms, 2),
    }


def _chain_part(chain: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
    if chain is None or chain["head"] is None:
        return {"head": None, "block_rate": None, "mempool": None, "counts": {}}
    head = chain["head"]
    timestamp = head["header"]["timestamp_ms"]
    return {
        "head": {
            "height": head["height"],
            "hash": head["hash"],
            "timestamp_ms": timestamp,
            "age_s": round(max(0, now_ms - timestamp) / 1000, 1),
            "tx_count": len(head["header"]["tx_ids"]),
        },
        "block_rate": _block_rate(chain["recent"]),
        "mempool": {"pending": chain["pending"]},
        "counts": chain["counts"],
    }


def _actors_part(
    actors: dict[str, dict[str, Any]], now_ms: int
) -> list[dict[str, Any]]:
    rows = []
    for name, entry in actors.items():
        started = entry["started_at_ms"]
        uptime = None if started is None else round(max(0, now_ms - started) / 1000, 1)
        rows.append({"name": name, **entry, "uptime_s": uptime})
    return rows


# The verification fields of a manifest that the status shows.
_VERIFICATION_FIELDS: Final = (
    "verified_at_ms",
    "duration_s",
    "integrity_check",
    "schema_version",
    "genesis_hash",
    "tip_hash",
    "height",
)


def _verification_part(last: BackupManifest) -> dict[str, Any] | None:
    recorded = last.verification
    if not isinstance(recorded, dict):
        return None
    return {name: recorded.get(name) for name in _VERIFICATION_FIELDS}


def _passed(verification: dict[str, Any] | None, last: BackupManifest) -> bool:
    """Return whether the recorded checks passed on the blocks that the manifest describes."""
    return (
        verification is not None
        and verification["integrity_check"] == "ok"
        and verification["tip_hash"] == last.tip_hash
        and verification["height"] == last.height
        and verification["genesis_hash"] == last.genesis_hash
    )


def _backup_part(files: FileFacts, now_ms: int) -> dict[str, Any]:
    last = files.last_backup
    if last is None:
        return {"count": files.backup_count, "last": None}
    verification = _verification_part(last)
    return {
        "count": files.backup_count,
        "last": {
            "height": last.height,
            "tip_hash": last.tip_hash,
            "created_ms": last.created_ms,
            "age_s": round(max(0, now_ms - last.created_ms) / 1000, 1),
            "size_bytes": last.size_bytes,
            "sha256_prefix": last.sha256[:16],
            "duration_s": last.duration_s,
            "schema_version": last.schema_version,
            # Manifests written before verification was recorded have none.
            "verification": verification,
            "verified": _passed(verification, last),
            "file": files.last_backup_file,
        },
    }


def status_document(
    config: Config,
    chain: dict[str, Any] | None,
    files: FileFacts,
    now_ms: int,
    follower: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the ``/v1/node/status`` document.

    ``role`` is ``follower`` on a node with ``WEALL_UPSTREAM_URL`` set, else
    ``producer``. ``follower`` is the sync summary on a follower node, else null.
    """
    return {
        "version": __version__,
        "chain_id": config.chain_id,
        "mode": config.mode,
        "role": "follower" if config.follower else "producer",
        "follower": follower,
        "now_ms": now_ms,
        **_chain_part(chain, now_ms),
        "actors": _actors_part(files.actors, now_ms),
        "storage": {
            "journal_mode": "wal",
            "synchronous": config.synchronous,
            "db_bytes": files.db_bytes,
            "wal_bytes": files.wal_bytes,
            "wal_max_bytes": config.wal_max_bytes,
            "checkpoint_interval_s": config.checkpoint_interval_s,
            "backup_interval_s": config.backup_interval_s,
            "backup_keep_daily": config.backup_keep_daily,
            "backup_keep_weekly": config.backup_keep_weekly,
            "ipfs_backend": config.ipfs_backend,
        },
        "backup": _backup_part(files, now_ms),
    }


def _asset_response(assets: dict[str, bytes], name: str) -> Response:
    response = Response(assets[name], status=200, content_type=_ASSET_TYPES[name])
    response.headers.update(_PAGE_HEADERS)
    return response


def register_dashboard(
    app: QuartTrio, reader: NodeReader, config: Config, producer: IpcClient
) -> None:
    """Add ``GET /``, ``GET /dashboard/<name>`` and ``GET /v1/node/status`` to ``app``.

    ``producer`` is the client of the producer socket, which the follower
    actor serves on a follower node.
    """
    assets = _load_assets()

    @app.get("/")
    @hide
    async def dashboard_page() -> Response:
        return _asset_response(assets, "index.html")

    @app.get("/dashboard/<name>")
    @hide
    async def dashboard_asset(name: str) -> Response:
        if name not in assets or name == "index.html":
            raise NotFound(f"no dashboard file {name[:60]}")
        return _asset_response(assets, name)

    async def static_file(filename: str) -> Response:
        return await dashboard_asset(filename)

    # Quart adds /static/<path:filename> for the weall/static folder by itself.
    # It serves the same files as /dashboard/, so none loads without the headers.
    if "static" in app.view_functions:
        app.view_functions["static"] = static_file

    @app.get("/v1/node/status")
    async def node_status() -> Response:
        chain = await read_or_none(reader, read_chain_facts)
        files = await trio.to_thread.run_sync(read_file_facts, config)
        follower = await follower_health(producer) if config.follower else None
        now_ms = int(time.time() * 1000)
        document = status_document(config, chain, files, now_ms, follower)
        return Response(
            orjson.dumps(document), status=200, content_type="application/json"
        )
