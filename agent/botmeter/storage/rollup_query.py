"""Sums over a time range, from the roll-ups where they cover whole UTC days and from the
calls themselves for the rest (`storage/rollups.py` defines both from the same expressions).

A range [start, end) on offered_at or ended_at splits into the whole UTC days inside it
(`clean`), read from the roll-up table, and the hours before the first and after the last of
them, summed from `calls` (at most two partial days: a month in a time zone ahead of or
behind UTC). Days can also be left out of the clean ones on purpose (`dirty`): a day holding
a boundary that the caller must place to the millisecond, such as a plan version's start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from .rollups import Family

#: storage/schema.py's index of offered_at
OFFERED_INDEX = "calls_offered_at_id"
DAY_COLUMNS = {"offered_at": "offered_day", "ended_at": "ended_day"}


def day_of(text: str) -> str:
    """The UTC day of a stored ISO time: `2026-11-26`."""
    return text[:10]


def day_start(day: str) -> str:
    return f"{day}T00:00:00.000Z"


@dataclass(frozen=True, slots=True)
class Range:
    """Calls with `column` in [start, end) (ISO texts); `dirty`: UTC days of `column` that
    are read from the calls even when whole; `dirty_offered`: the same for offered_at, when
    the range is on ended_at (a plan version starting mid-day)."""

    column: str
    start: str
    end: str
    dirty: frozenset[str] = field(default_factory=frozenset)
    dirty_offered: frozenset[str] = field(default_factory=frozenset)

    def gaps(self, days: Sequence[str]) -> list[tuple[str, str]]:
        """The stretches of the range outside the (sorted) whole `days`."""
        stretches, cursor = [], self.start
        for day in days:
            if day_start(day) > cursor:
                stretches.append((cursor, day_start(day)))
            cursor = day_start(next_day(day))
        if cursor < self.end:
            stretches.append((cursor, self.end))
        return stretches

    def clean_days(self) -> list[str]:
        """The whole UTC days inside the range, less the dirty ones."""
        day = date.fromisoformat(day_of(self.start))
        days = []
        while day_start(day.isoformat()) < self.end:
            following = day + timedelta(days=1)
            if (day_start(day.isoformat()) >= self.start
                    and day_start(following.isoformat()) <= self.end
                    and day.isoformat() not in self.dirty):
                days.append(day.isoformat())
            day = following
        return days


def totals(conn: sqlite3.Connection, family: Family, by: Sequence[str], span: Range,
           keys: Mapping[str, tuple[str, str]] | None = None,
           params: Mapping[str, Any] | None = None,
           ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(rolled, raw): the family's values summed by the `by` keys over `span`: rows from the
    roll-up (whole clean days; a `by` key may be a day column) and rows summed from the calls
    (the rest). `keys` may give a `by` key as SQL of its own, over the roll-up's columns and
    over `calls` (e.g. a bucket number in place of a day), with the `params` they name. Each
    row is the `by` values then the family's values; NULL keys are None."""
    days = span.clean_days()
    day_column = DAY_COLUMNS[span.column]
    params = {**(params or {}), "start": span.start, "end": span.end}
    marks = _marks(params, "d", days)
    offered = _marks(params, "o", sorted(span.dirty_offered))
    values = family.value_names()
    rolled: list[tuple[Any, ...]] = []
    if days:
        where = f"{day_column} IN ({marks})"
        if offered:
            where += f" AND offered_day NOT IN ({offered})"
        group = ", ".join((keys or {}).get(name, (name, ""))[0] for name in by)
        positions = ", ".join(str(i + 1) for i in range(len(by)))
        rolled = _decoded(conn.execute(
            f"SELECT {group}{''.join(f', sum({v})' for v in values)} FROM {family.table} "
            f"WHERE {where}"
            + (f" GROUP BY {positions} HAVING sum({values[0]}) <> 0" if by else ""),
            params), len(by))
    own = dict(family.keys)
    selected = [(keys or {}).get(name, ("", family.sql(own[name], "calls", "calls")))[1]
                for name in by]
    sums = [f"sum(coalesce({family.sql(expr, 'calls', 'calls')}, 0))"
            for _, expr in family.values]
    joins = family.joined("calls")
    where = family.sql(family.where, "calls", "calls")
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(by)))}" if by else ""

    def summed_from_calls(rows: str, indexed: str = "") -> list[tuple[Any, ...]]:
        source = family.calls_source(rows, indexed)
        return _decoded(conn.execute(
            f"SELECT {', '.join(selected + sums)} FROM {source}{', ' + joins if joins else ''} "
            f"WHERE {rows} AND {where}{group}", params), len(by))

    raw: list[tuple[Any, ...]] = []
    column = f"calls.{span.column}"
    # one index range per stretch of the span the clean days leave out
    for i, (low, high) in enumerate(span.gaps(days)):
        params[f"low{i}"], params[f"high{i}"] = low, high
        raw += summed_from_calls(f"{column} >= :low{i} AND {column} < :high{i}")
    # with dirty offered days: the calls offered on them among those of the clean days
    for i, day in enumerate(sorted(span.dirty_offered) if days else ()):
        params[f"o_low{i}"], params[f"o_high{i}"] = day_start(day), day_start(next_day(day))
        raw += summed_from_calls(
            f"calls.offered_at >= :o_low{i} AND calls.offered_at < :o_high{i} "
            f"AND {column} >= :start AND {column} < :end "
            f"AND substr({column}, 1, 10) IN ({marks})", OFFERED_INDEX)
    return rolled, raw


def next_day(day: str) -> str:
    """The UTC day after `day` (`2026-11-30` -> `2026-12-01`)."""
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def summed(rows: Iterable[tuple[Any, ...]], keys: int) -> dict[tuple[Any, ...], list[int]]:
    """Rows of (keys..., values...) added up by their first `keys` values."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        key, values = row[:keys], row[keys:]
        total = out.get(key)
        if total is None:
            out[key] = [v or 0 for v in values]
        else:
            for i, v in enumerate(values):
                total[i] += v or 0
    return out


def _marks(params: dict[str, Any], prefix: str, items: Sequence[str]) -> str:
    for i, item in enumerate(items):
        params[f"{prefix}{i}"] = item
    return ", ".join(f":{prefix}{i}" for i in range(len(items)))


def _decoded(cursor: sqlite3.Cursor, keys: int) -> list[tuple[Any, ...]]:
    """Rows with the roll-up's NULL (an empty blob) among their first `keys` values as None."""
    rows = cursor.fetchall()
    if not any(isinstance(v, bytes) for row in rows for v in row[:keys]):
        return rows
    return [tuple(None if isinstance(v, bytes) else v for v in row[:keys]) + row[keys:]
            for row in rows]
