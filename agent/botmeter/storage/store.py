"""The local SQLite store of call records (sqlite-utils, WAL mode)."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import sqlite_utils

from ..rating.compiled import CallCharge
from ..tracking.record import _NO_MODULES, CallRecord, ModuleUsage, iso_utc, parse_iso_utc
from .schema import SchemaError, migrate


class StoredPeriod(NamedTuple):
    """A period's calls in rating order, and for each (rowid, plan_id, cost, currency, charges)."""

    calls: list[CallRecord]
    stored: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which stored calls to read: by `offered_at` (UTC epoch) and outcome."""

    since: float | None = None
    until: float | None = None
    outcomes: tuple[str, ...] = ()
    limit: int | None = None


class StoreError(Exception):
    """The database cannot be created, opened or read: names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class NoDatabase(StoreError):
    """A command that only reads was pointed at a database that does not exist."""


class DatabaseTooNew(StoreError, SchemaError):
    """The database was written by a newer botmeter."""


#: a new database's mode: only its owner reads calls (caller numbers are personal data);
#: with a group, that group may read too
PRIVATE_MODE = 0o600
GROUP_MODE = 0o640


class CallStore:
    """One SQLite file; the agent creates and migrates its schema.

    `create=False` refuses a file that does not exist (NoDatabase) instead of creating it.
    A new file is created 0600 whatever the umask, or 0640 and owned by `group`; SQLite gives
    the -wal and -shm files the database's mode, and opening gives them its group too.
    Any problem opening it is a StoreError naming the file.
    """

    def __init__(self, path: str | Path, *, create: bool = True, group: str | None = None) -> None:
        self.path = Path(path)
        memory = str(path) == ":memory:"
        try:
            if not memory:
                if self.path.is_dir():
                    raise StoreError(path, "is a folder, not a database file")
                if not create and not self.path.exists():
                    raise NoDatabase(path, "no database here (nothing recorded yet, or a "
                                           "mistyped path?)")
                if create:
                    _make_folder(self.path)
                    _create_private(self.path, group)
            conn = sqlite3.connect(str(path) if memory else _uri(self.path, create),
                                   uri=not memory, check_same_thread=False, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
                conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: re-rating reads a month
                conn.execute("PRAGMA temp_store = MEMORY")
                self.schema_version = migrate(conn)
            except BaseException:
                conn.close()
                raise
        except SchemaError as exc:
            raise DatabaseTooNew(path, str(exc)) from None
        except sqlite3.Error as exc:
            raise StoreError(path, database_problem(exc)) from None
        except OSError as exc:
            raise StoreError(path, f"cannot {'create' if create else 'open'} it: "
                                   f"{exc.strerror or exc}") from None
        if not memory:
            _match_sidecars(self.path)
        self.db = sqlite_utils.Database(conn)
        self._calls = self.db["calls"]
        self._modules = self.db["call_modules"]

    def close(self) -> None:
        self.db.conn.close()

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another connection's lock before failing."""
        self.db.conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")

    @contextmanager
    def bulk_mode(self, mebibytes: int = 512) -> Iterator[None]:
        """For bulk work (re-rating a month): a bigger page cache, and the WAL checkpointed once
        at the end rather than after every chunk; then back to the usual settings."""
        conn = self.db.conn
        cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        autocheckpoint = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        conn.execute(f"PRAGMA cache_size = {-1024 * int(mebibytes)}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA cache_size = {int(cache)}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint)}")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

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

    def reject(self, call_id: str | None, record: str, reason: str) -> None:
        """Set a record the store refused aside in `rejected` (its JSON text and why)."""
        with self.db.atomic():
            self.db.conn.execute(
                "INSERT INTO rejected (call_id, record, reason, rejected_at) VALUES (?, ?, ?, ?)",
                (call_id, record, reason, iso_utc(time.time())))

    # -- reading -------------------------------------------------------------------

    def calls_ended_between(self, start: float, end: float, *,
                            modules: bool = True) -> list[CallRecord]:
        """Calls with start <= ended_at < end, in rating order (ended_at, call_id)."""
        return self.period_for_rating(start, end, modules=modules).calls

    def period_for_rating(self, start: float, end: float, *, modules: bool = True) -> StoredPeriod:
        """A period's calls in rating order, with where each is stored and its current rating.

        Built for speed, in one pass: SQLite turns the ISO times into epoch milliseconds;
        `modules=False` skips module usage (for plans that price none).
        """
        cursor = self.db.conn.execute(
            f"SELECT {_FAST_COLUMNS if modules else _FAST_COLUMNS_NO_MODULES}, "
            "rowid, plan_id, cost, currency, charges FROM calls "
            "WHERE ended_at >= ? AND ended_at < ? ORDER BY ended_at, call_id",
            (iso_utc(start), iso_utc(end)))
        usage = _modules_from_json
        calls: list[CallRecord] = []
        stored: list[tuple[Any, ...]] = []
        add_call, add_stored = calls.append, stored.append
        with gc_paused():  # millions of small objects: the cyclic GC would rescan them all
            for (cid, lid, num, name, dialed, a, b, c, d, e, f, outcome, target, cause, source,
                 used, *rating) in cursor:
                add_call(CallRecord(
                    cid, lid, num, name, dialed, a / 1000, b and b / 1000, c and c / 1000,
                    d and d / 1000, e and e / 1000, f / 1000, outcome, target, cause,
                    usage(used), source))
                add_stored(rating)
        return StoredPeriod(calls, stored)

    def set_ratings(self, charges: Mapping[str, CallCharge]) -> int:
        """Store the ratings of calls already stored, in one transaction."""
        now = iso_utc(time.time())
        rows = [(*_rating_text(c), now, call_id) for call_id, c in charges.items()]
        with self.db.atomic():
            self.db.conn.executemany(
                "UPDATE calls SET plan_id = ?, cost = ?, currency = ?, charges = ?, rated_at = ? "
                "WHERE call_id = ?", rows)
        return len(rows)

    def replace_ratings(self, period: StoredPeriod, charges: Mapping[str, CallCharge],
                        progress: Callable[[int], None] | None = None) -> int:
        """Store a re-rated period's ratings. Only changed rows are written, in rowid order and in
        transactions of UPDATE_CHUNK rows, so a writer storing new calls waits for one chunk at
        most; a re-rate cut short is finished by running it again. Returns how many changed."""
        now = iso_utc(time.time())
        unrated = (None, None, None, None)
        changed = []
        for call, (rowid, *old) in zip(period.calls, period.stored, strict=True):
            charge = charges.get(call.call_id)
            new = unrated if charge is None else _rating_text(charge)
            if tuple(old) != new:
                changed.append((*new, now, rowid))
        changed.sort(key=itemgetter(5))  # in rowid order: pages are written in sequence
        for first in range(0, len(changed), UPDATE_CHUNK):
            with self.db.atomic():
                self.db.conn.executemany(
                    "UPDATE calls SET plan_id = ?, cost = ?, currency = ?, charges = ?, rated_at = ? "
                    "WHERE rowid = ?", changed[first:first + UPDATE_CHUNK])
            if progress:
                progress(min(len(changed), first + UPDATE_CHUNK))
        return len(changed)

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


def database_problem(exc: sqlite3.Error) -> str:
    """What an SQLite error means for the file, in words."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and text in (
            "file is not a database", "database disk image is malformed"):
        return f"not a botmeter database, or damaged ({text})"
    return text


def _uri(path: Path, create: bool) -> str:
    """An SQLite URI for `path`; mode=rw so SQLite itself never creates a missing file."""
    return f"{path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"


def _make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()),
                       path.parent)
        raise StoreError(path, f"cannot create its folder: {blocker} is not a folder") from None
    except OSError as exc:
        raise StoreError(path, f"cannot create its folder {exc.filename or path.parent}: "
                               f"{exc.strerror or exc}") from None


def _create_private(path: Path, group: str | None) -> None:
    """Create an empty database file 0600 (0640 and owned by `group`), whatever the umask;
    a file that exists is left as it is."""
    gid = _group_id(path, group)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     PRIVATE_MODE if gid is None else GROUP_MODE)
    except FileExistsError:
        return
    try:
        if gid is not None:
            try:
                os.fchown(fd, -1, gid)
            except OSError as exc:
                os.unlink(path)
                raise StoreError(path, f"cannot give it to group {group}: "
                                       f"{exc.strerror or exc}") from None
        os.fchmod(fd, PRIVATE_MODE if gid is None else GROUP_MODE)
    finally:
        os.close(fd)


def _group_id(path: Path, group: str | None) -> int | None:
    if group is None:
        return None
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise StoreError(path, f"no group {group!r} on this system") from None


def _match_sidecars(path: Path) -> None:
    """Give the -wal and -shm files the database's mode and group, where this process may
    (SQLite copies the mode; the group is the creating process's unless it runs as root)."""
    try:
        main = path.stat()
    except OSError:
        return
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            info = side.stat()
            if info.st_gid != main.st_gid:
                os.chown(side, -1, main.st_gid)
            if stat.S_IMODE(info.st_mode) != stat.S_IMODE(main.st_mode):
                os.chmod(side, stat.S_IMODE(main.st_mode))
        except OSError:  # not there, or another user's: SQLite's own mode copy stands
            continue


_TIME_FIELDS = ("offered_at", "bot_answered_at", "bot_ended_at", "transferred_at",
                "human_answered_at", "ended_at")


UPDATE_CHUNK = 20_000
#: seconds a write waits for another connection's lock (SQLite's busy timeout)
BUSY_TIMEOUT = 5.0


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while bulk-building objects that hold no cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _epoch_ms(column: str) -> str:
    return f"CAST(ROUND((julianday({column}) - 2440587.5) * 86400000) AS INTEGER)"


_COLUMNS = ("call_id, linkedid, caller_number, caller_name, dialed_number, offered_at, "
            "bot_answered_at, bot_ended_at, transferred_at, human_answered_at, ended_at, outcome, "
            "transfer_target, hangup_cause, source")


def _modules_json(modules: Mapping[str, ModuleUsage]) -> str | None:
    if not modules:
        return None
    return json.dumps({m: [format(u.quantity, "f"), u.unit] for m, u in modules.items()},
                      ensure_ascii=False)


def _modules_from_json(text: str | None) -> Mapping[str, ModuleUsage]:
    if not text:
        return _NO_MODULES
    return {m: ModuleUsage(Decimal(q), u) for m, (q, u) in json.loads(text).items()}


_FAST_COLUMNS = ", ".join([
    "call_id", "linkedid", "caller_number", "caller_name", "dialed_number",
    *(_epoch_ms(name) for name in ("offered_at", "bot_answered_at", "bot_ended_at",
                                   "transferred_at", "human_answered_at", "ended_at")),
    "outcome", "transfer_target", "hangup_cause", "source", "modules",
])
_FAST_COLUMNS_NO_MODULES = _FAST_COLUMNS.removesuffix("modules") + "NULL"


def _rating_columns(charge: CallCharge | None, rated_at: str | None) -> tuple[Any, ...]:
    """(plan_id, cost, currency, charges JSON, rated_at) for a rating, or all None."""
    if charge is None:
        return (None, None, None, None, None)
    return (*_rating_text(charge), rated_at)


@lru_cache(maxsize=1 << 16)
def _rating_text(charge: CallCharge) -> tuple[str, str, str, str]:
    """A rating as stored; cached, since ratings repeat (equal quantities rate alike)."""
    lines = json.dumps([[line.charge, format(line.metered, "f"), format(line.amount, "f")]
                        for line in charge.lines], ensure_ascii=False)
    return (charge.plan_id, format(charge.amount, "f"), charge.currency, lines)


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
        "modules": _modules_json(r.modules),
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
