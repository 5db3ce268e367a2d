"""IPFS backends: where the node stores and pins media content.

Two backends implement ``IpfsBackend``, chosen by ``WEALL_IPFS_BACKEND``:

- ``local`` (the default): ``LocalBackend``, a block store under
  ``<data dir>/ipfs`` whose CIDs equal those of Kubo's
  ``ipfs add --cid-version=1`` for the same bytes;
- ``kubo``: ``KuboBackend``, a client of the Kubo RPC API (or of an IPFS
  Cluster proxy) at ``WEALL_IPFS_API_URL``.

Every CID that the backends return is CIDv1 in base32, and every CID they
accept may be any spelling of a ``raw`` or ``dag-pb`` sha2-256 CID. Failures
raise ``weall.errors.IpfsError`` with a stable ``code``.

Example::

    async with open_backend(config) as ipfs:
        cid, size = await ipfs.add(request.body, pin=True)
        async for piece in ipfs.cat(cid):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from weall.errors import ConfigError, IpfsError
from weall.ipfs._types import AddResult, RepoStat
from weall.ipfs.kubo import KuboBackend
from weall.ipfs.local import LocalBackend

if TYPE_CHECKING:
    from weall.config import Config

__all__ = [
    "AddResult",
    "IpfsBackend",
    "IpfsError",
    "KuboBackend",
    "LocalBackend",
    "RepoStat",
    "open_backend",
]


class IpfsBackend(Protocol):
    """Operations that every IPFS backend provides.

    Methods that take a CID raise ``IpfsError("invalid_cid")`` for text that
    is not a supported CID. After ``aclose`` every method raises
    ``weall.errors.ClosedError``.
    """

    async def add(self, chunks: AsyncIterable[bytes], *, pin: bool) -> AddResult:
        """Store a file streamed in pieces; return its CID and size in bytes."""
        ...

    def cat(self, cid: str) -> AsyncIterator[bytes]:
        """Yield a file's bytes; ``not_found`` is raised before the first piece."""
        ...

    async def has(self, cid: str) -> bool:
        """Return whether the root block of ``cid`` is stored."""
        ...

    async def pin(self, cid: str) -> None:
        """Pin a whole DAG; raise ``not_found`` when any block is unavailable."""
        ...

    async def unpin(self, cid: str) -> None:
        """Remove a pin; a CID that is not pinned is left as it is."""
        ...

    async def is_pinned(self, cid: str) -> bool:
        """Return whether ``cid`` is pinned as a root (recursively)."""
        ...

    async def list_pins(self) -> list[str]:
        """Return the pinned root CIDs, sorted."""
        ...

    async def stat(self) -> RepoStat:
        """Return the size of the block store."""
        ...

    async def aclose(self) -> None:
        """Release the backend's resources."""
        ...


@asynccontextmanager
async def open_backend(config: Config) -> AsyncIterator[IpfsBackend]:
    """Open the backend that ``config.ipfs_backend`` names and close it on exit.

    ``local`` keeps its blocks under ``config.data_dir / "ipfs"``; ``kubo``
    talks to ``config.ipfs_api_url``.

    Raises:
        ConfigError: for an unknown ``WEALL_IPFS_BACKEND``.
        IpfsError: when the local store's directories cannot be created.
    """
    backend: LocalBackend | KuboBackend
    if config.ipfs_backend == "local":
        backend = await LocalBackend.open(config.data_dir / "ipfs")
    elif config.ipfs_backend == "kubo":
        backend = KuboBackend(config.ipfs_api_url)
    else:
        raise ConfigError(
            "WEALL_IPFS_BACKEND", config.ipfs_backend, "must be local or kubo"
        )
    try:
        yield backend
    finally:
        await backend.aclose()
