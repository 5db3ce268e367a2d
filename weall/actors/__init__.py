"""The actors: producer, checkpointer, pinner, healer and api, one module each.

Each module exposes ``async def run(config, *, task_status)`` and runs in its
own OS process under the supervisor (``weall actor NAME`` runs one by hand).
"""

from __future__ import annotations

__all__: list[str] = []
