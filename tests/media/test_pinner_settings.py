"""The pinner's settings and a standalone pinner that cannot start or reach its node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e.node import free_port

from weall.config import load
from weall.errors import ConfigError
from weall.protocol import keys

from ._support import wait_for


def test_pinner_settings_defaults() -> None:
    config = load({})

    assert config.pinner_node_url is None
    assert config.pin_recheck_s == 300.0
    assert config.pinner_poll_s == 2.0
    assert config.pin_unpin_grace_s == 3600.0


def test_pinner_settings_read() -> None:
    config = load(
        {
            "WEALL_PINNER_NODE_URL": "http://127.0.0.1:8000/",
            "WEALL_PIN_RECHECK_S": "0.5",
            "WEALL_PINNER_POLL_S": "0.25",
            "WEALL_PIN_UNPIN_GRACE_S": "0",
        }
    )

    assert config.pinner_node_url == "http://127.0.0.1:8000"
    assert config.pin_recheck_s == 0.5
    assert config.pinner_poll_s == 0.25
    assert config.pin_unpin_grace_s == 0.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("WEALL_PINNER_NODE_URL", "ftp://127.0.0.1", id="url-scheme"),
        pytest.param(
            "WEALL_PINNER_NODE_URL", "http://127.0.0.1:8000/?a=1", id="url-query"
        ),
        pytest.param("WEALL_PIN_RECHECK_S", "0", id="recheck-zero"),
        pytest.param("WEALL_PINNER_POLL_S", "soon", id="poll-text"),
        pytest.param("WEALL_PIN_UNPIN_GRACE_S", "-1", id="grace-negative"),
        pytest.param("WEALL_PIN_UNPIN_GRACE_S", "nan", id="grace-nan"),
    ],
)
def test_pinner_settings_rejected(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({variable: value})

    assert caught.value.variable == variable


def test_pinner_url_credentials_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"WEALL_PINNER_NODE_URL": "http://user:secret@127.0.0.1:8000"})

    assert caught.value.variable == "WEALL_PINNER_NODE_URL"
    assert "secret" not in str(caught.value)


def _pinner_env(tmp_path: Path, key_path: Path, url: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WEALL_") and k != "PORT"
    }
    return {
        **base,
        "WEALL_PINNER_NODE_URL": url,
        "WEALL_NODE_KEY_PATH": str(key_path),
        "WEALL_DB_PATH": str(tmp_path / "data" / "weall.db"),
        "WEALL_PINNER_POLL_S": "0.1",
        "PYTHONUNBUFFERED": "1",
    }


def _run_pinner(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (tmp_path / "pinner.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "weall", "actor", "pinner"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


@pytest.mark.slow
def test_standalone_pinner_retries_unreachable_node(tmp_path: Path) -> None:
    key_path = tmp_path / "op.key"
    keys.write_key_file(key_path, keys.generate("@op_a"))
    url = f"http://127.0.0.1:{free_port()}"
    process = _run_pinner(tmp_path, _pinner_env(tmp_path, key_path, url))
    log_path = tmp_path / "pinner.log"
    try:
        wait_for(lambda: "pinner poll failed account=@op_a" in log_path.read_text(), 30)
        time.sleep(1.0)
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    log = log_path.read_text()
    assert code == 0, log
    assert "pinner started mode=standalone account=@op_a" in log
    assert "Traceback" not in log
    # Failures in a row are logged at the 1st, 2nd, 4th ... so the log stays short.
    assert log.count("pinner poll failed") < 10


@pytest.mark.slow
def test_standalone_pinner_key_without_account(tmp_path: Path) -> None:
    key_path = tmp_path / "anonymous.key"
    keys.write_key_file(key_path, keys.generate(None))
    url = f"http://127.0.0.1:{free_port()}"

    process = _run_pinner(tmp_path, _pinner_env(tmp_path, key_path, url))
    code = process.wait(30)

    log = (tmp_path / "pinner.log").read_text()
    assert code == 78, log
    assert "names no account" in log
    assert "Traceback" not in log
