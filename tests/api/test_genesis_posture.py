"""Genesis mode refuses unsafe settings, through the real ``weall supervise``.

Each refusal is one line on stderr naming the setting, a non-zero exit, and
nothing started: no database, no socket, no actor. A control case with the
same files and safe settings starts and serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from e2e.node import Node

pytestmark = pytest.mark.slow

CHAIN_ID = "weall-posture"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a node key (mode 0600) and a genesis document for it."""
    root = tmp_path_factory.mktemp("posture")
    weall = [sys.executable, "-m", "weall"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEALL_")}
    subprocess.run(
        [*weall, "keygen", "--out", str(root / "node.key"), "--account", "@node"],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    subprocess.run(
        [
            *weall,
            "genesis",
            "new",
            "--chain-id",
            CHAIN_ID,
            "--producer-key",
            str(root / "node.key"),
            "--dev-params",
            "--out",
            str(root / "genesis.json"),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    return root


def _node(setup: Path, workdir: Path, **changes: str | None) -> Node:
    env: dict[str, str | None] = {
        "WEALL_MODE": "genesis",
        "WEALL_CHAIN_ID": CHAIN_ID,
        "WEALL_GENESIS_PATH": str(setup / "genesis.json"),
        "WEALL_NODE_KEY_PATH": str(setup / "node.key"),
        "WEALL_DB_PATH": str(workdir / "data" / "weall.db"),
        **changes,
    }
    node = Node(workdir)
    node.extra_env = {k: v for k, v in env.items() if v is not None}
    return node


def _supervise(node: Node) -> subprocess.CompletedProcess[str]:
    env = node.env
    return subprocess.run(
        [sys.executable, "-m", "weall", "supervise"],
        cwd=node.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _loose_key(setup: Path, mode: int) -> str:
    path = setup / f"loose-{mode:o}.key"
    if not path.exists():
        shutil.copy(setup / "node.key", path)
    os.chmod(path, mode)
    return str(path)


CASES = [
    ("chain-id-missing", {"WEALL_CHAIN_ID": None}, "WEALL_CHAIN_ID"),
    ("unsigned-allowed", {"WEALL_ALLOW_UNSIGNED_TXS": "1"}, "WEALL_ALLOW_UNSIGNED_TXS"),
    ("genesis-path-missing", {"WEALL_GENESIS_PATH": None}, "WEALL_GENESIS_PATH"),
    ("node-key-missing", {"WEALL_NODE_KEY_PATH": "missing.key"}, "WEALL_NODE_KEY_PATH"),
    ("node-key-world-readable", {"WEALL_NODE_KEY_PATH": 0o644}, "chmod 600"),
    ("node-key-group-readable", {"WEALL_NODE_KEY_PATH": 0o640}, "chmod 600"),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_genesis_mode_refuses_unsafe_setting(
    setup: Path, tmp_path: Path, changes: dict[str, object], expected: str
) -> None:
    resolved = {
        name: _loose_key(setup, value) if isinstance(value, int) else value
        for name, value in changes.items()
    }
    node = _node(setup, tmp_path, **resolved)  # type: ignore[arg-type]
    result = _supervise(node)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "spawned" not in result.stdout
    assert not (tmp_path / "data" / "weall.db").exists()
    assert not list(node.run_dir.glob("*.sock"))


def test_genesis_mode_binds_loopback_without_port(setup: Path, tmp_path: Path) -> None:
    from weall.config import load

    config = load(_node(setup, tmp_path).env)
    assert config.api_host == "127.0.0.1"
    public = load({**_node(setup, tmp_path).env, "PORT": "8080"})
    assert public.api_host == "0.0.0.0"


def test_genesis_mode_starts_with_safe_settings(setup: Path, tmp_path: Path) -> None:
    node = _node(setup, tmp_path)
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        health = httpx.get(f"{node.url}/health", timeout=10).json()
        assert health["mode"] == "genesis"
        assert health["chain_id"] == CHAIN_ID
        assert health["storage"]["synchronous"] == "FULL"
    finally:
        assert node.stop() == 0


def test_loose_key_file_is_refused_by_tx(setup: Path, tmp_path: Path) -> None:
    key = _loose_key(setup, 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEALL_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "weall",
            "tx",
            "post",
            "hello",
            "--key",
            key,
            "--url",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_mode_refuses_loose_node_key(tmp_path: Path) -> None:
    keys_dir = tmp_path / "data" / "keys"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEALL_")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "weall",
            "keygen",
            "--out",
            str(keys_dir / "node.key"),
            "--account",
            "@node",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    os.chmod(keys_dir / "node.key", 0o644)
    node = Node(tmp_path)
    result = _supervise(node)
    assert result.returncode != 0
    assert "chmod 600" in result.stderr
    assert "spawned" not in result.stdout
    assert not (tmp_path / "data" / "weall.db").exists()
