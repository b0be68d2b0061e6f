"""Validate the bot's signals, whichever way they came (UserEvent, FastAGI, AGI script)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

SIGNALS = ("start", "end", "usage", "outcome")
SIGNALLED_OUTCOMES = ("handled", "transferred", "failed")
MAX_FIELD = 200
QUANTITY_PLACES = 6  # rating works in millionths of a unit
MAX_QUANTITY = Decimal(10) ** 12
_STEP = Decimal(1).scaleb(-QUANTITY_PLACES)


class SignalError(ValueError):
    """A malformed signal: the message says what is wrong."""


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


Signal = str | Usage | OutcomeSignal  # "start" and "end" carry nothing else


def _field(fields: Mapping[str, str], name: str) -> str:
    """A field by case-insensitive name, stripped; '' when absent."""
    for key, value in fields.items():
        if key.lower() == name:
            return value.strip()[:MAX_FIELD]
    return ""


def parse_signal(signal: str, fields: Mapping[str, str]) -> Signal:
    """The signal's meaning, or SignalError naming the bad field."""
    kind = signal.strip().lower()
    if kind in ("start", "end"):
        return kind
    if kind == "usage":
        module = _field(fields, "module").lower()
        if not module:
            raise SignalError("usage signal without Module")
        raw = _field(fields, "quantity")
        try:
            quantity = Decimal(raw)
        except InvalidOperation:
            raise SignalError(f"usage signal: Quantity {raw!r} is not a decimal number") from None
        if not quantity.is_finite() or quantity < 0:
            raise SignalError(f"usage signal: Quantity {raw!r} must be a number >= 0")
        if quantity > MAX_QUANTITY:
            raise SignalError(f"usage signal: Quantity {raw!r} is implausibly large")
        if quantity != quantity.quantize(_STEP):
            raise SignalError(
                f"usage signal: Quantity {raw!r} has more than {QUANTITY_PLACES} decimal places")
        return Usage(module, Decimal(format(+quantity, "f")), _field(fields, "unit") or "units")
    if kind == "outcome":
        outcome = _field(fields, "outcome").lower()
        if outcome not in SIGNALLED_OUTCOMES:
            raise SignalError(
                f"outcome signal: Outcome {outcome!r} is not one of {', '.join(SIGNALLED_OUTCOMES)}"
            )
        return OutcomeSignal(outcome, _field(fields, "target") or None, _field(fields, "reason") or None)
    raise SignalError(f"unknown signal {signal!r} (expected one of {', '.join(SIGNALS)})")
