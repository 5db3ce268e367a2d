"""The WeAll protocol: pure, deterministic code with no I/O.

Encodings, canonical JSON, envelopes, transaction rules, the state
transition and blocks. Importing this package registers every handler.
"""

from __future__ import annotations

from weall.protocol import rules as _rules  # noqa: F401  registers handlers

__all__: list[str] = []
