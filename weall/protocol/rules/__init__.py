"""Handlers of every transaction type; importing this package registers them."""

from __future__ import annotations

from weall.protocol.rules import accounts, content, economics, social

__all__ = ["accounts", "content", "economics", "social"]
