"""The browser tests skip without Chromium on a developer's machine and fail under CI.

Each case runs pytest on ``test_browser.py`` in a child process with
``WEALL_TEST_CHROMIUM`` pointing at a file that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests/dashboard/test_browser.py"

pytestmark = pytest.mark.slow


def _run_browser_tests(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        name: value
        for name, value in os.environ.items()
        if name != "CI" and not name.startswith("WEALL_")
    }
    clean.update(env, WEALL_TEST_CHROMIUM=str(tmp_path / "no-chromium"))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            MODULE,
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'base'}",
        ],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_missing_chromium_skips_outside_ci(tmp_path: Path) -> None:
    result = _run_browser_tests(tmp_path)
    # The module skips as a whole, so pytest collected no test to run.
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, (
        result.stdout + result.stderr
    )
    assert "1 skipped" in result.stdout
    assert "no-chromium is missing" in result.stdout


def test_missing_chromium_fails_under_ci(tmp_path: Path) -> None:
    result = _run_browser_tests(tmp_path, CI="true")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, (
        result.stdout + result.stderr
    )
    assert " passed" not in result.stdout
    assert " error" in result.stdout
    assert "CI=true, so the browser tests must run" in result.stdout
    assert "no-chromium is missing" in result.stdout
    # The check runs before the live node would start in a new directory.
    assert list((tmp_path / "base").glob("dashboard-node*")) == []
