"""The bot seconds and human waits of a report's window, for its percentiles and histogram.

Counts per whole second come from the durations roll-up (whole UTC days) and the calls (the
partial days at the window's edges); a percentile's exact milliseconds are then read from the
one second that holds it, through that duration's expression index (`storage/rollups.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

from ..storage.rollup_query import Range, summed, totals
from ..storage.rollups import DURATION_INDEXES, DURATIONS
from .window import Window


class Distribution:
    """One kind of duration (`bot` or `wait`) of the window's calls, in milliseconds."""

    def __init__(self, conn: sqlite3.Connection, window: Window, kind: str,
                 counts: dict[int, int]) -> None:
        self.conn, self.window, self.kind = conn, window, kind
        self.seconds = sorted(counts.items())  # (whole second, calls)
        self.count = sum(n for _, n in self.seconds)
        self._values: dict[int, list[int]] = {}

    def histogram(self, edges: Sequence[int]) -> list[dict[str, Any]]:
        """Calls per bucket [from, to) of seconds, the last one open."""
        buckets = []
        for i, edge in enumerate(edges):
            upper = edges[i + 1] if i + 1 < len(edges) else None
            calls = sum(n for second, n in self.seconds
                        if second >= edge and (upper is None or second < upper))
            buckets.append({"from": edge, "to": upper, "calls": calls})
        return buckets

    def percentile(self, p: float) -> float | None:
        """Linear interpolation between the closest ranks (the median of an even count is
        the mean of the middle two); None for no values."""
        if not self.count:
            return None
        position = p * (self.count - 1)
        low = int(position)
        high = min(low + 1, self.count - 1)
        first, last = self.at(low), self.at(high)
        return first + (last - first) * (position - low)

    def at(self, rank: int) -> int:
        """The value at 0-based `rank` in ascending order."""
        before = 0
        for second, n in self.seconds:
            if rank < before + n:
                return self._second(second)[rank - before]
            before += n
        raise IndexError(rank)

    def _second(self, second: int) -> list[int]:
        values = self._values.get(second)
        if values is None:
            name, expression, where = DURATION_INDEXES[self.kind]
            values = self._values[second] = [value for (value,) in self.conn.execute(
                f"SELECT {expression} AS v FROM calls INDEXED BY {name} WHERE {where} "
                f"AND {expression} >= :low AND {expression} < :high "
                "AND offered_at >= :start AND offered_at < :end ORDER BY v",
                {"low": second * 1000, "high": second * 1000 + 1000,
                 "start": self.window.start_text, "end": self.window.end_text})]
        return values


class Durations:
    """Both kinds of duration of a window's calls, counted per whole second."""

    def __init__(self, conn: sqlite3.Connection, window: Window) -> None:
        self.conn, self.window = conn, window
        span = Range("offered_at", window.start_text, window.end_text)
        self.counts: dict[str, dict[int, int]] = {"bot": {}, "wait": {}}
        for (kind, second), (n,) in summed(
                chain(*totals(conn, DURATIONS, ("kind", "sec"), span)), 2).items():
            if n:
                self.counts[kind][second] = n

    def of(self, kind: str) -> Distribution:
        return Distribution(self.conn, self.window, kind, self.counts[kind])
