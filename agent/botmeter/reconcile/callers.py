"""The caller number both sides are matched on: one function for the vendor's lines and, as an
SQL function, for the recorded calls."""

from __future__ import annotations

import re

_NOT_DIGIT = re.compile(r"[^0-9]")
_BEFORE_DIGITS = re.compile(r"\D*")
#: the shortest key worth matching on: shorter "numbers" (0, 1, an operator's short code) are
#: shared by unrelated callers
MIN_DIGITS = 3


def caller_key(number: str | None, country_code: str | None = None) -> str | None:
    """The number's digits, in the national form when the caller's country is known: with
    `country_code` 86, `+86 139-0000-1111`, `008613900001111`, `tel:+8613900001111` and
    `13900001111` all give `13900001111`, and a national trunk prefix goes too, written or kept
    in the international form (`010 1234 5678`, `+86 10 1234 5678` and `+86 (0)10 1234 5678`
    give `1012345678`). Digits of any script count (`١٣٩...`, `１３９...`). None when fewer
    than MIN_DIGITS digits remain (anonymous, withheld)."""
    if not number:
        return None
    text = number.strip()
    if text.isdigit() and text.isascii():
        digits, international = text, False
    elif text[1:].isdigit() and text[1:].isascii():
        digits, international = text[1:], text[0] == "+"
    else:
        digits = (_NOT_DIGIT.sub("", text) if text.isascii()
                  else "".join(str(int(ch)) for ch in text if ch.isdecimal()))
        international = "+" in _BEFORE_DIGITS.match(text).group()  # type: ignore[union-attr]
    if country_code:
        if international and digits.startswith(country_code):
            digits = digits[len(country_code):].removeprefix("0")
        elif digits.startswith("00" + country_code):
            digits = digits[2 + len(country_code):].removeprefix("0")
        elif digits.startswith("0") and not digits.startswith("00"):
            digits = digits[1:]
    return digits if len(digits) >= MIN_DIGITS else None


#: a national number as most PBXs write it: digits, the first not 0. `caller_key` keeps it as
#: it is (no + or 00 to take off, no trunk 0), whatever the country; it is also its key in SQL
PLAIN_GLOB = "[1-9]*"


def plain_sql(column: str) -> str:
    """SQL: whether the caller in `column` is plain (PLAIN_GLOB, digits only): its key is
    `plain_key_sql`; other callers' keys come from `caller_key`, once per caller. (GLOB and
    length() end a text at a NUL: a caller with one is not plain.)"""
    return (f"({column} GLOB '{PLAIN_GLOB}' AND {column} NOT GLOB '*[^0-9]*' "
            f"AND instr({column}, char(0)) = 0)")


def plain_key_sql(column: str) -> str:
    """SQL: `caller_key` of a plain caller (`plain_sql`): itself, when long enough."""
    return f"(CASE WHEN length({column}) >= {MIN_DIGITS} THEN {column} END)"
