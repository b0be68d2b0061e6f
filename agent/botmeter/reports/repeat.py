"""Repeat callers: the same caller number again within 24 hours and within 7 days."""

from __future__ import annotations

import sqlite3
from typing import Any

from .window import Window

DAY_MS, WEEK_MS = 86_400_000, 7 * 86_400_000
TOP = 10
#: (caller_number, offered_at, call_id): storage/schema.py, since version 8
CALLER_INDEX = "calls_caller_offered"

#: a call whose previous call from the same (non-empty) number, in the window, was that many
#: milliseconds before it; LAG over the calls of each number in offered order
_GAPS = """
WITH seen AS (
    SELECT offered_at,
           LAG(offered_at) OVER (PARTITION BY caller_number ORDER BY offered_at, call_id)
               AS previous
    FROM calls
    WHERE offered_at >= :start AND offered_at < :end
      AND caller_number IS NOT NULL AND caller_number <> ''),
gaps AS (
    SELECT CAST(round((julianday(offered_at) - julianday(previous)) * 86400000) AS INTEGER)
               AS gap
    FROM seen WHERE previous IS NOT NULL)
SELECT coalesce(sum(gap <= :day), 0), coalesce(sum(gap <= :week), 0) FROM gaps"""

_TOP = """
SELECT caller_number, count(*) AS calls FROM calls
WHERE offered_at >= :start AND offered_at < :end
  AND caller_number IS NOT NULL AND caller_number <> ''
GROUP BY caller_number HAVING count(*) > 1
ORDER BY calls DESC, caller_number LIMIT :top"""


def repeat_callers(conn: sqlite3.Connection, window: Window, source: str = "calls",
                   ) -> dict[str, Any]:
    """`repeat_callers`: within_24h / within_7d count the calls whose number called before,
    in the window, at most 24 h / 7 days earlier (a repeat within 24 h is also one within
    7 days); `top`: up to 10 numbers with more than one call, most calls first (ties by
    number)."""
    params = {"start": window.start_text, "end": window.end_text, "day": DAY_MS,
              "week": WEEK_MS, "top": TOP}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                    (CALLER_INDEX,)).fetchone():
        # each number's calls in offered order, from the index alone: no sort, no table row
        source = f"calls INDEXED BY {CALLER_INDEX}"
    within_day, within_week = conn.execute(_GAPS.replace("FROM calls", f"FROM {source}"),
                                           params).fetchone()
    top = [{"caller_number": number, "calls": calls}
           for number, calls in conn.execute(_TOP.replace("FROM calls", f"FROM {source}"),
                                             params)]
    return {"within_24h": within_day, "within_7d": within_week, "top": top}
