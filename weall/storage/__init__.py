"""Storage: one SQLite database in WAL mode, written by the producer alone.

- ``schema``: numbered, forward-only migrations recorded in ``schema_migrations``.
- ``db``: opening connections; read-only (``mode=ro``) unless the caller is
  ``writer``.
- ``writer``: the only read-write connection, used by the producer actor.
- ``reader``: read-only queries for the api and the other actors.
- ``lock``: the exclusive producer lock beside the database.

Checkpoints: SQLite runs a PASSIVE checkpoint after a commit once the WAL
passes 1000 pages (its default). The checkpointer actor also asks the
producer for a checkpoint every ``WEALL_CHECKPOINT_INTERVAL_S`` seconds: a
PASSIVE one, escalated to TRUNCATE when PASSIVE leaves frames behind or the
WAL file is larger than ``WEALL_WAL_MAX_BYTES``. A busy TRUNCATE is retried
within the round with a capped backoff, and the producer runs every
checkpoint between blocks. When a backup's manifest appears the WAL is
truncated at once, because the backup's read transaction kept it from being
reset.

Backups: every ``WEALL_BACKUP_INTERVAL_S`` seconds (a day by default) the
checkpointer takes a live backup (``weall.storage.backup``) and prunes to
``WEALL_BACKUP_KEEP_DAILY`` daily and ``WEALL_BACKUP_KEEP_WEEKLY`` weekly ones.
"""

from __future__ import annotations

__all__: list[str] = []
