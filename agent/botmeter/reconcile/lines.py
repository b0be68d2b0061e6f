"""One line of the vendor's usage detail, read from its text fields by the mapping: pure.

`LineReader.read(fields)` gives a `VendorLine` or raises `LineError` saying what is wrong with
which field; the file readers (`invoice.py`) add the file and line number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .callers import caller_key
from .mapping import InvoiceMapping

#: a vendor's session id longer than this is not an id
MAX_SESSION = 200
#: amounts and durations: below a billion, at most 6 decimal places (whole millionths)
MAX_AMOUNT = Decimal(10) ** 9
PLACES = 6
_PLAIN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_GROUPED_POINT = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")
_GROUPED_COMMA = re.compile(r"[+-]?[0-9]{1,3}(?:[. ][0-9]{3})+(?:,[0-9]*)?")
_PLAIN_COMMA = re.compile(r"[+-]?[0-9]+(?:,[0-9]*)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class LineError(ValueError):
    """A line that cannot be reconciled: the message names the field and what is wrong."""


class VendorLine(NamedTuple):
    """A vendor line as reconciled: times in epoch milliseconds (UTC), durations in
    milliseconds, the amount as written (normalised decimal text) and in millionths."""

    session_id: str | None
    caller_number: str | None
    caller_key: str | None
    started_ms: int
    duration_ms: int
    duration_field: str  # "seconds" or "minutes": which one the vendor gave
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
        self.time_format = mapping.format.time_format
        self.default_currency = mapping.format.currency

    def read(self, fields: Mapping[str, str | None]) -> VendorLine:
        """The line, from its fields by name (`Columns` field names; absent or empty: None)."""
        currency = _text(fields.get("currency")) or self.default_currency
        if currency is not None and currency.upper() != self.currency:
            raise LineError(f"currency: {currency[:20]!r} is not the plan's {self.currency}")
        session = _clean(fields.get("session_id"))
        if session is not None and len(session) > MAX_SESSION:
            raise LineError(f"session_id: longer than {MAX_SESSION} characters")
        caller = _clean(fields.get("caller_number"))
        if caller is not None:
            caller = caller[:64]
        started = self.moment(fields.get("started_at"))
        duration_ms, which = self.duration(fields.get("seconds"), fields.get("minutes"))
        amount = self.decimal("amount", fields.get("amount"))
        return VendorLine(session, caller, caller_key(caller, self.country), started,
                          duration_ms, which, format(amount, "f"), int(amount.scaleb(PLACES)))

    def moment(self, raw: str | None) -> int:
        """`started_at` in epoch milliseconds: ISO 8601 (or `time_format`), in the mapping's
        time zone when the text has no offset."""
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
            return round(moment.astimezone(UTC).timestamp() * 1000)
        except (OverflowError, ValueError):
            raise LineError(f"started_at: {text[:40]!r} is out of range") from None

    def duration(self, seconds: str | None, minutes: str | None) -> tuple[int, str]:
        """The billed duration in milliseconds, from seconds if given, else minutes."""
        if _text(seconds) is not None:
            value, which = self.decimal("seconds", seconds), "seconds"
            factor = 1000
        elif _text(minutes) is not None:
            value, which = self.decimal("minutes", minutes), "minutes"
            factor = 60_000
        else:
            raise LineError("seconds: missing (and no minutes)")
        if value < 0:
            raise LineError(f"{which}: {format(value, 'f')} is negative")
        return round(value * factor), which

    def decimal(self, name: str, raw: str | None) -> Decimal:
        """A decimal as the vendor writes it: a point (or with `decimal_comma`, a comma) for
        decimals, optional thousands separators; at most 6 places, below a billion."""
        text = _text(raw)
        if text is None:
            raise LineError(f"{name}: missing")
        plain = self._plain(text)
        if plain is None:
            sep = "a comma" if self.comma else "a point"
            raise LineError(f"{name}: {text[:40]!r} is not a decimal number ({sep} for "
                            "decimals, no currency sign)")
        value = Decimal(plain)
        if abs(value) >= MAX_AMOUNT:
            raise LineError(f"{name}: {text[:40]!r} is implausibly large")
        if value != round(value, PLACES):
            raise LineError(f"{name}: {text[:40]!r} has more than {PLACES} decimal places")
        return value

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
    return None if text is None else _CONTROL.sub(" ", text).strip() or None
