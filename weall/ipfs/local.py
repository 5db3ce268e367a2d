"""The ``local`` IPFS backend: a content-addressed block store on disk.

Layout under the store's root directory (``<data dir>/ipfs`` for the node)::

    blocks/<xy>/<cid>   one file per block; <xy> is cid[-3:-1], as Kubo's
                        flatfs "next-to-last/2" sharding does
    pins/<cid>          an empty file per pinned root
    tmp/                files being written

Every file is written to ``tmp/``, flushed with fsync, renamed into place and
its directory fsynced, so after a crash a block or pin file is either whole or
absent. Blocks are stored children first, so a stored root block implies its
whole DAG was stored too, unless a block was deleted by hand afterwards.
Several processes may share one store: writes of the same block race
harmlessly because both writers rename identical bytes onto one name.

CIDs equal Kubo's ``ipfs add --cid-version=1`` (see ``weall.ipfs.unixfs``), so
a store can be re-added to Kubo without changing any content id.

TODO: unpinned blocks are never deleted. A garbage collector needs a lock
shared with add and pin, across processes, so that it cannot delete the
blocks of an upload whose pin is not yet written.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Final

import cid as pycid
import trio

from weall.errors import ClosedError, IpfsError
from weall.ipfs._types import AddResult, RepoStat
from weall.ipfs.unixfs import (
    CODEC_RAW,
    UNIXFS_FILE,
    UNIXFS_RAW,
    Block,
    FileBuilder,
    UnixfsData,
    decode_dag_pb,
    decode_unixfs,
    parse_cid,
    verify_block,
)

__all__ = ["LocalBackend"]

log = logging.getLogger(__name__)

# Temp files older than this are left over from a crashed writer. The age
# must exceed the longest upload, because another process may still be
# writing a younger one.
_STALE_TMP_AGE_S: Final = 3600.0


class LocalBackend:
    """Block store in a directory, with Kubo-compatible CIDs.

    Use ``LocalBackend.open(root)``, or ``async with`` on an instance. Blocking
    file I/O runs in worker threads through ``trio.to_thread.run_sync``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blocks = self.root / "blocks"
        self._pins = self.root / "pins"
        self._tmp = self.root / "tmp"
        self._opened = False
        self._closed = False

    @classmethod
    async def open(cls, root: Path) -> LocalBackend:
        """Create the store's directories if needed and return the backend.

        Raises:
            IpfsError: ``storage_full`` or ``ipfs_failed`` when the
                directories cannot be created.
        """
        backend = cls(root)
        await backend._open()
        return backend

    async def _open(self) -> None:
        if not self._opened:
            await trio.to_thread.run_sync(self._open_sync)
            self._opened = True
            log.info("ipfs local store opened root=%s", self.root)

    async def aclose(self) -> None:
        """Mark the backend closed; later calls raise ``ClosedError``."""
        self._closed = True

    async def __aenter__(self) -> LocalBackend:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- operations ----------------------------------------------------------

    async def add(self, chunks: AsyncIterable[bytes], *, pin: bool) -> AddResult:
        """Store a file given as a stream of byte pieces.

        Blocks reach the disk as they complete, so memory use stays near one
        256 KiB chunk whatever the file size.

        Args:
            chunks: the file's bytes, in pieces of any size.
            pin: record the file's root as pinned once every block is stored.

        Returns:
            The file's CID (as ``ipfs add --cid-version=1`` gives it) and size.

        Raises:
            IpfsError: ``storage_full`` or ``ipfs_failed`` when a write fails.
        """
        self._check_usable()
        builder = FileBuilder()
        async for piece in chunks:
            blocks = builder.write(piece)
            if blocks:
                await trio.to_thread.run_sync(self._write_blocks_sync, blocks)
        await trio.to_thread.run_sync(self._write_blocks_sync, builder.finish())
        if pin:
            await trio.to_thread.run_sync(self._write_pin_sync, builder.root)
        log.info(
            "ipfs local add cid=%s size=%d pinned=%s", builder.root, builder.size, pin
        )
        return AddResult(builder.root, builder.size)

    async def cat(self, cid: str) -> AsyncIterator[bytes]:
        """Yield the bytes of a stored UnixFS file, walking its DAG in order.

        Every block read is checked against its hash.

        Raises:
            IpfsError: ``invalid_cid``, or ``not_found`` when the root block
                is missing, both before the first piece. ``not_found`` also
                when a block below the root is missing, and
                ``corrupt_block``, ``invalid_block`` or ``not_a_file``.
        """
        root = parse_cid(cid)
        self._check_usable()
        pending = [root]  # a stack: children are pushed in reverse order
        while pending:
            current = pending.pop()
            data = await trio.to_thread.run_sync(
                self._read_verified_sync, current, root
            )
            if _codec(current) == CODEC_RAW:
                if data:
                    yield data
                continue
            node = decode_dag_pb(data)
            unixfs = _decode_file(current, node.data)
            if unixfs.data:
                yield unixfs.data
            pending.extend(link.cid for link in reversed(node.links))

    async def has(self, cid: str) -> bool:
        """Return whether the block of ``cid`` is stored (the root only).

        Raises:
            IpfsError: ``invalid_cid``.
        """
        normalized = parse_cid(cid)
        self._check_usable()
        return await trio.to_thread.run_sync(self._block_path(normalized).is_file)

    async def pin(self, cid: str) -> None:
        """Pin a stored DAG, after checking that every block of it is stored.

        Raises:
            IpfsError: ``invalid_cid``; ``not_found`` when any block of the DAG
                is missing, in which case nothing is pinned.
        """
        normalized = parse_cid(cid)
        self._check_usable()
        await trio.to_thread.run_sync(self._pin_sync, normalized)
        log.info("ipfs local pinned cid=%s", normalized)

    async def unpin(self, cid: str) -> None:
        """Remove the pin of ``cid``; unpinning a CID that is not pinned is a no-op.

        The blocks stay stored.

        Raises:
            IpfsError: ``invalid_cid``.
        """
        normalized = parse_cid(cid)
        self._check_usable()
        removed = await trio.to_thread.run_sync(self._remove_pin_sync, normalized)
        log.info("ipfs local unpinned cid=%s was_pinned=%s", normalized, removed)

    async def is_pinned(self, cid: str) -> bool:
        """Return whether ``cid`` is pinned as a root.

        Raises:
            IpfsError: ``invalid_cid``.
        """
        normalized = parse_cid(cid)
        self._check_usable()
        return await trio.to_thread.run_sync((self._pins / normalized).is_file)

    async def list_pins(self) -> list[str]:
        """Return the pinned root CIDs, sorted."""
        self._check_usable()
        return await trio.to_thread.run_sync(self._list_pins_sync)

    async def stat(self) -> RepoStat:
        """Return the number of stored blocks and the bytes they use."""
        self._check_usable()
        return await trio.to_thread.run_sync(self._stat_sync)

    # --- blocking helpers, run in worker threads -----------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"ipfs local store {self.root} is closed")
        if not self._opened:
            raise ClosedError(
                f"ipfs local store {self.root} is not open; use LocalBackend.open()"
            )

    def _block_path(self, cid: str) -> Path:
        return self._blocks / cid[-3:-1] / cid

    def _open_sync(self) -> None:
        try:
            for directory in (self.root, self._blocks, self._pins, self._tmp):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _io_error(f"create store directories under {self.root}", exc) from exc
        self._remove_stale_tmp_sync()

    def _remove_stale_tmp_sync(self) -> None:
        cutoff = time.time() - _STALE_TMP_AGE_S
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    log.info("ipfs local removed stale temp file path=%s", entry.path)
            except FileNotFoundError:
                continue  # removed by another process meanwhile

    def _write_blocks_sync(self, blocks: list[Block]) -> None:
        for block in blocks:
            path = self._block_path(block.cid)
            if path.is_file():
                continue  # content-addressed: the stored bytes are the same
            try:
                if not path.parent.is_dir():
                    path.parent.mkdir(exist_ok=True)
                    _fsync_dir(self._blocks)
                self._write_atomic_sync(path, block.data)
            except OSError as exc:
                raise _io_error(f"write block {block.cid}", exc) from exc

    def _write_atomic_sync(self, path: Path, data: bytes) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix=path.name + ".")
        try:
            with os.fdopen(fd, "wb") as tmp_file:
                tmp_file.write(data)
                tmp_file.flush()
                os.fsync(tmp_file.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def _read_block_sync(self, cid: str) -> bytes | None:
        try:
            return self._block_path(cid).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io_error(f"read block {cid}", exc) from exc

    def _read_verified_sync(self, cid: str, root: str) -> bytes:
        data = self._read_block_sync(cid)
        if data is None:
            if cid == root:
                raise IpfsError(
                    "not_found", f"{cid} is not in the local store", cid=root
                )
            raise IpfsError(
                "not_found",
                f"block {cid} of {root} is missing from the local store",
                cid=root,
            )
        verify_block(cid, data)
        return data

    def _find_missing_sync(self, root: str) -> str | None:
        """Return the CID of the first missing block of the DAG, or None."""
        pending = [root]
        while pending:
            current = pending.pop()
            if _codec(current) == CODEC_RAW:
                if not self._block_path(current).is_file():
                    return current
                continue
            data = self._read_block_sync(current)
            if data is None:
                return current
            verify_block(current, data)
            node = decode_dag_pb(data)
            _decode_file(current, node.data)
            pending.extend(link.cid for link in node.links)
        return None

    def _pin_sync(self, cid: str) -> None:
        missing = self._find_missing_sync(cid)
        if missing == cid:
            raise IpfsError(
                "not_found", f"cannot pin {cid}: not in the local store", cid=cid
            )
        if missing is not None:
            raise IpfsError(
                "not_found",
                f"cannot pin {cid}: its block {missing} is missing",
                cid=cid,
            )
        self._write_pin_sync(cid)

    def _write_pin_sync(self, cid: str) -> None:
        path = self._pins / cid
        if not path.is_file():
            try:
                self._write_atomic_sync(path, b"")
            except OSError as exc:
                raise _io_error(f"write pin {cid}", exc) from exc

    def _remove_pin_sync(self, cid: str) -> bool:
        try:
            (self._pins / cid).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _io_error(f"remove pin {cid}", exc) from exc
        _fsync_dir(self._pins)
        return True

    def _list_pins_sync(self) -> list[str]:
        return sorted(
            entry.name
            for entry in os.scandir(self._pins)
            if entry.is_file() and not entry.name.startswith(".")
        )

    def _stat_sync(self) -> RepoStat:
        size = 0
        count = 0
        for shard in os.scandir(self._blocks):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                try:
                    size += entry.stat().st_size
                except FileNotFoundError:
                    continue
                count += 1
        return RepoStat(repo_size_bytes=size, num_blocks=count)


def _codec(cid: str) -> str:
    return str(pycid.from_string(cid).codec)


def _decode_file(cid: str, data: bytes) -> UnixfsData:
    unixfs = decode_unixfs(data)
    if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
        raise IpfsError(
            "not_a_file",
            f"{cid} is a UnixFS node of type {unixfs.type}, not a file",
            cid=cid,
        )
    return unixfs


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _io_error(action: str, exc: OSError) -> IpfsError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return IpfsError("storage_full", f"{action}: no space left ({exc})")
    return IpfsError("ipfs_failed", f"{action}: {exc}")
