"""The HTTP API: routes, error format, request limits."""

from __future__ import annotations

__all__: list[str] = []
