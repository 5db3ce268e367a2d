"""Copy the stdout and stderr lines of actors to the supervisor's stdout.

Text mode prefixes each line with ``"<actor> | "``. JSON mode passes a line
through unchanged when it is already a JSON object, as the lines of an actor
that logs in JSON are. It wraps any other line into an object whose logger
is the stream name, with level INFO for stdout and WARNING for stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final, TextIO

import orjson
import trio

from weall.logs import json_line

__all__ = ["MAX_LINE_BYTES", "OutputSink", "pump_lines"]

# A longer line is split, so one runaway write cannot grow the buffer forever.
MAX_LINE_BYTES: Final = 64 * 1024
_READ_BYTES: Final = 64 * 1024


class OutputSink:
    """The supervisor's stdout, shared by its log handler and all actors' lines."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"output format must be text or json (got {fmt!r})")
        self.fmt = fmt
        self._stream = stream

    def write_lines(self, actor: str, pid: int, source: str, lines: list[str]) -> None:
        """Write lines that ``actor`` wrote to ``source`` (``stdout`` or ``stderr``)."""
        if self.fmt == "text":
            text = "".join(f"{actor} | {line}\n" for line in lines)
        else:
            text = "".join(
                self._json(actor, pid, source, line) + "\n" for line in lines
            )
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            # NOTE: with stdout closed or broken there is nowhere left to report
            # to, so the lines are dropped and supervision goes on.
            pass

    def _json(self, actor: str, pid: int, source: str, line: str) -> str:
        if line.startswith("{"):
            try:
                if isinstance(orjson.loads(line), dict):
                    return line
            except orjson.JSONDecodeError:
                pass
        return json_line(
            actor=actor,
            pid=pid,
            level="INFO" if source == "stdout" else "WARNING",
            logger=source,
            message=line,
        )


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


async def pump_lines(
    stream: trio.abc.ReceiveStream,
    emit: Callable[[list[str]], None],
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> None:
    """Read ``stream`` to its end and pass each batch of complete lines to ``emit``.

    Bytes are decoded as UTF-8 with replacement characters. A trailing
    partial line is emitted at the end of the stream.
    """
    buffer = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(_READ_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            chunk = b""
        if not chunk:
            break
        buffer += chunk
        lines: list[str] = []
        while True:
            end = buffer.find(b"\n")
            if end < 0 and len(buffer) < max_line_bytes:
                break
            cut = end if 0 <= end < max_line_bytes else max_line_bytes
            lines.append(_decode(bytes(buffer[:cut])))
            del buffer[: cut + 1 if cut == end else cut]
        if lines:
            emit(lines)
    if buffer:
        emit([_decode(bytes(buffer))])
