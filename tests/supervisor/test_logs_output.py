"""Log formats of ``weall.logs`` and the copying of actor output lines."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest
import trio
import trio.testing

from weall import logs
from weall.supervisor._output import OutputSink, pump_lines

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO pid=\d+ weall\.actors\.producer: "
    r"block committed height=7$"
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
def test_text_format_matches_layout() -> None:
    stream = io.StringIO()
    logs.setup("producer", "INFO", "text", stream=stream)
    logging.getLogger("weall.actors.producer").info("block committed height=%d", 7)
    assert TEXT_LINE.match(stream.getvalue().rstrip("\n"))


@pytest.mark.usefixtures("restore_logging")
def test_text_format_prefix_on_every_line() -> None:
    stream = io.StringIO()
    logs.setup("supervisor", "INFO", "text", stream=stream, prefix=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("weall.supervisor").exception("failed")
    lines = stream.getvalue().rstrip("\n").split("\n")
    assert len(lines) > 2
    assert all(line.startswith("supervisor | ") for line in lines)
    assert "RuntimeError: boom" in lines[-1]


@pytest.mark.usefixtures("restore_logging")
def test_json_format_has_fields() -> None:
    stream = io.StringIO()
    logs.setup("api", "INFO", "json", stream=stream)
    logging.getLogger("weall.actors.api").warning("slow request path=%s", "/v1/x")
    record = orjson.loads(stream.getvalue())
    assert set(record) == {"time", "level", "actor", "pid", "logger", "message"}
    assert record["level"] == "WARNING"
    assert record["actor"] == "api"
    assert record["logger"] == "weall.actors.api"
    assert record["message"] == "slow request path=/v1/x"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", record["time"])


@pytest.mark.usefixtures("restore_logging")
def test_json_format_carries_exc_info() -> None:
    stream = io.StringIO()
    logs.setup("api", "INFO", "json", stream=stream)
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("weall.actors.api").exception("crashed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = orjson.loads(lines[0])
    assert record["message"] == "crashed"
    assert "ValueError: bad value" in record["exc_info"]


@pytest.mark.usefixtures("restore_logging")
def test_setup_filters_below_level() -> None:
    stream = io.StringIO()
    logs.setup("api", "WARNING", "text", stream=stream)
    logging.getLogger("weall.x").info("hidden")
    assert stream.getvalue() == ""


def test_setup_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.setup("api", "INFO", "xml")
    with pytest.raises(ValueError, match="log level"):
        logs.setup("api", "LOUD", "text")


def test_sink_text_prefixes_lines() -> None:
    stream = io.StringIO()
    OutputSink("text", stream).write_lines("pinner", 42, "stdout", ["one", "two"])
    assert stream.getvalue() == "pinner | one\npinner | two\n"


def test_sink_json_passes_objects_through() -> None:
    stream = io.StringIO()
    line = (
        '{"time":"t","level":"INFO","actor":"api","pid":1,"logger":"x","message":"m"}'
    )
    OutputSink("json", stream).write_lines("api", 1, "stderr", [line])
    assert stream.getvalue() == line + "\n"


@pytest.mark.parametrize(
    ("source", "level"),
    [("stdout", "INFO"), ("stderr", "WARNING")],
    ids=["stdout", "stderr"],
)
def test_sink_json_wraps_plain_lines(source: str, level: str) -> None:
    stream = io.StringIO()
    OutputSink("json", stream).write_lines(
        "healer", 77, source, ["plain text", "[1, 2]"]
    )
    records = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [record["message"] for record in records] == ["plain text", "[1, 2]"]
    for record in records:
        assert record["actor"] == "healer"
        assert record["pid"] == 77
        assert record["level"] == level
        assert record["logger"] == source


async def _pumped(chunks: list[bytes], max_line_bytes: int = 64 * 1024) -> list[str]:
    stream = trio.testing.MemoryReceiveStream()
    for chunk in chunks:
        stream.put_data(chunk)
    stream.put_eof()
    lines: list[str] = []
    await pump_lines(stream, lines.extend, max_line_bytes=max_line_bytes)
    return lines


async def test_pump_joins_split_lines() -> None:
    assert await _pumped([b"ab", b"c\nde", b"f\n", b"tail"]) == ["abc", "def", "tail"]


async def test_pump_splits_overlong_line() -> None:
    assert await _pumped([b"x" * 10 + b"\n"], max_line_bytes=4) == [
        "xxxx",
        "xxxx",
        "xx",
    ]


async def test_pump_decodes_invalid_utf8() -> None:
    assert await _pumped([b"caf\xc3\xa9 \xff\r\n"]) == ["caf\u00e9 \ufffd"]
