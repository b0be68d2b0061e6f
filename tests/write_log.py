"""Counting writes to table `calls` from SQLite itself: triggers that log every INSERT and
UPDATE of a row (with the cost it carries) into a table of the test's own."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path

from botmeter.storage.store import CallStore

_TRIGGERS = """
CREATE TABLE IF NOT EXISTS test_write_log (
    seq INTEGER PRIMARY KEY, op TEXT NOT NULL, call_id TEXT NOT NULL, cost TEXT);
CREATE TRIGGER IF NOT EXISTS test_log_insert AFTER INSERT ON calls BEGIN
    INSERT INTO test_write_log (op, call_id, cost) VALUES ('INSERT', NEW.call_id, NEW.cost);
END;
CREATE TRIGGER IF NOT EXISTS test_log_update AFTER UPDATE ON calls BEGIN
    INSERT INTO test_write_log (op, call_id, cost) VALUES ('UPDATE', NEW.call_id, NEW.cost);
END;
"""


def log_writes(db: Path) -> None:
    """Create the database (schema included) with the write-logging triggers."""
    CallStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.executescript(_TRIGGERS)
    conn.close()


def writes(db: Path) -> dict[str, list[tuple[str, str | None]]]:
    """Per call id, its writes in order: (op, cost written)."""
    conn = sqlite3.connect(db)
    try:
        found: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        for op, call_id, cost in conn.execute(
                "SELECT op, call_id, cost FROM test_write_log ORDER BY seq"):
            found[call_id].append((op, cost))
        return dict(found)
    finally:
        conn.close()
