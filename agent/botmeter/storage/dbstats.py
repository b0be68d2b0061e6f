"""`botmeter db stats`: what a database holds, read in one snapshot from a read-only
connection (`storage.readonly`), so it runs beside the live agent and never changes a file.

Months are billing periods: the month of each call's `ended_at` in the given time zone (the
active plan's, else UTC), as bills and retention count them.
"""

from __future__ import annotations

import sqlite3
from datetime import tzinfo
from pathlib import Path
from typing import Any

from ..uplink import outbox
from .retention import has_table, month_counts
from .spill import spill_path


def database_stats(conn: sqlite3.Connection, path: Path, version: int,
                   tz: tzinfo) -> dict[str, Any]:
    """Calls (in all and per month), the oldest and newest call, rejected rows, the
    uplink outbox by state, the schema version and the sizes, as one JSON-able dict."""
    with outbox.read_snapshot(conn):
        calls = _one(conn, "SELECT count(*) FROM calls")
        oldest, newest = conn.execute("SELECT min(offered_at), max(offered_at) FROM calls"
                                      ).fetchone()
        months = [{"period": period, "calls": count} for period, count in month_counts(conn, tz)]
        rejected = _one(conn, "SELECT count(*) FROM rejected") if has_table(conn, "rejected") else 0
        states = dict.fromkeys(outbox.STATES, 0)
        if has_table(conn, "uplink_outbox"):
            for state, count in conn.execute(
                    "SELECT state, count(*) FROM uplink_outbox GROUP BY state"):
                states[str(state)] = int(count)
        page_size = _one(conn, "PRAGMA page_size")
        pages = _one(conn, "PRAGMA page_count")
        free = _one(conn, "PRAGMA freelist_count")
    spill = spill_path(path)
    return {
        "path": str(path),
        "schema_version": version,
        "timezone": str(tz),
        "calls": calls,
        "oldest_call": oldest,
        "newest_call": newest,
        "months": months,
        "rejected": rejected,
        "uplink_outbox": states,
        "size": {
            "database_bytes": _size(path),
            "wal_bytes": _size(path.with_name(path.name + "-wal")),
            "pages": pages,
            "page_size": page_size,
            "free_bytes": free * page_size,
        },
        "spill_file": None if spill is None or not spill.exists() else
        {"path": str(spill), "bytes": _size(spill)},
    }


def _one(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
