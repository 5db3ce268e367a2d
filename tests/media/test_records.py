"""Upload records, media type parsing and the retry backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from weall.media.backoff import Backoff
from weall.media.records import (
    DEFAULT_MEDIA_TYPE,
    MAX_MEDIA_TYPE_CHARS,
    MediaRecord,
    MediaRecords,
    parse_media_type,
)

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, DEFAULT_MEDIA_TYPE, id="missing"),
        pytest.param("  ", DEFAULT_MEDIA_TYPE, id="blank"),
        pytest.param("image/png", "image/png", id="plain"),
        pytest.param("Image/PNG", "image/png", id="type-lowered"),
        pytest.param(
            "text/plain; charset=UTF-8",
            "text/plain; charset=UTF-8",
            id="parameter-kept",
        ),
        pytest.param(
            'text/plain;name="a b"', 'text/plain;name="a b"', id="quoted-parameter"
        ),
        pytest.param(
            "application/vnd.api+json", "application/vnd.api+json", id="suffix"
        ),
    ],
)
def test_parse_media_type_accepts(header: str | None, expected: str) -> None:
    assert parse_media_type(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("not a media type", id="words"),
        pytest.param("image", id="no-subtype"),
        pytest.param("image/png\r\nX-Evil: 1", id="header-injection"),
        pytest.param("image/png; charset", id="parameter-without-value"),
        pytest.param("text/" + "a" * MAX_MEDIA_TYPE_CHARS, id="too-long"),
        pytest.param("image/pn\u00e9", id="non-ascii"),
    ],
)
def test_parse_media_type_rejects(header: str) -> None:
    with pytest.raises(ValueError, match="Content-Type"):
        parse_media_type(header)


async def test_records_round_trip(tmp_path: Path) -> None:
    records = MediaRecords(tmp_path / "media")
    record = MediaRecord(CID, "image/png", 12, "@alice", 1_700_000_000_000)

    await records.put(record)

    assert await records.get(CID) == record
    assert await records.get("bafkreiabsent") is None
    assert [p.name for p in (tmp_path / "media").iterdir()] == [f"{CID}.json"]


async def test_records_replace_earlier(tmp_path: Path) -> None:
    records = MediaRecords(tmp_path)
    await records.put(MediaRecord(CID, "image/png", 12, "@alice", 1))

    await records.put(MediaRecord(CID, "image/jpeg", 12, "@bob", 2))

    found = await records.get(CID)
    assert found is not None
    assert found.content_type == "image/jpeg"
    assert found.uploader == "@bob"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"[]", id="not-object"),
        pytest.param(b'{"cid": "x"}', id="missing-fields"),
        pytest.param(
            b'{"cid": "%s", "content_type": "a/b", "size_bytes": -1, "uploader": "@a", '
            b'"uploaded_at_ms": 1}' % CID.encode(),
            id="negative-size",
        ),
        pytest.param(
            b'{"cid": "bafkreiother", "content_type": "a/b", "size_bytes": 1, "uploader": "@a", '
            b'"uploaded_at_ms": 1}',
            id="other-cid",
        ),
    ],
)
async def test_records_malformed_file_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / f"{CID}.json").write_bytes(content)

    assert await MediaRecords(tmp_path).get(CID) is None


def test_backoff_doubles_to_cap() -> None:
    backoff = Backoff(first_s=1.0, max_s=10.0)

    delays = [backoff.fail() for _ in range(6)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.succeed() == 6
    assert backoff.fail() == 1.0


def test_backoff_many_failures_stay_capped() -> None:
    backoff = Backoff(first_s=0.5, max_s=30.0)

    for _ in range(2000):
        delay = backoff.fail()

    assert delay == 30.0


def test_backoff_logs_powers_of_two() -> None:
    backoff = Backoff()
    logged = []

    for _ in range(20):
        backoff.fail()
        logged.append(backoff.should_log())

    assert [i + 1 for i, flag in enumerate(logged) if flag] == [1, 2, 4, 8, 16]
