"""``weall.progress``: counts, rate, time left, and the three report modes."""

from __future__ import annotations

import io
import logging
import os
import pty
import threading

import pytest

from weall.progress import Progress, format_bytes, format_duration, run_watched


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def _plain(clock: FakeClock, **kwargs: object) -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    progress = Progress("verify", stream=stream, clock=clock, unit="blocks", **kwargs)  # type: ignore[arg-type]
    return progress, stream


def test_plain_mode_line_per_interval() -> None:
    clock = FakeClock()
    progress, stream = _plain(clock, total=1000, interval_s=5.0)
    assert not progress.terminal
    for _ in range(40):
        clock.tick(0.5)
        progress.advance(25)
    lines = stream.getvalue().splitlines()
    # 20 s of work with a line every 5 s.
    assert len(lines) == 4
    assert lines[0].startswith("verify: 250/1000 blocks (25%), 50 blocks/s")
    assert lines[0].endswith("15.0 s left")
    assert "\r" not in stream.getvalue()


def test_plain_mode_final_done_line() -> None:
    clock = FakeClock()
    progress, stream = _plain(clock, total=10)
    clock.tick(2.0)
    progress.update(10)
    progress.close()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == ["verify: 10/10 blocks (100%), done in 2.0 s, 5.0 blocks/s"]


def test_rate_follows_the_recent_pace() -> None:
    clock = FakeClock()
    progress, _ = _plain(clock, total=10_000)
    for _ in range(100):
        clock.tick(0.2)
        progress.advance(100)  # 500 per second for 20 s
    for _ in range(100):
        clock.tick(0.2)
        progress.advance(20)  # then 100 per second for 20 s
    stats = progress.statistics()
    assert stats.count == 12_000
    assert stats.rate_per_s == pytest.approx(100, rel=0.05)
    assert stats.eta_s == 0.0


def test_eta_counts_down_to_the_total() -> None:
    clock = FakeClock()
    progress, _ = _plain(clock, total=300)
    clock.tick(10)
    progress.update(100)
    stats = progress.statistics()
    assert stats.rate_per_s == pytest.approx(10)
    assert stats.eta_s == pytest.approx(20)
    assert stats.fraction == pytest.approx(1 / 3)


def test_unknown_total_shows_elapsed() -> None:
    clock = FakeClock()
    progress, stream = _plain(clock, interval_s=1.0)
    clock.tick(1.5)
    progress.update(30)
    assert stream.getvalue() == "verify: 30 blocks, 20 blocks/s, 1.5 s elapsed\n"
    assert progress.statistics().eta_s is None


def test_bytes_unit_uses_binary_prefixes() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(
        "backup", total=4 * 1024 * 1024, unit="bytes", stream=stream, clock=clock
    )
    clock.tick(1.0)
    progress.update(1024 * 1024)
    progress.close()
    assert stream.getvalue().startswith(
        "backup: 1.0 MiB of 4.0 MiB (25%), done in 1.0 s, 1.0 MiB/s"
    )


def test_phase_shown_after_counts() -> None:
    clock = FakeClock()
    progress, stream = _plain(clock, interval_s=1.0)
    progress.set_phase("hashing")
    clock.tick(1.0)
    progress.update(5)
    assert stream.getvalue().rstrip().endswith(", hashing")


def test_error_exit_writes_no_done_line() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Progress("verify", stream=stream, clock=clock):
        raise RuntimeError("block 3 is bad")
    assert stream.getvalue() == ""


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        Progress("verify", interval_s=0)


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO once the other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_terminal_mode_redraws_one_line() -> None:
    master, slave = pty.openpty()
    clock = FakeClock()
    with os.fdopen(slave, "w", encoding="utf-8") as stream:
        progress = Progress(
            "verify",
            total=100,
            unit="blocks",
            stream=stream,
            clock=clock,
            redraw_s=0.125,
        )
        assert progress.terminal
        for _ in range(10):
            clock.tick(0.0625)
            progress.advance(10)
        progress.close()
    output = _read_all(master)
    os.close(master)
    # The pty turns the final "\n" into "\r\n".
    assert output.endswith("\x1b[K\r\n")
    draws = output.removesuffix("\r\n").split("\r")
    assert draws[0] == ""
    # Drawn at the start, every 0.125 s while running, and once more at the end.
    assert len(draws[1:]) == 7
    assert all(draw.endswith("\x1b[K") for draw in draws[1:])
    assert draws[1].startswith("verify: 0/100 blocks (0%)")
    assert draws[2].startswith("verify: 20/100 blocks (20%), 160 blocks/s")
    assert draws[-1].startswith("verify: 100/100 blocks (100%), done in 0.6 s")


def test_terminal_mode_error_ends_line() -> None:
    master, slave = pty.openpty()
    with (
        os.fdopen(slave, "w", encoding="utf-8") as stream,
        pytest.raises(KeyError),
        Progress("restore", total=5, stream=stream),
    ):
        raise KeyError("x")
    output = _read_all(master)
    os.close(master)
    assert output.startswith("\rrestore: 0/5 items (0%)")
    assert output.endswith("\r\n")
    assert "done" not in output


def test_logger_mode_key_value_records(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    logger = logging.getLogger("weall.tests.progress")
    caplog.set_level(logging.INFO, logger="weall.tests.progress")
    progress = Progress(
        "sync", total=50, unit="blocks", logger=logger, clock=clock, interval_s=2.0
    )
    clock.tick(2.0)
    progress.update(20)
    clock.tick(1.0)
    progress.update(25)
    progress.close()
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "progress task=sync count=20 total=50 rate_per_s=10.0 eta_s=3 done=false",
        "progress task=sync count=25 total=50 rate_per_s=8.3 eta_s=none done=true",
    ]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (5 * 1024**3, "5.0 GiB"),
        (3 * 1024**5, "3072.0 TiB"),
    ],
    ids=["zero", "below-kib", "kib", "gib", "beyond-tib"],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4.24, "4.2 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
    ids=["seconds", "minutes", "hours"],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_run_watched_polls_until_done() -> None:
    release = threading.Event()
    polls: list[int] = []
    progress = Progress("copy", stream=io.StringIO())

    def poll(p: Progress) -> None:
        polls.append(1)
        if len(polls) == 3:
            release.set()

    result = run_watched(
        lambda: release.wait(10) and "copied", progress, poll, poll_s=0.01
    )
    assert result == "copied"
    assert len(polls) >= 3


def test_run_watched_raises_work_error() -> None:
    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_watched(
            fail, Progress("copy", stream=io.StringIO()), lambda _: None, poll_s=0.01
        )
