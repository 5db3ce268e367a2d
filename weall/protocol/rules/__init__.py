"""Handlers of every transaction type; importing this package registers them."""

from __future__ import annotations

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
