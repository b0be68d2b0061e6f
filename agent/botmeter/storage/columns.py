"""The calls table's columns, derived from the record's field list (`tracking.record.FIELDS`).

One codec per kind of value says how it is stored and read back; the columns, the NOT NULL
set, the row written for a call, the SELECT list and the decoder that turns a row back into a
CallRecord all follow from FIELDS and these codecs, so a field is added in one place.

Stored forms (all browseable as they are):

- times: ISO 8601 UTC text with milliseconds (`2026-11-26T07:00:00.120Z`). They have one
  decoder, in SQL: `EPOCH_SECONDS` turns the text into the epoch float CallRecord holds, the
  same float `ms / 1000` gives in Python, so a record reads back equal to the one stored;
- module usage: JSON on the call, `{"asr": ["88.4", "seconds"]}` (quantities as exact
  decimal text), NULL when the bot reported none. The view `call_modules` shows it as one
  row per call and module;
- the caller's satisfaction rating: JSON, `{"score":4,"scale":5}`, NULL without one;
- durations and `transfer_answered` (computed from the times): stored for browsing, never
  read back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple

from ..tracking.record import (
    _NO_MODULES,
    FIELDS,
    CallRecord,
    Csat,
    Kind,
    ModuleUsage,
    Origin,
    iso_utc,
)

#: SQL turning an ISO 8601 time column into epoch seconds (a float with whole milliseconds,
#: equal to Python's `ms / 1000`); NULL stays NULL. The one decoder of stored times.
EPOCH_SECONDS = "CAST(ROUND((julianday({0}) - 2440587.5) * 86400000) AS INTEGER) / 1000.0"


class Codec(NamedTuple):
    """How values of one kind are stored and read back."""

    type: type  # the column type for sqlite-utils: str TEXT, int INTEGER, float REAL
    to_sql: Callable[[Any], Any] | None  # record value -> column value (None: as it is)
    select: str  # how a stored value is read: SQL with {0} for the column
    from_sql: Callable[[Any], Any] | None  # selected value -> record value (None: as it is)
    null_when_empty: bool = False  # an empty value is stored as NULL


def modules_to_sql(modules: Mapping[str, ModuleUsage]) -> str | None:
    """Module usage as stored: `{"asr": ["88.4", "seconds"]}`, exact quantities; NULL if none."""
    if not modules:
        return None
    return json.dumps({m: [format(u.quantity, "f"), u.unit] for m, u in modules.items()},
                      ensure_ascii=False)


def modules_from_sql(text: str | None, loads: Callable[[str], Any] = json.loads,
                     new: Callable[..., Any] = tuple.__new__) -> Mapping[str, ModuleUsage]:
    """Stored module usage back as a mapping (re-rating reads a million: kept lean). Text that
    is not module usage (edited or damaged by hand) reads as none, so that one row never stops
    a listing, a statement or a re-rate."""
    if not text:
        return _NO_MODULES
    try:
        usage = {m: new(ModuleUsage, (Decimal(q), u)) for m, (q, u) in loads(text).items()}
    except (ValueError, TypeError, AttributeError, ArithmeticError):
        return _NO_MODULES
    return usage or _NO_MODULES


def csat_to_sql(csat: Csat | None) -> str | None:
    """A csat rating as stored: `{"score": 4, "scale": 5}`; NULL without one."""
    return None if csat is None else json.dumps(csat.to_json(), separators=(",", ":"))


def csat_from_sql(text: str | None) -> Csat | None:
    """A stored rating; None when there is none, or when what is stored is not a rating (a
    whole score 1..scale on a scale of 2..10): one edited or damaged row never stops a listing,
    a statement or a sync, and is read the same way by all of them."""
    if not text:
        return None
    try:
        value = json.loads(text)
        score, scale = value["score"], value["scale"]
    except (ValueError, TypeError, KeyError):
        return None
    if type(score) is not int or type(scale) is not int or not 1 <= score <= scale <= 10 \
            or scale < 2:
        return None
    return Csat(score, scale)


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


CODECS: dict[Kind, Codec] = {
    Kind.TEXT: Codec(str, None, "{0}", None),
    Kind.TIME: Codec(str, iso_utc, EPOCH_SECONDS, None),
    Kind.SECONDS: Codec(float, None, "{0}", None),
    Kind.INTEGER: Codec(int, None, "{0}", None),
    Kind.BOOLEAN: Codec(int, _flag, "{0}", bool),
    Kind.MODULES: Codec(str, modules_to_sql, "{0}", modules_from_sql, null_when_empty=True),
    Kind.CSAT: Codec(str, csat_to_sql, "{0}", csat_from_sql),
}

#: columns of the calls table that are not record fields: the rating's lines as JSON
#: ([[charge, metered, amount], ...]), when it was rated, when the call was stored
STORE_COLUMNS: dict[str, type] = {"charges": str, "rated_at": str, "recorded_at": str}

#: every column of the calls table, in the order a new database has them
CALL_COLUMNS: dict[str, type] = {**{f.name: CODECS[f.kind].type for f in FIELDS},
                                 **STORE_COLUMNS}
PRIMARY_KEY = "call_id"
#: the record's own fields that are never null (derived columns are the store's to write)
NOT_NULL: tuple[str, ...] = (
    *(f.name for f in FIELDS if f.origin is Origin.RECORD and not f.null
      and not CODECS[f.kind].null_when_empty and f.name != PRIMARY_KEY),
    "recorded_at",
)
#: the columns that hold a call's rating, as `stored_rating` gives them
RATING_COLUMNS: tuple[str, ...] = (*(f.name for f in FIELDS if f.origin is Origin.RATING),
                                   "charges", "rated_at")

_RECORD_FIELDS = tuple(f for f in FIELDS if f.origin is Origin.RECORD)  # CallRecord's order
_ROW_PLAN = tuple((f.name, f.origin is Origin.RATING, attrgetter(f.name), CODECS[f.kind].to_sql)
                  for f in FIELDS)


def call_row(record: CallRecord, rating: Iterable[Any], recorded_at: str) -> dict[str, Any]:
    """The calls row of a record, in CALL_COLUMNS order; `rating` gives the RATING_COLUMNS
    values (or Nones)."""
    rated = dict(zip(RATING_COLUMNS, rating, strict=True))
    row = {name: rated[name] if from_rating else get(record) if encode is None
           else encode(get(record)) for name, from_rating, get, encode in _ROW_PLAN}
    row["charges"], row["rated_at"], row["recorded_at"] = (rated["charges"], rated["rated_at"],
                                                           recorded_at)
    return row


# -- reading ------------------------------------------------------------------------------

#: what is selected after a record's columns: where the row is, and the call's rating
STORED_COLUMNS = ("rowid", "plan_id", "cost", "currency", "charges")


def select_list(*, modules: bool = True) -> str:
    """The SELECT list of a record with STORED_COLUMNS after it; `modules=False` reads no
    module usage (for plans that price none)."""
    columns = ["NULL" if f.kind is Kind.MODULES and not modules
               else CODECS[f.kind].select.format(f.name) for f in _RECORD_FIELDS]
    return ", ".join([*columns, *STORED_COLUMNS])


_WIDTH = len(_RECORD_FIELDS)
_DECODE = tuple((i, decode) for i, f in enumerate(_RECORD_FIELDS)
                if (decode := CODECS[f.kind].from_sql) is not None)


def decode_rows(rows: Iterable[tuple[Any, ...]]
                ) -> tuple[list[CallRecord], list[tuple[Any, ...]]]:
    """Rows of `select_list` -> (records, for each its STORED_COLUMNS values)."""
    calls: list[CallRecord] = []
    stored: list[tuple[Any, ...]] = []
    add_call, add_stored, new, width, decode = calls.append, stored.append, tuple.__new__, \
        _WIDTH, _DECODE
    for row in rows:
        values = list(row[:width])
        for i, convert in decode:
            values[i] = convert(values[i])
        add_call(new(CallRecord, values))  # CallRecord._make without its length check
        add_stored(row[width:])
    return calls, stored
