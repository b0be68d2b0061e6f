"""Matching the vendor's lines with the recorded calls, and classing them, in SQL.

Both sides are loaded into scratch databases (`vendor`: one row per readable line, its id the
line number; `recorded`: the bot-answered calls around the period), indexed, and joined:

1. candidate pairs: the same session id (`rank` 0), else the same caller key with the line's
   start within WINDOW_MS of the call's bot answer or offer (`rank` 1; not when both sides
   carry session ids, which then differ);
2. one-to-one, closest first: in rounds, every pair that is the best of both its line and its
   call under the order (rank, time apart, line, call) is matched and their other pairs
   dropped. This gives exactly what taking pairs one by one in that order would, with a few
   set-based rounds instead of a loop over pairs. Rank 0 is matched before the rank 1 pairs
   are looked for, among the lines and calls left: the same result, with fewer pairs;
3. each line and each call of the period gets its class (`CLASS_SQL`, the one place that
   decides it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .callers import plain_key_sql, plain_sql

#: a vendor line's start and a call's bot answer (or offer) this far apart still match
WINDOW_MS = 5000

#: the invoice's side, in a database of its own (filled line by line, or column-wise by ADBC)
VENDOR_SCHEMA = """
CREATE TABLE vendor (
    id INTEGER PRIMARY KEY,       -- the line number in the file
    session_id TEXT, caller TEXT, ckey TEXT,
    started TEXT NOT NULL,        -- started_at as written
    t INTEGER NOT NULL,           -- started_at, epoch ms
    dur INTEGER NOT NULL,         -- billed duration, ms
    dur_field TEXT NOT NULL,      -- 'seconds' or 'minutes'
    dur_text TEXT NOT NULL,       -- as written
    amount TEXT NOT NULL, micro INTEGER NOT NULL
)"""
#: candidate pairs: a line, a call, the rank (0: the same session id; 1: caller and time) and
#: how far apart, in ms
_PAIRS = "pairs (v INTEGER NOT NULL, c INTEGER NOT NULL, rank INTEGER NOT NULL, d INTEGER NOT NULL)"
PAIRS_SCHEMA = f"CREATE TABLE {_PAIRS};"
#: the matching's tables, on the reconciling connection
SCHEMA = f"CREATE TEMP TABLE {_PAIRS};" + """
CREATE TEMP TABLE matched (v INTEGER PRIMARY KEY, c INTEGER NOT NULL UNIQUE,
                           rank INTEGER NOT NULL);
CREATE TEMP TABLE result (
    id INTEGER PRIMARY KEY,  -- the output's order: a line's number, then the calls not billed
    cls TEXT NOT NULL, v INTEGER, c INTEGER, rank INTEGER,
    vmicro INTEGER, cmicro INTEGER  -- the two amounts
);
"""
#: the calls' side, in a database of its own (filled while the invoice is read)
RECORDED_SCHEMA = """
CREATE TABLE recorded (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL, session_id TEXT, caller TEXT, ckey TEXT,
    ta INTEGER, tof INTEGER NOT NULL,  -- bot answer and offer, epoch ms
    answered_at TEXT, offered_at TEXT NOT NULL,
    measured INTEGER, billed INTEGER,  -- the plan's time metric, ms: measured and after blocks
    cost TEXT, micro INTEGER, outcome TEXT NOT NULL,
    in_period INTEGER NOT NULL
);
CREATE TABLE caller_keys (caller TEXT PRIMARY KEY, ckey TEXT);
"""

_EPOCH_MS = "CAST(round((julianday({0}) - 2440587.5) * 86400000) AS INTEGER)"
_MICRO = "(CASE WHEN abs({0}) < 1e9 THEN CAST(round({0} * 1000000) AS INTEGER) END)"
#: the stored rating's metered seconds of one charge (after min_seconds and blocks), in ms:
#: the first charge's without a search when it is the one (a plan's time charge comes first)
_METERED_MS = ("(CASE WHEN json_extract(calls.charges, '$[0][0]') = :charge "
               "THEN CAST(round(json_extract(calls.charges, '$[0][1]') * 1000) AS INTEGER) "
               "ELSE (SELECT CAST(round(json_extract(line.value, '$[1]') * 1000) AS INTEGER) "
               "FROM json_each(calls.charges) AS line "
               "WHERE json_extract(line.value, '$[0]') = :charge) END)")
_SPAN_END = {"bot_seconds": "bot_ended_at", "call_seconds": "ended_at"}


def _window(since: str, until: str) -> tuple[str, dict[str, str]]:
    return ("ended_at >= :since AND ended_at < :until AND bot_answered_at IS NOT NULL",
            {"since": since, "until": until})


def fill_caller_keys(conn: sqlite3.Connection, key: Callable[[str], str | None]) -> None:
    """The keys of the copied calls' callers that are not plain digits (`load_calls` gave
    the plain ones theirs in SQL), each such caller's computed once here in Python."""
    callers = [caller for (caller,) in conn.execute(
        f"SELECT DISTINCT caller FROM recorded WHERE caller IS NOT NULL "
        f"AND NOT {plain_sql('caller')}")]
    if not callers:
        return
    conn.executemany("INSERT INTO caller_keys (caller, ckey) VALUES (?, ?)",
                     ((caller, key(caller)) for caller in callers))
    conn.execute("""
        UPDATE recorded SET ckey = (SELECT ckey FROM caller_keys WHERE caller = recorded.caller)
        WHERE caller IN (SELECT caller FROM caller_keys)""")


def load_calls(conn: sqlite3.Connection, *, since: str, until: str, start: str, end: str,
               plan_id: str, metric: str, charge: str | None) -> None:
    """The bot-answered calls that ended in [since, until) (the period with a margin, so that
    a line billed in another period is told apart from one never seen); `in_period` marks
    those that ended in [start, end). Amounts count only when rated under `plan_id`."""
    span = _EPOCH_MS.format(f"calls.{_SPAN_END[metric]}")
    answered = _EPOCH_MS.format("calls.bot_answered_at")
    billed = _METERED_MS if charge is not None else "NULL"
    window, bounds = _window(since, until)
    conn.execute(f"""
        INSERT INTO recorded (call_id, session_id, caller, ckey, ta, tof, answered_at,
                              offered_at, measured, billed, cost, micro, outcome, in_period)
        SELECT call_id, bot_session_id, caller_number,
               CASE WHEN {plain_sql("caller_number")} THEN {plain_key_sql("caller_number")} END,
               {answered}, {_EPOCH_MS.format("calls.offered_at")}, bot_answered_at, offered_at,
               {span} - {answered}, {billed},
               CASE WHEN plan_id = :plan THEN cost END,
               CASE WHEN plan_id = :plan THEN {_MICRO.format("cost")} END,
               outcome, ended_at >= :start AND ended_at < :end
        FROM calls WHERE {window}
        ORDER BY ended_at, call_id""",
                 {**bounds, "start": start, "end": end, "plan": plan_id, "charge": charge})


def index_recorded(conn: sqlite3.Connection) -> bool:
    """The calls' session ids; returns whether each is on one call only."""
    return _index_sessions(conn, "main", "recorded")


def index_vendor(conn: sqlite3.Connection, schema: str) -> bool:
    """The lines' session ids, and callers (with the session id: the index covers
    `caller_pairs`); returns whether each session id is on one line only."""
    conn.execute(f"CREATE INDEX {schema}.vendor_caller ON vendor (ckey, t, session_id)")
    return _index_sessions(conn, schema, "vendor")


def _index_sessions(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    conn.execute(f"CREATE INDEX {schema}.{table}_session ON {table} (session_id) "
                 "WHERE session_id IS NOT NULL")
    return not conn.execute(f"""
        SELECT EXISTS (SELECT 1 FROM {table} WHERE session_id IS NOT NULL
                       GROUP BY session_id HAVING count(*) > 1)""").fetchone()[0]


def repeated_lines(conn: sqlite3.Connection, sessions_unique: bool) -> None:
    """The lines that repeat an earlier one (the same session id; or, without session ids,
    the same caller, start, duration and amount) into the table `repeats`: found on the
    invoice's side alone (`vendor`), beside the matching. The groups of repeated lines are
    found first (few, usually none), then their lines."""
    conn.execute("CREATE TABLE repeats (id INTEGER PRIMARY KEY, first INTEGER, how TEXT)")
    if not sessions_unique:
        conn.execute("""
            INSERT INTO repeats (id, first, how)
            SELECT v.id, g.first, 'session id'
            FROM (SELECT session_id, min(id) AS first FROM vendor
                  WHERE session_id IS NOT NULL GROUP BY session_id HAVING count(*) > 1) AS g
            JOIN vendor AS v ON v.session_id = g.session_id AND v.id != g.first""")
    conn.execute("""
        INSERT INTO repeats (id, first, how)
        SELECT v.id, g.first, 'caller, start, duration and amount'
        FROM (SELECT ckey, t, dur, micro, min(id) AS first FROM vendor
              WHERE session_id IS NULL GROUP BY ckey, t, dur, micro HAVING count(*) > 1) AS g
        JOIN vendor AS v ON v.ckey IS g.ckey AND v.t = g.t AND v.dur = g.dur
                        AND v.micro = g.micro AND v.session_id IS NULL AND v.id != g.first""")


def match_sessions(conn: sqlite3.Connection, unique: bool) -> None:
    """Rank 0: the same session id. With no session id twice on either side (`unique`), every
    such pair is a match (nothing competes); else they go through the rounds of
    `match_pairs`."""
    if unique:
        conn.execute("""
            INSERT INTO matched (v, c, rank)
            SELECT v.id, c.id, 0
            FROM vendor AS v JOIN recorded AS c ON c.session_id = v.session_id
            WHERE v.session_id IS NOT NULL""")
        return
    conn.execute("""
        INSERT INTO pairs (v, c, rank, d)
        SELECT v.id, c.id, 0, abs(v.t - coalesce(c.ta, c.tof))
        FROM vendor AS v JOIN recorded AS c ON c.session_id = v.session_id
        WHERE v.session_id IS NOT NULL""")
    match_pairs(conn)


def caller_pairs(conn: sqlite3.Connection, *, sessions_unique: bool) -> None:
    """Candidate pairs of rank 1, among the lines and calls not matched by session id: the
    same caller key, the line's start near the call's bot answer or offer. One range of the
    lines' (caller, start) index per call: from the offer - window to the answer + window.
    With session ids unique on both sides, a line or call matched by session id is one whose
    id the other side has: this needs no `matched`, and runs beside `match_sessions`."""
    if sessions_unique:
        not_matched = """
          AND (c.session_id IS NULL
               OR NOT EXISTS (SELECT 1 FROM vendor AS w WHERE w.session_id = c.session_id))
          AND (v.session_id IS NULL
               OR NOT EXISTS (SELECT 1 FROM recorded AS r WHERE r.session_id = v.session_id))"""
    else:
        not_matched = """
          AND c.id NOT IN (SELECT c FROM matched)
          AND v.id NOT IN (SELECT v FROM matched)"""
    conn.execute(f"""
        INSERT INTO pairs (v, c, rank, d)
        SELECT v.id, c.id, 1, min(abs(v.t - coalesce(c.ta, c.tof)), abs(v.t - c.tof))
        FROM recorded AS c JOIN vendor AS v
          ON v.ckey = c.ckey
         AND v.t BETWEEN c.tof - {WINDOW_MS} AND coalesce(c.ta, c.tof) + {WINDOW_MS}
        WHERE c.ckey IS NOT NULL
          AND (v.session_id IS NULL OR c.session_id IS NULL)
          AND (abs(v.t - c.tof) <= {WINDOW_MS} OR abs(v.t - c.ta) <= {WINDOW_MS})
          {not_matched}""")


def match_pairs(conn: sqlite3.Connection, source: str = "pairs") -> None:
    """One-to-one, closest first (the module's docstring), the pairs in `source`. When no
    line and no call is in two pairs (the usual case), every pair is a match: tried at once,
    the unique keys of `matched` telling; else in rounds."""
    try:
        conn.execute("INSERT OR FAIL INTO matched (v, c, rank) "
                     f"SELECT v, c, rank FROM {source}")
        if source == "pairs":
            conn.execute("DELETE FROM pairs")  # the next rank's rounds start from none
        return
    except sqlite3.IntegrityError:  # a line or a call in two pairs: undo, and compare
        conn.execute(f"DELETE FROM matched WHERE (v, c) IN (SELECT v, c FROM {source})")
    if source != "pairs":
        conn.execute(f"INSERT INTO pairs SELECT * FROM {source}")
    while True:
        added = conn.execute("""
            INSERT INTO matched (v, c, rank)
            SELECT v, c, rank FROM (
                SELECT v, c, rank,
                       row_number() OVER (PARTITION BY v ORDER BY rank, d, c) AS by_line,
                       row_number() OVER (PARTITION BY c ORDER BY rank, d, v) AS by_call
                FROM pairs)
            WHERE by_line = 1 AND by_call = 1""").rowcount
        if added == 0:
            return
        conn.execute("""
            DELETE FROM pairs
            WHERE v IN (SELECT v FROM matched) OR c IN (SELECT c FROM matched)""")
        if conn.execute("SELECT 1 FROM pairs LIMIT 1").fetchone() is None:
            return


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


def seconds_text(ms: str) -> str:
    """SQL: milliseconds as plain decimal seconds text (`66`, `3.004`, `2.5`)."""
    return (f"CASE WHEN {ms} IS NULL THEN NULL WHEN {ms} % 1000 = 0 THEN CAST({ms} / 1000 AS "
            f"TEXT) ELSE rtrim(printf('%d.%03d', {ms} / 1000, {ms} % 1000), '0') END")


def line_columns(botmeter: str) -> dict[str, str]:
    """Each output column of a line as SQL over `result r`, `vendor v`, `recorded c`
    (`botmeter`: the call's duration as the vendor's is meant, in ms)."""
    return {
        "class": "r.cls", "line": "v.id", "session_id": "v.session_id",
        "caller_number": "v.caller", "started_at": "v.started",
        "seconds": "CASE WHEN v.dur_field = 'seconds' THEN v.dur_text END",
        "minutes": "CASE WHEN v.dur_field = 'minutes' THEN v.dur_text END",
        "vendor_amount": "v.amount", "call_id": "c.call_id", "bot_session_id": "c.session_id",
        "botmeter_caller_number": "c.caller", "bot_answered_at": "c.answered_at",
        "offered_at": "c.offered_at", "outcome": "c.outcome",
        "botmeter_seconds": seconds_text(botmeter), "botmeter_amount": "c.cost",
        "matched_by": "CASE r.rank WHEN 0 THEN 'session_id' WHEN 1 THEN 'caller_time' END",
        # the gap that decided: the line's start to the nearer of the bot's answer and the offer
        "seconds_apart": seconds_text("CASE WHEN r.rank IS NOT NULL THEN "
                                      "min(abs(v.t - coalesce(c.ta, c.tof)), abs(v.t - c.tof)) "
                                      "END"),
    }


def line_json(botmeter: str) -> str:
    """SQL: a line as the spec's JSON object (vendor and botmeter parts null when absent)."""
    col = line_columns(botmeter)
    vendor = (f"json_object('line', v.id, 'session_id', v.session_id, 'caller_number', "
              f"v.caller, 'started_at', {col['started_at']}, v.dur_field, v.dur_text, "
              f"'amount', v.amount)")
    mine = (f"json_object('caller_number', c.caller, 'bot_session_id', c.session_id, "
            f"'bot_answered_at', c.answered_at, 'offered_at', c.offered_at, 'outcome', "
            f"c.outcome, 'seconds', {col['botmeter_seconds']}, 'amount', c.cost)")
    return (f"json_object('class', r.cls, 'vendor', CASE WHEN v.id IS NOT NULL THEN {vendor} "
            f"END, 'call_id', c.call_id, 'botmeter', CASE WHEN c.id IS NOT NULL THEN {mine} "
            f"END, 'matched_by', {col['matched_by']}, 'seconds_apart', "
            f"{col['seconds_apart']})")
