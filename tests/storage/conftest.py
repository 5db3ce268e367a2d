"""Fixtures for the storage tests: a real database file per test and a chain to fill it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Chain

from weall.protocol.block import BlockResult
from weall.protocol.envelope import Envelope
from weall.storage.writer import Writer

CommitBlock = Callable[..., BlockResult]


@pytest.fixture
def chain() -> Chain:
    return Chain()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "weall.db"


@pytest.fixture
def writer(db_path: Path, chain: Chain) -> Iterator[Writer]:
    """A migrated database holding ``chain``'s genesis and block 0."""
    writer = Writer(db_path, synchronous="NORMAL")
    writer.migrate()
    writer.initialize(chain.document, chain.genesis)
    yield writer
    writer.close()


@pytest.fixture
def commit(writer: Writer, chain: Chain) -> CommitBlock:
    """Return ``commit(*envs)``: store ``envs`` as pending, build the next block, commit it."""

    def commit_block(*envs: Envelope) -> BlockResult:
        if envs:
            writer.store_pending([(env, chain.now_ms - 500) for env in envs])
        result = chain.block(*envs)
        writer.commit_block(result)
        return result

    return commit_block
