"""Helpers shared by the IPFS tests: deterministic bytes, streams, ports."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Final

import trio

# Read at import, before any fixture that clears WEALL_* variables runs.
IPFS_API: Final = os.environ.get("WEALL_TEST_IPFS_API", "")
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
NODE_SCRIPT: Final = REPO_ROOT / "scripts" / "ipfs-test-node.sh"
PIECE_SIZE: Final = 1 << 20


def deterministic_pieces(
    size: int, seed: int = 1, piece_size: int = PIECE_SIZE
) -> Iterable[bytes]:
    """Yield ``size`` pseudo-random bytes in pieces, the same for each seed."""
    generator = random.Random(seed)
    remaining = size
    while remaining > 0:
        count = min(piece_size, remaining)
        yield generator.randbytes(count)
        remaining -= count


def deterministic_bytes(size: int, seed: int = 1) -> bytes:
    return b"".join(deterministic_pieces(size, seed))


async def stream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    """Turn pieces into the async stream that ``add`` reads."""
    for piece in pieces:
        yield piece
        await trio.lowlevel.checkpoint()


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in chunks])


def only_loopback() -> bool:
    """Return whether this process runs in a namespace with only ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port_block(count: int = 4) -> int:
    """Return a port P such that P .. P+count-1 are free on 127.0.0.1."""
    generator = random.Random()
    for _ in range(200):
        base = generator.randrange(20000, 60000)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no block of free ports found on 127.0.0.1")


async def start_daemon(repo_dir: Path, port: int) -> int:
    """Start a daemon with its repo in ``repo_dir`` (reused if present); return its pid."""
    result = await trio.run_process(
        [str(NODE_SCRIPT), "start", str(repo_dir), str(port)], capture_stdout=True
    )
    return int(result.stdout.decode().strip().splitlines()[-1])


async def stop_daemon(pid: int) -> None:
    """Stop a daemon started by ``start_daemon``: SIGTERM, SIGKILL after 10 s."""
    await trio.run_process([str(NODE_SCRIPT), "stop", str(pid)])
