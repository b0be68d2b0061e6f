"""Storing a batch of calls so that one bad record never blocks the others.

A save can fail for two kinds of reasons. The database is unavailable (locked by another
process, disk full, I/O error): nothing is wrong with the calls, so the caller retries them
later (`StoreUnavailable` carries the ones not stored yet). Or a record holds a value SQLite
refuses (an integer beyond 64 bits, a NaN time): then the batch is split in halves until the
bad record stands alone; the good ones are stored and the bad one is set aside in the
`rejected` table with the reason, logged once and counted.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import structlog

from ..tracking.record import CallRecord
from .store import CallStore

log = structlog.get_logger(__name__)

SaveBatch = Callable[[CallStore, list[CallRecord]], object]


def store_unavailable(exc: BaseException) -> bool:
    """Whether a failed save says the database cannot take writes now (locked, busy, full,
    read-only, I/O error) rather than that a record is bad (IntegrityError, OverflowError,
    ValueError, InterfaceError, DataError, TypeError...)."""
    if isinstance(exc, sqlite3.OperationalError | OSError | MemoryError):
        return True
    if type(exc) is sqlite3.DatabaseError:  # "database disk image is malformed" and the like
        return True
    return isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc)


class StoreUnavailable(Exception):
    """The database refused writes; `remaining` are the calls not stored (in order)."""

    def __init__(self, cause: BaseException, remaining: list[CallRecord]) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.remaining = remaining


def _plain_save(store: CallStore, records: list[CallRecord]) -> None:
    store.save(records)


class GuardedSaver:
    """Saves batches with `save`, splitting a batch a record spoils; counts what it did."""

    def __init__(self, save: SaveBatch | None = None, *,
                 on_saved: Callable[[list[CallRecord]], None] | None = None,
                 on_rejected: Callable[[CallRecord], None] | None = None) -> None:
        self._save = save or _plain_save
        self._on_saved = on_saved
        self._on_rejected = on_rejected
        self.stored = 0
        self.rejected = 0

    def use(self, save: SaveBatch | None) -> None:
        """Save with `save` from the next batch on (None: unrated, `store.save`)."""
        self._save = save or _plain_save

    def __call__(self, store: CallStore, batch: list[CallRecord]) -> None:
        """Store `batch`; StoreUnavailable (with the calls not stored) if the database is."""
        pending = [batch]  # a stack: the earliest part on top
        while pending:
            part = pending.pop()
            try:
                self._save(store, part)
            except Exception as exc:
                if store_unavailable(exc):
                    remaining = [r for p in (part, *reversed(pending)) for r in p]
                    raise StoreUnavailable(exc, remaining) from exc
                if len(part) > 1:
                    middle = len(part) // 2
                    pending += (part[middle:], part[:middle])
                    continue
                self._reject(store, part[0], exc, pending)
            else:
                self.stored += len(part)
                self._saved(part)

    def _saved(self, part: list[CallRecord]) -> None:
        if self._on_saved is None:
            return
        try:
            self._on_saved(part)
        except Exception as exc:  # the calls are stored: a listener's failure must not undo that
            log.error("after storing calls: listener failed", calls=len(part), error=repr(exc))

    def _reject(self, store: CallStore, record: CallRecord, exc: Exception,
                pending: list[list[CallRecord]]) -> None:
        call_id = _call_id(record)
        reason = f"{type(exc).__name__}: {exc}"
        text = describe_record(record)
        try:
            store.reject(call_id, text, reason)
        except Exception as failure:
            if store_unavailable(failure):
                remaining = [record, *(r for p in reversed(pending) for r in p)]
                raise StoreUnavailable(failure, remaining) from failure
            log.error("call refused by the store and not set aside: its record is here",
                      call_id=call_id, reason=reason, record=text, error=str(failure))
        else:
            log.error("call refused by the store; set aside in table rejected",
                      call_id=call_id, reason=reason, db=str(store.path))
        self.rejected += 1
        if self._on_rejected is not None:
            self._on_rejected(record)


def _call_id(record: object) -> str | None:
    value = getattr(record, "call_id", None)
    return None if value is None else str(value)


def describe_record(record: object) -> str:
    """A record as JSON text as best it can be (for `rejected`): values JSON cannot hold
    (NaN, Decimal, unknown types) as their repr; the record's repr if even that fails."""
    try:
        value = record._asdict() if isinstance(record, CallRecord) else record
        return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False)
    except Exception:  # any record must be describable
        return repr(record)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return repr(value)
