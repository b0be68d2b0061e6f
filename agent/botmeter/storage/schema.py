"""The SQLite layout and its migrations, tracked by `PRAGMA user_version`.

The layout (version 11):

- table `calls`: one row per call. Its columns are the record's fields (`storage/columns.py`,
  derived from `tracking.record.FIELDS`) plus `charges`, `rated_at` and `recorded_at`; module
  usage is the JSON column `modules`, the only place it is kept.
- view `call_modules`: one row per call and module (`call_id`, `module`, `quantity` as exact
  decimal text, `unit`), read from `calls.modules`. Before version 4 this was a table holding
  a second copy of the usage.
- table `rejected`: records the store refused, set aside so that one bad record never
  blocks the others (the record as JSON text, why, and when).
- tables `uplink_outbox` and `uplink_state`: the summaries queued for the vendor, one row per
  revision of a (plan, bucket) with its delivery state, and the uplink's watermarks
  (`botmeter.uplink.outbox`); table `uplink_moved`, filled by the trigger `calls_moved`: the
  old end of a call stored again with another one, so its old bucket is summarised again.
- tables `rollup_*` (version 9): the calls summed per UTC day or 15-minute slot, kept by
  triggers on `calls` (`botmeter.storage.rollups`), and two expression indexes of the
  durations the report's percentiles read.
- table `recovery_state` (version 10): the agent's checkpoint for healing gaps from Asterisk's
  own records (`botmeter.recovery.checkpoint`): JSON values by name. Version 10 also adds the
  calls' `joined_late` column.
- column `calls.bot_session_id` and its index `calls_bot_session_id` (version 11): the bot
  platform's session id of a call, which invoice reconciliation joins on.
- table `budget_alerts`: the budget warnings the running agent logged, one row per (period,
  threshold), so that each is given once per month, across restarts.

A new database is created at the latest version with sqlite-utils. An older one is brought up
to date step by step: versions 1 to 3 by the SQL they shipped with (kept as it was), then
`_to_version_4` to `_to_version_8`, then the roll-ups (version 9), `_to_version_10` and
`_to_version_11`. Migrating takes the write lock first and reads the version again under it,
so two processes opening a new or old database at once migrate it once.
"""

from __future__ import annotations

import sqlite_utils

from .columns import CALL_COLUMNS, NOT_NULL, PRIMARY_KEY
from .rollups import create_rollups

#: The migrations botmeter shipped before version 4, exactly as they were.
LEGACY_MIGRATIONS: tuple[str, ...] = (
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
    # 3: records the store refused, set aside so that one bad record never blocks the others
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

SCHEMA_VERSION = 11

REJECTED_COLUMNS: dict[str, type] = {"id": int, "call_id": str, "record": str, "reason": str,
                                     "rejected_at": str}

#: the uplink's outbox: one row per summary revision of a (plan, bucket), with its delivery
UPLINK_OUTBOX_COLUMNS: dict[str, type] = {
    "id": int, "agent_id": str, "plan_id": str, "bucket_start": str, "bucket_end": str,
    "revision": int, "summary": str, "digest": str, "key": str, "state": str,
    "created_at": str, "attempts": int, "lease_owner": str, "lease_until": float, "sent": str,
    "last_attempt_at": str, "last_status": int, "last_error": str, "delivered_at": str,
}
UPLINK_OUTBOX_NOT_NULL = ("agent_id", "plan_id", "bucket_start", "bucket_end", "revision",
                          "summary", "digest", "key", "state", "created_at", "attempts")
#: the uplink's bookkeeping, as JSON values by name (watermarks, last success and error)
UPLINK_STATE_COLUMNS: dict[str, type] = {"name": str, "value": str}
#: the budget warnings the running agent gave: one row per (period, threshold), so each is
#: logged once per month, across restarts (`botmeter.reports.budget`)
#: the agent's recovery bookkeeping, as JSON values by name (its checkpoint)
RECOVERY_STATE_COLUMNS: dict[str, type] = {"name": str, "value": str}
BUDGET_ALERTS_COLUMNS: dict[str, type] = {"period": str, "threshold": str, "amount": str,
                                          "budget": str, "alerted_at": str}

#: index name -> (table, columns): re-rating reads a period by ended_at, `calls` lists by
#: offered_at, both in call_id order among equal times; the report's repeat callers read
#: each caller's calls in offered order (`calls_caller_offered`, covering, since version 8)
INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "calls_ended_at_id": ("calls", ("ended_at", "call_id")),
    "calls_offered_at_id": ("calls", ("offered_at", "call_id")),
    "calls_caller_offered": ("calls", ("caller_number", "offered_at", "call_id")),
    "calls_bot_session_id": ("calls", ("bot_session_id",)),  # reconcile's join (version 11)
    "rejected_call_id": ("rejected", ("call_id",)),
    "uplink_outbox_bucket": ("uplink_outbox", ("plan_id", "bucket_start", "revision")),
    "uplink_outbox_state": ("uplink_outbox", ("state", "bucket_start")),
}
UNIQUE_INDEXES = ("uplink_outbox_bucket",)

#: one row per call and module, from calls.modules ({module: [quantity, unit]})
CALL_MODULES_VIEW = """SELECT calls.call_id AS call_id, usage.key AS module,
       json_extract(usage.value, '$[0]') AS quantity,
       json_extract(usage.value, '$[1]') AS unit
FROM calls, json_each(calls.modules) AS usage"""


class SchemaError(Exception):
    """The database was written by a newer botmeter."""


def user_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> int:
    """Create the layout, or bring an older one up to date; return the version it is at."""
    version = user_version(db)
    if version == SCHEMA_VERSION:
        return version
    if version > SCHEMA_VERSION:
        raise _too_new(version)
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")  # the write lock first: another process may be migrating
    try:
        version = user_version(db)
        if version > SCHEMA_VERSION:
            raise _too_new(version)
        if version == 0:
            create_layout(db)
        elif version < SCHEMA_VERSION:
            for script in LEGACY_MIGRATIONS[version:]:
                db.executescript(script)
            if version < 4:
                _to_version_4(db)
            if version < 5:
                _to_version_5(db)
            if version < 6:
                _to_version_6(db)
            if version < 7:
                _to_version_7(db)
            if version < 8:
                _to_version_8(db)
            if version < 9:
                create_rollups(db.execute)
            if version < 10:
                _to_version_10(db)
            _to_version_11(db)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def _too_new(version: int) -> SchemaError:
    return SchemaError(
        f"database schema version {version} is newer than this botmeter ({SCHEMA_VERSION})")


def create_layout(db: sqlite_utils.Database) -> None:
    """The latest layout, in a database that has none."""
    db.table("calls").create(CALL_COLUMNS, pk=PRIMARY_KEY, not_null=NOT_NULL)
    db.table("rejected").create(REJECTED_COLUMNS, pk="id",
                                not_null=("record", "reason", "rejected_at"))
    _create_uplink_tables(db)
    _create_budget_alerts(db)
    _create_recovery_state(db)
    _create_indexes(db)
    db.create_view("call_modules", CALL_MODULES_VIEW)
    create_rollups(db.execute)


def _create_budget_alerts(db: sqlite_utils.Database) -> None:
    db.table("budget_alerts").create(BUDGET_ALERTS_COLUMNS, pk=("period", "threshold"),
                                     not_null=("amount", "budget", "alerted_at"),
                                     if_not_exists=True)


#: a call stored again with another end: where it was, so that the uplink summarises the
#: bucket it left again (INSERT OR REPLACE fires no DELETE trigger; this runs before it)
CALLS_MOVED_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS calls_moved BEFORE INSERT ON calls
WHEN EXISTS (SELECT 1 FROM calls WHERE call_id = NEW.call_id AND ended_at IS NOT NEW.ended_at)
BEGIN
    INSERT INTO uplink_moved (ended_at) SELECT ended_at FROM calls WHERE call_id = NEW.call_id;
END"""


def _create_uplink_tables(db: sqlite_utils.Database) -> None:
    db.table("uplink_outbox").create(UPLINK_OUTBOX_COLUMNS, pk="id",
                                     not_null=UPLINK_OUTBOX_NOT_NULL, defaults={"attempts": 0},
                                     if_not_exists=True)
    db.table("uplink_state").create(UPLINK_STATE_COLUMNS, pk="name", not_null=("value",),
                                    if_not_exists=True)
    db.table("uplink_moved").create({"id": int, "ended_at": str}, pk="id",
                                    not_null=("ended_at",), if_not_exists=True)
    db.execute(CALLS_MOVED_TRIGGER)


def _create_indexes(db: sqlite_utils.Database) -> None:
    """The indexes of INDEXES whose table and columns exist (a migration step before the one
    that adds a column leaves its index to that step)."""
    for name, (table, columns) in INDEXES.items():
        if db.table(table).exists() and set(columns) <= set(db.table(table).columns_dict):
            db.table(table).create_index(columns, index_name=name, if_not_exists=True,
                                         unique=name in UNIQUE_INDEXES)


def _create_recovery_state(db: sqlite_utils.Database) -> None:
    db.table("recovery_state").create(RECOVERY_STATE_COLUMNS, pk="name", not_null=("value",),
                                      if_not_exists=True)


def _to_version_11(db: sqlite_utils.Database) -> None:
    """Version 10 -> 11: the bot platform's session id of each call (older calls: none) and
    its index."""
    if "bot_session_id" not in db["calls"].columns_dict:
        db.execute("ALTER TABLE calls ADD COLUMN bot_session_id TEXT")
    _create_indexes(db)


def _to_version_10(db: sqlite_utils.Database) -> None:
    """Version 9 -> 10: whether the agent joined a call late (older calls: no), and the
    recovery checkpoint's table."""
    if "joined_late" not in db["calls"].columns_dict:
        db.execute("ALTER TABLE calls ADD COLUMN joined_late INTEGER NOT NULL DEFAULT 0")
    _create_recovery_state(db)


def _to_version_8(db: sqlite_utils.Database) -> None:
    """Version 7 -> 8: the index of each caller's calls in offered order."""
    _create_indexes(db)


def _to_version_7(db: sqlite_utils.Database) -> None:
    """Version 6 -> 7: the budget warnings given (`budget_alerts`)."""
    _create_budget_alerts(db)


def _to_version_6(db: sqlite_utils.Database) -> None:
    """Version 5 -> 6: the caller's satisfaction rating (`csat`, JSON; older calls NULL)."""
    if "csat" not in db["calls"].columns_dict:
        db.execute("ALTER TABLE calls ADD COLUMN csat TEXT")


def _to_version_5(db: sqlite_utils.Database) -> None:
    """Version 4 -> 5: the uplink's outbox and state tables."""
    _create_uplink_tables(db)
    _create_indexes(db)


#: calls whose modules JSON lacks, or differs from, a row of the call_modules table
_MODULES_BEHIND = """
SELECT DISTINCT m.call_id FROM call_modules m JOIN calls c ON c.call_id = m.call_id
WHERE c.modules IS NULL
   OR json_extract(c.modules, '$.' || json_quote(m.module)) IS NOT json_array(m.quantity, m.unit)
"""


def _to_version_4(db: sqlite_utils.Database) -> None:
    """Version 3 -> 4: module usage kept only in calls.modules; call_modules becomes a view.

    Every save since version 2 wrote both copies in one transaction, so the JSON is complete;
    a call whose JSON lacks or differs from a call_modules row (an edit by hand) gets its
    usage from the table, which versions 1 to 3 documented as the one to query. An empty
    `{}` (written by migration 2 for calls without usage) becomes NULL, as saves write it.
    The indexes on ended_at and on offered_at alone give way to (offered_at, call_id) and
    the (ended_at, call_id) one migration 2 made.
    """
    db.execute(f"""
        UPDATE calls SET modules = (
            SELECT json_group_object(module, json_array(quantity, unit))
            FROM call_modules m WHERE m.call_id = calls.call_id)
        WHERE call_id IN ({_MODULES_BEHIND})""")
    db.execute("UPDATE calls SET modules = NULL WHERE modules = '{}'")
    db["call_modules"].drop()
    db.create_view("call_modules", CALL_MODULES_VIEW)
    for index in ("calls_ended_at", "calls_offered_at"):
        db.execute(f"DROP INDEX IF EXISTS {index}")
    _create_indexes(db)

