"""The finished call record: the spec's fields, computed from a call's facts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

Outcome = Literal["handled", "transferred", "abandoned", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("handled", "transferred", "abandoned", "failed")


class ModuleUsage(NamedTuple):
    quantity: Decimal
    unit: str


_NO_MODULES: Mapping[str, ModuleUsage] = MappingProxyType({})


class CallRecord(NamedTuple):
    """One offered call, as stored and reported. Times are UTC epoch seconds (ms precision).

    Immutable; a NamedTuple because re-rating builds a million of them from SQLite at a time.
    """

    call_id: str
    linkedid: str
    caller_number: str | None
    caller_name: str | None
    dialed_number: str | None
    offered_at: float
    bot_answered_at: float | None
    bot_ended_at: float | None
    transferred_at: float | None
    human_answered_at: float | None
    ended_at: float
    outcome: Outcome
    transfer_target: str | None
    hangup_cause: int | None
    modules: Mapping[str, ModuleUsage] = _NO_MODULES
    source: str = "ami"

    @property
    def transfer_answered(self) -> bool | None:
        if self.outcome != "transferred":
            return None
        return self.human_answered_at is not None

    @property
    def ring_seconds(self) -> float:
        end = self.bot_answered_at if self.bot_answered_at is not None else self.ended_at
        return seconds_between(self.offered_at, end)

    @property
    def bot_seconds(self) -> float | None:
        if self.bot_answered_at is None or self.bot_ended_at is None:
            return None
        return seconds_between(self.bot_answered_at, self.bot_ended_at)

    @property
    def human_seconds(self) -> float | None:
        if self.human_answered_at is None:
            return None
        return seconds_between(self.human_answered_at, self.ended_at)

    @property
    def total_seconds(self) -> float:
        return seconds_between(self.offered_at, self.ended_at)

    def to_json(self, rating: dict[str, Any] | None = None) -> dict[str, Any]:
        """The spec's JSON record, field for field (rating fields null until rated)."""
        rating = rating or {}
        return {
            "call_id": self.call_id,
            "linkedid": self.linkedid,
            "caller_number": self.caller_number,
            "caller_name": self.caller_name,
            "dialed_number": self.dialed_number,
            "offered_at": iso_utc(self.offered_at),
            "bot_answered_at": iso_utc(self.bot_answered_at),
            "bot_ended_at": iso_utc(self.bot_ended_at),
            "transferred_at": iso_utc(self.transferred_at),
            "human_answered_at": iso_utc(self.human_answered_at),
            "ended_at": iso_utc(self.ended_at),
            "ring_seconds": self.ring_seconds,
            "bot_seconds": self.bot_seconds,
            "human_seconds": self.human_seconds,
            "total_seconds": self.total_seconds,
            "outcome": self.outcome,
            "transfer_target": self.transfer_target,
            "transfer_answered": self.transfer_answered,
            "hangup_cause": self.hangup_cause,
            "modules": {
                name: {"quantity": json_number(usage.quantity), "unit": usage.unit}
                for name, usage in sorted(self.modules.items())
            },
            "plan_id": rating.get("plan_id"),
            "cost": rating.get("cost"),
            "currency": rating.get("currency"),
            "source": self.source,
        }


def seconds_between(start: float, end: float) -> float:
    """Whole milliseconds between two epoch times, as seconds with 3 decimals."""
    return round(end - start, 3) if end >= start else 0.0


def iso_utc(ts: float | None) -> str | None:
    """`2026-11-26T15:00:00.123Z`, or None."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(round(ts, 3), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_DAY_EPOCHS: dict[str, int] = {}


def parse_iso_utc(text: str | None) -> float | None:
    """Inverse of `iso_utc`; accepts any ISO 8601 time with a zone. Fast for `iso_utc`'s form."""
    if text is None:
        return None
    if len(text) == 24 and text[23] == "Z" and text[10] == "T":
        day = _DAY_EPOCHS.get(text[:10])
        if day is None:
            day = int(datetime.fromisoformat(text[:10]).replace(tzinfo=UTC).timestamp())
            if len(_DAY_EPOCHS) < 100_000:
                _DAY_EPOCHS[text[:10]] = day
        ms = (day + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])) * 1000
        return (ms + int(text[20:23])) / 1000
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp(), 3)


def json_number(value: Decimal) -> int | float:
    """A Decimal quantity as a JSON number (int when whole)."""
    return int(value) if value == value.to_integral_value() else float(value)
