"""``WEALL_UPSTREAM_URL`` and the first-start checks of a follower node."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from weall import config as config_module
from weall.bootstrap import prepare_node
from weall.errors import ConfigError, StartupError
from weall.follow import setup

from .chain_builder import write_chain_files


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("http://127.0.0.1:8000", "http://127.0.0.1:8000", id="loopback"),
        pytest.param(
            "https://node.example.org/", "https://node.example.org", id="trailing-slash"
        ),
        pytest.param("http://[::1]:8000", "http://[::1]:8000", id="ipv6"),
        pytest.param(
            "https://node.example.org/weall",
            "https://node.example.org/weall",
            id="path",
        ),
    ],
)
def test_upstream_url_accepted(value: str, expected: str) -> None:
    loaded = config_module.load({"WEALL_UPSTREAM_URL": value})
    assert loaded.upstream_url == expected
    assert loaded.follower is True


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("ftp://node.example.org", "http:// or https://", id="scheme"),
        pytest.param("node.example.org:8000", "http:// or https://", id="no-scheme"),
        pytest.param("http://", "http:// or https://", id="no-host"),
        pytest.param("http://node:99999", "http:// or https://", id="bad-port"),
        pytest.param("http://node:0", "http:// or https://", id="port-zero"),
        pytest.param("http://node/?a=1", "query or fragment", id="query"),
        pytest.param("http://node/#top", "query or fragment", id="fragment"),
    ],
)
def test_upstream_url_rejected(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.load({"WEALL_UPSTREAM_URL": value})
    assert caught.value.variable == "WEALL_UPSTREAM_URL"
    assert message in str(caught.value)


def test_upstream_url_credentials_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.load(
            {"WEALL_UPSTREAM_URL": "https://user:s3cret@node.example.org"}
        )
    assert "credentials" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_no_upstream_url_is_producer_node() -> None:
    loaded = config_module.load({})
    assert loaded.upstream_url is None
    assert loaded.follower is False


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _follower_config(tmp_path: Path, genesis: Path) -> config_module.Config:
    return config_module.load(
        {
            "WEALL_UPSTREAM_URL": f"http://127.0.0.1:{_closed_port()}",
            "WEALL_DB_PATH": str(tmp_path / "data" / "weall.db"),
            "WEALL_GENESIS_PATH": str(genesis),
            "WEALL_RUN_DIR": str(tmp_path / "run"),
        }
    )


def test_first_start_needs_genesis_document(tmp_path: Path) -> None:
    loaded = _follower_config(tmp_path, tmp_path / "missing.json")
    with pytest.raises(StartupError) as caught:
        prepare_node(loaded, ("follower", "api"))
    assert "a follower needs its upstream's genesis document" in str(caught.value)
    assert not (tmp_path / "data" / "weall.db").exists()
    assert not (tmp_path / "data" / "genesis.json").exists()


def test_first_start_needs_reachable_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = write_chain_files(tmp_path / "chain")
    loaded = _follower_config(tmp_path, chain.genesis_path)
    monkeypatch.setattr(setup, "FIRST_START_ATTEMPTS", 2)
    with pytest.raises(StartupError) as caught:
        prepare_node(loaded, ("follower", "api"))
    assert "cannot fetch block 0 from upstream" in str(caught.value)
    assert not (tmp_path / "data" / "weall.db").exists()


def test_without_follower_actor_database_waits(tmp_path: Path) -> None:
    chain = write_chain_files(tmp_path / "chain")
    loaded = _follower_config(tmp_path, chain.genesis_path)
    prepare_node(loaded, ("api",))
    assert not (tmp_path / "data" / "weall.db").exists()
