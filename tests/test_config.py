"""Settings from the environment: defaults, validation and the genesis-mode posture."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import pytest
from helpers import key_pair

from weall import config as config_module
from weall.config import load, load_env_file
from weall.errors import ConfigError
from weall.protocol import keys

# One invalid value per validated variable.
INVALID_VALUES = [
    ("WEALL_MODE", "production"),
    ("WEALL_CHAIN_ID", "has space"),
    ("WEALL_CHAIN_ID", "c" * 65),
    ("WEALL_CHAIN_ID", "chain/1"),
    ("WEALL_API_PORT", "http"),
    ("WEALL_API_PORT", "65536"),
    ("WEALL_API_PORT", "-1"),
    ("PORT", "abc"),
    ("PORT", "0"),
    ("PORT", "70000"),
    ("WEALL_API_WORKERS", "0"),
    ("WEALL_API_WORKERS", "65"),
    ("WEALL_ALLOW_UNSIGNED_TXS", "maybe"),
    ("WEALL_IPFS_BACKEND", "s3"),
    ("WEALL_IPFS_API_URL", "localhost:5001"),
    ("WEALL_IPFS_API_URL", "ftp://127.0.0.1:5001"),
    ("WEALL_IPFS_API_URL", "http://127.0.0.1:99999"),
    ("WEALL_IPFS_PIN_ON_UPLOAD", "2"),
    ("WEALL_MEDIA_AUTO_PIN_REQUEST", "yes please"),
    ("WEALL_IPFS_ENABLE_HEAL", "enabled"),
    ("WEALL_IPFS_HEAL_INTERVAL_BLOCKS", "0"),
    ("WEALL_IPFS_MAX_UPLOAD_BYTES", "10MB"),
    ("WEALL_MAX_REQUEST_BYTES", "100"),
    ("WEALL_WAL_MAX_BYTES", "1024"),
    ("WEALL_CHECKPOINT_INTERVAL_S", "0"),
    ("WEALL_CHECKPOINT_INTERVAL_S", "nan"),
    ("WEALL_BACKUP_INTERVAL_S", "-5"),
    ("WEALL_BACKUP_KEEP_DAILY", "seven"),
    ("WEALL_BACKUP_KEEP_WEEKLY", "10001"),
    ("WEALL_LOG_LEVEL", "info"),
    ("WEALL_LOG_FORMAT", "xml"),
    ("WEALL_BLOCK_INTERVAL_MS", "5"),
    ("WEALL_BLOCK_INTERVAL_MS", "1.5"),
    ("WEALL_HEARTBEAT_INTERVAL_S", "0.01"),
    ("WEALL_HEARTBEAT_TIMEOUT_S", "0.1"),
    ("WEALL_HEARTBEAT_TIMEOUT_S", "inf"),
    ("WEALL_RESTART_MAX", "-1"),
    ("WEALL_RESTART_WINDOW_S", "0.5"),
    ("WEALL_RATE_LIMIT_PER_S", "-1"),
    ("WEALL_RATE_LIMIT_BURST", "0"),
    ("WEALL_TRUSTED_PROXIES", "10.0.0.1,not-an-ip"),
    ("WEALL_UPSTREAM_URL", "ftp://upstream"),
    ("WEALL_FOLLOWER_REJECTED_LOG_S", "0.5"),
    ("WEALL_FORWARDED_HEADER", "x-real-ip"),
    ("WEALL_API_HEADER_TIMEOUT_S", "0"),
    ("WEALL_API_BODY_TIMEOUT_S", "3601"),
    ("WEALL_PINNER_NODE_URL", "127.0.0.1:8000"),
    ("WEALL_PIN_RECHECK_S", "0"),
    ("WEALL_PINNER_POLL_S", "soon"),
    ("WEALL_PIN_UNPIN_GRACE_S", "-1"),
    ("WEALL_ENV_FILE", "/nonexistent/weall.env"),
    ("WEALL_RUN_DIR", "/tmp/" + "r" * 120),
    ("WEALL_CONTROL_SOCKET", "/tmp/" + "c" * 120 + ".sock"),
]

# Paths and host names that take any value. What they name is checked where
# it is used: by bootstrap, the key loader, the checkpointer and the api's bind.
FREE_FORM = {
    "WEALL_DB_PATH",
    "WEALL_GENESIS_PATH",
    "WEALL_NODE_KEY_PATH",
    "WEALL_BACKUP_DIR",
    "WEALL_API_HOST",
}


def config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(env)
    return caught.value


@pytest.fixture
def genesis_env(tmp_path: Path) -> dict[str, str]:
    """A valid genesis-mode environment with its node key file."""
    key_path = tmp_path / "keys" / "node.key"
    keys.write_key_file(key_path, key_pair("@node"))
    return {
        "WEALL_MODE": "genesis",
        "WEALL_CHAIN_ID": "weall-main",
        "WEALL_GENESIS_PATH": str(tmp_path / "genesis.json"),
        "WEALL_DB_PATH": str(tmp_path / "weall.db"),
        "WEALL_NODE_KEY_PATH": str(key_path),
    }


# -- defaults ------------------------------------------------------------------------------


def test_defaults_mode_dev() -> None:
    config = load({})
    assert config.mode == "dev"
    assert config.chain_id == "weall-dev"
    assert config.synchronous == "NORMAL"
    assert config.allow_unsigned_txs is False


def test_defaults_paths() -> None:
    config = load({})
    assert config.db_path == Path("data/weall.db")
    assert config.genesis_path == Path("data/genesis.json")
    assert config.node_key_path == Path("data/keys/node.key")
    assert config.lock_path == Path("data/weall.db.lock")
    assert config.backup_dir == Path("data/backups")


def test_defaults_bind_loopback() -> None:
    assert load({}).api_bind == "127.0.0.1:8000"


def test_defaults_block_interval_from_genesis() -> None:
    assert load({}).block_interval_ms is None


def test_environment_starts_clean() -> None:
    # The autouse fixture in tests/conftest.py removes these for every test.
    leaked = [
        name for name in os.environ if name.startswith("WEALL_") or name == "PORT"
    ]
    assert leaked == []


def test_load_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEALL_LOG_LEVEL", "DEBUG")
    assert load().log_level == "DEBUG"


def test_paths_follow_db_path(tmp_path: Path) -> None:
    config = load({"WEALL_DB_PATH": str(tmp_path / "d" / "x.db")})
    assert config.genesis_path == tmp_path / "d" / "genesis.json"
    assert config.node_key_path == tmp_path / "d" / "keys" / "node.key"
    assert config.producer_socket == tmp_path / "d" / "run" / "producer.sock"
    assert config.lock_path == tmp_path / "d" / "x.db.lock"


def test_empty_value_means_default() -> None:
    assert (
        load({"WEALL_API_PORT": "", "WEALL_LOG_LEVEL": ""}).api_bind == "127.0.0.1:8000"
    )


def test_extra_lists_weall_variables() -> None:
    config = load({"WEALL_LOG_LEVEL": "INFO", "HOME": "/root"})
    assert dict(config.extra) == {"WEALL_LOG_LEVEL": "INFO"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("off", False),
    ],
)
def test_flag_values(value: str, expected: bool) -> None:
    assert load({"WEALL_IPFS_PIN_ON_UPLOAD": value}).ipfs_pin_on_upload is expected


# -- PORT and the bind address ----------------------------------------------------------------


def test_port_binds_all_interfaces() -> None:
    assert load({"PORT": "5000"}).api_bind == "0.0.0.0:5000"


def test_port_with_explicit_host() -> None:
    assert (
        load({"PORT": "5000", "WEALL_API_HOST": "127.0.0.1"}).api_bind
        == "127.0.0.1:5000"
    )


def test_api_port_wins_over_port() -> None:
    assert load({"PORT": "5000", "WEALL_API_PORT": "6000"}).api_port == 6000


def test_api_port_zero_allowed() -> None:
    assert load({"WEALL_API_PORT": "0"}).api_port == 0


def test_ipv6_bind_bracketed() -> None:
    assert (
        load({"WEALL_API_HOST": "::1", "WEALL_API_PORT": "9000"}).api_bind
        == "[::1]:9000"
    )


# -- validation messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"), INVALID_VALUES, ids=[f"{n}={v[:20]}" for n, v in INVALID_VALUES]
)
def test_invalid_value_names_variable(name: str, value: str) -> None:
    error = config_error({name: value})
    assert error.variable == name
    assert str(error).startswith(f"{name}: ")


def test_every_variable_has_a_validation_test() -> None:
    source = inspect.getsource(config_module)
    read = set(re.findall(r'"(WEALL_[A-Z0-9_]+)"', source)) | {"PORT"}
    tested = {name for name, _ in INVALID_VALUES} | FREE_FORM
    assert read - tested == set()


def test_error_shows_value() -> None:
    assert "(got '70000')" in str(config_error({"PORT": "70000"}))


def test_error_shows_range() -> None:
    error = config_error({"WEALL_API_WORKERS": "65"})
    assert error.allowed == "must be between 1 and 64"


def test_error_lists_choices() -> None:
    assert "dev, genesis" in str(config_error({"WEALL_MODE": "prod"}))


def test_heartbeat_timeout_above_interval() -> None:
    error = config_error(
        {"WEALL_HEARTBEAT_INTERVAL_S": "5", "WEALL_HEARTBEAT_TIMEOUT_S": "5"}
    )
    assert error.variable == "WEALL_HEARTBEAT_TIMEOUT_S"
    assert "WEALL_HEARTBEAT_INTERVAL_S" in error.allowed


def test_upstream_url_credentials_not_echoed() -> None:
    error = config_error(
        {"WEALL_UPSTREAM_URL": "https://user:hunter2@upstream.example"}
    )
    assert "hunter2" not in str(error)


def test_ipfs_api_url_accepted() -> None:
    config = load(
        {
            "WEALL_IPFS_BACKEND": "kubo",
            "WEALL_IPFS_API_URL": "https://ipfs.internal:5001",
        }
    )
    assert config.ipfs_api_url == "https://ipfs.internal:5001"


def test_trusted_proxies_parsed() -> None:
    config = load({"WEALL_TRUSTED_PROXIES": " 10.0.0.1, 192.168.0.0/16 ,"})
    assert config.trusted_proxies == ("10.0.0.1", "192.168.0.0/16")


def test_block_interval_set() -> None:
    assert load({"WEALL_BLOCK_INTERVAL_MS": "250"}).block_interval_ms == 250


# -- genesis mode --------------------------------------------------------------------------------


def test_genesis_mode_valid(genesis_env: dict[str, str]) -> None:
    config = load(genesis_env)
    assert config.mode == "genesis"
    assert config.synchronous == "FULL"
    assert config.api_bind == "127.0.0.1:8000"


def test_genesis_mode_needs_chain_id(genesis_env: dict[str, str]) -> None:
    del genesis_env["WEALL_CHAIN_ID"]
    error = config_error(genesis_env)
    assert error.variable == "WEALL_CHAIN_ID"
    assert "required in genesis mode" in error.allowed


def test_genesis_mode_rejects_unsigned(genesis_env: dict[str, str]) -> None:
    genesis_env["WEALL_ALLOW_UNSIGNED_TXS"] = "1"
    assert config_error(genesis_env).variable == "WEALL_ALLOW_UNSIGNED_TXS"


def test_dev_mode_allows_unsigned() -> None:
    assert load({"WEALL_ALLOW_UNSIGNED_TXS": "1"}).allow_unsigned_txs is True


def test_genesis_mode_needs_genesis_path(genesis_env: dict[str, str]) -> None:
    del genesis_env["WEALL_GENESIS_PATH"]
    assert config_error(genesis_env).variable == "WEALL_GENESIS_PATH"


def test_genesis_mode_needs_node_key(
    genesis_env: dict[str, str], tmp_path: Path
) -> None:
    genesis_env["WEALL_NODE_KEY_PATH"] = str(tmp_path / "absent.key")
    error = config_error(genesis_env)
    assert error.variable == "WEALL_NODE_KEY_PATH"
    assert "weall keygen" in error.allowed


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_genesis_mode_rejects_readable_key(
    genesis_env: dict[str, str], mode: int
) -> None:
    Path(genesis_env["WEALL_NODE_KEY_PATH"]).chmod(mode)
    error = config_error(genesis_env)
    assert error.variable == "WEALL_NODE_KEY_PATH"
    assert f"mode {mode:04o}" in error.allowed


def test_genesis_mode_port_binds_all(genesis_env: dict[str, str]) -> None:
    genesis_env["PORT"] = "8080"
    assert load(genesis_env).api_bind == "0.0.0.0:8080"


def test_genesis_mode_explicit_public_host(genesis_env: dict[str, str]) -> None:
    genesis_env["WEALL_API_HOST"] = "0.0.0.0"
    assert load(genesis_env).api_host == "0.0.0.0"


def test_genesis_mode_default_bind_loopback(genesis_env: dict[str, str]) -> None:
    # Without PORT or WEALL_API_HOST the bind stays on loopback, so a public
    # bind in genesis mode is always an explicit choice.
    for name in ("PORT", "WEALL_API_HOST"):
        genesis_env.pop(name, None)
    assert load(genesis_env).api_host == "127.0.0.1"


def test_dev_mode_needs_no_key_file(tmp_path: Path) -> None:
    config = load({"WEALL_NODE_KEY_PATH": str(tmp_path / "absent.key")})
    assert config.node_key_path == tmp_path / "absent.key"


# -- .env files ------------------------------------------------------------------------------------


def test_env_file_fills_in(tmp_path: Path) -> None:
    path = tmp_path / "weall.env"
    path.write_text(
        "# settings\nWEALL_LOG_LEVEL=DEBUG\n\nexport WEALL_API_PORT='9001'\n"
    )
    config = load({"WEALL_ENV_FILE": str(path)})
    assert config.log_level == "DEBUG"
    assert config.api_port == 9001


def test_env_file_loses_to_environment(tmp_path: Path) -> None:
    path = tmp_path / "weall.env"
    path.write_text("WEALL_LOG_LEVEL=DEBUG\n")
    assert (
        load({"WEALL_ENV_FILE": str(path), "WEALL_LOG_LEVEL": "ERROR"}).log_level
        == "ERROR"
    )


def test_env_file_values_validated(tmp_path: Path) -> None:
    path = tmp_path / "weall.env"
    path.write_text("WEALL_API_WORKERS=many\n")
    assert config_error({"WEALL_ENV_FILE": str(path)}).variable == "WEALL_API_WORKERS"


def test_env_file_strips_quotes(tmp_path: Path) -> None:
    path = tmp_path / "weall.env"
    path.write_text('A="x y"\nB=\'z\'\nC="unbalanced\nD= spaced \n')
    assert load_env_file(path) == {
        "A": "x y",
        "B": "z",
        "C": '"unbalanced',
        "D": "spaced",
    }


@pytest.mark.parametrize("line", ["JUST_A_NAME", "1BAD=x", "=value", "A B=c"])
def test_env_file_rejects_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "weall.env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_env_file(path)
    assert caught.value.variable == f"{path}:2"


# -- the examples in config/ ---------------------------------------------------------------------

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
ENV_EXAMPLES = ("dev.env.example", "genesis.env.example")
# A setting line, or one commented out to show its default: "# NAME=value".
SETTING_LINE = re.compile(r"^(?:# )?(WEALL_[A-Z0-9_]+|PORT)=")


def loader_variables() -> set[str]:
    source = inspect.getsource(config_module)
    return set(re.findall(r'"(WEALL_[A-Z0-9_]+)"', source)) | {"PORT"}


def example_settings(name: str) -> list[tuple[int, str]]:
    """Return ``(line number, variable)`` of every setting line, set or commented out."""
    lines = (CONFIG_DIR / name).read_text(encoding="utf-8").splitlines()
    found = []
    for number, line in enumerate(lines, 1):
        match = SETTING_LINE.match(line)
        if match:
            found.append((number, match.group(1)))
    return found


@pytest.mark.parametrize("name", ENV_EXAMPLES)
def test_config_example_names_known_settings(name: str) -> None:
    unknown = {variable for _, variable in example_settings(name)} - loader_variables()
    assert unknown == set()


@pytest.mark.parametrize("name", ENV_EXAMPLES)
def test_config_example_names_every_setting(name: str) -> None:
    missing = loader_variables() - {variable for _, variable in example_settings(name)}
    assert missing == set()


@pytest.mark.parametrize("name", ENV_EXAMPLES)
def test_config_example_names_each_once(name: str) -> None:
    variables = [variable for _, variable in example_settings(name)]
    repeated = sorted({v for v in variables if variables.count(v) > 1})
    assert repeated == []


@pytest.mark.parametrize("name", ENV_EXAMPLES)
def test_config_example_comments_every_setting(name: str) -> None:
    # Each setting line follows a comment that explains it: a "#" line of
    # prose, above it in the same paragraph.
    lines = (CONFIG_DIR / name).read_text(encoding="utf-8").splitlines()
    for number, variable in example_settings(name):
        explained = False
        for line in reversed(lines[: number - 1]):
            if not line.strip():
                break
            if line.startswith("#") and not SETTING_LINE.match(line):
                explained = True
                break
        assert explained, f"{name}:{number}: {variable} has no comment above it"


def test_dev_example_loads() -> None:
    config = load({"WEALL_ENV_FILE": str(CONFIG_DIR / "dev.env.example")})
    assert config.mode == "dev"
    assert config.chain_id == "weall-dev"
    assert config.api_bind == "127.0.0.1:8000"


@pytest.fixture
def genesis_example_env(tmp_path: Path) -> dict[str, str]:
    """The values of genesis.env.example, with a node key file that exists."""
    values = load_env_file(CONFIG_DIR / "genesis.env.example")
    key_path = tmp_path / "node.key"
    keys.write_key_file(key_path, key_pair("@node"))
    return {**values, "WEALL_NODE_KEY_PATH": str(key_path)}


def test_genesis_example_settings_load(genesis_example_env: dict[str, str]) -> None:
    config = load(genesis_example_env)
    assert config.mode == "genesis"
    assert config.allow_unsigned_txs is False
    assert config.synchronous == "FULL"
    assert config.api_bind == "127.0.0.1:8000"


def test_genesis_example_validates(genesis_example_env: dict[str, str]) -> None:
    from weall.bootstrap import load_genesis
    from weall.protocol.genesis import genesis_hash

    example = str(CONFIG_DIR / "genesis.example.json")
    config = load({**genesis_example_env, "WEALL_GENESIS_PATH": example})
    document = load_genesis(config)
    assert document["chain_id"] == "weall-example"
    # The params object is empty: genesis-posture defaults, as written by
    # `weall genesis new` without --params or --dev-params.
    assert document["params"] == {}
    accounts = {account["id"]: account for account in document["accounts"]}
    assert sorted(accounts) == ["@example_founder", "@example_node"]
    assert document["producer"] == accounts["@example_node"]["pubkey"]
    assert genesis_hash(document)


def test_config_folder_has_no_secret() -> None:
    for path in CONFIG_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "secret_key" not in text, path
