"""Validate the bot's signals, whichever way they came (UserEvent, FastAGI, AGI script)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from .session_id import BadSession, check_session

SIGNALS = ("start", "end", "usage", "outcome", "csat")
SIGNALLED_OUTCOMES = ("handled", "transferred", "failed")
MAX_FIELD = 200
QUANTITY_PLACES = 6  # rating works in millionths of a unit
MAX_QUANTITY = Decimal(10) ** 12
_STEP = Decimal(1).scaleb(-QUANTITY_PLACES)
#: module and unit names: printable ASCII that the dialplan, AMI and the reports carry unchanged
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: ASCII digits with at most one decimal point (Decimal() alone also takes 1_000, １２, ١٢, 1e3)
_QUANTITY = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: a csat score or scale: ASCII digits only (int() alone also takes +4, 1_0, ４, ٤)
_WHOLE = re.compile(r"[0-9]+")
#: csat scales: `Scale` from 2 to 10, 5 when absent (or empty)
CSAT_MIN_SCALE = 2
CSAT_MAX_SCALE = 10
CSAT_DEFAULT_SCALE = 5


class SignalError(ValueError):
    """A malformed signal: the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class StartSignal:
    """The bot answered. `session`: the bot platform's id for the conversation (None when the
    signal named none); `dropped`: why a `Session` that was given is not kept. A bad Session
    never refuses the start: the bot's answer time counts without it (docs/signals.md)."""

    session: str | None = None
    dropped: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    module: str
    quantity: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class OutcomeSignal:
    outcome: str
    target: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class CsatSignal:
    """The caller's satisfaction rating: `score` in 1..`scale`, `scale` in 2..10; `source`
    (how it was collected, e.g. dtmf) is checked like other free text but not recorded."""

    score: int
    scale: int
    source: str | None


Signal = str | StartSignal | Usage | OutcomeSignal | CsatSignal  # "end" carries nothing else


def _field(fields: Mapping[str, str], name: str) -> str:
    """A field by case-insensitive name (the first when given twice), stripped; '' when
    absent. Cut one character past MAX_FIELD: a number that long is refused, never read as
    another number; text is cut to MAX_FIELD by `_text`."""
    for key, value in fields.items():
        if key.lower() == name:
            return value.strip()[:MAX_FIELD + 1]
    return ""


def check_name(field: str, value: str) -> str:
    """`value` if it is a valid module or unit name, else SignalError naming the field."""
    if NAME.fullmatch(value) is None:
        raise SignalError(f"usage signal: {field} {value[:80]!r} is not 1-64 characters of "
                          "A-Z a-z 0-9 _ . : -")
    return value


def parse_quantity(raw: str) -> Decimal:
    """A usage quantity: ASCII digits, one optional decimal point, at most 6 places, >= 0."""
    if len(raw) > MAX_FIELD:
        raise SignalError(f"usage signal: Quantity is longer than {MAX_FIELD} characters")
    if _QUANTITY.fullmatch(raw) is None:
        if raw.startswith("-") and _QUANTITY.fullmatch(raw[1:]):
            raise SignalError(f"usage signal: Quantity {raw!r} must be a number >= 0")
        raise SignalError(f"usage signal: Quantity {raw[:80]!r} is not a decimal number "
                          "(ASCII digits and one optional '.')")
    quantity = Decimal(raw)
    if quantity > MAX_QUANTITY:
        raise SignalError(f"usage signal: Quantity {raw!r} is implausibly large")
    if quantity != quantity.quantize(_STEP):
        raise SignalError(
            f"usage signal: Quantity {raw!r} has more than {QUANTITY_PLACES} decimal places")
    return Decimal(format(+quantity, "f"))


def parse_start(fields: Mapping[str, str]) -> StartSignal:
    """A start signal: its `Session` kept when valid, else dropped with the reason; an empty or
    absent one is no session (`Session: ${BOT_SESSION}` with the variable unset)."""
    raw = _field(fields, "session")
    if not raw:
        return StartSignal()
    try:
        return StartSignal(check_session(raw))
    except BadSession as exc:
        return StartSignal(None, f"start signal: {exc}")


def _whole(name: str, raw: str) -> int:
    """A csat field's whole number: ASCII digits only, else SignalError naming the field."""
    if len(raw) > 12:
        raise SignalError(f"csat signal: {name} {raw[:20]!r}... is too long for a score")
    if _WHOLE.fullmatch(raw) is None:
        raise SignalError(f"csat signal: {name} {raw[:80]!r} is not a whole number "
                          "(ASCII digits only)")
    return int(raw)


def parse_csat(fields: Mapping[str, str]) -> CsatSignal:
    """A csat signal: `Scale` (2..10, default 5) first, then `Score` (1..Scale)."""
    raw_scale = _field(fields, "scale")
    scale = _whole("Scale", raw_scale) if raw_scale else CSAT_DEFAULT_SCALE
    if not CSAT_MIN_SCALE <= scale <= CSAT_MAX_SCALE:
        raise SignalError(f"csat signal: Scale {raw_scale[:80]!r} is outside "
                          f"{CSAT_MIN_SCALE}..{CSAT_MAX_SCALE}")
    raw_score = _field(fields, "score")
    if not raw_score:
        raise SignalError("csat signal without Score")
    score = _whole("Score", raw_score)
    if not 1 <= score <= scale:
        raise SignalError(f"csat signal: Score {raw_score[:80]!r} is outside 1..{scale} "
                          f"(Scale {scale})")
    return CsatSignal(score, scale, _text(fields, "source"))


def _text(fields: Mapping[str, str], name: str) -> str | None:
    """A free-text field (Target, Reason, Source), None when absent; control characters become
    spaces, as the AGI script's relay makes them, so all three ways store the same text."""
    return _CONTROL.sub(" ", _field(fields, name)[:MAX_FIELD]) or None


def parse_signal(signal: str, fields: Mapping[str, str]) -> Signal:
    """The signal's meaning, or SignalError naming the bad field."""
    kind = signal.strip().lower()
    if kind == "end":
        return kind
    if kind == "start":
        return parse_start(fields)
    if kind == "usage":
        module = _field(fields, "module")
        if not module:
            raise SignalError("usage signal without Module")
        module = check_name("Module", module).lower()  # checked first: "\u212a".lower() is "k"
        quantity = parse_quantity(_field(fields, "quantity"))
        return Usage(module, quantity, check_name("Unit", _field(fields, "unit") or "units"))
    if kind == "outcome":
        outcome = _field(fields, "outcome").lower()
        if outcome not in SIGNALLED_OUTCOMES:
            raise SignalError(
                f"outcome signal: Outcome {outcome!r} is not one of {', '.join(SIGNALLED_OUTCOMES)}"
            )
        return OutcomeSignal(outcome, _text(fields, "target"), _text(fields, "reason"))
    if kind == "csat":
        return parse_csat(fields)
    raise SignalError(f"unknown signal {signal!r} (expected one of {', '.join(SIGNALS)})")
