"""First-start set-up and the start-up checks of ``prepare_node``, on real files."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import key_pair

from weall import config as config_module
from weall.bootstrap import DEV_POOL_BALANCE, prepare_node
from weall.config import ACTOR_NAMES, Config
from weall.errors import StartupError
from weall.protocol import keys
from weall.protocol.genesis import genesis_hash, validate_genesis
from weall.storage import queries
from weall.storage.lock import ProducerLock, is_locked
from weall.storage.reader import read_once

SQLITE_SIDE_FILES = {"weall.db-wal", "weall.db-shm"}


def dev_config(tmp_path: Path, **env: str) -> Config:
    return config_module.load(
        {"WEALL_DB_PATH": str(tmp_path / "data" / "weall.db"), **env}
    )


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def started(tmp_path: Path) -> Config:
    """A data directory after a first dev start."""
    config = dev_config(tmp_path)
    prepare_node(config, ACTOR_NAMES)
    return config


def refusal(config: Config, root: Path) -> StartupError:
    """Run ``prepare_node``, expect a ``StartupError`` and check that no file changed."""
    before = files_of(root)
    with pytest.raises(StartupError) as caught:
        prepare_node(config, ACTOR_NAMES)
    after = files_of(root)
    assert {name: after[name] for name in before} == before
    # A read-only SQLite open may leave an empty -wal and its -shm index beside the
    # database. Neither changes what the database contains.
    created = {Path(name).name for name in set(after) - set(before)}
    assert created <= SQLITE_SIDE_FILES, created
    wal = root / "data" / "weall.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    return caught.value


# -- first dev start -------------------------------------------------------------------------


def test_first_start_writes_keys(started: Config) -> None:
    assert started.node_key_path.is_file()
    assert (started.keys_dir / "founder.key").is_file()


@pytest.mark.parametrize("name", ["node.key", "founder.key"])
def test_first_start_key_mode_0600(started: Config, name: str) -> None:
    assert mode_of(started.keys_dir / name) == 0o600


def test_first_start_key_accounts(started: Config) -> None:
    assert keys.load_key_file(started.node_key_path).account == "@node"
    assert keys.load_key_file(started.keys_dir / "founder.key").account == "@founder"


def test_first_start_writes_genesis(started: Config) -> None:
    document = json.loads(started.genesis_path.read_text())
    validate_genesis(document)
    assert document["chain_id"] == "weall-dev"


def test_first_start_genesis_keys(started: Config) -> None:
    document = json.loads(started.genesis_path.read_text())
    founder = keys.load_key_file(started.keys_dir / "founder.key")
    node = keys.load_key_file(started.node_key_path)
    accounts = {a["id"]: a for a in document["accounts"]}
    assert document["producer"] == node.pubkey
    assert accounts["@node"]["pubkey"] == node.pubkey
    assert accounts["@founder"]["pubkey"] == founder.pubkey
    assert accounts["@founder"]["poh_tier"] == 2


def test_first_start_funds_pool_and_treasury(started: Config) -> None:
    document = json.loads(started.genesis_path.read_text())
    accounts = {a["id"]: a for a in document["accounts"]}
    for account_id in ("@rewards", "@treasury"):
        assert accounts[account_id]["balance"] == DEV_POOL_BALANCE
        assert accounts[account_id]["roles"] == []
        assert accounts[account_id]["poh_tier"] == 0
    key_files = {path.name for path in started.keys_dir.iterdir()}
    assert key_files == {"node.key", "founder.key"}


def test_genesis_new_adds_funds(tmp_path: Path) -> None:
    producer = keys.generate("@operator")
    keys.write_key_file(tmp_path / "op.key", producer)
    out = tmp_path / "genesis.json"
    result = _weall(
        "genesis",
        "new",
        "--chain-id",
        "weall-test",
        "--producer-key",
        str(tmp_path / "op.key"),
        "--reward-pool",
        "500",
        "--treasury",
        "700",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    validate_genesis(document)
    balances = {a["id"]: a["balance"] for a in document["accounts"]}
    assert balances == {"@operator": 0, "@rewards": 500, "@treasury": 700}
    assert "secret_key" not in out.read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--treasury", "-1"], "--treasury"),
        (["--reward-pool", "5", "--account", "@rewards:PK:0::5"], "--account"),
    ],
    ids=["negative", "named-twice"],
)
def test_genesis_new_rejects_bad_funds(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    keys.write_key_file(tmp_path / "op.key", keys.generate("@operator"))
    extra = [item.replace("PK", keys.generate("@x").pubkey) for item in extra]
    result = _weall(
        "genesis",
        "new",
        "--chain-id",
        "weall-test",
        "--producer-key",
        str(tmp_path / "op.key"),
        *extra,
        "--out",
        str(tmp_path / "genesis.json"),
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "genesis.json").exists()


def _weall(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weall", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_first_start_creates_database(started: Config) -> None:
    assert started.db_path == started.data_dir / "weall.db"
    assert started.db_path.is_file()


def test_first_start_database_in_wal_mode(started: Config) -> None:
    header = started.db_path.read_bytes()[:20]
    # Bytes 18 and 19 of the header are the write and read format: 2 means WAL.
    assert header[18:20] == b"\x02\x02"


def test_first_start_journal_mode_wal(started: Config) -> None:
    mode = read_once(
        started.db_path, lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]
    )
    assert mode == "wal"


def test_first_start_database_holds_genesis(started: Config) -> None:
    document = json.loads(started.genesis_path.read_text())
    meta = read_once(started.db_path, queries.meta)
    head = read_once(started.db_path, queries.head_header)
    assert meta["genesis_hash"] == genesis_hash(document)
    assert meta["chain_id"] == "weall-dev"
    assert head["height"] == 0


def test_first_start_releases_lock(started: Config) -> None:
    assert is_locked(started.lock_path) is None


def test_first_start_keeps_existing_node_key(tmp_path: Path) -> None:
    config = dev_config(tmp_path)
    node = key_pair("@node")
    keys.write_key_file(config.node_key_path, node)
    before = config.node_key_path.read_bytes()
    prepare_node(config, ACTOR_NAMES)
    assert config.node_key_path.read_bytes() == before
    assert json.loads(config.genesis_path.read_text())["producer"] == node.pubkey


def test_first_start_without_producer_waits(tmp_path: Path) -> None:
    config = dev_config(tmp_path)
    prepare_node(config, ["api"])
    assert config.genesis_path.is_file()
    assert not config.db_path.exists()


def test_first_start_lock_held_elsewhere(tmp_path: Path) -> None:
    config = dev_config(tmp_path)
    lock = ProducerLock(config.lock_path)
    lock.acquire()
    try:
        with pytest.raises(StartupError, match=f"pid {os.getpid()}"):
            prepare_node(config, ACTOR_NAMES)
    finally:
        lock.release()
    assert not config.db_path.exists()


def test_first_start_named_genesis_missing(tmp_path: Path) -> None:
    config = dev_config(tmp_path, WEALL_GENESIS_PATH=str(tmp_path / "absent.json"))
    with pytest.raises(StartupError, match="not found"):
        prepare_node(config, ACTOR_NAMES)
    assert not config.node_key_path.exists()


# -- later starts --------------------------------------------------------------------------------


def test_later_start_changes_nothing(started: Config, tmp_path: Path) -> None:
    before = files_of(tmp_path)
    prepare_node(started, ACTOR_NAMES)
    after = files_of(tmp_path)
    assert {name: after[name] for name in before} == before


@pytest.mark.parametrize(
    "name", ["keys/node.key", "keys/founder.key", "genesis.json", "weall.db"]
)
def test_later_start_keeps_file(started: Config, tmp_path: Path, name: str) -> None:
    path = started.data_dir / name
    before = path.read_bytes()
    prepare_node(started, ACTOR_NAMES)
    prepare_node(started, ["api"])
    assert path.read_bytes() == before


def test_later_start_reuses_genesis_mtime(started: Config) -> None:
    before = started.genesis_path.stat().st_mtime_ns
    prepare_node(started, ACTOR_NAMES)
    assert started.genesis_path.stat().st_mtime_ns == before


# -- refusals ----------------------------------------------------------------------------------


def test_refuses_unknown_schema_version(started: Config, tmp_path: Path) -> None:
    conn = sqlite3.connect(started.db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    error = refusal(started, tmp_path)
    assert "schema version 99" in str(error)


def test_refuses_other_genesis_hash(started: Config, tmp_path: Path) -> None:
    document = json.loads(started.genesis_path.read_text())
    document["genesis_time_ms"] += 1
    started.genesis_path.write_text(json.dumps(document))
    error = refusal(started, tmp_path)
    assert "no re-genesis" in str(error)


def test_refuses_other_chain_id_setting(started: Config, tmp_path: Path) -> None:
    config = started.with_changes(chain_id="weall-other")
    error = refusal(config, tmp_path)
    assert "'weall-dev'" in str(error)
    assert "'weall-other'" in str(error)


def test_refuses_database_of_other_chain(started: Config, tmp_path: Path) -> None:
    # A genesis document and setting that agree with each other but not with the database.
    document = json.loads(started.genesis_path.read_text())
    document["chain_id"] = "weall-other"
    started.genesis_path.write_text(json.dumps(document))
    error = refusal(started.with_changes(chain_id="weall-other"), tmp_path)
    assert "holds chain 'weall-dev'" in str(error)


def test_refuses_garbage_database(started: Config, tmp_path: Path) -> None:
    started.db_path.write_bytes(os.urandom(4096 * 4))
    error = refusal(started, tmp_path)
    assert "damaged" in str(error)


def test_refuses_truncated_database(started: Config, tmp_path: Path) -> None:
    data = started.db_path.read_bytes()
    started.db_path.write_bytes(data[: len(data) // 2 + 7])
    error = refusal(started, tmp_path)
    assert "truncated" in str(error)


def test_refuses_database_cut_at_page(started: Config, tmp_path: Path) -> None:
    data = started.db_path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    started.db_path.write_bytes(data[:page_size])
    error = refusal(started, tmp_path)
    assert "restore a backup" in str(error)


def test_refuses_empty_database(started: Config, tmp_path: Path) -> None:
    started.db_path.write_bytes(b"")
    error = refusal(started, tmp_path)
    assert "damaged" in str(error)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"chain_id": "weall-dev"}', b"\xff\xfe"],
    ids=["empty", "truncated", "array", "incomplete", "binary"],
)
def test_refuses_bad_genesis_document(
    started: Config, tmp_path: Path, content: bytes
) -> None:
    started.genesis_path.write_bytes(content)
    error = refusal(started, tmp_path)
    assert str(started.genesis_path) in str(error)


@pytest.mark.parametrize(
    "damage",
    ["schema", "genesis", "chain", "garbage", "truncated"],
)
def test_refusal_is_one_line(started: Config, tmp_path: Path, damage: str) -> None:
    config = started
    if damage == "schema":
        conn = sqlite3.connect(started.db_path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    elif damage == "genesis":
        document = json.loads(started.genesis_path.read_text())
        document["genesis_time_ms"] += 1
        started.genesis_path.write_text(json.dumps(document))
    elif damage == "chain":
        config = started.with_changes(chain_id="weall-other")
    elif damage == "garbage":
        started.db_path.write_bytes(b"\x01" * 8192)
    else:
        started.db_path.write_bytes(started.db_path.read_bytes()[:5000])
    error = refusal(config, tmp_path)
    assert "\n" not in str(error)


# -- genesis mode ---------------------------------------------------------------------------------


def genesis_config(tmp_path: Path, key_account: str = "@node") -> Config:
    """Write a genesis document and a node key, then load a genesis-mode config."""
    from helpers import genesis_document

    genesis_path = tmp_path / "genesis.json"
    genesis_path.write_text(json.dumps(genesis_document()))
    key_path = tmp_path / "data" / "keys" / "node.key"
    keys.write_key_file(key_path, key_pair(key_account))
    return config_module.load(
        {
            "WEALL_MODE": "genesis",
            "WEALL_CHAIN_ID": "weall-dev",
            "WEALL_GENESIS_PATH": str(genesis_path),
            "WEALL_DB_PATH": str(tmp_path / "data" / "weall.db"),
        }
    )


def test_genesis_mode_creates_database(tmp_path: Path) -> None:
    config = genesis_config(tmp_path)
    prepare_node(config, ACTOR_NAMES)
    head = read_once(config.db_path, queries.head_header)
    assert head["height"] == 0


def test_genesis_mode_writes_no_dev_files(tmp_path: Path) -> None:
    config = genesis_config(tmp_path)
    prepare_node(config, ACTOR_NAMES)
    assert not (config.keys_dir / "founder.key").exists()
    assert not (config.data_dir / "genesis.json").exists()


def test_genesis_mode_key_removed_after_config(tmp_path: Path) -> None:
    # The key file can go away between loading the config and starting.
    config = genesis_config(tmp_path)
    config.node_key_path.unlink()
    with pytest.raises(StartupError, match="not found"):
        prepare_node(config, ACTOR_NAMES)
    assert not config.db_path.exists()


def test_genesis_mode_key_readable_after_config(tmp_path: Path) -> None:
    config = genesis_config(tmp_path)
    config.node_key_path.chmod(0o644)
    with pytest.raises(StartupError, match="mode 0644"):
        prepare_node(config, ACTOR_NAMES)
    assert not config.db_path.exists()


def test_genesis_mode_api_checks_node_key(tmp_path: Path) -> None:
    config = genesis_config(tmp_path)
    config.node_key_path.chmod(0o640)
    with pytest.raises(StartupError, match="mode 0640"):
        prepare_node(config, ["api"])


def test_genesis_mode_missing_genesis(tmp_path: Path) -> None:
    config = genesis_config(tmp_path)
    config.genesis_path.unlink()
    with pytest.raises(StartupError, match="not found"):
        prepare_node(config, ACTOR_NAMES)
    assert not config.db_path.exists()


def test_genesis_mode_other_producer_key(tmp_path: Path) -> None:
    config = genesis_config(tmp_path, key_account="@alice")
    with pytest.raises(StartupError, match="not the genesis producer key"):
        prepare_node(config, ACTOR_NAMES)
    assert not config.db_path.exists()


# -- starts that meet another process ----------------------------------------------------------


def test_later_start_producer_lock_held(started: Config, tmp_path: Path) -> None:
    lock = ProducerLock(started.lock_path)
    lock.acquire()
    try:
        error = refusal(started, tmp_path)
    finally:
        lock.release()
    message = str(error)
    assert message.startswith(f"another producer (pid {os.getpid()}) holds ")
    assert str(started.lock_path) in message
    assert "\n" not in message


def test_api_start_ignores_producer_lock(started: Config) -> None:
    lock = ProducerLock(started.lock_path)
    lock.acquire()
    try:
        prepare_node(started, ["api"])
        prepare_node(started, ["checkpointer", "pinner", "healer", "api"])
    finally:
        lock.release()


def test_first_start_reuses_existing_files(tmp_path: Path) -> None:
    # A file created between the existence check and the write is kept. The
    # founder key here stands for one that another process wrote.
    config = dev_config(tmp_path)
    founder = key_pair("@founder")
    keys.write_key_file(config.keys_dir / "founder.key", founder)
    prepare_node(config, ACTOR_NAMES)
    document = json.loads(config.genesis_path.read_text())
    accounts = {a["id"]: a for a in document["accounts"]}
    assert accounts["@founder"]["pubkey"] == founder.pubkey
    assert mode_of(config.keys_dir) == 0o700
    leftovers = [p.name for p in config.data_dir.rglob(".*") if ".new" in p.name]
    assert leftovers == []


# Runs prepare_node in its own process once the test writes a line to its
# stdin, so that several processes start at the same moment.
_STARTER = """
import logging, sys
from weall import config as config_module
from weall.bootstrap import DEV_POOL_BALANCE, prepare_node
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
config = config_module.load({"WEALL_DB_PATH": sys.argv[1]})
actors = sys.argv[2].split(",")
print("ready", flush=True)
sys.stdin.readline()
prepare_node(config, actors)
"""


def _start_waiting(db_path: Path, actors: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _STARTER, str(db_path), actors],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.parametrize("round_number", range(3))
def test_concurrent_first_starts_agree(tmp_path: Path, round_number: int) -> None:
    db_path = tmp_path / "data" / "weall.db"
    subsets = ["producer,checkpointer,pinner,healer", "api", "api", "producer"]
    processes = [_start_waiting(db_path, subset) for subset in subsets]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = [_finish(process) for process in processes]
    for code, stderr in results:
        assert code == 0, stderr
    logs = "".join(stderr for _, stderr in results)
    assert logs.count("wrote dev genesis") == 1, logs
    assert logs.count("account=@node") == 1, logs
    assert logs.count("created database") == 1, logs

    config = dev_config(tmp_path)
    document = json.loads(config.genesis_path.read_text())
    node = keys.load_key_file(config.node_key_path)
    founder = keys.load_key_file(config.keys_dir / "founder.key")
    accounts = {a["id"]: a for a in document["accounts"]}
    assert document["producer"] == node.pubkey
    assert accounts["@founder"]["pubkey"] == founder.pubkey
    meta = read_once(db_path, queries.meta)
    assert meta["genesis_hash"] == genesis_hash(document)


def test_first_start_waits_for_init_lock(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "weall.db"
    lock_path = tmp_path / "data" / "weall.db.init.lock"
    lock_path.parent.mkdir(parents=True)
    holder = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        process = _start_waiting(db_path, "api")
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        # While the lock is held elsewhere the start writes nothing.
        time.sleep(1.0)
        assert process.poll() is None
        assert sorted(p.name for p in lock_path.parent.iterdir()) == [lock_path.name]
    finally:
        os.close(holder)
    code, stderr = _finish(process)
    assert code == 0, stderr
    assert "waiting for another first start" in stderr
    assert (tmp_path / "data" / "genesis.json").is_file()


def test_database_appears_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another node may check the database the moment its name exists, so the
    # name must not exist while the schema and block 0 are being written.
    from weall.storage.writer import Writer

    config = dev_config(tmp_path)
    seen_during_creation: list[bool] = []
    initialize = Writer.initialize

    def observed(self: Writer, *args: object, **kwargs: object) -> None:
        seen_during_creation.append(config.db_path.exists())
        initialize(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Writer, "initialize", observed)
    prepare_node(config, ACTOR_NAMES)
    assert seen_during_creation == [False]
    assert read_once(config.db_path, queries.head_header)["height"] == 0
    names = sorted(p.name for p in config.data_dir.iterdir())
    assert not [name for name in names if ".new" in name], names


def test_unfinished_database_removed(tmp_path: Path) -> None:
    config = dev_config(tmp_path)
    config.data_dir.mkdir(parents=True)
    leftover = config.data_dir / ".weall.db.new999999"
    leftover.write_bytes(b"half a database")
    prepare_node(config, ACTOR_NAMES)
    assert not leftover.exists()
    assert read_once(config.db_path, queries.head_header)["height"] == 0
