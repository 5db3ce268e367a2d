"""Upload records: the media type and size of each verified upload.

The IPFS backends store bytes only, so the api keeps one small JSON file per
uploaded CID under ``<data dir>/media/``, written after the upload's session
signature verified. ``GET /v1/media/{cid}`` reads it for the
``Content-Type`` and ``Content-Length`` of its answer. Every file is written
to a temporary name and renamed into place, so a reader sees a whole record
or none. A second upload of the same bytes replaces the record, so the last
uploader's media type wins.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import trio

__all__ = [
    "DEFAULT_MEDIA_TYPE",
    "MAX_MEDIA_TYPE_CHARS",
    "MediaRecord",
    "MediaRecords",
    "parse_media_type",
]

log = logging.getLogger(__name__)

DEFAULT_MEDIA_TYPE: Final = "application/octet-stream"
MAX_MEDIA_TYPE_CHARS: Final = 255
# RFC 9110 section 8.3.1: type "/" subtype, then parameters; tokens are
# tchar runs and a parameter value is a token or a quoted string.
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED: Final = r'"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"'
_MEDIA_TYPE_RE: Final = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*"
)


def parse_media_type(header: str | None) -> str:
    """Validate a ``Content-Type`` header and return it with the type in lower case.

    A missing or empty header is ``application/octet-stream``.

    Raises:
        ValueError: the value is not a media type of RFC 9110 or is longer
            than ``MAX_MEDIA_TYPE_CHARS``.
    """
    if header is None or not header.strip():
        return DEFAULT_MEDIA_TYPE
    value = header.strip()
    if len(value) > MAX_MEDIA_TYPE_CHARS:
        raise ValueError(
            f"Content-Type is longer than {MAX_MEDIA_TYPE_CHARS} characters"
        )
    if not _MEDIA_TYPE_RE.fullmatch(value):
        raise ValueError(
            f"Content-Type {value[:80]!r} is not a media type such as image/png"
        )
    essence, separator, parameters = value.partition(";")
    return essence.lower() + separator + parameters


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """What the api recorded about one verified upload."""

    cid: str
    content_type: str
    size_bytes: int
    uploader: str
    uploaded_at_ms: int

    @classmethod
    def from_document(cls, document: Any) -> MediaRecord | None:
        """Build a record from its JSON form; ``None`` for a malformed one."""
        if not isinstance(document, dict):
            return None
        try:
            record = cls(**document)
        except TypeError:
            return None
        fields_ok = (
            isinstance(record.cid, str)
            and isinstance(record.content_type, str)
            and isinstance(record.size_bytes, int)
            and record.size_bytes >= 0
            and isinstance(record.uploader, str)
            and isinstance(record.uploaded_at_ms, int)
        )
        return record if fields_ok else None


class MediaRecords:
    """The directory of upload records, one file per CID."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, cid: str) -> Path:
        # CIDs reach here normalised to base32, which has no path separator.
        return self.root / f"{cid}.json"

    async def put(self, record: MediaRecord) -> None:
        """Write ``record`` atomically, replacing any earlier one for its CID.

        Raises:
            OSError: the file could not be written (a full disk, say).
        """
        await trio.to_thread.run_sync(self._put_sync, record)

    async def get(self, cid: str) -> MediaRecord | None:
        """Return the record of ``cid``, or ``None`` when there is none or it is unreadable."""
        return await trio.to_thread.run_sync(self._get_sync, cid)

    def _put_sync(self, record: MediaRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(record.cid)
        temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with temp.open("wb") as handle:
                handle.write(orjson.dumps(asdict(record)))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _get_sync(self, cid: str) -> MediaRecord | None:
        path = self._path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("media record unreadable path=%s error=%s", path, exc)
            return None
        try:
            record = MediaRecord.from_document(orjson.loads(data))
        except orjson.JSONDecodeError:
            record = None
        if record is None or record.cid != cid:
            log.warning("media record malformed path=%s", path)
            return None
        return record
