"""A report's window: [start, end) as UTC epochs, the time zone its days and hours are in, and
the UTC slots whose calls all fall in one local hour (so calls are bucketed by a cheap string
key in SQL and the slots are mapped to local days and hours in Python)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from ..rating.periods import period_bounds
from ..tracking.record import iso_utc

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: slot widths tried, in minutes, and the ISO text prefix length that names such a slot
#: (`2026-11-26T07` is an hour, `2026-11-26T07:4` ten minutes, `2026-11-26T07:45` a minute)
_SLOTS = ((60, 13), (10, 15), (1, 16))


@dataclass(frozen=True, slots=True)
class Window:
    """The calls offered at or after `start` and before `end` (UTC epoch seconds), seen in
    time zone `tz`."""

    start: float
    end: float
    tz: ZoneInfo

    @classmethod
    def month(cls, period: str, tz: ZoneInfo) -> Window:
        start, end = period_bounds(period, tz)
        return cls(start, end, tz)

    @property
    def start_text(self) -> str:
        return iso_utc(self.start)

    @property
    def end_text(self) -> str:
        return iso_utc(self.end)

    def local(self, epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, self.tz)

    def days(self) -> list[date]:
        """Every local calendar day the window touches, in order."""
        first = self.local(self.start).date()
        last = self.local(max(self.start, self.end - 0.001)).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def slot_width(self) -> tuple[int, int]:
        """(minutes, prefix length) of the widest slot that never straddles a local hour in
        this window: an hour in zones whose offsets are whole hours, ten minutes for :30 and
        :45 offsets, else a minute."""
        for minutes, prefix in _SLOTS:
            if self.aligned(minutes):
                return minutes, prefix
        return _SLOTS[-1]

    def aligned(self, minutes: int) -> bool:
        """Whether every UTC slot of `minutes` in this window lies in one local hour."""
        return all(_aligned(moment, self.tz, minutes) for moment in self._slots(minutes))

    def _slots(self, minutes: int) -> Iterator[float]:
        step = minutes * 60
        moment = self.start - self.start % step
        while moment < self.end:
            yield moment
            moment += step


def _aligned(moment: float, tz: tzinfo, minutes: int) -> bool:
    """Whether the slot starting at `moment` lies in one local hour."""
    first = datetime.fromtimestamp(moment, tz)
    last = datetime.fromtimestamp(moment + minutes * 60 - 1, tz)
    return (first.replace(minute=0, second=0) == last.replace(minute=0, second=0)
            and first.utcoffset() == last.utcoffset())


def slot_epoch(key: str) -> float:
    """The UTC epoch of a slot key (an ISO text prefix)."""
    text = key + {13: ":00", 15: "0", 16: ""}[len(key)]
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso_week(day: date) -> str:
    """`2026-W48`: the ISO week (starting Monday) holding a day."""
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"
