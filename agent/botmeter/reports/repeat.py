"""Repeat callers: the same caller number again within 24 hours and within 7 days."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..storage.rollup_query import Range, day_of, day_start
from ..storage.rollups import REPEAT_CLASS, REPEATS
from .window import Window

TOP = 10
#: (caller_number, offered_at, call_id): storage/schema.py, since version 8
CALLER_INDEX = "calls_caller_offered"

#: each number's calls in offered order, from the index alone: no sort, no table row
_TOP = f"""
SELECT caller_number, count(*) AS calls FROM calls INDEXED BY {CALLER_INDEX}
WHERE offered_at >= :start AND offered_at < :end
  AND caller_number IS NOT NULL AND caller_number <> ''
GROUP BY caller_number HAVING count(*) > 1
ORDER BY calls DESC, caller_number LIMIT :top"""


def repeat_callers(conn: sqlite3.Connection, window: Window) -> dict[str, Any]:
    """`repeat_callers`: within_24h / within_7d count the calls whose number called before,
    in the window, at most 24 h / 7 days earlier (a repeat within 24 h is also one within
    7 days); `top`: up to 10 numbers with more than one call, most calls first (ties by
    number)."""
    classes = repeat_classes(conn, window.start_text, window.end_text)
    params = {"start": window.start_text, "end": window.end_text, "top": TOP}
    top = [{"caller_number": number, "calls": calls}
           for number, calls in conn.execute(_TOP, params)]
    return {"within_24h": classes[1], "within_7d": classes[1] + classes[2], "top": top}


def repeat_classes(conn: sqlite3.Connection, start: str, end: str) -> dict[int, int]:
    """The calls offered in [start, end) whose number's previous call was in it too, by how
    long before: class 1 at most 24 hours, class 2 more but at most 7 days. Whole UTC days
    from the repeats roll-up; the hours around them, and the calls after one made on the
    first day after `start`, from the calls."""
    span = Range("offered_at", start, end)
    days = span.clean_days()
    counts = {1: 0, 2: 0}
    first_day, midnight = day_of(start), start == day_start(day_of(start))
    params: dict[str, Any] = {"start": start, "first_day": first_day, "midnight": midnight}
    marks = ", ".join(f":d{i}" for i in range(len(days)))
    params.update({f"d{i}": day for i, day in enumerate(days)})
    queries = []
    if days:
        queries.append(
            f"SELECT class, sum(n) FROM {REPEATS.table} WHERE offered_day IN ({marks}) "
            "AND class > 0 AND (prev_day > :first_day OR (prev_day = :first_day AND :midnight))"
            " GROUP BY class")
    previous, following = (dict(REPEATS.derived)[name].format(c="calls")
                           for name in ("previous", "next"))
    for i, (low, high) in enumerate(span.gaps(days)):
        params[f"low{i}"], params[f"high{i}"] = low, high
        queries.append(
            f"SELECT {REPEAT_CLASS.format(later='offered_at', earlier='previous')} AS class, count(*) "
            f"FROM (SELECT offered_at, {previous} AS previous FROM calls "
            f"WHERE offered_at >= :low{i} AND offered_at < :high{i} AND caller_number <> '' "
            "LIMIT -1) WHERE previous >= :start GROUP BY 1")
    if days and not midnight:  # the next calls of those made on the first day, after start
        params["after"] = day_start(days[0])
        queries.append(
            f"SELECT {REPEAT_CLASS.format(later='next', earlier='offered_at')} AS class, count(*) "
            f"FROM (SELECT offered_at, {following} AS next FROM calls "
            "WHERE offered_at >= :start AND offered_at < :after AND caller_number <> '' "
            f"LIMIT -1) WHERE substr(next, 1, 10) IN ({marks}) GROUP BY 1")
    for query in queries:
        for cls, n in conn.execute(query, params):
            if cls in counts:
                counts[cls] += n
    return counts
