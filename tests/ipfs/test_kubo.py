"""The kubo backend against the real IPFS test daemon."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from weall.config import Config
from weall.errors import IpfsError
from weall.ipfs import KuboBackend, open_backend
from weall.ipfs.unixfs import CHUNK_SIZE, compute_cid

from ._support import (
    IPFS_API,
    deterministic_bytes,
    free_port_block,
    only_loopback,
    read_all,
    start_daemon,
    stop_daemon,
    stream,
)

pytestmark = pytest.mark.ipfs

# No daemon has this block: the digest is that of the empty file, changed.
ABSENT_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykq"


async def test_add_pin_true_listed(kubo: KuboBackend) -> None:
    data = deterministic_bytes(CHUNK_SIZE + 9, seed=11)

    result = await kubo.add(stream([data]), pin=True)

    assert result.cid == compute_cid(data)
    assert await kubo.is_pinned(result.cid)
    assert result.cid in await kubo.list_pins()


async def test_add_pin_false_not_listed(kubo: KuboBackend) -> None:
    data = deterministic_bytes(100, seed=12)

    result = await kubo.add(stream([data]), pin=False)

    assert await kubo.has(result.cid)
    assert not await kubo.is_pinned(result.cid)
    assert result.cid not in await kubo.list_pins()


async def test_pin_then_unpin(kubo: KuboBackend) -> None:
    result = await kubo.add(stream([deterministic_bytes(3000, seed=13)]), pin=False)

    await kubo.pin(result.cid)
    assert await kubo.is_pinned(result.cid)

    await kubo.unpin(result.cid)
    assert not await kubo.is_pinned(result.cid)
    await kubo.unpin(result.cid)


async def test_cat_round_trip(kubo: KuboBackend) -> None:
    data = deterministic_bytes(3 * CHUNK_SIZE + 77, seed=14)
    result = await kubo.add(stream([data]), pin=False)

    assert await read_all(kubo.cat(result.cid)) == data


async def test_cat_accepts_cidv0_spelling(kubo: KuboBackend) -> None:
    await kubo.add(stream([b"hello world\n"]), pin=False)

    content = await read_all(
        kubo.cat("zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY")
    )

    assert content == b"hello world\n"


@pytest.mark.slow
async def test_has_absent_cid_false(kubo: KuboBackend) -> None:
    with trio.fail_after(10):
        present = await kubo.has(ABSENT_CID)

    assert not present


@pytest.mark.slow
async def test_cat_absent_cid_times_out(kubo: KuboBackend) -> None:
    with trio.fail_after(15), pytest.raises(IpfsError) as caught:
        await read_all(kubo.cat(ABSENT_CID))

    assert caught.value.code == "not_found"


@pytest.mark.slow
async def test_pin_absent_cid_times_out(kubo: KuboBackend) -> None:
    with trio.fail_after(15), pytest.raises(IpfsError) as caught:
        await kubo.pin(ABSENT_CID)

    assert caught.value.code == "not_found"
    assert not await kubo.is_pinned(ABSENT_CID)


async def test_stat_grows_after_add(kubo: KuboBackend) -> None:
    before = await kubo.stat()
    await kubo.add(stream([deterministic_bytes(CHUNK_SIZE * 2, seed=15)]), pin=False)

    after = await kubo.stat()

    assert after.num_blocks >= before.num_blocks + 3
    assert after.repo_size_bytes > before.repo_size_bytes


async def test_version_reported(kubo: KuboBackend) -> None:
    version = await kubo.version()

    assert version


async def test_open_backend_kubo(tmp_path: Path) -> None:
    config = Config(
        db_path=tmp_path / "weall.db", ipfs_backend="kubo", ipfs_api_url=IPFS_API
    )

    async with open_backend(config) as backend:
        result = await backend.add(stream([b"through open_backend"]), pin=True)
        pinned = await backend.is_pinned(result.cid)

    assert isinstance(backend, KuboBackend)
    assert pinned
    assert not (tmp_path / "ipfs").exists()


# --- a second daemon that the test stops and starts ---------------------------


@pytest.fixture
async def restartable(tmp_path: Path) -> AsyncIterator[tuple[Path, int, list[int]]]:
    """Repo dir, API port, and the pids started, which are stopped at the end."""
    if not only_loopback():
        pytest.skip("starts a daemon, so it runs only in a loopback-only namespace")
    pids: list[int] = []
    yield tmp_path / "daemon", free_port_block(4), pids
    for pid in pids:
        await stop_daemon(pid)


@pytest.mark.slow
async def test_retries_until_daemon_starts_again(
    restartable: tuple[Path, int, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    repo_dir, port, pids = restartable
    caplog.set_level(logging.INFO, logger="weall.ipfs.kubo")
    backend = KuboBackend(
        f"http://127.0.0.1:{port}",
        max_attempts=60,
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
    )
    async with backend:
        pids.append(await start_daemon(repo_dir, port))
        result = await backend.add(stream([b"survives a restart"]), pin=True)
        await stop_daemon(pids.pop())

        pinned: list[bool] = []

        async def check_pinned() -> None:
            pinned.append(await backend.is_pinned(result.cid))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(check_pinned)
                pids.append(await start_daemon(repo_dir, port))

    assert pinned == [True]
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        "retry_in=" in message and "op=pin/ls" in message for message in messages
    )
    assert any("recovered op=pin/ls" in message for message in messages)
