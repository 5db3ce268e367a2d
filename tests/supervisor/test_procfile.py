"""The Procfile, run by honcho as a PaaS would run it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.node import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_procfile_runs_under_honcho(tmp_path: Path) -> None:
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent))
    assert honcho is not None, "honcho is a dependency of the project"
    shutil.copy(ROOT / "Procfile", tmp_path / "Procfile")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WEALL_") and k != "PORT"
    }
    env.update(
        {
            "PORT": str(port),
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "WEALL_RUN_DIR": tempfile.mkdtemp(prefix="weall-run-", dir="/tmp"),
        }
    )
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [honcho, "start", "-f", "Procfile"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and not healthy:
            try:
                healthy = (
                    httpx.get(
                        f"http://127.0.0.1:{port}/v1/readyz", timeout=1
                    ).status_code
                    == 200
                )
            except httpx.HTTPError:
                time.sleep(0.2)
        assert healthy, log_path.read_text()
        process.send_signal(signal.SIGTERM)
        code = process.wait(40)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    output = log_path.read_text()
    # honcho itself exits 128 + the signal it received; the web process
    # must have stopped cleanly.
    assert code in (0, 128 + signal.SIGTERM), output
    assert "web.1 stopped (rc=0)" in output
    assert "stopped node" in output
    assert f"0.0.0.0:{port}" in output
