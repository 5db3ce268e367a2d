"""Check a database file and print the result as one JSON line.

``python -m storage_robustness._check_db DB IDS_JSON`` (with ``tests/`` on
``PYTHONPATH``) runs where the test process cannot open the file itself, for
example inside another mount namespace. SQLite resolves symbolic links in a
database path, so ``/proc/PID/root/...`` would lead it back to the caller's
own namespace.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from weall.commands.verify import verify_chain

from ._support import check_blocks_whole, statuses


def check(db_path: Path, tx_ids: list[str]) -> dict[str, object]:
    """Integrity check, whole blocks, the statuses of ``tx_ids`` and a full replay."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        head = check_blocks_whole(conn)
        found = statuses(conn, tx_ids)
        replayed = verify_chain(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {
        "integrity": integrity,
        "head": head,
        "statuses": found,
        "replayed": replayed,
    }


def main(argv: list[str]) -> int:
    tx_ids = json.loads(Path(argv[2]).read_text(encoding="utf-8"))
    print(json.dumps(check(Path(argv[1]), tx_ids)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
