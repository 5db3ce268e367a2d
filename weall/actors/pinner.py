"""The pinner: pins what the state assigns to this node's operator account."""

from __future__ import annotations

import logging

import trio

from weall.actors._chain import follow_heads
from weall.config import Config
from weall.storage.reader import ReadPool

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    pool = ReadPool(config.db_path, threads=1)
    task_status.started()
    try:
        async for head in follow_heads(config, pool):
            log.debug("pinner saw height=%d", head["height"])
    finally:
        pool.close()
