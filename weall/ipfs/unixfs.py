"""UnixFS files as Kubo builds them, and the dag-pb blocks they are made of.

``FileBuilder`` reproduces ``ipfs add --cid-version=1`` with Kubo's other
defaults, so that the ``local`` backend and a Kubo node give the same content
id for the same bytes:

- the file is cut into fixed chunks of 262144 bytes (256 KiB); the last chunk
  may be shorter;
- each chunk is a raw leaf: a block of codec ``raw`` (0x55) whose bytes are the
  chunk itself;
- leaves are linked by dag-pb (0x70) nodes holding a UnixFS ``File`` message
  with ``filesize`` and one ``blocksizes`` entry per child;
- the layout is balanced with at most 174 links per node. Every leaf sits at
  the same depth, and only the right-most node of each level may have fewer
  than 174 children;
- every hash is sha2-256 and every CID is CIDv1 printed in base32.

A file of one chunk is its raw leaf alone, and the empty file is the raw leaf
of zero bytes (``bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku``).

The protobuf messages are small and fixed, so they are encoded here by hand:

- ``PBNode``: ``Links`` (field 2, repeated) written before ``Data`` (field 1),
  the order of the dag-pb specification and of Kubo.
- ``PBLink``: ``Hash`` (1, the binary CID), ``Name`` (2, written even when
  empty) and ``Tsize`` (3, the total size in bytes of the child's DAG).
- UnixFS ``Data``: ``Type`` (1), ``Data`` (2, absent in nodes over raw
  leaves), ``filesize`` (3) and ``blocksizes`` (4, repeated and not packed,
  as proto2 writes it).

The decoder reads any dag-pb UnixFS file, including ones whose leaves are
dag-pb nodes with inline data, so that ``cat`` works on DAGs built elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import cid as pycid
import multihash

from weall.errors import IpfsError

__all__ = [
    "CHUNK_SIZE",
    "CODEC_DAG_PB",
    "CODEC_RAW",
    "EMPTY_FILE_CID",
    "MAX_LINKS",
    "UNIXFS_DIRECTORY",
    "UNIXFS_FILE",
    "UNIXFS_RAW",
    "Block",
    "DagPbLink",
    "DagPbNode",
    "FileBuilder",
    "UnixfsData",
    "cid_from_bytes",
    "cid_to_bytes",
    "compute_cid",
    "decode_dag_pb",
    "decode_unixfs",
    "iter_blocks",
    "parse_cid",
    "verify_block",
]

CHUNK_SIZE: Final = 262144
MAX_LINKS: Final = 174
CODEC_RAW: Final = "raw"
CODEC_DAG_PB: Final = "dag-pb"
EMPTY_FILE_CID: Final = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"

# UnixFS Data.Type values (unixfs.proto).
UNIXFS_RAW: Final = 0
UNIXFS_DIRECTORY: Final = 1
UNIXFS_FILE: Final = 2

_SHA2_256: Final = "sha2-256"
_DIGEST_SIZE: Final = 32


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a DAG: its CID (CIDv1, base32) and its bytes."""

    cid: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DagPbLink:
    """A link of a dag-pb node: the child's CID and its DAG size in bytes."""

    cid: str
    name: str
    tsize: int | None


@dataclass(frozen=True, slots=True)
class DagPbNode:
    """A decoded dag-pb node: its links in order and its opaque data."""

    links: tuple[DagPbLink, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class UnixfsData:
    """A decoded UnixFS ``Data`` message."""

    type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


@dataclass(slots=True)
class _Child:
    cid_bytes: bytes
    cid: str
    tsize: int  # bytes of the child's whole DAG, as PBLink.Tsize
    filesize: int  # bytes of file content below the child, as a blocksizes entry


# --- varints and CIDs -------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while offset < len(data):
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            break
    raise IpfsError("invalid_block", "malformed protobuf varint")


def _make_cid(codec: str, data: bytes) -> tuple[bytes, str]:
    digest = hashlib.sha256(data).digest()
    built = pycid.make_cid(1, codec, multihash.encode(digest, _SHA2_256))
    return bytes(built.buffer), built.encode("base32").decode("ascii")


def parse_cid(text: str) -> str:
    """Validate a CID and return it as CIDv1 in base32.

    CIDv0 (``Qm...``) and other multibase encodings are accepted and
    converted, so that one piece of content has one spelling everywhere.

    Raises:
        IpfsError: ``invalid_cid`` unless the text is a CID of codec ``raw``
            or ``dag-pb`` with a sha2-256 multihash, the only kinds that the
            node stores and verifies.
    """
    try:
        parsed = pycid.from_string(text.strip())
        if parsed.version == 0:
            parsed = parsed.to_v1()
        decoded = multihash.decode(parsed.multihash)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise IpfsError("invalid_cid", f"invalid CID {text!r}: {exc}") from None
    if parsed.codec not in (CODEC_RAW, CODEC_DAG_PB):
        raise IpfsError(
            "invalid_cid", f"unsupported codec {parsed.codec} in CID {text!r}"
        )
    if decoded.code != 0x12 or len(decoded.digest) != _DIGEST_SIZE:
        raise IpfsError("invalid_cid", f"CID {text!r} is not a sha2-256 CID")
    return str(parsed.encode("base32").decode("ascii"))


def cid_to_bytes(cid: str) -> bytes:
    """Return the binary form of a CID string, as written in ``PBLink.Hash``."""
    normalized = parse_cid(cid)
    return bytes(pycid.from_string(normalized).buffer)


def cid_from_bytes(raw: bytes) -> str:
    """Return the base32 CIDv1 string of a binary CID.

    Raises:
        IpfsError: ``invalid_block`` when the bytes are not a supported CID.
    """
    try:
        parsed = pycid.from_bytes(raw)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise IpfsError("invalid_block", f"malformed CID in a link: {exc}") from None
    return parse_cid(parsed.encode("base32").decode("ascii"))


def verify_block(cid: str, data: bytes) -> None:
    """Raise ``IpfsError("corrupt_block")`` unless ``data`` hashes to ``cid``."""
    expected = pycid.from_string(cid).multihash
    digest = hashlib.sha256(data).digest()
    if bytes(expected) != multihash.encode(digest, _SHA2_256):
        raise IpfsError(
            "corrupt_block", f"block {cid} does not match its hash", cid=cid
        )


# --- encoding ---------------------------------------------------------------


def _encode_link(child: _Child) -> bytes:
    return b"".join(
        (
            b"\x0a",
            _varint(len(child.cid_bytes)),
            child.cid_bytes,
            b"\x12\x00",  # Name: the empty string, present as Kubo writes it
            b"\x18",
            _varint(child.tsize),
        )
    )


def _encode_file_node(children: list[_Child]) -> bytes:
    filesize = sum(child.filesize for child in children)
    unixfs = bytearray(b"\x08")
    unixfs += _varint(UNIXFS_FILE)
    unixfs += b"\x18" + _varint(filesize)
    for child in children:
        unixfs += b"\x20" + _varint(child.filesize)
    node = bytearray()
    for child in children:
        link = _encode_link(child)
        node += b"\x12" + _varint(len(link)) + link
    node += b"\x0a" + _varint(len(unixfs)) + unixfs
    return bytes(node)


def _raw_leaf(chunk: bytes) -> tuple[_Child, Block]:
    cid_bytes, cid = _make_cid(CODEC_RAW, chunk)
    return _Child(cid_bytes, cid, len(chunk), len(chunk)), Block(cid, chunk)


def _file_node(children: list[_Child]) -> tuple[_Child, Block]:
    data = _encode_file_node(children)
    cid_bytes, cid = _make_cid(CODEC_DAG_PB, data)
    tsize = len(data) + sum(child.tsize for child in children)
    filesize = sum(child.filesize for child in children)
    return _Child(cid_bytes, cid, tsize, filesize), Block(cid, data)


# --- the builder ------------------------------------------------------------


@dataclass
class FileBuilder:
    """Incremental UnixFS file builder with Kubo's defaults.

    Feed the file with ``write`` and end it with ``finish``. Both return the
    blocks that became complete, children before the nodes that link to
    them, so a caller that stores blocks in that order never stores a node
    whose children are missing. The builder keeps at most one partial chunk
    and the pending links of each level (at most 174 per level), so memory
    stays bounded whatever the file size.

    Attributes:
        chunk_size: bytes per leaf, 262144 in Kubo's default chunker.
        max_links: links per node, 174 in Kubo's balanced layout.
    """

    chunk_size: int = CHUNK_SIZE
    max_links: int = MAX_LINKS
    _buffer: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _levels: list[list[_Child]] = field(default_factory=lambda: [[]], init=False)
    _size: int = field(default=0, init=False)
    _root: _Child | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1 (got {self.chunk_size})")
        if self.max_links < 2:
            raise ValueError(f"max_links: must be >= 2 (got {self.max_links})")

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    @property
    def root(self) -> str:
        """CID of the whole file; available once ``finish`` has returned."""
        if self._root is None:
            raise RuntimeError("FileBuilder.root: call finish() first")
        return self._root.cid

    @property
    def dag_size(self) -> int:
        """Bytes of every block of the file; available after ``finish``."""
        if self._root is None:
            raise RuntimeError("FileBuilder.dag_size: call finish() first")
        return self._root.tsize

    def write(self, data: bytes | bytearray | memoryview) -> list[Block]:
        """Append bytes to the file and return the blocks that completed.

        Raises:
            RuntimeError: when called after ``finish``.
        """
        if self._root is not None:
            raise RuntimeError("FileBuilder.write: the file is already finished")
        view = memoryview(data).cast("B")
        self._size += len(view)
        blocks: list[Block] = []
        if self._buffer:
            take = min(self.chunk_size - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < self.chunk_size:
                return blocks
            self._add_leaf(bytes(self._buffer), blocks)
            self._buffer.clear()
        while len(view) >= self.chunk_size:
            self._add_leaf(bytes(view[: self.chunk_size]), blocks)
            view = view[self.chunk_size :]
        self._buffer += view
        return blocks

    def finish(self) -> list[Block]:
        """End the file and return the remaining blocks, the root last.

        Raises:
            RuntimeError: when called twice.
        """
        if self._root is not None:
            raise RuntimeError("FileBuilder.finish: the file is already finished")
        blocks: list[Block] = []
        if self._buffer or self._size == 0:
            self._add_leaf(bytes(self._buffer), blocks)
            self._buffer.clear()
        level = 0
        while True:
            children = self._levels[level]
            is_top = level == len(self._levels) - 1
            if is_top and len(children) == 1:
                self._root = children[0]
                return blocks
            if children:
                self._push(level + 1, self._close_level(level, blocks), blocks)
            level += 1

    def _add_leaf(self, chunk: bytes, blocks: list[Block]) -> None:
        child, block = _raw_leaf(chunk)
        blocks.append(block)
        self._push(0, child, blocks)

    def _push(self, level: int, child: _Child, blocks: list[Block]) -> None:
        # A level that reaches max_links children becomes one node of the
        # level above at once. Kubo's balanced builder fills nodes in the
        # same order, so closing full nodes early gives the same tree.
        if level == len(self._levels):
            self._levels.append([])
        self._levels[level].append(child)
        if len(self._levels[level]) == self.max_links:
            self._push(level + 1, self._close_level(level, blocks), blocks)

    def _close_level(self, level: int, blocks: list[Block]) -> _Child:
        node, block = _file_node(self._levels[level])
        self._levels[level] = []
        blocks.append(block)
        return node


def iter_blocks(
    chunks: Iterable[bytes], *, chunk_size: int = CHUNK_SIZE
) -> Iterator[Block]:
    """Yield the blocks of a file given as pieces, the root block last."""
    builder = FileBuilder(chunk_size=chunk_size)
    for piece in chunks:
        yield from builder.write(piece)
    yield from builder.finish()


def compute_cid(data: bytes | Iterable[bytes]) -> str:
    """Return the CID that ``ipfs add --cid-version=1`` gives these bytes.

    ``data`` is the whole file or an iterable of its pieces; the pieces are
    hashed as they come and never joined.
    """
    builder = FileBuilder()
    pieces: Iterable[bytes] = (data,) if isinstance(data, bytes | bytearray) else data
    for piece in pieces:
        builder.write(piece)
    builder.finish()
    return builder.root


# --- decoding ---------------------------------------------------------------


def _iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a protobuf message."""
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        number, wire_type = key >> 3, key & 0x07
        if wire_type == 0:
            value, offset = _read_varint(data, offset)
            yield number, wire_type, value
        elif wire_type == 2:
            length, offset = _read_varint(data, offset)
            if offset + length > len(data):
                raise IpfsError("invalid_block", "protobuf field runs past the end")
            yield number, wire_type, data[offset : offset + length]
            offset += length
        else:
            raise IpfsError(
                "invalid_block", f"unsupported protobuf wire type {wire_type}"
            )


def _decode_link(data: bytes) -> DagPbLink:
    cid: str | None = None
    name = ""
    tsize: int | None = None
    for number, _, value in _iter_fields(data):
        if number == 1 and isinstance(value, bytes):
            cid = cid_from_bytes(value)
        elif number == 2 and isinstance(value, bytes):
            name = value.decode("utf-8", errors="replace")
        elif number == 3 and isinstance(value, int):
            tsize = value
        else:
            raise IpfsError("invalid_block", f"unexpected PBLink field {number}")
    if cid is None:
        raise IpfsError("invalid_block", "PBLink without Hash")
    return DagPbLink(cid, name, tsize)


def decode_dag_pb(data: bytes) -> DagPbNode:
    """Decode a dag-pb block.

    Raises:
        IpfsError: ``invalid_block`` when the bytes are not a dag-pb PBNode.
    """
    links: list[DagPbLink] = []
    node_data = b""
    for number, _, value in _iter_fields(data):
        if number == 2 and isinstance(value, bytes):
            links.append(_decode_link(value))
        elif number == 1 and isinstance(value, bytes):
            node_data = value
        else:
            raise IpfsError("invalid_block", f"unexpected PBNode field {number}")
    return DagPbNode(tuple(links), node_data)


def decode_unixfs(data: bytes) -> UnixfsData:
    """Decode the UnixFS ``Data`` message carried in a dag-pb node.

    Raises:
        IpfsError: ``invalid_block`` when the message is malformed or has no type.
    """
    kind: int | None = None
    content = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for number, wire_type, value in _iter_fields(data):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, bytes):
            content = value
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4 and isinstance(value, int):
            blocksizes.append(value)
        elif number == 4 and wire_type == 2 and isinstance(value, bytes):
            blocksizes.extend(_unpack_varints(value))  # packed, from other writers
        # Fields 5 (hashType), 6 (fanout), 7 (mode) and 8 (mtime) do not
        # change the file's bytes, so they are skipped.
    if kind is None:
        raise IpfsError("invalid_block", "UnixFS Data without Type")
    return UnixfsData(kind, content, filesize, tuple(blocksizes))


def _unpack_varints(data: bytes) -> list[int]:
    values: list[int] = []
    offset = 0
    while offset < len(data):
        value, offset = _read_varint(data, offset)
        values.append(value)
    return values
