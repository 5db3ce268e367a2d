"""The first start of a follower node: its database from the upstream's block 0.

A follower has no producer key, so it cannot sign block 0. It first compares
the upstream's chain id and genesis hash with its own genesis document. It
then fetches block 0, checks that the block commits that document and that
the genesis producer signed it, and stores it as a producer would.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from weall.config import Config
from weall.errors import StartupError, UpstreamError, UpstreamRejected
from weall.follow.upstream import UpstreamClient
from weall.follow.verify import check_identity, verify_genesis_block
from weall.protocol.block import BlockResult
from weall.protocol.genesis import genesis_info
from weall.storage.db import write_tip
from weall.storage.lock import ProducerLock

__all__ = ["create_follower_database", "fetch_genesis_block"]

log = logging.getLogger(__name__)

# Six retries after 0.25, 0.5, 1, 2, 4 and 8 s (plus jitter), about 16 s in
# all, so that a follower started together with its producer waits for it.
FIRST_START_ATTEMPTS = 7


async def fetch_genesis_block(config: Config, document: dict[str, Any]) -> BlockResult:
    """Fetch and check the upstream's block 0.

    Raises:
        UpstreamRejected: the upstream is on another chain.
        UpstreamError: the upstream cannot be reached or has no block 0.
    """
    assert config.upstream_url is not None
    client = UpstreamClient(config.upstream_url, max_attempts=FIRST_START_ATTEMPTS)
    try:
        check_identity(await client.snapshot(), genesis_info(document))
        block = await client.block(0)
    finally:
        await client.aclose()
    if block is None:
        raise UpstreamError(f"{config.upstream_url} has no block 0 yet")
    return verify_genesis_block(document, block)


def create_follower_database(config: Config, document: dict[str, Any]) -> None:
    """Create a follower's database: schema, genesis and the fetched block 0."""
    from weall.storage.writer import Writer  # the writer actors' module

    url = config.upstream_url
    lock = ProducerLock(config.lock_path)
    lock.acquire()
    try:
        if config.db_path.exists():
            raise StartupError(
                f"database {config.db_path} exists; a follower does not overwrite a chain"
            )
        try:
            block0 = trio.run(fetch_genesis_block, config, document)
        except UpstreamRejected as exc:
            raise StartupError(
                f"upstream {url} is not on this node's chain: {exc.reason}; set WEALL_UPSTREAM_URL "
                f"to a node of chain {document['chain_id']!r} or WEALL_GENESIS_PATH to the "
                "upstream's genesis document"
            ) from None
        except UpstreamError as exc:
            raise StartupError(
                f"cannot fetch block 0 from upstream {url}: {exc}; a follower's first start "
                "needs its upstream"
            ) from None
        writer = Writer(config.db_path, synchronous=config.synchronous)
        try:
            writer.migrate()
            writer.initialize(document, block0)
        finally:
            writer.close()
        write_tip(config.db_path, 0, block0.hash, sync=True)
    finally:
        lock.release()
    log.info(
        "created follower database path=%s chain=%s upstream=%s block0=%s",
        config.db_path,
        document["chain_id"],
        url,
        block0.hash,
    )
