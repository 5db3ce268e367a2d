"""CIDs and blocks of weall.ipfs.unixfs, checked without a daemon.

The expected CIDs were returned by the IPFS test daemon's ``add`` with
``cid-version=1`` and Kubo's other defaults, for ``deterministic_pieces(size)``;
``test_cid_daemon.py`` checks the same table against a live daemon.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weall.errors import IpfsError
from weall.ipfs.unixfs import (
    CHUNK_SIZE,
    EMPTY_FILE_CID,
    MAX_LINKS,
    UNIXFS_FILE,
    FileBuilder,
    cid_from_bytes,
    cid_to_bytes,
    compute_cid,
    decode_dag_pb,
    decode_unixfs,
    iter_blocks,
    parse_cid,
    verify_block,
)

from ._support import deterministic_bytes, deterministic_pieces

HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"

# (size in bytes, CID of deterministic_pieces(size)), as the daemon added them.
KNOWN_CIDS = [
    pytest.param(0, EMPTY_FILE_CID, id="empty"),
    pytest.param(
        1, "bafkreiekgmp53zydf4z2ohq3fysx3aawny2i4ah4wf4rj5el3nl2drrqa4", id="1-byte"
    ),
    pytest.param(
        11, "bafkreidiidkpoy4ozycu5wcb6htqibo6vtkaegrtlul3sa554fktuelsje", id="11-bytes"
    ),
    pytest.param(
        CHUNK_SIZE - 1,
        "bafkreidn2sx2se2rjcpopfrepsnpno7yrnjfvm3atyqdtehcuwwjrkd3gi",
        id="chunk-minus-1",
    ),
    pytest.param(
        CHUNK_SIZE,
        "bafkreid67dntoks4pszm6rx672d62nxiwptqojd5zv4nhc5osehnmqld64",
        id="one-chunk",
    ),
    pytest.param(
        CHUNK_SIZE + 1,
        "bafybeider6d5xn4bxk3lrybw56dhybx4ur3k7rc4mjeo6mn3vjh5j2qmky",
        id="chunk-plus-1",
    ),
    pytest.param(
        1 << 20,
        "bafybeicxdolyh2bq3avlprpo7t6xxjurmchrhb4rhxufnykgb6objxlnoa",
        id="1-MiB",
    ),
    pytest.param(
        5 * CHUNK_SIZE + 4097,
        "bafybeiccbdfa5g2i2wvuwgtoiky7cdcqqiguvm7eyhcnb542p2xv4qlvty",
        id="six-chunks",
    ),
]
# 174 chunks fill one node exactly; 176 chunks need a second layer of links.
LARGE_CIDS = [
    pytest.param(
        MAX_LINKS * CHUNK_SIZE,
        "bafybeictminhnha77diqw2gi4hdkxgquvm7sjlwqb7md3a3tjtz4u522iu",
        id="174-chunks",
    ),
    pytest.param(
        (MAX_LINKS + 1) * CHUNK_SIZE + 1000,
        "bafybeiabt3vd5egwcg5j7ot2zyafqxjlphdbttu7a34onsm4wjkbvl7uga",
        id="176-chunks",
    ),
]


def build(size: int, **options: int) -> tuple[FileBuilder, list]:
    builder = FileBuilder(**options)
    blocks = []
    for piece in deterministic_pieces(size):
        blocks.extend(builder.write(piece))
    blocks.extend(builder.finish())
    return builder, blocks


def test_cid_of_hello_world() -> None:
    assert compute_cid(b"hello world\n") == HELLO_CID


def test_cid_of_empty_file_is_empty_raw_leaf() -> None:
    builder, blocks = build(0)

    assert builder.root == EMPTY_FILE_CID
    assert [block.data for block in blocks] == [b""]


@pytest.mark.parametrize(("size", "expected"), KNOWN_CIDS)
def test_cid_matches_daemon(size: int, expected: str) -> None:
    builder, _ = build(size)

    assert builder.root == expected
    assert builder.size == size


@pytest.mark.slow
@pytest.mark.parametrize(("size", "expected"), LARGE_CIDS)
def test_cid_of_large_file_matches_daemon(size: int, expected: str) -> None:
    builder = FileBuilder()
    tracemalloc.start()
    try:
        for piece in deterministic_pieces(size):
            builder.write(piece)
        builder.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert builder.root == expected
    assert builder.size == size
    # One 1 MiB input piece, one partial chunk and the pending links.
    assert peak < 4 * (1 << 20)


def test_builder_memory_bounded_without_keeping_blocks() -> None:
    size = 40 * CHUNK_SIZE + 5
    builder = FileBuilder()
    tracemalloc.start()
    try:
        for piece in deterministic_pieces(size, piece_size=100_000):
            builder.write(piece)
        builder.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4 * CHUNK_SIZE


def test_single_chunk_is_raw_leaf() -> None:
    data = deterministic_bytes(CHUNK_SIZE)
    builder, blocks = build(CHUNK_SIZE)

    assert len(blocks) == 1
    assert blocks[0].data == data
    assert builder.root.startswith("bafkrei")
    assert builder.dag_size == CHUNK_SIZE


def test_two_chunk_root_node_bytes() -> None:
    data = deterministic_bytes(CHUNK_SIZE + 1)
    _, blocks = build(CHUNK_SIZE + 1)
    first = cid_to_bytes(compute_cid(data[:CHUNK_SIZE]))
    second = cid_to_bytes(compute_cid(data[CHUNK_SIZE:]))

    def link(cid: bytes, tsize: bytes) -> bytes:
        body = b"\x0a\x24" + cid + b"\x12\x00" + b"\x18" + tsize
        return b"\x12" + bytes([len(body)]) + body

    # UnixFS Data: Type=File, filesize=262145, blocksizes 262144 and 1.
    unixfs = b"\x08\x02" + b"\x18\x81\x80\x10" + b"\x20\x80\x80\x10" + b"\x20\x01"
    expected = link(first, b"\x80\x80\x10") + link(second, b"\x01")
    expected += b"\x0a" + bytes([len(unixfs)]) + unixfs

    assert len(blocks) == 3
    assert blocks[-1].data == expected


def test_blocks_come_children_first() -> None:
    _, blocks = build(3 * CHUNK_SIZE + 7, chunk_size=1024, max_links=4)
    seen: set[str] = set()

    for block in blocks:
        if block.cid.startswith("bafy"):
            for link in decode_dag_pb(block.data).links:
                assert link.cid in seen
        seen.add(block.cid)


def test_root_node_describes_children() -> None:
    size = 3 * CHUNK_SIZE + 10
    builder, blocks = build(size)
    node = decode_dag_pb(blocks[-1].data)
    unixfs = decode_unixfs(node.data)

    assert len(node.links) == 4
    assert [link.name for link in node.links] == [""] * 4
    assert [link.tsize for link in node.links] == [CHUNK_SIZE] * 3 + [10]
    assert unixfs.type == UNIXFS_FILE
    assert unixfs.filesize == size
    assert unixfs.blocksizes == (CHUNK_SIZE,) * 3 + (10,)
    assert unixfs.data == b""
    assert builder.dag_size == size + len(blocks[-1].data)


@pytest.mark.parametrize(
    ("leaves", "expected_depth"),
    [
        pytest.param(1, 0, id="one-leaf"),
        pytest.param(4, 1, id="one-full-node"),
        pytest.param(5, 2, id="one-more-than-full"),
        pytest.param(16, 2, id="two-full-levels"),
        pytest.param(17, 3, id="third-level"),
    ],
)
def test_balanced_layout_depth(leaves: int, expected_depth: int) -> None:
    _, blocks = build(leaves * 8, chunk_size=8, max_links=4)
    by_cid = {block.cid: block for block in blocks}

    def depths(cid: str) -> set[int]:
        if cid.startswith("bafk"):
            return {0}
        links = decode_dag_pb(by_cid[cid].data).links
        return {1 + depth for link in links for depth in depths(link.cid)}

    assert depths(blocks[-1].cid) == {expected_depth}


def test_balanced_layout_fills_left_nodes() -> None:
    # 17 leaves with 4 links per node: the root has a full 16-leaf subtree
    # and a right-most chain down to the 17th leaf.
    _, blocks = build(17 * 8, chunk_size=8, max_links=4)
    by_cid = {block.cid: block for block in blocks}
    root = decode_dag_pb(blocks[-1].data)

    assert len(root.links) == 2
    assert [link.tsize is not None for link in root.links] == [True, True]
    left = decode_dag_pb(by_cid[root.links[0].cid].data)
    right = decode_dag_pb(by_cid[root.links[1].cid].data)
    assert len(left.links) == 4
    assert len(right.links) == 1
    assert decode_unixfs(right.data).filesize == 8


@settings(max_examples=50, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 99), max_size=8)
)
def test_cid_independent_of_piece_sizes(cuts: list[int]) -> None:
    data = deterministic_bytes(3 * CHUNK_SIZE + 100, seed=7)
    bounds = [0, *sorted(cuts), len(data)]
    pieces = [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]

    assert compute_cid(pieces) == compute_cid(data)


def test_iter_blocks_matches_builder() -> None:
    data = deterministic_bytes(2 * CHUNK_SIZE + 1)
    blocks = list(iter_blocks([data]))

    assert blocks[-1].cid == compute_cid(data)
    for block in blocks:
        verify_block(block.cid, block.data)


def test_builder_rejects_write_after_finish() -> None:
    builder = FileBuilder()
    builder.finish()

    with pytest.raises(RuntimeError):
        builder.write(b"x")
    with pytest.raises(RuntimeError):
        builder.finish()


def test_builder_root_before_finish_raises() -> None:
    with pytest.raises(RuntimeError):
        _ = FileBuilder().root


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(HELLO_CID, HELLO_CID, id="base32"),
        pytest.param(HELLO_CID.upper(), HELLO_CID, id="base32-upper"),
        pytest.param(
            "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY",
            HELLO_CID,
            id="base58btc",
        ),
        pytest.param(
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
            "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby",
            id="cidv0",
        ),
        pytest.param(f"  {HELLO_CID}\n", HELLO_CID, id="whitespace"),
    ],
)
def test_parse_cid_normalizes(text: str, expected: str) -> None:
    assert parse_cid(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("hello", id="junk"),
        pytest.param(HELLO_CID[:-1], id="truncated"),
        pytest.param(
            "bafyreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe", id="dag-cbor"
        ),
        pytest.param(
            "bafkr4ibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe", id="blake3"
        ),
        pytest.param(
            "bafkrefbnoelefnzgwbcacyt4vh52ymxvzbjq7mi", id="short-sha2-256-digest"
        ),
    ],
)
def test_parse_cid_rejects(text: str) -> None:
    with pytest.raises(IpfsError) as caught:
        parse_cid(text)

    assert caught.value.code == "invalid_cid"


@given(st.text(max_size=80))
def test_parse_cid_raises_only_ipfs_error(text: str) -> None:
    codes: set[str] = set()
    try:
        parse_cid(text)
    except IpfsError as exc:
        codes.add(exc.code)

    assert codes <= {"invalid_cid"}


def test_cid_bytes_round_trip() -> None:
    assert cid_from_bytes(cid_to_bytes(HELLO_CID)) == HELLO_CID


def test_verify_block_detects_corruption() -> None:
    with pytest.raises(IpfsError) as caught:
        verify_block(HELLO_CID, b"hello world!")

    assert caught.value.code == "corrupt_block"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x12", id="truncated-length"),
        pytest.param(b"\x12\x05\x0a", id="field-past-end"),
        pytest.param(b"\x1d\x00\x00\x00\x00", id="fixed32-field"),
        pytest.param(b"\x1a\x00", id="unknown-field"),
        pytest.param(b"\x12\x00", id="link-without-hash"),
        pytest.param(b"\xff" * 11, id="varint-too-long"),
    ],
)
def test_decode_dag_pb_rejects_malformed(data: bytes) -> None:
    with pytest.raises(IpfsError) as caught:
        decode_dag_pb(data)

    assert caught.value.code == "invalid_block"


def test_decode_unixfs_requires_type() -> None:
    with pytest.raises(IpfsError) as caught:
        decode_unixfs(b"\x18\x01")

    assert caught.value.code == "invalid_block"


def test_decode_unixfs_reads_packed_blocksizes() -> None:
    decoded = decode_unixfs(b"\x08\x02\x22\x02\x05\x06")

    assert decoded.blocksizes == (5, 6)
