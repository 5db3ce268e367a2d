"""Handlers of every transaction type; importing this package registers them.

It also installs the end-block hooks, in the order ``END_BLOCK_ORDER`` fixes.
"""

from __future__ import annotations

from typing import Final

from weall.protocol import block
from weall.protocol.rules import (
    accounts,
    content,
    disputes,
    economics,
    governance,
    groups,
    poh,
    social,
    storage,
)

__all__ = [
    "END_BLOCK_ORDER",
    "accounts",
    "content",
    "disputes",
    "economics",
    "governance",
    "groups",
    "poh",
    "social",
    "storage",
]

# The hooks run in this order after each block's transactions. A hook reads
# what the hooks before it wrote, and when two hooks write the same entry the
# later write is the one the state root commits. So this order is part of the
# protocol. Every replica must use it, and changing it can fork the chain.
END_BLOCK_ORDER: Final = (
    disputes.expire_disputes,
    governance.close_proposals,
    poh.expire_requests,
)
block.END_BLOCK_HOOKS[:] = END_BLOCK_ORDER
