"""Node settings, read from the environment (and an optional ``.env`` file).

Every setting is validated before any actor starts. A bad value raises
``ConfigError`` naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from weall.errors import ConfigError

__all__ = [
    "ACTOR_NAMES",
    "ALL_ACTOR_NAMES",
    "FOLLOWER_ACTOR_NAMES",
    "Config",
    "load",
    "load_env_file",
]

# Start order; the supervisor stops actors in the reverse order.
ACTOR_NAMES: Final = ("producer", "checkpointer", "pinner", "healer", "api")
# A follower node (WEALL_UPSTREAM_URL set) runs the follower in the producer's place.
FOLLOWER_ACTOR_NAMES: Final = ("follower", "checkpointer", "pinner", "healer", "api")
ALL_ACTOR_NAMES: Final = (
    "producer",
    "follower",
    "checkpointer",
    "pinner",
    "healer",
    "api",
)
MODES: Final = ("dev", "genesis")
LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
IPFS_BACKENDS: Final = ("local", "kubo")
MIB: Final = 1024 * 1024
_LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")
FORWARDED_HEADERS: Final = ("x-forwarded-for", "forwarded")


@dataclass(frozen=True)
class Config:
    """Validated settings of one node."""

    mode: str = "dev"
    chain_id: str = "weall-dev"
    genesis_path: Path = Path("data/genesis.json")
    genesis_path_set: bool = False
    db_path: Path = Path("data/weall.db")
    node_key_path: Path = Path("data/keys/node.key")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1
    allow_unsigned_txs: bool = False
    ipfs_backend: str = "local"
    ipfs_api_url: str = "http://127.0.0.1:5001"
    ipfs_pin_on_upload: bool = False
    media_auto_pin_request: bool = True
    ipfs_enable_heal: bool = True
    ipfs_heal_interval_blocks: int = 10
    ipfs_max_upload_bytes: int = 10 * MIB
    max_request_bytes: int = 1 * MIB
    wal_max_bytes: int = 64 * MIB
    checkpoint_interval_s: float = 5.0
    backup_dir: Path = Path("data/backups")
    backup_interval_s: int = 86400
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4
    log_level: str = "INFO"
    log_format: str = "text"
    block_interval_ms: int | None = None
    run_dir: Path = Path("data/run")
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 10.0
    restart_max: int = 5
    restart_window_s: float = 30.0
    control_socket_path: Path | None = None
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 200
    trusted_proxies: tuple[str, ...] = ()
    upstream_url: str | None = None
    follower_rejected_log_s: float = 300.0
    forwarded_header: str = "x-forwarded-for"
    api_header_timeout_s: float = 20.0
    api_body_timeout_s: float = 30.0
    pinner_node_url: str | None = None
    pin_recheck_s: float = 300.0
    pinner_poll_s: float = 2.0
    pin_unpin_grace_s: float = 3600.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def follower(self) -> bool:
        """Whether this node follows ``upstream_url`` instead of producing blocks.

        A follower's healer only logs shortfalls, because ``IPFS_PIN_HEAL``
        is signed by the producer alone.
        """
        return self.upstream_url is not None

    @property
    def data_dir(self) -> Path:
        return self.db_path.parent

    @property
    def keys_dir(self) -> Path:
        return self.node_key_path.parent

    @property
    def producer_socket(self) -> Path:
        return self.run_dir / "producer.sock"

    @property
    def control_socket(self) -> Path:
        # WEALL_CONTROL_SOCKET lets two supervisors share one run dir, as the
        # weall_api and weall_producer containers do over one ./data.
        if self.control_socket_path is not None:
            return self.control_socket_path
        return self.run_dir / "supervisor.sock"

    @property
    def lock_path(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".lock")

    @property
    def synchronous(self) -> str:
        return "FULL" if self.mode == "genesis" else "NORMAL"

    @property
    def autocheckpoint_pages(self) -> int:
        """WAL pages (of 4 KiB) at which a commit checkpoints without the checkpointer.

        A quarter of ``WEALL_WAL_MAX_BYTES``: the checkpointer's rounds keep
        the WAL below that, so commits only append, while a node run
        without a checkpointer still keeps its WAL bounded.
        """
        return max(1000, self.wal_max_bytes // 4 // 4096)

    @property
    def api_bind(self) -> str:
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"{host}:{self.api_port}"

    def with_changes(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]


def load_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``NAME=value`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        name, sep, value = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(f"{path}:{number}", raw, "expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name)
        return default if value is None or value == "" else value

    def flag(self, name: str, default: bool) -> bool:
        value = self.env.get(name)
        if value is None or value == "":
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, value, "must be 0 or 1")

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.env.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value.strip())
        except ValueError:
            raise ConfigError(name, value, "must be an integer") from None
        if not minimum <= number <= maximum:
            raise ConfigError(name, value, f"must be between {minimum} and {maximum}")
        return number

    def number(
        self, name: str, default: float, minimum: float, maximum: float
    ) -> float:
        value = self.env.get(name)
        if value is None or value == "":
            return default
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(name, value, "must be a number") from None
        if not minimum <= number <= maximum:
            raise ConfigError(name, value, f"must be between {minimum} and {maximum}")
        return number

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise ConfigError(name, value, f"must be one of {', '.join(allowed)}")
        return value


def load(env: Mapping[str, str] | None = None) -> Config:
    """Build and validate a ``Config`` from ``env`` (default: ``os.environ``).

    A ``.env`` file named by ``WEALL_ENV_FILE`` fills in variables that the
    environment does not set.
    """
    source = dict(os.environ if env is None else env)
    env_file = source.get("WEALL_ENV_FILE")
    if env_file:
        path = Path(env_file)
        if not path.is_file():
            raise ConfigError("WEALL_ENV_FILE", env_file, "must name an existing file")
        for name, value in load_env_file(path).items():
            source.setdefault(name, value)
    read = _Reader(source)

    mode = read.choice("WEALL_MODE", "dev", MODES)
    chain_default = "weall-dev" if mode == "dev" else ""
    chain_id = read.text("WEALL_CHAIN_ID", chain_default)
    if mode == "genesis" and not chain_id:
        raise ConfigError("WEALL_CHAIN_ID", "", "required in genesis mode")
    if not 1 <= len(chain_id) <= 64 or not all(
        c.isalnum() or c in "-_." for c in chain_id
    ):
        raise ConfigError(
            "WEALL_CHAIN_ID", chain_id, "must be 1 to 64 of [A-Za-z0-9._-]"
        )

    db_path = Path(read.text("WEALL_DB_PATH", "data/weall.db"))
    data_dir = db_path.parent
    genesis_raw = source.get("WEALL_GENESIS_PATH") or ""
    genesis_path = Path(genesis_raw) if genesis_raw else data_dir / "genesis.json"
    node_key_path = Path(
        read.text("WEALL_NODE_KEY_PATH", str(data_dir / "keys" / "node.key"))
    )
    run_dir = Path(read.text("WEALL_RUN_DIR", str(data_dir / "run")))

    port_env = source.get("PORT") or ""
    host_env = source.get("WEALL_API_HOST") or ""
    if port_env and not source.get("WEALL_API_PORT"):
        api_port = read.integer("PORT", 8000, 1, 65535)
    else:
        api_port = read.integer("WEALL_API_PORT", 8000, 0, 65535)
    api_host = host_env or ("0.0.0.0" if port_env else "127.0.0.1")

    allow_unsigned = read.flag("WEALL_ALLOW_UNSIGNED_TXS", False)
    block_interval = source.get("WEALL_BLOCK_INTERVAL_MS")
    trusted = tuple(
        part.strip()
        for part in read.text("WEALL_TRUSTED_PROXIES", "").split(",")
        if part.strip()
    )
    for entry in trusted:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                "WEALL_TRUSTED_PROXIES",
                entry,
                "must list IP addresses or CIDR networks, comma-separated",
            ) from None

    config = Config(
        mode=mode,
        chain_id=chain_id,
        genesis_path=genesis_path,
        genesis_path_set=bool(genesis_raw),
        db_path=db_path,
        node_key_path=node_key_path,
        api_host=api_host,
        api_port=api_port,
        api_workers=read.integer("WEALL_API_WORKERS", 1, 1, 64),
        allow_unsigned_txs=allow_unsigned,
        ipfs_backend=read.choice("WEALL_IPFS_BACKEND", "local", IPFS_BACKENDS),
        ipfs_api_url=_ipfs_api_url(
            read.text("WEALL_IPFS_API_URL", "http://127.0.0.1:5001")
        ),
        ipfs_pin_on_upload=read.flag("WEALL_IPFS_PIN_ON_UPLOAD", False),
        media_auto_pin_request=read.flag("WEALL_MEDIA_AUTO_PIN_REQUEST", True),
        ipfs_enable_heal=read.flag("WEALL_IPFS_ENABLE_HEAL", True),
        ipfs_heal_interval_blocks=read.integer(
            "WEALL_IPFS_HEAL_INTERVAL_BLOCKS", 10, 1, 10**6
        ),
        ipfs_max_upload_bytes=read.integer(
            "WEALL_IPFS_MAX_UPLOAD_BYTES", 10 * MIB, 1, 2**40
        ),
        max_request_bytes=read.integer("WEALL_MAX_REQUEST_BYTES", 1 * MIB, 1024, 2**31),
        wal_max_bytes=read.integer("WEALL_WAL_MAX_BYTES", 64 * MIB, 64 * 1024, 2**40),
        checkpoint_interval_s=read.number(
            "WEALL_CHECKPOINT_INTERVAL_S", 5.0, 0.1, 86400
        ),
        backup_dir=Path(read.text("WEALL_BACKUP_DIR", str(data_dir / "backups"))),
        backup_interval_s=read.integer("WEALL_BACKUP_INTERVAL_S", 86400, 0, 10**8),
        backup_keep_daily=read.integer("WEALL_BACKUP_KEEP_DAILY", 7, 0, 10000),
        backup_keep_weekly=read.integer("WEALL_BACKUP_KEEP_WEEKLY", 4, 0, 10000),
        log_level=read.choice("WEALL_LOG_LEVEL", "INFO", LOG_LEVELS),
        log_format=read.choice("WEALL_LOG_FORMAT", "text", LOG_FORMATS),
        block_interval_ms=(
            read.integer("WEALL_BLOCK_INTERVAL_MS", 1000, 10, 3_600_000)
            if block_interval
            else None
        ),
        run_dir=run_dir,
        heartbeat_interval_s=read.number("WEALL_HEARTBEAT_INTERVAL_S", 1.0, 0.05, 60),
        heartbeat_timeout_s=read.number("WEALL_HEARTBEAT_TIMEOUT_S", 10.0, 0.2, 600),
        restart_max=read.integer("WEALL_RESTART_MAX", 5, 0, 10000),
        restart_window_s=read.number("WEALL_RESTART_WINDOW_S", 30.0, 1, 86400),
        control_socket_path=(
            Path(source["WEALL_CONTROL_SOCKET"])
            if source.get("WEALL_CONTROL_SOCKET")
            else None
        ),
        rate_limit_per_s=read.number("WEALL_RATE_LIMIT_PER_S", 50.0, 0, 10**6),
        rate_limit_burst=read.integer("WEALL_RATE_LIMIT_BURST", 200, 1, 10**6),
        trusted_proxies=trusted,
        upstream_url=_upstream_url(read.text("WEALL_UPSTREAM_URL", "")),
        follower_rejected_log_s=read.number(
            "WEALL_FOLLOWER_REJECTED_LOG_S", 300.0, 1.0, 86400
        ),
        forwarded_header=read.choice(
            "WEALL_FORWARDED_HEADER", "x-forwarded-for", FORWARDED_HEADERS
        ),
        api_header_timeout_s=read.number("WEALL_API_HEADER_TIMEOUT_S", 20.0, 0.5, 3600),
        api_body_timeout_s=read.number("WEALL_API_BODY_TIMEOUT_S", 30.0, 0.5, 3600),
        pinner_node_url=_upstream_url(
            read.text("WEALL_PINNER_NODE_URL", ""), "WEALL_PINNER_NODE_URL"
        ),
        pin_recheck_s=read.number("WEALL_PIN_RECHECK_S", 300.0, 0.1, 86400),
        pinner_poll_s=read.number("WEALL_PINNER_POLL_S", 2.0, 0.05, 3600),
        pin_unpin_grace_s=read.number("WEALL_PIN_UNPIN_GRACE_S", 3600.0, 0, 30 * 86400),
        extra={k: v for k, v in source.items() if k.startswith("WEALL_")},
    )
    _check_posture(config, source)
    return config


def _ipfs_api_url(value: str) -> str:
    """Validate ``WEALL_IPFS_API_URL`` before any actor starts.

    ``KuboBackend`` checks the URL too, but only when an actor opens it.
    """
    allowed = "must be an http:// or https:// URL such as http://127.0.0.1:5001"
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018  raises ValueError for a port out of range
    except ValueError:
        raise ConfigError("WEALL_IPFS_API_URL", value, allowed) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("WEALL_IPFS_API_URL", value, allowed)
    return value.strip()


def _upstream_url(value: str, variable: str = "WEALL_UPSTREAM_URL") -> str | None:
    """Validate a node URL setting (``variable``): an http(s) base URL without credentials."""
    if not value:
        return None
    allowed = "must be an http:// or https:// base URL such as http://127.0.0.1:8000"
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ConfigError(variable, value, allowed) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise ConfigError(variable, value, allowed)
    if parts.username is not None or parts.password is not None:
        # The value is not echoed, because it holds a secret.
        redacted = f"{parts.scheme}://***@{parts.hostname}"
        raise ConfigError(variable, redacted, "must not contain credentials")
    if parts.query or parts.fragment:
        raise ConfigError(variable, value, "must not have a query or fragment")
    return value.strip().rstrip("/")


def _check_posture(config: Config, source: Mapping[str, str]) -> None:
    socket_path = str(config.producer_socket.absolute())
    if len(socket_path.encode()) > 100:
        raise ConfigError(
            "WEALL_RUN_DIR",
            str(config.run_dir),
            "socket paths must be under 100 bytes; set a shorter WEALL_RUN_DIR",
        )
    if len(str(config.control_socket.absolute()).encode()) > 100:
        raise ConfigError(
            "WEALL_CONTROL_SOCKET",
            str(config.control_socket),
            "socket paths must be under 100 bytes; set a shorter path",
        )
    if config.heartbeat_timeout_s <= config.heartbeat_interval_s:
        raise ConfigError(
            "WEALL_HEARTBEAT_TIMEOUT_S",
            config.heartbeat_timeout_s,
            "must be greater than WEALL_HEARTBEAT_INTERVAL_S",
        )
    if config.mode != "genesis":
        return
    if config.allow_unsigned_txs:
        raise ConfigError("WEALL_ALLOW_UNSIGNED_TXS", "1", "must be 0 in genesis mode")
    if not config.genesis_path_set:
        raise ConfigError("WEALL_GENESIS_PATH", "", "required in genesis mode")
    _check_node_key_file(config.node_key_path)
    explicit_host = bool(source.get("WEALL_API_HOST"))
    if config.api_host not in _LOOPBACK_HOSTS and not (
        explicit_host or source.get("PORT")
    ):
        raise ConfigError(
            "WEALL_API_HOST",
            config.api_host,
            "a non-loopback bind in genesis mode needs PORT or an explicit WEALL_API_HOST",
        )


def _check_node_key_file(path: Path) -> None:
    """Reject a missing node key, or one that group or others may read, in genesis mode."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            "WEALL_NODE_KEY_PATH",
            str(path),
            "must name an existing key file in genesis mode; create one with `weall keygen`",
        ) from None
    except OSError as exc:
        raise ConfigError(
            "WEALL_NODE_KEY_PATH", str(path), f"cannot be read: {exc.strerror}"
        ) from None
    if info.st_mode & 0o077:
        raise ConfigError(
            "WEALL_NODE_KEY_PATH",
            str(path),
            f"key file has mode {info.st_mode & 0o777:04o}; it must be readable by its owner only: chmod 600 {path}",
        )
