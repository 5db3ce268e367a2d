"""Progress of ``weall verify``, ``weall backup`` and ``weall restore``.

Each command runs as a real process against the live node's data, once with
stderr on a pipe (plain lines) and once on a pseudo-terminal (one line
redrawn in place).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e.node import Node

from .conftest import Live

pytestmark = pytest.mark.slow

ERASE_LINE = "\x1b[K"


def run_on_tty(
    node: Node, *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> tuple[int, str, str]:
    """Run ``weall ARGS`` with stderr on a pty; return (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "weall", *args],
        cwd=node.workdir,
        env={**node.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the pty's other end closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, stdout, b"".join(chunks).decode()


def redraws(stderr: str) -> list[str]:
    """The states of the redrawn line, oldest first, without the erase codes."""
    line = stderr.split("\n")[0].removesuffix("\r")
    return [part.removesuffix(ERASE_LINE) for part in line.split("\r") if part]


def test_verify_plain_lines(live: Live) -> None:
    result = live.node.cli("verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines, "verify wrote no progress"
    last = lines[-1]
    assert last.startswith("verify: ")
    blocks = last.split()[1]
    done, total = blocks.split("/")
    assert done == total
    assert int(total) >= 5
    assert "(100%), done in" in last


def test_verify_terminal_line(live: Live) -> None:
    code, stdout, stderr = run_on_tty(live.node, "verify")
    assert code == 0, stderr
    assert stdout.startswith("ok: ")
    assert ERASE_LINE in stderr
    states = redraws(stderr)
    assert states[0].startswith("verify: 0/")
    assert "(100%), done in" in states[-1]
    assert stderr.endswith("\r\n")


def test_backup_plain_lines(live: Live) -> None:
    result = live.node.cli("backup", "--no-prune")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["ok"] is True
    last = result.stderr.splitlines()[-1]
    assert last.startswith("backup: ")
    assert "(100%), done in" in last
    assert "\r" not in result.stderr


def test_backup_terminal_line(live: Live) -> None:
    code, stdout, stderr = run_on_tty(live.node, "backup", "--no-prune")
    assert code == 0, stderr
    assert json.loads(stdout)["ok"] is True
    states = redraws(stderr)
    assert states[0].startswith("backup: 0 B of ")
    assert "(100%), done in" in states[-1]


def test_backup_verify_reports(live: Live) -> None:
    backup = json.loads(live.node.cli("backup", "--no-prune", check=True).stdout)[
        "path"
    ]
    result = live.node.cli("backup", "--verify", backup)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith("backup --verify: ")
    code, _, stderr = run_on_tty(live.node, "backup", "--verify", backup)
    assert code == 0, stderr
    assert "checking integrity" in stderr


def test_restore_reports_both_modes(live: Live, tmp_path: Path) -> None:
    backup = json.loads(live.node.cli("backup", "--no-prune", check=True).stdout)[
        "path"
    ]
    # Restore into another database path, so the running node keeps its own.
    env = {"WEALL_DB_PATH": str(tmp_path / "plain" / "weall.db")}
    plain = subprocess.run(
        [sys.executable, "-m", "weall", "restore", backup],
        cwd=live.node.workdir,
        env={**live.node.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["ok"] is True
    assert plain.stderr.splitlines()[-1].startswith("restore: ")
    assert "(100%), done in" in plain.stderr
    assert (tmp_path / "plain" / "weall.db").stat().st_size > 0

    env = {"WEALL_DB_PATH": str(tmp_path / "tty" / "weall.db")}
    code, stdout, stderr = run_on_tty(live.node, "restore", backup, env=env)
    assert code == 0, stderr
    assert json.loads(stdout)["ok"] is True
    states = redraws(stderr)
    assert states[0].startswith("restore: 0 B of ")
    assert "(100%), done in" in states[-1]


def test_failed_verify_ends_line(live: Live, tmp_path: Path) -> None:
    missing = tmp_path / "absent.db"
    code, _, stderr = run_on_tty(live.node, "verify", "--db", str(missing))
    assert code == 1
    assert "not found" in stderr
    assert "done" not in stderr
