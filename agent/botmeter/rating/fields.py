"""Reading one TOML table of a plan file: typed values, or PlanError naming the key."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from .errors import PlanError

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
#: a decimal string as people write it: ASCII digits, one optional point, an optional exponent
#: (Decimal() alone also takes "0_12", " 0.12 " and other scripts' digits)
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")

#: every number in a plan file fits in 12 digits before the decimal point and 6 after it
#: (money, quantities, ratios and seconds alike): rating stays exact and fast, and a typo such
#: as "1e999999999" is refused at load instead of stalling the rating thread
MAX_INTEGER_DIGITS = 12
MAX_PLACES = 6


def digits_of(number: Decimal) -> tuple[int, int]:
    """(digits before the decimal point, decimal places) of a finite Decimal, exactly as
    written but without trailing zeros; computed from its tuple, so any exponent is instant."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if trailing == len(digits):  # zero
        return 0, 0
    return max(0, len(digits) + exponent), max(0, -(exponent + trailing))


class Table:
    """One table of a plan file, with its dotted key prefix; refuses unknown keys."""

    def __init__(self, source: str, prefix: str, data: Any, allowed: tuple[str, ...]) -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(data, dict):
            raise PlanError(source, prefix, "must be a table")
        self.data: dict[str, Any] = data
        for name in data:
            if name not in allowed:
                self.fail(name, f"unknown key (allowed: {', '.join(allowed)})")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, reason: str) -> NoReturn:
        raise PlanError(self.source, self.key(name), reason)

    def has(self, name: str) -> bool:
        return name in self.data

    def refuse(self, name: str, reason: str) -> None:
        """Fail if `name` is present (a key that does not apply here)."""
        if name in self.data:
            self.fail(name, reason)

    def text(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if value is None:
            self.fail(name, "required")
        if not isinstance(value, str) or not value.strip():
            self.fail(name, "must be a non-empty string")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.text(name, default)
        if value not in options:
            self.fail(name, f"{value!r} is not one of {', '.join(options)}")
        return value

    def _refuse_float(self, name: str, value: object, wanted: str) -> None:
        """Money and quantities must be exact: a TOML float is refused with a fix to copy."""
        if isinstance(value, float):
            example = _shown(format(Decimal(repr(value)), "f"))
            self.fail(name, f'is a TOML float, which is inexact; write {wanted}, '
                            f'e.g. {name} = "{example}"')

    def money(self, name: str, required: bool = True) -> Decimal | None:
        """A non-negative amount written as a quoted decimal string."""
        if name not in self.data:
            if required:
                self.fail(name, 'required (a quoted decimal string, e.g. "0.12")')
            return None
        value = self.data[name]
        self._refuse_float(name, value, "a quoted decimal string")
        if not isinstance(value, str):
            self.fail(name, f'must be a quoted decimal string, e.g. {name} = "{_shown(str(value))}"')
        amount = self._parse(name, value)
        if amount < 0:
            self.fail(name, f"must not be negative (got {value})")
        return amount

    def decimal(self, name: str, low: Decimal, high: Decimal) -> Decimal:
        """A required number within [low, high] written as a quoted decimal string (a TOML
        float or integer is refused, as for money)."""
        if name not in self.data:
            self.fail(name, f'required (a quoted decimal string, e.g. {name} = "{high}")')
        value = self.data[name]
        self._refuse_float(name, value, "a quoted decimal string")
        if not isinstance(value, str):
            self.fail(name, f'must be a quoted decimal string, e.g. {name} = "{_shown(str(value))}"')
        number = self._parse(name, value)
        if not low <= number <= high:
            self.fail(name, f"must be between {low} and {high} (got {value})")
        return number

    def count(self, name: str, default: int, minimum: int) -> int:
        """A whole number (a TOML integer) of at least `minimum`."""
        value = self.data.get(name, default)
        if type(value) is not int:
            self.fail(name, "must be a whole number (a TOML integer)")
        self._bounded(name, Decimal(value), _shown(str(value)))
        if value < minimum:
            self.fail(name, f"must be at least {minimum} (got {value})")
        return value

    def quantity(self, name: str, default: Decimal | None = None, positive: bool = False,
                 ) -> Decimal | None:
        """An exact quantity: a TOML integer or a quoted decimal string (never a float)."""
        if name not in self.data:
            return default
        value = self.data[name]
        self._refuse_float(name, value, "an integer or a quoted decimal string")
        if type(value) is int:
            number = self._bounded(name, Decimal(value), _shown(str(value)))
        elif isinstance(value, str):
            number = self._parse(name, value)
        else:
            self.fail(name, "must be an integer or a quoted decimal string")
        if number < 0 or (positive and number == 0):
            self.fail(name, f"must be {'greater than 0' if positive else 'at least 0'} (got {value})")
        return number

    def ratio(self, name: str, low: Decimal, high: Decimal | None, default: Decimal | None = None,
              ) -> Decimal:
        """A non-money number (int, float or decimal string) within [low, high]."""
        if name not in self.data:
            if default is None:
                self.fail(name, "required")
            return default
        value = self.data[name]
        if isinstance(value, float):
            number = Decimal(repr(value))
            if number.is_finite():
                number = self._bounded(name, number, repr(value))
        elif type(value) is int:
            number = self._bounded(name, Decimal(value), _shown(str(value)))
        elif isinstance(value, str):
            number = self._parse(name, value)
        else:
            self.fail(name, "must be a number")
        if not number.is_finite() or number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.fail(name, f"must be {bounds} (got {value})")
        return number

    def seconds(self, name: str, default: int, minimum: int) -> int:
        value = self.data.get(name, default)
        if type(value) is not int:
            self.fail(name, "must be a whole number of seconds (a TOML integer)")
        self._bounded(name, Decimal(value), _shown(str(value)))
        if value < minimum:
            self.fail(name, f"must be at least {minimum} (got {value})")
        return value

    def day(self, name: str) -> date | None:
        """A date: a TOML local date or a quoted `YYYY-MM-DD`."""
        if name not in self.data:
            return None
        value = self.data[name]
        if type(value) is date:
            return value
        if isinstance(value, str) and _DATE.match(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.fail(name, f'must be a date "YYYY-MM-DD" (got {value!r})')

    def tables(self, name: str) -> list[Any]:
        value = self.data.get(name, [])
        if not isinstance(value, list):
            self.fail(name, "must be an array of tables")
        return value

    def _parse(self, name: str, text: str) -> Decimal:
        if not _DECIMAL.match(text):
            self.fail(name, f"{_shown(text)!r} is not a decimal number (write ASCII digits with "
                            "at most one decimal point, e.g. \"0.12\")")
        try:
            number = Decimal(text)
        except InvalidOperation:
            self.fail(name, f"{_shown(text)!r} is not a decimal number")
        if not number.is_finite():
            self.fail(name, f"{_shown(text)!r} is not a finite decimal number")
        return self._bounded(name, number, repr(_shown(text)))

    def _bounded(self, name: str, number: Decimal, shown: str) -> Decimal:
        """`number` if it fits MAX_INTEGER_DIGITS.MAX_PLACES, without an exponent
        ("1.5e3" is 1500); else PlanError."""
        integer, places = digits_of(number)
        if integer > MAX_INTEGER_DIGITS:
            self.fail(name, f"{shown} is too large: at most {MAX_INTEGER_DIGITS} digits before "
                            "the decimal point")
        if places > MAX_PLACES:
            self.fail(name, f"{shown} has {places} decimal places: at most {MAX_PLACES}")
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        return number if exponent <= 0 else Decimal(format(number, "f"))


def _shown(text: str, limit: int = 40) -> str:
    """A value as quoted in an error: long ones cut short."""
    return text if len(text) <= limit else f"{text[:limit]}..."
