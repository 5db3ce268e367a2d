"""The producer lock, held across real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from weall.errors import StartupError
from weall.storage.lock import ProducerLock, is_locked

# Takes the lock, reports it on stdout, then holds it until stdin closes.
HOLDER = """
import sys
from pathlib import Path
from weall.storage.lock import ProducerLock
ProducerLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
sys.stdin.read()
"""

# Tries to take the lock and prints the outcome.
CONTENDER = """
import sys
from pathlib import Path
from weall.errors import StartupError
from weall.storage.lock import ProducerLock
try:
    ProducerLock(Path(sys.argv[1])).acquire()
except StartupError as exc:
    print(exc)
    sys.exit(3)
print("acquired")
"""


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "weall.db.lock"


@pytest.fixture
def holder(lock_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock until the test ends or kills it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "locked\n"
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def run_contender(lock_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CONTENDER, str(lock_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_lock_acquire_writes_pid(lock_path: Path) -> None:
    lock = ProducerLock(lock_path)
    lock.acquire()
    try:
        assert lock_path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_lock_file_mode_0600(lock_path: Path) -> None:
    lock = ProducerLock(lock_path)
    lock.acquire()
    lock.release()
    assert lock_path.stat().st_mode & 0o777 == 0o600


def test_lock_release_then_acquire(lock_path: Path) -> None:
    first = ProducerLock(lock_path)
    first.acquire()
    first.release()
    second = ProducerLock(lock_path)
    second.acquire()
    second.release()


def test_lock_release_twice_is_harmless(lock_path: Path) -> None:
    lock = ProducerLock(lock_path)
    lock.acquire()
    lock.release()
    lock.release()


def test_lock_second_acquire_in_other_process(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(StartupError) as caught:
        ProducerLock(lock_path).acquire()
    assert f"pid {holder.pid}" in str(caught.value)
    assert str(lock_path) in str(caught.value)


def test_lock_other_process_rejected(lock_path: Path) -> None:
    lock = ProducerLock(lock_path)
    lock.acquire()
    try:
        result = run_contender(lock_path)
    finally:
        lock.release()
    assert result.returncode == 3
    assert f"pid {os.getpid()}" in result.stdout


def test_lock_other_process_after_release(lock_path: Path) -> None:
    lock = ProducerLock(lock_path)
    lock.acquire()
    lock.release()
    assert run_contender(lock_path).stdout == "acquired\n"


def test_lock_released_when_holder_dies(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    holder.kill()
    holder.wait(timeout=10)
    lock = ProducerLock(lock_path)
    lock.acquire()
    try:
        assert lock_path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_lock_rejected_holder_keeps_lock(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(StartupError):
        ProducerLock(lock_path).acquire()
    assert is_locked(lock_path) == str(holder.pid)


def test_is_locked_names_holder(lock_path: Path, holder: subprocess.Popen[str]) -> None:
    assert is_locked(lock_path) == str(holder.pid)


def test_is_locked_without_file(lock_path: Path) -> None:
    assert is_locked(lock_path) is None


def test_is_locked_after_release(lock_path: Path) -> None:
    lock = ProducerLock(lock_path)
    lock.acquire()
    lock.release()
    assert is_locked(lock_path) is None


def test_is_locked_after_holder_dies(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    holder.kill()
    holder.wait(timeout=10)
    assert is_locked(lock_path) is None
