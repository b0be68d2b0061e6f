"""The finished call record: the spec's fields, computed from a call's facts.

`FIELDS` lists the record's fields once, in the order of docs/calls.md's JSON record, each with
its kind of value, where its value comes from and whether it may be null. `CallRecord.to_json`,
the calls table's columns, the row written for a call and the decoder that reads it back
(`storage/columns.py`) are all derived from that list. `CallRecord` itself must be spelled out
for type checkers; at import its field names, order and nullability are checked against
`FIELDS`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from types import MappingProxyType, NoneType
from typing import Any, Literal, NamedTuple, get_args, get_type_hints, overload

Outcome = Literal["handled", "transferred", "abandoned", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("handled", "transferred", "abandoned", "failed")


class ModuleUsage(NamedTuple):
    quantity: Decimal
    unit: str


_NO_MODULES: Mapping[str, ModuleUsage] = MappingProxyType({})

#: csat scores are compared on this scale: others are mapped onto it linearly
CSAT_SCALE = 5


class Csat(NamedTuple):
    """The caller's satisfaction rating of a call: `score` in 1..`scale` (scale 2..10)."""

    score: int
    scale: int = CSAT_SCALE

    def on_five(self) -> Decimal:
        """The score on the 5-point scale: 1 + (score - 1) * 4 / (scale - 1), exact."""
        return 1 + Decimal(self.score - 1) * (CSAT_SCALE - 1) / Decimal(self.scale - 1)

    def to_json(self) -> dict[str, int]:
        return {"score": self.score, "scale": self.scale}


class Kind(Enum):
    """A kind of field value: how it is written in JSON and stored (`storage/columns.py`)."""

    TEXT = "text"
    TIME = "time"  # epoch seconds; JSON and SQLite: ISO 8601 UTC text with milliseconds
    SECONDS = "seconds"  # a duration, float seconds with 3 decimals
    INTEGER = "integer"
    BOOLEAN = "boolean"
    MODULES = "modules"  # module name -> ModuleUsage
    CSAT = "csat"  # Csat; JSON {"score": int, "scale": int}

    @property
    def json_type(self) -> str:
        """The JSON type docs/calls.md gives fields of this kind."""
        return _JSON_TYPES[self]


_JSON_TYPES = {Kind.TEXT: "string", Kind.TIME: "string", Kind.SECONDS: "number",
               Kind.INTEGER: "integer", Kind.BOOLEAN: "boolean", Kind.MODULES: "object",
               Kind.CSAT: "object"}


class Origin(Enum):
    """Where a field's value comes from."""

    RECORD = "record"  # a CallRecord field, stored and read back
    COMPUTED = "computed"  # a CallRecord property computed from the fields; stored for browsing
    RATING = "rating"  # the call's stored rating, null until rated


class Field(NamedTuple):
    """One field of the call record (docs/calls.md, *The JSON record*)."""

    name: str
    kind: Kind
    origin: Origin
    null: bool  # may be null

    @property
    def json_type(self) -> str:
        """The type column of docs/calls.md: `string`, `number or null`..."""
        return self.kind.json_type + (" or null" if self.null else "")


_R, _C, _P = Origin.RECORD, Origin.COMPUTED, Origin.RATING

#: The record's fields, in the spec's order.
FIELDS: tuple[Field, ...] = (
    Field("call_id", Kind.TEXT, _R, False),
    Field("linkedid", Kind.TEXT, _R, False),
    Field("caller_number", Kind.TEXT, _R, True),
    Field("caller_name", Kind.TEXT, _R, True),
    Field("dialed_number", Kind.TEXT, _R, True),
    Field("offered_at", Kind.TIME, _R, False),
    Field("bot_answered_at", Kind.TIME, _R, True),
    Field("bot_ended_at", Kind.TIME, _R, True),
    Field("transferred_at", Kind.TIME, _R, True),
    Field("human_answered_at", Kind.TIME, _R, True),
    Field("ended_at", Kind.TIME, _R, False),
    Field("ring_seconds", Kind.SECONDS, _C, False),
    Field("bot_seconds", Kind.SECONDS, _C, True),
    Field("human_seconds", Kind.SECONDS, _C, True),
    Field("total_seconds", Kind.SECONDS, _C, False),
    Field("outcome", Kind.TEXT, _R, False),
    Field("transfer_target", Kind.TEXT, _R, True),
    Field("transfer_answered", Kind.BOOLEAN, _C, True),
    Field("hangup_cause", Kind.INTEGER, _R, True),
    Field("modules", Kind.MODULES, _R, False),
    Field("plan_id", Kind.TEXT, _P, True),
    Field("cost", Kind.TEXT, _P, True),  # a decimal string at the plan's precision
    Field("currency", Kind.TEXT, _P, True),
    Field("csat", Kind.CSAT, _R, True),
    Field("bot_session_id", Kind.TEXT, _R, True),
    Field("source", Kind.TEXT, _R, False),
    Field("joined_late", Kind.BOOLEAN, _R, False),
)


class CallRecord(NamedTuple):
    """One offered call, as stored and reported. Times are UTC epoch seconds (ms precision).

    Immutable; a NamedTuple because re-rating builds a million of them from SQLite at a time.
    Its fields are the RECORD fields of `FIELDS`, in that order; its properties the COMPUTED
    ones.
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
    csat: Csat | None = None
    #: the bot platform's id for the conversation, from the bot's `start` signal
    bot_session_id: str | None = None
    source: str = "ami"
    #: the agent first saw this call in progress (listed by Asterisk after a restart or a
    #: reconnect, with no record of its start): its times before then are not known
    joined_late: bool = False

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

    def to_json(self, rating: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The spec's JSON record, field for field in `FIELDS` order (rating fields null until
        rated). Module quantities are exact: an int when whole, else a Decimal."""
        rating = rating or {}
        record: dict[str, Any] = {}
        for name, origin, encode in _JSON_PLAN:
            value = rating.get(name) if origin is Origin.RATING else getattr(self, name)
            record[name] = value if encode is None else encode(value)
        return record


def seconds_between(start: float, end: float) -> float:
    """Whole milliseconds between two epoch times, as seconds with 3 decimals."""
    return round(end - start, 3) if end >= start else 0.0


@overload
def iso_utc(ts: float) -> str: ...
@overload
def iso_utc(ts: None) -> None: ...
@overload
def iso_utc(ts: float | None) -> str | None: ...
def iso_utc(ts: float | None) -> str | None:
    """`2026-11-26T15:00:00.123Z`, or None."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(round(ts, 3), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def number_text(value: Decimal) -> str:
    """A quantity's exact digits as a JSON number: `412` when whole, else no trailing zeros
    (`88.4`). Never rounded, never through float."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def exact_number(value: Decimal) -> int | Decimal:
    """A quantity as the spec's JSON number: an int when whole, else the exact Decimal without
    trailing zeros (JSON writers that know Decimal print it digit for digit)."""
    if not value.is_finite():
        return value
    text = number_text(value)
    return Decimal(text) if "." in text else int(text)


def modules_json(modules: Mapping[str, ModuleUsage]) -> dict[str, dict[str, Any]]:
    """`modules` as the spec's JSON object, modules sorted by name."""
    return {name: {"quantity": exact_number(usage.quantity), "unit": usage.unit}
            for name, usage in sorted(modules.items())}


def csat_json(csat: Csat | None) -> dict[str, int] | None:
    return None if csat is None else csat.to_json()


_JSON_ENCODERS: dict[Kind, Callable[[Any], Any]] = {Kind.TIME: iso_utc, Kind.MODULES: modules_json,
                                                    Kind.CSAT: csat_json}
_JSON_PLAN = tuple((f.name, f.origin, _JSON_ENCODERS.get(f.kind)) for f in FIELDS)


def _check_fields() -> None:
    """CallRecord has the RECORD fields of FIELDS (same order, same nullability) and a
    property for every COMPUTED one."""
    record = tuple(f.name for f in FIELDS if f.origin is Origin.RECORD)
    if record != CallRecord._fields:
        raise TypeError(f"CallRecord's fields {CallRecord._fields} differ from FIELDS {record}")
    hints = get_type_hints(CallRecord)
    for f in FIELDS:
        if f.origin is Origin.RECORD and (NoneType in get_args(hints[f.name])) != f.null:
            raise TypeError(f"CallRecord.{f.name} and FIELDS disagree on whether it may be None")
        if f.origin is Origin.COMPUTED and not isinstance(getattr(CallRecord, f.name, None),
                                                          property):
            raise TypeError(f"FIELDS' computed field {f.name} is no CallRecord property")


_check_fields()
