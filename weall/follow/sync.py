"""The sync loop of a follower: fetch, verify and commit the upstream's blocks.

A session starts by comparing the upstream's chain id, genesis hash and
block 0 with this node's, and the upstream's block at this node's tip with
the committed one. It then pages through ``GET /v1/blocks?from=H&limit=N``
and commits each block only after ``weall.follow.verify.verify_block``
passed. At the upstream's tip it polls every ``POLL_S`` seconds.

An unreachable upstream starts a new session after a capped exponential
backoff. An upstream that served anything invalid is rejected: the loop
stops fetching and logs the height and the reason at ERROR. It repeats that
line every ``rejected_log_s`` seconds, and ``statistics()`` reports the
rejection, until the follower restarts.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import trio

from weall.config import Config
from weall.errors import StorageError, StorageFullError, UpstreamError, UpstreamRejected
from weall.follow.upstream import UpstreamClient
from weall.follow.verify import VerifiedBlock, check_identity, check_page, verify_block
from weall.progress import Progress
from weall.protocol.genesis import genesis_info
from weall.protocol.txtypes import GenesisInfo
from weall.storage import queries
from weall.storage.db import write_tip
from weall.storage.fold import fold_until
from weall.storage.writer import Writer

__all__ = ["SyncState", "Syncer"]

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S: Final = 0.5
# Pages are sized to about this many transactions, from the sizes of the
# blocks of the previous page, within 1 to 100 blocks (the api's maximum).
PAGE_TARGET_TXS: Final = 2000
MAX_PAGE_BLOCKS: Final = 100
FIRST_PAGE_BLOCKS: Final = 10
RETRY_BASE_S: Final = 1.0
RETRY_MAX_S: Final = 30.0
STORAGE_RETRY_S: Final = 1.0


class SyncState(enum.Enum):
    """The sync loop's current activity."""

    # Comparing the upstream's chain identity and history with this node's.
    CHECKING = "checking"
    # Fetching and committing blocks that the upstream has and this node lacks.
    SYNCING = "syncing"
    # At the upstream's tip, polling for new blocks.
    CAUGHT_UP = "caught_up"
    # The upstream could not be reached; a new session starts after a backoff.
    UNREACHABLE = "unreachable"
    # The upstream served something invalid; nothing more is fetched from it.
    REJECTED = "rejected"


class Syncer:
    """Follows one upstream and commits what it verified through ``writer``.

    ``limiter`` serialises every use of the writer, shared with the socket
    operations (checkpoints) of the follower actor.
    """

    def __init__(
        self,
        config: Config,
        writer: Writer,
        genesis_doc: dict[str, Any],
        client: UpstreamClient,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.writer = writer
        self.db_path = config.db_path
        self.client = client
        self.limiter = limiter
        self.info: GenesisInfo = genesis_info(genesis_doc)
        self.allow_unsigned = config.allow_unsigned_txs and config.mode == "dev"
        self.head = writer.head()
        self.state = SyncState.CHECKING
        self.rejection: dict[str, Any] | None = None
        self.upstream_height: int | None = None
        self.storage_full = False
        # Trio time before which no fold is tried, after one hit a full disk.
        self._fold_retry_at: float | None = None
        self.tip_failures = 0
        self.blocks_committed = 0
        self.txs_committed = 0
        self.page_blocks = FIRST_PAGE_BLOCKS
        self.block_event = trio.Event()
        self._run_started: float | None = None
        self._run_txs = 0
        self._last_rate: float | None = None
        self._behind_logged = False
        self._progress: Progress | None = None
        self.rejected_log_s = config.follower_rejected_log_s
        self.last_error: str | None = None
        self.state_since_ms = _now_ms()

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Follow the upstream until cancelled; after a rejection, only report it."""
        failures = 0
        while True:
            try:
                # (start, UNREACHABLE) -> CHECKING
                self._set_state(SyncState.CHECKING)
                await self._check_upstream()
                if failures:
                    log.info(
                        "upstream recovered url=%s errors=%d",
                        self.client.base_url,
                        failures,
                    )
                    failures = 0
                    self.last_error = None
                await self._follow()
            except UpstreamError as exc:
                failures += 1
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(failures - 1, 10))
                # any -> UNREACHABLE
                self._set_state(SyncState.UNREACHABLE)
                self.last_error = str(exc)
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "upstream unreachable url=%s failures=%d retry_in=%.1fs error=%s",
                        self.client.base_url,
                        failures,
                        delay,
                        exc,
                    )
                await trio.sleep(delay)
            except UpstreamRejected as exc:
                self._reject(exc)
                await self._repeat_rejection()
                return

    async def _check_upstream(self) -> None:
        check_identity(await self.client.snapshot(), self.info)
        first = await self.client.block(0)
        local_first = await self._read(lambda: committed_block(self.writer, 0))
        if first is None:
            raise UpstreamError(f"{self.client.base_url} has no block 0 yet")
        if not isinstance(first, dict) or first.get("hash") != local_first["hash"]:
            raise UpstreamRejected(
                0, "upstream block 0 differs from the one this node committed"
            )
        await self._check_history(self.head["height"])

    async def _check_history(self, height: int) -> None:
        """Compare the upstream's block at ``height`` with the committed one, if it has one."""
        if height == 0:
            return
        served = await self.client.block(height)
        if served is None:
            return
        local = await self._read(lambda: committed_block(self.writer, height))
        if not isinstance(served, dict) or served.get("hash") != local["hash"]:
            raise UpstreamRejected(
                height,
                "upstream block differs from the one this node committed (history rewritten)",
            )

    async def _follow(self) -> None:
        while True:
            start = self.head["height"] + 1
            page = await self.client.blocks_page(start, self.page_blocks)
            blocks, head_height = check_page(page, start)
            self.upstream_height = head_height
            if not blocks:
                await self._at_tip(head_height)
                polled = trio.current_time()
                await self._fold_while_idle(polled + POLL_S / 2)
                await trio.sleep_until(polled + POLL_S)
                continue
            if self.state is not SyncState.SYNCING:
                # CHECKING or CAUGHT_UP -> SYNCING
                self._set_state(SyncState.SYNCING)
                # Inside an actor stderr is a pipe, so the progress comes out
                # as periodic log lines: height, rate and time left.
                self._progress = Progress(
                    "sync", total=head_height, unit="blocks", logger=log
                )
                self._progress.update(self.head["height"])
            if self._progress is not None:
                self._progress.set_total(head_height)
            committed = 0
            for block in blocks:
                if not await self._commit(block):
                    break
                committed += 1
                if self._progress is not None:
                    self._progress.update(self.head["height"])
            if committed:
                self._size_next_page(blocks[:committed])

    async def _at_tip(self, head_height: int | None) -> None:
        """Handle an empty page: this node has every block the upstream serves."""
        if head_height is not None and head_height < self.head["height"]:
            # The upstream is behind this node: it may be another follower,
            # or a producer restored from an old backup. Its blocks must
            # still be this node's.
            await self._check_history(head_height)
            if not self._behind_logged:
                log.warning(
                    "upstream behind this node upstream_height=%d height=%d",
                    head_height,
                    self.head["height"],
                )
                self._behind_logged = True
        else:
            self._behind_logged = False
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self.state is not SyncState.CAUGHT_UP:
            self._log_caught_up()
            # CHECKING or SYNCING -> CAUGHT_UP
            self._set_state(SyncState.CAUGHT_UP)

    async def _commit(self, block: Any) -> bool:
        """Verify and commit one block; return False when storage is full."""
        try:
            verified = await trio.to_thread.run_sync(
                self._verify_and_commit, block, limiter=self.limiter
            )
        except StorageFullError as exc:
            if not self.storage_full:
                log.error(
                    "sync paused, storage full height=%d: %s", self.head["height"], exc
                )
            self.storage_full = True
            await trio.sleep(STORAGE_RETRY_S)
            return False
        if self.storage_full:
            log.info("sync resumed height=%d", self.head["height"])
            self.storage_full = False
        txs = len(verified.envelopes)
        self.blocks_committed += 1
        self.txs_committed += txs
        self._run_txs += txs
        log.debug(
            "block verified and committed height=%d txs=%d hash=%s",
            verified.height,
            txs,
            verified.result.hash,
        )
        self.block_event.set()
        self.block_event = trio.Event()
        return True

    async def _fold_while_idle(self, until: float) -> None:
        """Fold recent state into the state table, a chunk at a time, until ``until``.

        After a fold hits a full disk, the follower waits 10 times
        ``STORAGE_RETRY_S`` (10 s) before the next try, and logs the error
        once until a fold succeeds.
        """
        retry_at = self._fold_retry_at
        if self.storage_full or (
            retry_at is not None and trio.current_time() < retry_at
        ):
            return
        try:
            moved = await fold_until(self.writer, self.limiter, until)
        except StorageFullError as exc:
            if retry_at is None:
                log.error(
                    "recent state not folded, storage full height=%d waiting=%d: %s",
                    self.head["height"],
                    self.writer.recent_entries,
                    exc,
                )
            self._fold_retry_at = trio.current_time() + STORAGE_RETRY_S * 10
            return
        if retry_at is not None:
            log.info("recent state folding resumed height=%d", self.head["height"])
            self._fold_retry_at = None
        if moved:
            log.debug(
                "recent state folded entries=%d waiting=%d height=%d",
                moved,
                self.writer.recent_entries,
                self.head["height"],
            )

    def _verify_and_commit(self, block: Any) -> VerifiedBlock:
        verified = verify_block(
            self.writer.state,
            self.head,
            block,
            self.info,
            committed=self._committed_heights,
            allow_unsigned=self.allow_unsigned,
        )
        self.writer.commit_verified_block(verified.result, verified.envelopes)
        result = verified.result
        self.head = {
            "height": result.height,
            "hash": result.hash,
            "header": result.header,
            "sig": result.sig,
        }
        self._record_tip(result.height, result.hash)
        return verified

    def _record_tip(self, height: int, block_hash: str) -> None:
        # As on the producer: a tip file that lags behind is harmless.
        try:
            write_tip(self.db_path, height, block_hash)
        except OSError as exc:
            self.tip_failures += 1
            if self.tip_failures == 1 or self.tip_failures % 100 == 0:
                log.warning(
                    "tip file not written height=%d failures=%d: %s",
                    height,
                    self.tip_failures,
                    exc,
                )
            return
        if self.tip_failures:
            log.info("tip file recovered errors=%d", self.tip_failures)
            self.tip_failures = 0

    def _committed_heights(self, tx_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        # 500 ids per statement stays under SQLite's limit on bound
        # parameters, which is 999 in releases before 3.32.
        for offset in range(0, len(tx_ids), 500):
            chunk = tx_ids[offset : offset + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.writer.conn.execute(
                f"SELECT tx_id, height FROM txs WHERE tx_id IN ({marks})", chunk
            )
            found.update(
                (tx_id, -1 if height is None else int(height)) for tx_id, height in rows
            )
        return found

    # -- bookkeeping -------------------------------------------------------------

    async def _read(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self.limiter)

    def _size_next_page(self, blocks: list[Any]) -> None:
        txs = sum(len(block["txs"]) for block in blocks)
        per_block = max(1, txs // max(1, len(blocks)))
        self.page_blocks = max(1, min(MAX_PAGE_BLOCKS, PAGE_TARGET_TXS // per_block))
        log.info(
            "blocks committed to=%d blocks=%d txs=%d upstream_height=%s",
            self.head["height"],
            len(blocks),
            txs,
            self.upstream_height,
        )

    def _set_state(self, state: SyncState) -> None:
        # The rate covers the catch-up at the start of a session, from the
        # first block fetched to the upstream's tip, not the live blocks after it.
        if state is SyncState.SYNCING and self.state is SyncState.CHECKING:
            self._run_started = time.monotonic()
            self._run_txs = 0
        if state is not self.state:
            self.state_since_ms = _now_ms()
        self.state = state

    def _log_caught_up(self) -> None:
        if self.state is SyncState.SYNCING and self._run_started is None:
            return
        if self._run_started is None:
            log.info(
                "caught up height=%d upstream=%s",
                self.head["height"],
                self.client.base_url,
            )
            return
        elapsed = max(time.monotonic() - self._run_started, 1e-6)
        self._last_rate = self._run_txs / elapsed
        log.info(
            "caught up height=%d txs=%d elapsed_s=%.1f tx_per_s=%.0f upstream=%s",
            self.head["height"],
            self._run_txs,
            elapsed,
            self._last_rate,
            self.client.base_url,
        )
        self._run_started = None

    def _reject(self, exc: UpstreamRejected) -> None:
        # any -> REJECTED; final until the actor restarts.
        self._set_state(SyncState.REJECTED)
        self._progress = None
        self.rejection = {
            "height": exc.height,
            "reason": exc.reason,
            "at_ms": self.state_since_ms,
        }
        log.error(
            "upstream rejected url=%s height=%s committed_height=%d reason=%s",
            self.client.base_url,
            exc.height,
            self.head["height"],
            exc.reason,
        )

    async def _repeat_rejection(self) -> None:
        """Log the standing rejection at ERROR every ``rejected_log_s`` until cancelled.

        A rejected follower serves stale reads and keeps running, so one line
        at the moment of the rejection is easy to miss in a busy log.
        """
        assert self.rejection is not None
        repeats = 0
        while True:
            await trio.sleep(self.rejected_log_s)
            repeats += 1
            log.error(
                "upstream still rejected url=%s height=%s committed_height=%d "
                "since_s=%.0f repeats=%d reason=%s; see docs/followers.md",
                self.client.base_url,
                self.rejection["height"],
                self.head["height"],
                (_now_ms() - self.rejection["at_ms"]) / 1000,
                repeats,
                self.rejection["reason"],
            )

    def statistics(self) -> dict[str, Any]:
        """Return the sync summary that ``status``, ``/health`` and the dashboard show.

        ``upstream`` is the configured URL, which contains no credentials
        because ``weall.config`` rejects a URL with any. The ``sync_`` fields
        are set while the state is ``syncing``: the block rate over the last
        few seconds, the transaction rate since the catch-up began, and the
        estimated seconds left at the block rate.
        """
        height = self.head["height"]
        blocks_rate, tx_rate, eta = self._sync_rates()
        return {
            "height": height,
            "tip": self.head["hash"],
            "state": self.state.value,
            "state_since_ms": self.state_since_ms,
            "upstream": self.client.base_url,
            "upstream_height": self.upstream_height,
            "blocks_behind": None
            if self.upstream_height is None
            else max(0, self.upstream_height - height),
            "sync_blocks_per_s": blocks_rate,
            "sync_tx_per_s": tx_rate,
            "sync_eta_s": eta,
            "last_error": self.last_error
            if self.state is SyncState.UNREACHABLE
            else None,
            "rejected": self.rejection,
            "storage_full": self.storage_full,
            "blocks_committed": self.blocks_committed,
            "txs_committed": self.txs_committed,
            "last_sync_tx_per_s": None
            if self._last_rate is None
            else round(self._last_rate, 1),
        }

    def _sync_rates(self) -> tuple[float | None, float | None, float | None]:
        progress = self._progress
        if self.state is not SyncState.SYNCING or progress is None:
            return None, None, None
        stats = progress.statistics()
        blocks_rate = None if stats.rate_per_s is None else round(stats.rate_per_s, 2)
        eta = None if stats.eta_s is None else round(stats.eta_s, 1)
        tx_rate = None
        if self._run_started is not None:
            elapsed = time.monotonic() - self._run_started
            if elapsed > 0:
                tx_rate = round(self._run_txs / elapsed, 1)
        return blocks_rate, tx_rate, eta


def _now_ms() -> int:
    return int(time.time() * 1000)


def committed_block(writer: Writer, height: int) -> dict[str, Any]:
    """Return the committed block at ``height``, which must exist (it is at most the tip)."""
    block = queries.block_at(writer.conn, height)
    if block is None:
        raise StorageError(
            f"database {writer.path} has no block {height} below its tip"
        )
    return block
