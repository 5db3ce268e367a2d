"""Logging set-up shared by the supervisor and every actor.

Each process logs through the standard ``logging`` module to one stream, one
record per line (a traceback adds lines in text mode). Two formats exist:

text::

    2026-12-04T03:10:44.123Z INFO pid=123 weall.actors.producer: block committed height=7

json (one object per line)::

    {"time": "2026-12-04T03:10:44.123Z", "level": "INFO", "actor": "producer",
     "pid": 123, "logger": "weall.actors.producer", "message": "block committed height=7"}

A JSON record gets an ``exc_info`` key with the formatted traceback when it
carries an exception. Times are UTC with millisecond precision.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, TextIO

import orjson

from weall.config import LOG_FORMATS, LOG_LEVELS

__all__ = ["format_time", "json_line", "setup"]


def format_time(timestamp: float) -> str:
    """Format a Unix timestamp as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    seconds = int(timestamp)
    millis = int((timestamp - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def json_line(
    *,
    actor: str,
    pid: int,
    level: str,
    logger: str,
    message: str,
    timestamp: float | None = None,
    exc_info: str | None = None,
) -> str:
    """Serialise one record in the JSON format, without the trailing newline."""
    record: dict[str, Any] = {
        "time": format_time(time.time() if timestamp is None else timestamp),
        "level": level,
        "actor": actor,
        "pid": pid,
        "logger": logger,
        "message": message,
    }
    if exc_info:
        record["exc_info"] = exc_info
    return orjson.dumps(record).decode()


class _ActorFilter(logging.Filter):
    """Stamp every record with the actor name, so formatters can rely on it."""

    def __init__(self, actor: str) -> None:
        super().__init__()
        self.actor = actor

    def filter(self, record: logging.LogRecord) -> bool:
        record.actor = self.actor
        return True


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _escape_controls(message: str) -> str:
    """Write control characters as ``\\xNN``, so a value taken from a request
    (a path with ``%0a``, a terminal escape) can never forge a log line."""
    return _CONTROL_CHARS.sub(lambda match: f"\\x{ord(match.group()):02x}", message)


class _TextFormatter(logging.Formatter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{format_time(record.created)} {record.levelname} pid={record.process} "
            f"{record.name}: {_escape_controls(record.getMessage())}"
        )
        extra = self._exception_text(record)
        if extra:
            line = f"{line}\n{extra}"
        if not self.prefix:
            return line
        return "\n".join(self.prefix + part for part in line.split("\n"))

    def _exception_text(self, record: logging.LogRecord) -> str:
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc_text = None
        if record.exc_info:
            exc_text = self.formatException(record.exc_info)
        if record.stack_info:
            stack = self.formatStack(record.stack_info)
            exc_text = f"{exc_text}\n{stack}" if exc_text else stack
        return json_line(
            actor=getattr(record, "actor", ""),
            pid=record.process or os.getpid(),
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
            timestamp=record.created,
            exc_info=exc_text,
        )


def setup(
    actor: str,
    level: str = "INFO",
    fmt: str = "text",
    *,
    stream: TextIO | None = None,
    prefix: bool = False,
) -> None:
    """Send every log record of this process to one stream in one format.

    Replaces the handlers of the root logger, so calling it again switches
    format or level. Python warnings are logged too, on ``py.warnings``.

    Args:
        actor: the name stamped on every record (``supervisor`` or an actor).
        level: one of ``weall.config.LOG_LEVELS``.
        fmt: ``text`` or ``json``.
        stream: where lines go; the default is ``sys.stderr`` at call time.
        prefix: in text mode, start each line with ``"<actor> | "``, the way
            the supervisor prefixes the output of its children.

    Raises:
        ValueError: ``level`` or ``fmt`` is not one of the allowed values.
    """
    if level not in LOG_LEVELS:
        allowed = ", ".join(LOG_LEVELS)
        raise ValueError(f"log level must be one of {allowed} (got {level!r})")
    if fmt not in LOG_FORMATS:
        allowed = ", ".join(LOG_FORMATS)
        raise ValueError(f"log format must be one of {allowed} (got {fmt!r})")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(_ActorFilter(actor))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter(f"{actor} | " if prefix else ""))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
