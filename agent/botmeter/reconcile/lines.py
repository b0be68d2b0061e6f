"""One line of the vendor's usage detail, read from its text fields by the mapping: pure.

`LineReader.read_batch(lines)` gives each line's `VendorLine` fields, column by column, or
raises `LineError` saying what is wrong with which field; the file readers (`invoice.py`) read
a failing batch line by line to add the file and line number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from .callers import caller_key
from .mapping import InvoiceMapping

#: a value longer than this (a session id, a caller, a time, a number) is not one: refused
#: before it is read, so that no cache or batch holds it
MAX_VALUE = 200
#: a caller number is shown (and matched) at most this long
SHOWN_DIGITS = 64
#: amounts and durations: below a billion, at most 6 decimal places (whole millionths)
PLACES = 6
_PLAIN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_GROUPED_POINT = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")
_GROUPED_COMMA = re.compile(r"[+-]?[0-9]{1,3}(?:[. ][0-9]{3})+(?:,[0-9]*)?")
_PLAIN_COMMA = re.compile(r"[+-]?[0-9]+(?:,[0-9]*)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


#: the fields of a line, in the order `LineReader.read_batch` takes them
FIELDS = ("session_id", "caller_number", "started_at", "seconds", "minutes", "amount", "currency")
_SCALE = 10**PLACES
_PAD = tuple(10 ** (PLACES - n) for n in range(PLACES + 1))


def too_long(fields: Sequence[str | None]) -> str | None:
    """The problem with the first value (in `FIELDS` order) longer than MAX_VALUE, if any."""
    if max(map(len, filter(None, fields)), default=0) <= MAX_VALUE:
        return None
    name = next(name for name, value in zip(FIELDS, fields, strict=True)
                if value and len(value) > MAX_VALUE)
    return f"{name}: longer than {MAX_VALUE} characters"


class LineError(ValueError):
    """A line that cannot be reconciled: the message names the field and what is wrong."""


class VendorLine(NamedTuple):
    """A vendor line as reconciled: the start in epoch milliseconds (UTC), the duration in
    milliseconds and as written, the amount as written (plain decimal text) and in
    millionths."""

    line: int  # in the file
    session_id: str | None
    caller_number: str | None
    caller_key: str | None
    started_at: str  # as written
    started_ms: int
    duration_ms: int
    duration_field: str  # "seconds" or "minutes": which one the vendor gave
    duration: str
    amount: str
    amount_micro: int


class LineReader:
    """Reads lines under one mapping, for a plan billed in `currency`."""

    def __init__(self, mapping: InvoiceMapping, currency: str) -> None:
        self.mapping = mapping
        self.currency = currency
        self.zone: ZoneInfo | None = mapping.zone
        self.country = mapping.format.country_code
        self.comma = mapping.format.decimal_comma
        self.point = "," if self.comma else "."  # what separates the decimals
        self.time_format = mapping.format.time_format
        self.default_currency = mapping.format.currency
        # invoices repeat their amounts, durations and callers: each text is read once
        self.decimal = lru_cache(maxsize=1 << 16)(self._decimal)
        self.duration = lru_cache(maxsize=1 << 16)(self._duration)
        self.caller = lru_cache(maxsize=1 << 18)(self._read_caller)

    def read_batch(self, batch: Sequence[tuple[int, Sequence[str | None]]]) -> list[tuple[Any, ...]]:
        """Many lines at once, column by column (the same checks as `read`, with each column's
        repeated texts read once): VendorLine fields as tuples. LineError for the first bad
        value met, without saying which line: `read` each line to find it. The values are
        no longer than MAX_VALUE (`too_long`: the file readers set longer ones aside before
        they batch them)."""
        numbers = [number for number, _ in batch]
        sessions, callers, starts, seconds, minutes, amounts, currencies = zip(
            *(fields for _, fields in batch), strict=True)
        for currency in set(currencies):
            self.check_currency(currency)
        sessions = tuple(map(_clean, sessions))
        callers = tuple(map(self.caller, callers))
        times = tuple(map(self.moment, starts))
        durations = tuple(map(self.duration, seconds, minutes))
        money = tuple(map(self.decimal, ("amount",) * len(amounts), amounts))
        return list(zip(
            numbers, sessions, (c[0] for c in callers), (c[1] for c in callers),
            (t[1] for t in times), (t[0] for t in times), (d[0] for d in durations),
            (d[1] for d in durations), (d[2] for d in durations), (m[0] for m in money),
            (m[1] for m in money), strict=True))

    def check_currency(self, raw: str | None) -> None:
        """LineError unless the line's currency (or the mapping's) is the plan's."""
        currency = _text(raw) or self.default_currency
        if currency is not None and currency.upper() != self.currency:
            raise LineError(f"currency: {currency[:20]!r} is not the plan's {self.currency}")

    def _read_caller(self, raw: str | None) -> tuple[str | None, str | None]:
        """The caller as shown (at most 64 characters) and its key."""
        caller = _clean(raw)
        if caller is None:
            return None, None
        return caller[:SHOWN_DIGITS], caller_key(caller[:SHOWN_DIGITS], self.country)

    def moment(self, raw: str | None) -> tuple[int, str]:
        """`started_at` in epoch milliseconds, and as written (stripped): ISO 8601 (or
        `time_format`), in the mapping's time zone when the text has no offset."""
        text = _text(raw)
        if text is None:
            raise LineError("started_at: missing")
        try:
            if self.time_format is not None:
                moment = datetime.strptime(text, self.time_format)
            else:
                moment = datetime.fromisoformat(text)
        except ValueError:
            expected = self.time_format or "ISO 8601, e.g. 2026-11-03T09:15:02+08:00"
            raise LineError(f"started_at: {text[:40]!r} is not a time ({expected})") from None
        if moment.tzinfo is None:
            if self.zone is None:
                raise LineError(f"started_at: {text[:40]!r} has no UTC offset and the mapping "
                                "gives no [format] timezone")
            moment = moment.replace(tzinfo=self.zone)
        try:
            return round(moment.timestamp() * 1000), text
        except (OverflowError, ValueError):
            raise LineError(f"started_at: {text[:40]!r} is out of range") from None

    def _duration(self, seconds: str | None, minutes: str | None) -> tuple[int, str, str]:
        """The billed duration in milliseconds, from seconds if given, else minutes; which;
        and as written."""
        if _text(seconds) is not None:
            text, micro = self.decimal("seconds", seconds)
            which, ms = "seconds", (micro + 500) // 1000
        elif _text(minutes) is not None:
            text, micro = self.decimal("minutes", minutes)
            which, ms = "minutes", (micro * 60 + 500) // 1000
        else:
            raise LineError("seconds: missing (and no minutes)")
        if micro < 0:
            raise LineError(f"{which}: {text} is negative")
        return ms, which, text

    def _decimal(self, name: str, raw: str | None) -> tuple[str, int]:
        """A decimal as the vendor writes it (a point, or with `decimal_comma` a comma, for
        decimals; optional thousands separators; at most 6 places, below a billion): as plain
        decimal text and in millionths."""
        text = _text(raw)
        if text is None:
            raise LineError(f"{name}: missing")
        whole, _, places = text.partition(self.point)
        if (whole.isdigit() and whole.isascii() and len(whole) <= 9 and len(places) <= PLACES
                and (places.isdigit() and places.isascii() or not places)):
            micro = int(whole) * _SCALE + (int(places) * _PAD[len(places)] if places else 0)
            return (text if self.point == "." else text.replace(",", ".")), micro
        plain = self._plain(text)
        if plain is None:
            sep = "a comma" if self.comma else "a point"
            hint = ("; the mapping's [format] decimal_comma = true reads a comma"
                    if not self.comma and _PLAIN_COMMA.fullmatch(text) else "")
            raise LineError(f"{name}: {text[:40]!r} is not a decimal number ({sep} for "
                            f"decimals, no currency sign{hint})")
        whole, _, places = plain.lstrip("+-").partition(".")
        places = places.rstrip("0")
        if len(places) > PLACES:
            raise LineError(f"{name}: {text[:40]!r} has more than {PLACES} decimal places")
        if len(whole.lstrip("0")) > 9:
            raise LineError(f"{name}: {text[:40]!r} is implausibly large")
        micro = int(whole or "0") * 10**PLACES + int(places.ljust(PLACES, "0"))
        if plain.startswith("-"):
            micro = -micro
        return plain.lstrip("+"), micro

    def _plain(self, text: str) -> str | None:
        if self.comma:
            if _PLAIN_COMMA.fullmatch(text):
                return text.replace(",", ".")
            if _GROUPED_COMMA.fullmatch(text):
                return text.replace(".", "").replace(" ", "").replace(",", ".")
            return None
        if _PLAIN.fullmatch(text):
            return text
        if _GROUPED_POINT.fullmatch(text):
            return text.replace(",", "")
        return None


def _text(raw: str | None) -> str | None:
    """A field's text, stripped; None when absent or empty. (Numbers and times with control
    characters in them are refused by their parsers.)"""
    if raw is None:
        return None
    return raw.strip() or None


def _clean(raw: str | None) -> str | None:
    """A text field shown in the output: stripped, control characters as spaces."""
    text = _text(raw)
    if text is None or text.isprintable():
        return text
    return _CONTROL.sub(" ", text).strip() or None
