"""The local SQLite store of call records (sqlite-utils, WAL mode)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlite_utils

from ..rating.compiled import CallCharge
from ..tracking.record import CallRecord, ModuleUsage, iso_utc, parse_iso_utc
from .schema import migrate


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which stored calls to read: by `offered_at` (UTC epoch) and outcome."""

    since: float | None = None
    until: float | None = None
    outcomes: tuple[str, ...] = ()
    limit: int | None = None


class CallStore:
    """One SQLite file; the agent creates and migrates its schema."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        self.schema_version = migrate(conn)
        self.db = sqlite_utils.Database(conn)
        self._calls = self.db["calls"]
        self._modules = self.db["call_modules"]

    def close(self) -> None:
        self.db.conn.close()

    # -- writing -------------------------------------------------------------------

    def save(self, records: Iterable[CallRecord],
             charges: Mapping[str, CallCharge] | None = None) -> int:
        """Store records (with their rating, where given) in one transaction.

        A call stored again replaces its row.
        """
        records = list(records)
        if not records:
            return 0
        now = iso_utc(time.time())
        charges = charges or {}
        rows = [_row(r, now, charges.get(r.call_id)) for r in records]
        modules = [
            {"call_id": r.call_id, "module": name, "quantity": format(u.quantity, "f"), "unit": u.unit}
            for r in records for name, u in r.modules.items()
        ]
        with self.db.atomic():
            self.db.conn.executemany(
                "DELETE FROM call_modules WHERE call_id = ?", [(r.call_id,) for r in records])
            self._calls.insert_all(rows, pk="call_id", replace=True, batch_size=500)
            if modules:
                self._modules.insert_all(modules, pk=("call_id", "module"), replace=True)
        return len(records)

    def update_charges(self, charges: Mapping[str, CallCharge],
                       progress: Callable[[int], None] | None = None) -> int:
        """Store new ratings of calls already stored (a re-rated period), in one transaction."""
        now = iso_utc(time.time())
        items = list(charges.items())
        with self.db.atomic():
            for start in range(0, len(items), UPDATE_CHUNK):
                self.db.conn.executemany(
                    "UPDATE calls SET plan_id = ?, cost = ?, currency = ?, charges = ?, rated_at = ? "
                    "WHERE call_id = ?",
                    [(*_rating_columns(c, now), cid) for cid, c in items[start:start + UPDATE_CHUNK]])
                if progress:
                    progress(min(len(items), start + UPDATE_CHUNK))
        return len(items)

    # -- reading -------------------------------------------------------------------

    def calls_ended_between(self, start: float, end: float) -> list[CallRecord]:
        """Calls with start <= ended_at < end, in rating order (ended_at, call_id). Built for speed."""
        conn = self.db.conn
        bounds = (iso_utc(start), iso_utc(end))
        modules: dict[str, dict[str, ModuleUsage]] = {}
        for call_id, module, quantity, unit in conn.execute(
                "SELECT m.call_id, m.module, m.quantity, m.unit FROM call_modules m "
                "JOIN calls c ON c.call_id = m.call_id WHERE c.ended_at >= ? AND c.ended_at < ?",
                bounds):
            modules.setdefault(call_id, {})[module] = ModuleUsage(Decimal(quantity), unit)
        cursor = conn.execute(
            f"SELECT {_COLUMNS} FROM calls WHERE ended_at >= ? AND ended_at < ? "
            "ORDER BY ended_at, call_id", bounds)
        parse, empty = parse_iso_utc, {}
        return [
            CallRecord(cid, lid, num, name, dialed, parse(a), parse(b), parse(c), parse(d), parse(e),
                       parse(f), outcome, target, cause, modules.get(cid, empty), source)  # type: ignore[arg-type]
            for (cid, lid, num, name, dialed, a, b, c, d, e, f, outcome, target, cause, source)
            in cursor
        ]

    def ratings(self, call_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored rating fields of these calls (plan_id, cost, currency, charges)."""
        found: dict[str, dict[str, Any]] = {}
        ids = list(call_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            sql = ("SELECT call_id, plan_id, cost, currency, charges FROM calls "
                   f"WHERE call_id IN ({', '.join('?' * len(chunk))})")
            for row in self.db.query(sql, chunk):
                found[row.pop("call_id")] = row
        return found

    def count(self) -> int:
        return self._calls.count

    def calls(self, query: CallFilter = CallFilter()) -> list[CallRecord]:
        """Stored calls, oldest first."""
        return list(self.iter_calls(query))

    def iter_calls(self, query: CallFilter = CallFilter()) -> Iterator[CallRecord]:
        where, params = [], []
        if query.since is not None:
            where.append("offered_at >= ?")
            params.append(iso_utc(query.since))
        if query.until is not None:
            where.append("offered_at < ?")
            params.append(iso_utc(query.until))
        if query.outcomes:
            where.append(f"outcome IN ({', '.join('?' * len(query.outcomes))})")
            params.extend(query.outcomes)
        sql = "SELECT * FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY offered_at, call_id"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        rows = list(self.db.query(sql, params))
        modules = self._modules_of([row["call_id"] for row in rows])
        for row in rows:
            yield _record(row, modules.get(row["call_id"], {}))

    def _modules_of(self, call_ids: list[str]) -> dict[str, dict[str, ModuleUsage]]:
        found: dict[str, dict[str, ModuleUsage]] = {}
        for start in range(0, len(call_ids), 500):
            chunk = call_ids[start:start + 500]
            sql = (f"SELECT * FROM call_modules WHERE call_id IN ({', '.join('?' * len(chunk))})")
            for row in self.db.query(sql, chunk):
                found.setdefault(row["call_id"], {})[row["module"]] = ModuleUsage(
                    Decimal(row["quantity"]), row["unit"])
        return found


_TIME_FIELDS = ("offered_at", "bot_answered_at", "bot_ended_at", "transferred_at",
                "human_answered_at", "ended_at")


UPDATE_CHUNK = 20_000

_COLUMNS = ("call_id, linkedid, caller_number, caller_name, dialed_number, offered_at, "
            "bot_answered_at, bot_ended_at, transferred_at, human_answered_at, ended_at, outcome, "
            "transfer_target, hangup_cause, source")


def _rating_columns(charge: CallCharge | None, rated_at: str | None) -> tuple[Any, ...]:
    """(plan_id, cost, currency, charges JSON, rated_at) for a rating, or all None."""
    if charge is None:
        return (None, None, None, None, None)
    lines = json.dumps([[line.charge, format(line.metered, "f"), format(line.amount, "f")]
                        for line in charge.lines], ensure_ascii=False)
    return (charge.plan_id, format(charge.amount, "f"), charge.currency, lines, rated_at)


def _row(r: CallRecord, recorded_at: str | None, charge: CallCharge | None) -> dict[str, Any]:
    answered = r.transfer_answered
    return {
        "call_id": r.call_id,
        "linkedid": r.linkedid,
        "caller_number": r.caller_number,
        "caller_name": r.caller_name,
        "dialed_number": r.dialed_number,
        **{name: iso_utc(getattr(r, name)) for name in _TIME_FIELDS},
        "ring_seconds": r.ring_seconds,
        "bot_seconds": r.bot_seconds,
        "human_seconds": r.human_seconds,
        "total_seconds": r.total_seconds,
        "outcome": r.outcome,
        "transfer_target": r.transfer_target,
        "transfer_answered": None if answered is None else int(answered),
        "hangup_cause": r.hangup_cause,
        "source": r.source,
        **dict(zip(("plan_id", "cost", "currency", "charges", "rated_at"),
                   _rating_columns(charge, recorded_at), strict=True)),
        "recorded_at": recorded_at,
    }


def _record(row: dict[str, Any], modules: dict[str, ModuleUsage]) -> CallRecord:
    times = {name: parse_iso_utc(row[name]) for name in _TIME_FIELDS}
    return CallRecord(
        call_id=row["call_id"],
        linkedid=row["linkedid"],
        caller_number=row["caller_number"],
        caller_name=row["caller_name"],
        dialed_number=row["dialed_number"],
        outcome=row["outcome"],
        transfer_target=row["transfer_target"],
        hangup_cause=row["hangup_cause"],
        modules=modules,
        source=row["source"],
        **times,  # type: ignore[arg-type]
    )
