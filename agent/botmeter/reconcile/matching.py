"""Matching the vendor's lines with the recorded calls, and classing them, in SQL.

Both sides are loaded into temporary tables beside the calls database (`vendor`: one row per
readable line, its id the line number; `recorded`: the bot-answered calls around the period),
indexed, and joined:

1. candidate pairs: the same session id (`rank` 0), else the same caller key with the line's
   start within WINDOW_MS of the call's bot answer or offer (`rank` 1; not when both sides
   carry session ids, which then differ);
2. one-to-one, closest first: in rounds, every pair that is the best of both its line and its
   call under the order (rank, time apart, line, call) is matched and their other pairs
   dropped. This gives exactly what taking pairs one by one in that order would, with a few
   set-based rounds instead of a loop over pairs;
3. each line and each call of the period gets its class (`CLASS_SQL`, the one place that
   decides it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

#: a vendor line's start and a call's bot answer (or offer) this far apart still match
WINDOW_MS = 5000

SCHEMA = """
CREATE TEMP TABLE vendor (
    id INTEGER PRIMARY KEY,       -- the line number in the file
    session_id TEXT, caller TEXT, ckey TEXT,
    t INTEGER NOT NULL,           -- started_at, epoch ms
    dur INTEGER NOT NULL,         -- billed duration, ms
    dur_field TEXT NOT NULL,      -- 'seconds' or 'minutes'
    amount TEXT NOT NULL, micro INTEGER NOT NULL
);
CREATE TEMP TABLE recorded (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL, session_id TEXT, caller TEXT, ckey TEXT,
    ta INTEGER, tof INTEGER NOT NULL,  -- bot answer and offer, epoch ms
    measured INTEGER, billed INTEGER,  -- the plan's time metric, ms: measured and after blocks
    cost TEXT, micro INTEGER, outcome TEXT NOT NULL,
    in_period INTEGER NOT NULL
);
CREATE TEMP TABLE pairs (v INTEGER NOT NULL, c INTEGER NOT NULL, rank INTEGER NOT NULL,
                         d INTEGER NOT NULL);
CREATE TEMP TABLE matched (v INTEGER PRIMARY KEY, c INTEGER NOT NULL UNIQUE,
                           rank INTEGER NOT NULL);
"""

_EPOCH_MS = "CAST(round((julianday({0}) - 2440587.5) * 86400000) AS INTEGER)"
_MICRO = "(CASE WHEN abs({0}) < 1e9 THEN CAST(round({0} * 1000000) AS INTEGER) END)"
#: the stored rating's metered seconds of one charge (after min_seconds and blocks), in ms
_METERED_MS = ("(SELECT CAST(round(json_extract(line.value, '$[1]') * 1000) AS INTEGER) "
               "FROM json_each(calls.charges) AS line "
               "WHERE json_extract(line.value, '$[0]') = :charge)")
_SPAN_END = {"bot_seconds": "bot_ended_at", "call_seconds": "ended_at"}


def load_calls(conn: sqlite3.Connection, *, since: str, until: str, start: str, end: str,
               plan_id: str, metric: str, charge: str | None) -> None:
    """The bot-answered calls that ended in [since, until) (the period with a margin, so that
    a line billed in another period is told apart from one never seen); `in_period` marks
    those that ended in [start, end). Amounts count only when rated under `plan_id`."""
    span = _EPOCH_MS.format(f"calls.{_SPAN_END[metric]}")
    answered = _EPOCH_MS.format("calls.bot_answered_at")
    billed = _METERED_MS if charge is not None else "NULL"
    conn.execute(f"""
        INSERT INTO recorded (call_id, session_id, caller, ckey, ta, tof, measured, billed,
                              cost, micro, outcome, in_period)
        SELECT call_id, bot_session_id, caller_number, caller_key(caller_number),
               {answered}, {_EPOCH_MS.format("calls.offered_at")},
               {span} - {answered}, {billed},
               CASE WHEN plan_id = :plan THEN cost END,
               CASE WHEN plan_id = :plan THEN {_MICRO.format("cost")} END,
               outcome, ended_at >= :start AND ended_at < :end
        FROM calls
        WHERE ended_at >= :since AND ended_at < :until AND bot_answered_at IS NOT NULL
        ORDER BY ended_at, call_id""",
                 {"since": since, "until": until, "start": start, "end": end, "plan": plan_id,
                  "charge": charge})


def index(conn: sqlite3.Connection) -> None:
    for statement in (
            "CREATE INDEX temp.vendor_session ON vendor (session_id) WHERE session_id IS NOT NULL",
            "CREATE INDEX temp.recorded_session ON recorded (session_id) "
            "WHERE session_id IS NOT NULL",
            "CREATE INDEX temp.recorded_answer ON recorded (ckey, ta) WHERE ckey IS NOT NULL",
            "CREATE INDEX temp.recorded_offer ON recorded (ckey, tof) WHERE ckey IS NOT NULL"):
        conn.execute(statement)


def find_pairs(conn: sqlite3.Connection) -> None:
    """Candidate pairs: by session id, and by caller key and time."""
    conn.execute("""
        INSERT INTO pairs (v, c, rank, d)
        SELECT v.id, c.id, 0, abs(v.t - coalesce(c.ta, c.tof))
        FROM vendor AS v JOIN recorded AS c ON c.session_id = v.session_id
        WHERE v.session_id IS NOT NULL""")
    conn.execute(f"""
        INSERT INTO pairs (v, c, rank, d)
        SELECT v, c, 1, min(d) FROM (
            SELECT v.id AS v, c.id AS c, abs(v.t - c.ta) AS d, v.session_id AS vs,
                   c.session_id AS cs
            FROM vendor AS v JOIN recorded AS c
              ON c.ckey = v.ckey AND c.ta BETWEEN v.t - {WINDOW_MS} AND v.t + {WINDOW_MS}
            WHERE v.ckey IS NOT NULL
            UNION ALL
            SELECT v.id, c.id, abs(v.t - c.tof), v.session_id, c.session_id
            FROM vendor AS v JOIN recorded AS c
              ON c.ckey = v.ckey AND c.tof BETWEEN v.t - {WINDOW_MS} AND v.t + {WINDOW_MS}
            WHERE v.ckey IS NOT NULL)
        WHERE vs IS NULL OR cs IS NULL
        GROUP BY v, c""")


def match_pairs(conn: sqlite3.Connection,
                on_round: Callable[[int, int], None] | None = None) -> int:
    """One-to-one, closest first (the module's docstring); returns the rounds taken."""
    rounds = 0
    while True:
        rounds += 1
        added = conn.execute("""
            INSERT INTO matched (v, c, rank)
            SELECT v, c, rank FROM (
                SELECT v, c, rank,
                       row_number() OVER (PARTITION BY v ORDER BY rank, d, c) AS by_line,
                       row_number() OVER (PARTITION BY c ORDER BY rank, d, v) AS by_call
                FROM pairs)
            WHERE by_line = 1 AND by_call = 1""").rowcount
        if on_round is not None:
            on_round(rounds, added)
        if added == 0:
            return rounds
        conn.execute("""
            DELETE FROM pairs
            WHERE v IN (SELECT v FROM matched) OR c IN (SELECT c FROM matched)""")
        if conn.execute("SELECT 1 FROM pairs LIMIT 1").fetchone() is None:
            return rounds


#: the class of a matched pair (v: vendor line, c: recorded call), given :tolerance_ms and
#: :tolerance_micro; `botmeter_ms` is the call's duration as the vendor's is meant
CLASS_SQL = """
    CASE
        WHEN abs(v.dur - {botmeter_ms}) > :tolerance_ms THEN 'duration_differs'
        WHEN c.micro IS NULL OR abs(v.micro - c.micro) > :tolerance_micro THEN 'amount_differs'
        ELSE 'match'
    END"""


def botmeter_ms(billed_seconds: bool) -> str:
    """The recorded call's duration to hold the vendor's against: minutes are always billed
    time; seconds are billed time (after the plan's blocks) unless the mapping says measured.
    Without a rated time charge, the measured time."""
    billed = "coalesce(c.billed, c.measured)"
    if billed_seconds:
        return billed
    return f"CASE WHEN v.dur_field = 'minutes' THEN {billed} ELSE c.measured END"
