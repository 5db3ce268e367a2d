"""CIDs of weall.ipfs.unixfs and of both backends, compared with the daemon's.

The daemon is js-ipfs 0.66, whose ``add`` gives the same CIDs as Kubo's for
the parameters used here.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from weall.ipfs import KuboBackend, LocalBackend
from weall.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, FileBuilder, compute_cid

from ._support import deterministic_pieces, stream
from .test_unixfs import HELLO_CID, KNOWN_CIDS, LARGE_CIDS

pytestmark = pytest.mark.ipfs


def builder_cid(size: int, *, chunk_size: int = CHUNK_SIZE) -> str:
    builder = FileBuilder(chunk_size=chunk_size)
    for piece in deterministic_pieces(size):
        builder.write(piece)
    builder.finish()
    return builder.root


async def test_hello_world_matches_daemon(kubo: KuboBackend) -> None:
    result = await kubo.add(stream([b"hello world\n"]), pin=False)

    assert result.cid == HELLO_CID
    assert compute_cid(b"hello world\n") == HELLO_CID


@pytest.mark.parametrize(("size", "expected"), KNOWN_CIDS)
async def test_cid_equals_daemon_add(
    kubo: KuboBackend, size: int, expected: str
) -> None:
    result = await kubo.add(stream(deterministic_pieces(size)), pin=False)

    assert result.cid == builder_cid(size)
    assert result.cid == expected
    assert result.size == size


@pytest.mark.slow
@pytest.mark.parametrize(("size", "expected"), LARGE_CIDS)
async def test_large_cid_equals_daemon_add(
    kubo: KuboBackend, tmp_path: Path, size: int, expected: str
) -> None:
    daemon = await kubo.add(stream(deterministic_pieces(size)), pin=False)
    async with LocalBackend(tmp_path / "ipfs") as local:
        stored = await local.add(stream(deterministic_pieces(size)), pin=True)

    assert daemon.cid == expected
    assert stored.cid == expected
    assert builder_cid(size) == expected


@pytest.mark.slow
async def test_three_level_tree_equals_daemon_add(private_daemon: str) -> None:
    # With 16-byte chunks, 174 * 174 + 1 chunks need a third level of links,
    # which 256 KiB chunks would only reach at 7.9 GB. Its 30,000 blocks
    # would slow repo/stat of the shared daemon, so it gets its own.
    chunk_size = 16
    size = (MAX_LINKS * MAX_LINKS + 1) * chunk_size
    data = b"".join(deterministic_pieces(size, seed=3))
    params = {
        "cid-version": "1",
        "raw-leaves": "true",
        "cid-base": "base32",
        "chunker": f"size-{chunk_size}",
        "pin": "false",
    }
    files = {"file": ("file", data, "application/octet-stream")}

    async with httpx.AsyncClient(
        base_url=private_daemon, timeout=120, trust_env=False
    ) as client:
        response = await client.post("/api/v0/add", params=params, files=files)

    assert response.status_code == 200
    builder = FileBuilder(chunk_size=chunk_size)
    blocks = builder.write(data) + builder.finish()
    nodes = [block for block in blocks if block.cid.startswith("bafy")]
    assert builder.root == response.json()["Hash"]
    # 175 nodes over the leaves, 2 over those, and the root.
    assert len(nodes) == 175 + 2 + 1
