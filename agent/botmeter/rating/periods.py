"""Billing periods: calendar months in a plan's time zone, named `YYYY-MM`."""

from __future__ import annotations

import re
from datetime import date, datetime, tzinfo

_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])\Z")


def period_of(epoch: float, tz: tzinfo) -> str:
    """The period (`YYYY-MM`) holding a UTC epoch time, in time zone `tz`."""
    moment = datetime.fromtimestamp(epoch, tz)
    return f"{moment.year:04d}-{moment.month:02d}"


def period_of_date(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def parse_period(period: str) -> tuple[int, int]:
    """(year, month) of a `YYYY-MM` period, or ValueError."""
    match = _PERIOD.match(period)
    if not match:
        raise ValueError(f"{period!r} is not a period (YYYY-MM)")
    return int(match[1]), int(match[2])


def shift_period(period: str, months: int) -> str:
    """The period `months` after `period` (before it, when negative)."""
    year, month = parse_period(period)
    index = year * 12 + month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def period_bounds(period: str, tz: tzinfo) -> tuple[float, float]:
    """[start, end) of a period as UTC epoch seconds: local midnights of the 1st."""
    year, month = parse_period(period)
    after = (year + 1, 1) if month == 12 else (year, month + 1)
    start = datetime(year, month, 1, tzinfo=tz).timestamp()
    end = datetime(after[0], after[1], 1, tzinfo=tz).timestamp()
    return start, end


def local_midnight(day: date, tz: tzinfo) -> float:
    """The UTC epoch of the start of `day` in `tz`."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


class PeriodFinder:
    """period_of with the last period's bounds cached: O(1) for calls in time order."""

    __slots__ = ("tz", "start", "end", "period")

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.start = 1.0
        self.end = 0.0
        self.period = ""

    def __call__(self, epoch: float) -> str:
        if self.start <= epoch < self.end:
            return self.period
        self.period = period_of(epoch, self.tz)
        self.start, self.end = period_bounds(self.period, self.tz)
        return self.period
