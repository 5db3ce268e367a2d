"""Storage: one SQLite database in WAL mode, written by the producer alone.

- ``schema``: numbered, forward-only migrations recorded in ``schema_migrations``.
- ``db``: opening connections; read-only (``mode=ro``) unless the caller is
  ``writer``.
- ``writer``: the only read-write connection, used by the producer actor.
- ``reader``: read-only queries for the api and the other actors.
- ``lock``: the exclusive producer lock beside the database.

Checkpoints: SQLite runs a PASSIVE checkpoint after a commit once the WAL
passes 1000 pages (its default). The checkpointer actor also asks the
producer for a PASSIVE checkpoint every ``WEALL_CHECKPOINT_INTERVAL_S``
seconds and for a TRUNCATE checkpoint when the WAL file is larger than
``WEALL_WAL_MAX_BYTES``; the producer runs them between blocks.
"""

from __future__ import annotations

__all__: list[str] = []
