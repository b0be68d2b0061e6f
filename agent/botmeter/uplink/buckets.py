"""Bucket edges: an hour in UTC, or a day in the plan's time zone. Pure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo

HOUR = 3600


def bucket_start(epoch: float, kind: str, tz: tzinfo) -> float:
    """The start (UTC epoch) of the bucket holding `epoch`."""
    if kind == "hour":
        return float(int(epoch // HOUR) * HOUR)
    local = datetime.fromtimestamp(epoch, tz)
    return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()


def bucket_end(start: float, kind: str, tz: tzinfo) -> float:
    """The end of the bucket that starts at `start` (a day may be 23 or 25 hours long)."""
    if kind == "hour":
        return start + HOUR
    local = datetime.fromtimestamp(start, tz).date() + timedelta(days=1)
    return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()


def buckets(start: float, end: float, kind: str, tz: tzinfo) -> Iterator[tuple[float, float]]:
    """The buckets that overlap [start, end), in order."""
    edge = bucket_start(start, kind, tz)
    while edge < end:
        after = bucket_end(edge, kind, tz)
        yield edge, after
        edge = after


def iso_z(epoch: float) -> str:
    """A bucket edge as the uplink writes it: `2026-11-26T15:00:00Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    """An ISO 8601 time (`Z` or an offset; a time without one is UTC) as a UTC epoch;
    ValueError when it is not one."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
