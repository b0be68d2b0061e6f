"""`botmeter db vacuum`: give the space of deleted rows (a purge) back to the file system.

SQLite's VACUUM rebuilds the file; in WAL mode the rebuilt pages go through the WAL, which a
TRUNCATE checkpoint then writes back and empties. It holds the write lock while it runs: the
agent's writer waits (and retries, never dropping a call); on a big database run it when
the PBX is quiet. The rebuild is built in a temporary file, not in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from .store import CallStore


@dataclass(frozen=True, slots=True)
class Vacuumed:
    before: int  # bytes of the database file (and its WAL) before
    after: int
    checkpointed: bool  # False: a reader kept the WAL from being emptied (it is, later)


def vacuum(store: CallStore) -> Vacuumed:
    """VACUUM the store's database, then checkpoint its WAL; sqlite3.Error if it cannot."""
    conn = store.db.conn
    before = _bytes(store)
    conn.execute("PRAGMA temp_store = FILE")
    conn.execute("VACUUM")
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    return Vacuumed(before, _bytes(store), checkpointed=not busy)


def _bytes(store: CallStore) -> int:
    total = 0
    for path in (store.path, store.path.with_name(store.path.name + "-wal")):
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total
