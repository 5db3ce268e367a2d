"""The local backend against a real store in a temporary directory."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import cid as pycid
import multihash
import pytest

import weall.ipfs.local as local_module
from weall.config import Config
from weall.errors import ClosedError, IpfsError
from weall.ipfs import LocalBackend, open_backend
from weall.ipfs.unixfs import CHUNK_SIZE, EMPTY_FILE_CID, compute_cid, iter_blocks

from ._support import deterministic_bytes, deterministic_pieces, read_all, stream

ABSENT_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykq"


def block_path(backend: LocalBackend, cid: str) -> Path:
    return backend.root / "blocks" / cid[-3:-1] / cid


def all_block_files(backend: LocalBackend) -> list[Path]:
    return sorted(
        path for path in (backend.root / "blocks").rglob("*") if path.is_file()
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def dag_pb_block(
    unixfs: bytes, links: tuple[tuple[str, int], ...] = ()
) -> tuple[str, bytes]:
    """Encode a dag-pb node by hand; return its CID and bytes."""
    data = b""
    for cid, tsize in links:
        raw_cid = bytes(pycid.from_string(cid).buffer)
        data += _field(
            2, _field(1, raw_cid) + _field(2, b"") + b"\x18" + _varint(tsize)
        )
    data += _field(1, unixfs)
    digest = multihash.encode(hashlib.sha256(data).digest(), "sha2-256")
    made = pycid.make_cid(1, "dag-pb", digest)
    return made.encode("base32").decode(), data


def store_block(backend: LocalBackend, cid: str, data: bytes) -> None:
    path = block_path(backend, cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(0, id="empty"),
        pytest.param(1, id="1-byte"),
        pytest.param(CHUNK_SIZE, id="one-chunk"),
        pytest.param(CHUNK_SIZE + 1, id="chunk-plus-1"),
        pytest.param(3 * CHUNK_SIZE + 5, id="four-chunks"),
    ],
)
async def test_add_cat_round_trip(local_backend: LocalBackend, size: int) -> None:
    data = deterministic_bytes(size)

    cid, added_size = await local_backend.add(stream([data]), pin=False)

    assert cid == compute_cid(data)
    assert added_size == size
    assert await local_backend.has(cid)
    assert await read_all(local_backend.cat(cid)) == data


async def test_add_small_pieces_same_cid(local_backend: LocalBackend) -> None:
    size = 2 * CHUNK_SIZE + 3
    pieces = deterministic_pieces(size, piece_size=1000)

    result = await local_backend.add(stream(pieces), pin=False)

    assert result.cid == compute_cid(deterministic_bytes(size))


async def test_add_empty_file(local_backend: LocalBackend) -> None:
    result = await local_backend.add(stream([]), pin=True)

    assert result.cid == EMPTY_FILE_CID
    assert result.size == 0
    assert await read_all(local_backend.cat(EMPTY_FILE_CID)) == b""


async def test_add_with_pin_records_pin(local_backend: LocalBackend) -> None:
    pinned = await local_backend.add(stream([b"pinned"]), pin=True)
    unpinned = await local_backend.add(stream([b"not pinned"]), pin=False)

    assert await local_backend.is_pinned(pinned.cid)
    assert not await local_backend.is_pinned(unpinned.cid)
    assert await local_backend.list_pins() == [pinned.cid]


async def test_pin_unpin_cycle(local_backend: LocalBackend) -> None:
    data = deterministic_bytes(2 * CHUNK_SIZE)
    cid, _ = await local_backend.add(stream([data]), pin=False)

    await local_backend.pin(cid)
    assert await local_backend.is_pinned(cid)
    await local_backend.pin(cid)
    assert await local_backend.list_pins() == [cid]

    await local_backend.unpin(cid)
    assert not await local_backend.is_pinned(cid)
    assert await local_backend.list_pins() == []
    assert await local_backend.has(cid)
    await local_backend.unpin(cid)


async def test_pin_accepts_other_cid_spellings(local_backend: LocalBackend) -> None:
    cid, _ = await local_backend.add(stream([b"hello world\n"]), pin=False)

    await local_backend.pin("zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY")

    assert await local_backend.list_pins() == [cid]


async def test_pin_absent_cid_not_found(local_backend: LocalBackend) -> None:
    with pytest.raises(IpfsError) as caught:
        await local_backend.pin(ABSENT_CID)

    assert caught.value.code == "not_found"
    assert caught.value.cid == ABSENT_CID
    assert await local_backend.list_pins() == []


async def test_pin_with_missing_leaf_not_found(local_backend: LocalBackend) -> None:
    data = deterministic_bytes(2 * CHUNK_SIZE)
    cid, _ = await local_backend.add(stream([data]), pin=False)
    leaf = compute_cid(data[CHUNK_SIZE:])
    block_path(local_backend, leaf).unlink()

    with pytest.raises(IpfsError) as caught:
        await local_backend.pin(cid)

    assert caught.value.code == "not_found"
    assert leaf in caught.value.message
    assert not await local_backend.is_pinned(cid)


async def test_cat_absent_root_raises_before_data(local_backend: LocalBackend) -> None:
    chunks = local_backend.cat(ABSENT_CID)

    with pytest.raises(IpfsError) as caught:
        await chunks.__anext__()

    assert caught.value.code == "not_found"


async def test_cat_missing_child_not_found(local_backend: LocalBackend) -> None:
    data = deterministic_bytes(3 * CHUNK_SIZE)
    cid, _ = await local_backend.add(stream([data]), pin=False)
    block_path(local_backend, compute_cid(data[CHUNK_SIZE : 2 * CHUNK_SIZE])).unlink()
    received: list[bytes] = []

    async def collect() -> None:
        async for piece in local_backend.cat(cid):
            received.append(piece)

    with pytest.raises(IpfsError) as caught:
        await collect()

    assert caught.value.code == "not_found"
    assert b"".join(received) == data[:CHUNK_SIZE]


async def test_cat_detects_corrupt_block(local_backend: LocalBackend) -> None:
    data = deterministic_bytes(CHUNK_SIZE + 1)
    cid, _ = await local_backend.add(stream([data]), pin=False)
    block_path(local_backend, compute_cid(data[:CHUNK_SIZE])).write_bytes(b"tampered")

    with pytest.raises(IpfsError) as caught:
        await read_all(local_backend.cat(cid))

    assert caught.value.code == "corrupt_block"


async def test_cat_directory_not_a_file(local_backend: LocalBackend) -> None:
    directory_cid, data = dag_pb_block(b"\x08\x01")
    store_block(local_backend, directory_cid, data)

    with pytest.raises(IpfsError) as caught:
        await read_all(local_backend.cat(directory_cid))

    assert caught.value.code == "not_a_file"


async def test_cat_reads_inline_leaf_data(local_backend: LocalBackend) -> None:
    # The CIDv0-era layout: dag-pb leaves whose UnixFS Data contains the bytes.
    first_cid, first = dag_pb_block(b"\x08\x02\x12\x03abc\x18\x03")
    second_cid, second = dag_pb_block(b"\x08\x02\x12\x02de\x18\x02")
    root_cid, root = dag_pb_block(
        b"\x08\x02\x18\x05\x20\x03\x20\x02",
        ((first_cid, len(first)), (second_cid, len(second))),
    )
    for cid, data in ((first_cid, first), (second_cid, second), (root_cid, root)):
        store_block(local_backend, cid, data)

    assert await read_all(local_backend.cat(root_cid)) == b"abcde"
    await local_backend.pin(root_cid)
    assert await local_backend.is_pinned(root_cid)


async def test_blocks_stored_under_their_cid(local_backend: LocalBackend) -> None:
    data = deterministic_bytes(3 * CHUNK_SIZE + 1)
    await local_backend.add(stream([data]), pin=True)
    expected = {block.cid: block.data for block in iter_blocks([data])}

    files = all_block_files(local_backend)

    assert sorted(path.name for path in files) == sorted(expected)
    for path in files:
        assert path.parent.name == path.name[-3:-1]
        assert path.read_bytes() == expected[path.name]
    assert list((local_backend.root / "tmp").iterdir()) == []


async def test_failed_write_leaves_no_partial_file(
    local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync_without_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_module.os, "fsync", fsync_without_space)

    with pytest.raises(IpfsError) as caught:
        await local_backend.add(stream([b"never stored"]), pin=True)

    monkeypatch.undo()
    assert caught.value.code == "storage_full"
    assert all_block_files(local_backend) == []
    assert list((local_backend.root / "tmp").iterdir()) == []
    assert await local_backend.list_pins() == []


async def test_open_removes_stale_temp_files(tmp_path: Path) -> None:
    tmp_dir = tmp_path / "ipfs" / "tmp"
    tmp_dir.mkdir(parents=True)
    stale = tmp_dir / "stale.tmp"
    fresh = tmp_dir / "fresh.tmp"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    backend = await LocalBackend.open(tmp_path / "ipfs")

    assert not stale.exists()
    assert fresh.exists()
    await backend.aclose()


async def test_stat_counts_blocks(local_backend: LocalBackend) -> None:
    data = deterministic_bytes(2 * CHUNK_SIZE + 10)
    await local_backend.add(stream([data]), pin=False)
    await local_backend.add(stream([data]), pin=True)
    blocks = list(iter_blocks([data]))

    stat = await local_backend.stat()

    assert stat.num_blocks == len(blocks)
    assert stat.repo_size_bytes == sum(len(block.data) for block in blocks)


async def test_invalid_cid_rejected(local_backend: LocalBackend) -> None:
    for call in (local_backend.has, local_backend.pin, local_backend.is_pinned):
        with pytest.raises(IpfsError) as caught:
            await call("not-a-cid")
        assert caught.value.code == "invalid_cid"
    with pytest.raises(IpfsError) as caught:
        await read_all(local_backend.cat("not-a-cid"))
    assert caught.value.code == "invalid_cid"


async def test_closed_backend_raises(tmp_path: Path) -> None:
    backend = await LocalBackend.open(tmp_path / "ipfs")
    await backend.aclose()

    with pytest.raises(ClosedError):
        await backend.add(stream([b"x"]), pin=False)
    with pytest.raises(ClosedError):
        await backend.list_pins()


async def test_unopened_backend_raises(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "ipfs")

    with pytest.raises(ClosedError):
        await backend.has(EMPTY_FILE_CID)


async def test_two_instances_share_store(tmp_path: Path) -> None:
    async with (
        LocalBackend(tmp_path / "ipfs") as writer,
        LocalBackend(tmp_path / "ipfs") as reader,
    ):
        cid, _ = await writer.add(stream([b"shared"]), pin=True)

        assert await reader.list_pins() == [cid]
        assert await read_all(reader.cat(cid)) == b"shared"


async def test_open_backend_local_uses_data_dir(tmp_path: Path) -> None:
    config = Config(db_path=tmp_path / "data" / "weall.db")

    async with open_backend(config) as backend:
        cid, _ = await backend.add(stream([b"via config"]), pin=True)

    assert isinstance(backend, LocalBackend)
    assert backend.root == tmp_path / "data" / "ipfs"
    assert (tmp_path / "data" / "ipfs" / "pins" / cid).is_file()
