"""Result types that every IPFS backend returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["AddResult", "RepoStat"]


class AddResult(NamedTuple):
    """Outcome of ``add``: the content id and the file's length in bytes."""

    cid: str
    size: int


@dataclass(frozen=True, slots=True)
class RepoStat:
    """Size of a backend's block store.

    Attributes:
        repo_size_bytes: bytes used by stored blocks, pinned or not.
        num_blocks: number of stored blocks.
    """

    repo_size_bytes: int
    num_blocks: int
