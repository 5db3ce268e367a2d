"""Checks and first-start set-up that run before any actor starts.

On a first dev start in an empty directory this writes the node and founder
key files and the dev genesis, and creates the database. Every later start
checks that the database is an SQLite file of a known schema version that
contains the configured chain and every block the tip file records. When it
is not, the start is rejected (``StartupError``, one line) and no file
changes.

Two nodes may start at once on one data directory, as the two supervisors of
the Compose file do. A first start therefore runs under an exclusive lock on
``<database>.init.lock``. Each first-start file is linked into place only if
no file of that name exists yet, so the second start reuses the keys and
genesis of the first.

NOTE: the start-up checks find damage to the file's structure (header, size,
b-tree pages through ``PRAGMA quick_check``) and lost blocks after the last
one the tip file records. Bytes changed inside a row's content keep the
structure valid; only ``weall verify``, which replays every block, finds
those.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from weall.config import Config
from weall.errors import ProtocolError, StartupError, StorageError
from weall.protocol import keys
from weall.protocol.block import genesis_block
from weall.protocol.genesis import genesis_hash, genesis_state, validate_genesis
from weall.protocol.params import DEV_OVERRIDES, GENESIS_DEFAULTS
from weall.protocol.state import MemoryState
from weall.storage import queries
from weall.storage.db import (
    RESTORE_HINT,
    check_file,
    check_tip,
    open_readonly,
    tip_path,
    write_tip,
)
from weall.storage.lock import ProducerLock, is_locked
from weall.storage.schema import SCHEMA_VERSION, current_version

__all__ = [
    "create_database",
    "dev_genesis",
    "fund_accounts",
    "load_genesis",
    "prepare_node",
]

log = logging.getLogger(__name__)

DEV_FOUNDER_BALANCE = 1_000_000
# The dev chain's reward pool and treasury, so that rewards and treasury
# spends work on it once the economics lock ends.
DEV_POOL_BALANCE = 1_000_000
_RESTORE_HINT = RESTORE_HINT
# How long a first start waits for another one on the same data directory.
# A follower's first start fetches block 0 from its upstream, with retries.
INIT_LOCK_TIMEOUT_S: Final = 300.0
_INIT_LOCK_POLL_S: Final = 0.05


def dev_genesis(
    node: keys.KeyPair, founder: keys.KeyPair, *, chain_id: str
) -> dict[str, Any]:
    return {
        "chain_id": chain_id,
        "genesis_time_ms": int(time.time() * 1000),
        "producer": node.pubkey,
        "params": dict(DEV_OVERRIDES),
        "accounts": [
            {
                "id": "@founder",
                "pubkey": founder.pubkey,
                "poh_tier": 2,
                "roles": ["juror"],
                "balance": DEV_FOUNDER_BALANCE,
            },
            {
                "id": "@node",
                "pubkey": node.pubkey,
                "poh_tier": 2,
                "roles": ["node_operator", "producer"],
                "balance": 0,
            },
            *fund_accounts(
                DEV_OVERRIDES, rewards=DEV_POOL_BALANCE, treasury=DEV_POOL_BALANCE
            ),
        ],
    }


def fund_accounts(
    params: dict[str, Any], *, rewards: int, treasury: int
) -> list[dict[str, Any]]:
    """Return genesis accounts for the reward pool and the treasury that ``params`` name.

    Each gets a freshly generated key whose secret key is dropped at once, so
    no one can sign for the account: its balance moves only by the protocol's
    rules (a reward claim, a passed treasury spend). Accounts with a balance
    of 0 are left out.
    """
    merged = {**GENESIS_DEFAULTS, **params}
    funds = [
        (str(merged["reward_pool_account"]), rewards),
        (str(merged["treasury_account"]), treasury),
    ]
    return [
        {
            "id": account_id,
            "pubkey": keys.generate(account_id).pubkey,
            "poh_tier": 0,
            "roles": [],
            "balance": balance,
        }
        for account_id, balance in funds
        if balance > 0
    ]


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _link_new_file(path: Path, write: Callable[[Path], None]) -> bool:
    """Create ``path`` whole through ``write`` and a hard link, unless it exists.

    ``write`` creates the directory if needed and fills a temporary file in
    it. Return False, leaving ``path`` untouched, when another process
    created ``path`` first.
    """
    temp = path.with_name(f".{path.name}.new{os.getpid()}")
    try:
        write(temp)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
    finally:
        temp.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return True


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dev_key(path: Path, account: str) -> keys.KeyPair:
    """Return the key in ``path``, writing a new one for ``account`` if there is none."""
    if not path.exists():
        key = keys.generate(account)
        if _link_new_file(path, lambda temp: keys.write_key_file(temp, key)):
            log.info("wrote key file path=%s account=%s", path, account)
            return key
    return keys.load_key_file(path)


def _first_dev_start(config: Config) -> None:
    """Write dev keys and genesis when the data directory has none of them."""
    node = _dev_key(config.node_key_path, "@node")
    founder = _dev_key(config.keys_dir / "founder.key", "@founder")
    document = dev_genesis(node, founder, chain_id=config.chain_id)
    if _link_new_file(
        config.genesis_path, lambda temp: _write_json_atomic(temp, document)
    ):
        log.info(
            "wrote dev genesis path=%s hash=%s",
            config.genesis_path,
            genesis_hash(document),
        )


def load_genesis(config: Config) -> dict[str, Any]:
    try:
        document = json.loads(config.genesis_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StartupError(
            f"genesis document {config.genesis_path} not found; set WEALL_GENESIS_PATH"
        ) from None
    except (OSError, ValueError) as exc:
        raise StartupError(
            f"genesis document {config.genesis_path} is invalid: {exc}"
        ) from None
    try:
        validate_genesis(document)
    except ProtocolError as exc:
        raise StartupError(
            f"genesis document {config.genesis_path}: {exc.message}"
        ) from None
    if document["chain_id"] != config.chain_id:
        raise StartupError(
            f"genesis document {config.genesis_path} is for chain {document['chain_id']!r} "
            f"but WEALL_CHAIN_ID is {config.chain_id!r}"
        )
    checked: dict[str, Any] = document
    return checked


def create_database(
    config: Config, document: dict[str, Any], node: keys.KeyPair
) -> None:
    """Create the database of a new chain: schema, genesis, block 0."""
    from weall.storage.writer import (
        Writer,  # the producer's module; see writer docstring
    )

    if node.pubkey != document["producer"]:
        raise StartupError(
            f"node key {config.node_key_path} is not the genesis producer key; "
            "set WEALL_NODE_KEY_PATH to the producer's key file"
        )
    lock = ProducerLock(config.lock_path)
    lock.acquire()
    try:
        if config.db_path.exists():
            raise StartupError(
                f"database {config.db_path} exists; refusing to overwrite a chain"
            )
        state = genesis_state(document, MemoryState())
        block0 = genesis_block(document, state, node)
        # Built under another name and linked into place whole, so that a node
        # that starts meanwhile never opens a database without its schema.
        _remove_unfinished_databases(config.db_path)
        temp = config.db_path.with_name(f".{config.db_path.name}.new{os.getpid()}")
        try:
            writer = Writer(temp, synchronous=config.synchronous)
            try:
                writer.migrate()
                writer.initialize(document, block0)
            finally:
                writer.close()
            _check_folded(temp)
            try:
                os.link(temp, config.db_path)
            except FileExistsError:
                raise StartupError(
                    f"database {config.db_path} exists; refusing to overwrite a chain"
                ) from None
        finally:
            _remove_database_files(temp)
        _fsync_directory(config.db_path.parent)
        write_tip(config.db_path, 0, block0.hash, sync=True)
    finally:
        lock.release()
    log.info("created database path=%s chain=%s", config.db_path, document["chain_id"])


def _database_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]


def _remove_database_files(path: Path) -> None:
    for file in _database_files(path):
        file.unlink(missing_ok=True)


def _remove_unfinished_databases(db_path: Path) -> None:
    """Remove databases that a crashed first start left under a temporary name."""
    for leftover in db_path.parent.glob(f".{db_path.name}.new*"):
        log.warning("removing unfinished database path=%s", leftover)
        leftover.unlink(missing_ok=True)


def _check_folded(path: Path) -> None:
    """Raise ``StorageError`` unless every page of ``path`` is in the file itself.

    Closing the last connection folds the -wal file into the database and
    deletes it. A -wal file left behind contains pages that a link of the
    main file alone would lose.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StorageError(
            f"new database {path} kept a non-empty {wal.name} after its last connection closed"
        )


def check_database(config: Config, document: dict[str, Any]) -> int:
    """Check an existing database against the configured chain; return its schema version."""
    path = config.db_path
    check_file(path)
    expected_hash = genesis_hash(document)
    # Without a -wal file the database file is the whole state, and an
    # immutable open leaves no -wal or -shm file behind after a refusal.
    wal_absent = not path.with_name(path.name + "-wal").exists()
    try:
        conn = open_readonly(path, immutable=wal_absent)
    except StorageError as exc:
        raise StartupError(
            f"database {path} cannot be opened: {exc}; {_RESTORE_HINT}"
        ) from None
    try:
        quick = conn.execute("PRAGMA quick_check").fetchone()[0]
        if quick != "ok":
            raise StartupError(
                f"database {path} is damaged: quick_check found {quick!r}; {_RESTORE_HINT}"
            )
        version = current_version(conn)
        if version > SCHEMA_VERSION or version < 1:
            raise StartupError(
                f"database {path} has schema version {version}; this binary knows 1 to "
                f"{SCHEMA_VERSION}; run the matching weall or {_RESTORE_HINT}"
            )
        stored = queries.meta(conn)
        head = queries.head_header(conn)
        if head is not None:
            check_tip(path, conn)
    except sqlite3.DatabaseError as exc:
        raise StartupError(
            f"database {path} is damaged: {exc}; {_RESTORE_HINT}"
        ) from None
    finally:
        conn.close()
    if stored.get("chain_id") != config.chain_id:
        raise StartupError(
            f"database {path} holds chain {stored.get('chain_id')!r} but the configured "
            f"chain is {config.chain_id!r}; there is one chain per database"
        )
    if stored.get("genesis_hash") != expected_hash:
        raise StartupError(
            f"database {path} holds genesis {stored.get('genesis_hash')} but "
            f"{config.genesis_path} hashes to {expected_hash}; there is no re-genesis"
        )
    if head is None:
        raise StartupError(
            f"database {path} has no blocks (a copy without its -wal?); {_RESTORE_HINT}"
        )
    return version


def _check_leftovers(config: Config) -> None:
    """Reject a first start where a database used to be: its -wal or tip file remains."""
    path = config.db_path
    leftovers = [
        p for p in (path.with_name(path.name + "-wal"), tip_path(path)) if p.exists()
    ]
    if leftovers:
        names = ", ".join(str(p) for p in leftovers)
        raise StartupError(
            f"database {path} is missing but files of it remain ({names}); {_RESTORE_HINT}, "
            "or remove them to start a new chain"
        )


def _prepare_follower(config: Config, actors: Sequence[str]) -> None:
    """Check a follower node, or create its database from the upstream's block 0.

    A follower never writes a dev genesis or signs block 0, because it has
    no producer key. Its genesis document must be its upstream's.
    """
    if config.mode == "genesis" or "pinner" in actors:
        keys.load_key_file(config.node_key_path)
    if not config.genesis_path.exists():
        raise StartupError(
            f"genesis document {config.genesis_path} not found; a follower needs its upstream's "
            "genesis document: copy it and set WEALL_GENESIS_PATH"
        )
    document = load_genesis(config)
    if config.db_path.exists():
        check_database(config, document)
        return
    if "follower" not in actors:
        log.info(
            "database %s does not exist yet; waiting for the follower", config.db_path
        )
        return
    from weall.follow.setup import create_follower_database

    create_follower_database(config, document)


@contextlib.contextmanager
def _init_lock(config: Config) -> Iterator[None]:
    """Hold the first-start lock of the data directory, waiting for another holder.

    Raises:
        StartupError: another process held it for ``INIT_LOCK_TIMEOUT_S``.
    """
    path = config.db_path.with_name(config.db_path.name + ".init.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + INIT_LOCK_TIMEOUT_S
        waiting_logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"timed out after {INIT_LOCK_TIMEOUT_S:g} s waiting for {path}, "
                        "which another starting node holds; stop it and start again"
                    ) from None
                if not waiting_logged:
                    log.info("waiting for another first start lock=%s", path)
                    waiting_logged = True
                time.sleep(_INIT_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)


def _check_producer_lock(config: Config) -> None:
    """Reject the start when a running producer or follower holds the database's lock."""
    holder = is_locked(config.lock_path)
    if holder is not None:
        raise StartupError(
            f"another producer (pid {holder}) holds {config.lock_path}; only one "
            f"producer or follower may write {config.db_path}: stop it first, or "
            "leave the producer out of --actors"
        )


def prepare_node(config: Config, actors: Sequence[str]) -> None:
    """Run every check and first-start step before the supervisor spawns ``actors``.

    Raises:
        StartupError: the start is rejected; the message is one line.
    """
    if "producer" in actors or "follower" in actors:
        _check_producer_lock(config)
    if config.db_path.exists():
        _prepare(config, actors)
        return
    with _init_lock(config):
        # Another node may have finished its first start while this one waited.
        _prepare(config, actors)


def _prepare(config: Config, actors: Sequence[str]) -> None:
    first_start = not config.db_path.exists()
    if first_start:
        _check_leftovers(config)
    if config.follower:
        _prepare_follower(config, actors)
        return
    if config.mode == "dev" and first_start and not config.genesis_path.exists():
        if config.genesis_path_set:
            raise StartupError(f"genesis document {config.genesis_path} not found")
        _first_dev_start(config)
    if config.mode == "genesis" or "producer" in actors or "pinner" in actors:
        keys.load_key_file(config.node_key_path)
    document = load_genesis(config)
    if first_start:
        if "producer" not in actors:
            log.info(
                "database %s does not exist yet; waiting for the producer",
                config.db_path,
            )
            return
        create_database(config, document, keys.load_key_file(config.node_key_path))
        return
    check_database(config, document)
