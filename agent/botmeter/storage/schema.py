"""The SQLite schema and its migrations, tracked by `PRAGMA user_version`."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: calls and their module usage
    """
    CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        linkedid TEXT NOT NULL,
        caller_number TEXT,
        caller_name TEXT,
        dialed_number TEXT,
        offered_at TEXT NOT NULL,
        bot_answered_at TEXT,
        bot_ended_at TEXT,
        transferred_at TEXT,
        human_answered_at TEXT,
        ended_at TEXT NOT NULL,
        ring_seconds REAL,
        bot_seconds REAL,
        human_seconds REAL,
        total_seconds REAL,
        outcome TEXT NOT NULL,
        transfer_target TEXT,
        transfer_answered INTEGER,
        hangup_cause INTEGER,
        source TEXT NOT NULL,
        plan_id TEXT,
        cost TEXT,
        currency TEXT,
        recorded_at TEXT NOT NULL
    );
    CREATE INDEX calls_ended_at ON calls (ended_at);
    CREATE INDEX calls_offered_at ON calls (offered_at);
    CREATE TABLE call_modules (
        call_id TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        module TEXT NOT NULL,
        quantity TEXT NOT NULL,
        unit TEXT NOT NULL,
        PRIMARY KEY (call_id, module)
    );
    """,
    # 2: each call's rating lines (JSON: [[charge, metered, amount], ...]) and when it was rated;
    #    module usage also as JSON on the call ({module: [quantity, unit]}), so a period's calls
    #    load in one pass for re-rating (call_modules stays the table to query)
    """
    ALTER TABLE calls ADD COLUMN charges TEXT;
    ALTER TABLE calls ADD COLUMN rated_at TEXT;
    ALTER TABLE calls ADD COLUMN modules TEXT;
    UPDATE calls SET modules = (
        SELECT json_group_object(module, json_array(quantity, unit))
        FROM call_modules m WHERE m.call_id = calls.call_id);
    CREATE INDEX calls_ended_at_id ON calls (ended_at, call_id);
    """,
    # 3: records the store refused (a value SQLite cannot hold), set aside so that one bad
    #    record never blocks the others: the record as JSON text, why, and when
    """
    CREATE TABLE rejected (
        id INTEGER PRIMARY KEY,
        call_id TEXT,
        record TEXT NOT NULL,
        reason TEXT NOT NULL,
        rejected_at TEXT NOT NULL
    );
    CREATE INDEX rejected_call_id ON rejected (call_id);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    """The database was written by a newer botmeter."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; return the version it is at."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {version} is newer than this botmeter ({SCHEMA_VERSION})")
    for number in range(version, SCHEMA_VERSION):
        conn.executescript(f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;")
    return SCHEMA_VERSION
