"""The local SQLite store of call records (sqlite-utils, WAL mode)."""

from __future__ import annotations

import contextlib
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
from ..tracking.record import CSAT_SCALE, CallRecord, iso_utc
from .columns import RATING_COLUMNS, call_row, decode_rows, select_list
from .file_identity import OpenedFiles
from .schema import SchemaError, migrate


class StoredCalls(NamedTuple):
    """Calls read in one SELECT, and for each (rowid, plan_id, cost, currency, charges)."""

    calls: list[CallRecord]
    stored: list[tuple[Any, ...]]

    def ratings(self) -> dict[str, dict[str, Any]]:
        """call_id -> {plan_id, cost, currency} of the calls that are rated."""
        return {call.call_id: {"plan_id": plan_id, "cost": cost, "currency": currency}
                for call, (_, plan_id, cost, currency, _) in zip(self.calls, self.stored,
                                                                 strict=True)
                if plan_id is not None}


#: a period's calls in rating order (what `replace_ratings` takes back)
StoredPeriod = StoredCalls


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which stored calls to read: by `offered_at` (UTC epoch), outcome, the caller's
    rating on the 5-point scale (`Csat.on_five()`): at least `csat_min`, at most `csat_max`,
    exactly; with either bound, calls without a rating are left out; and by the bot platform's
    session id (`bot_session_id`, exactly)."""

    since: float | None = None
    until: float | None = None
    outcomes: tuple[str, ...] = ()
    limit: int | None = None
    csat_min: Decimal | None = None
    csat_max: Decimal | None = None
    session: str | None = None


#: the rating's score and scale, as stored (`{"score":4,"scale":5}`): SQLite integers
_SCORE = "json_extract(csat, '$.score')"
_SCALE = "json_extract(csat, '$.scale')"


def _csat_bound(bound: Decimal, op: str) -> tuple[str, list[int]]:
    """SQL comparing a call's rating on the 5-point scale with `bound`, in whole numbers.

    on_five = 1 + (score - 1) * 4 / (scale - 1), and bound = p / q exactly (q > 0), so
    `on_five >= bound` is `(score - 1) * 4q >= (p - q) * (scale - 1)` (scale - 1 > 0): integer
    arithmetic in SQLite, no float to round at the bounds (4/5 is 4; 7/10 is 3 2/3).
    """
    p, q = Decimal(bound).as_integer_ratio()
    return (f"{_VALID_CSAT} AND ({_SCORE} - 1) * ? {op} ? * ({_SCALE} - 1)",
            [(CSAT_SCALE - 1) * q, p - q])


#: a stored rating that reads back as one (storage/columns.csat_from_sql): others never match
_VALID_CSAT = (f"json_valid(csat) AND json_type(csat, '$.score') = 'integer' AND "
               f"json_type(csat, '$.scale') = 'integer' AND {_SCALE} BETWEEN 2 AND 10 AND "
               f"{_SCORE} BETWEEN 1 AND {_SCALE}")


class StoreError(Exception):
    """The database cannot be created, opened or read: names the file and the reason.

    `permanent`: no retry can mend it (the path is a folder or cannot be made, the file is not
    a botmeter database, is damaged or is newer): `botmeter run` exits rather than waits.
    Otherwise (locked, disk full, not writable now) the running agent keeps trying."""

    permanent = False

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class UnusableDatabase(StoreError):
    """The path cannot hold botmeter's database, whatever is retried."""

    permanent = True


class NoDatabase(StoreError):
    """A command that only reads was pointed at a database that does not exist."""


class DatabaseTooNew(StoreError, SchemaError):
    """The database was written by a newer botmeter."""

    permanent = True


#: a new database's mode: only its owner reads calls (caller numbers are personal data);
#: with a group, that group may read too
PRIVATE_MODE = 0o600
GROUP_MODE = 0o640


def _refuse_foreign(conn: sqlite3.Connection, path: str | Path, create: bool) -> None:
    """Never turn someone else's SQLite file into a botmeter database: a file without botmeter's
    layout is only used if it is empty and the command may create one."""
    conn.execute("BEGIN")  # one snapshot: another process may be creating the layout now
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")]
    finally:
        if conn.in_transaction:  # a failed read may have ended it: its error is the one to see
            conn.execute("COMMIT")
    if version:
        return  # a botmeter layout (or a newer one, which migrate() refuses)
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise UnusableDatabase(path, f"not a botmeter database (it holds {shown}): left as it is; "
                               "give the path of botmeter's database")
    if not create:
        raise NoDatabase(path, "an empty file, not a botmeter database (nothing recorded yet, "
                               "or a mistyped path?)")


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
                    raise UnusableDatabase(path, "is a folder, not a database file")
                if not create and not self.path.exists():
                    raise NoDatabase(path, "no database here (nothing recorded yet, or a "
                                           "mistyped path?)")
                if create:
                    _make_folder(self.path)
                    _create_private(self.path, group)
            conn = sqlite3.connect(str(path) if memory else _uri(self.path, create),
                                   uri=not memory, check_same_thread=False, isolation_level=None)
            try:
                if not memory:
                    _refuse_foreign(conn, path, create)
                db = sqlite_utils.Database(conn)
                db.enable_wal()
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
                conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: re-rating reads a month
                conn.execute("PRAGMA temp_store = MEMORY")
                self.schema_version = migrate(db)
            except BaseException:
                conn.close()
                raise
        except SchemaError as exc:
            raise DatabaseTooNew(path, str(exc)) from None
        except sqlite3.Error as exc:
            error = UnusableDatabase if damaged(exc) else StoreError
            raise error(path, database_problem(exc)) from None
        except OSError as exc:
            raise StoreError(path, f"cannot {'create' if create else 'open'} it: "
                                   f"{exc.strerror or exc}") from None
        if not memory:
            _match_sidecars(self.path)
        #: the files opened (None: in memory), to tell when the path no longer leads to them
        self.opened = None if memory else OpenedFiles.of(self.path)
        self.db = db
        self._calls = db.table("calls")

    def close(self) -> None:
        self.db.conn.close()

    def file_change(self) -> str | None:
        """How the path stopped leading to the file opened ("deleted", "replaced by another
        file"); None while it still does (and for a database in memory)."""
        return None if self.opened is None else self.opened.change()

    def release(self) -> None:
        """Close a database whose file was deleted or replaced (`file_change()`): its last
        commits checkpointed into it where it still exists, its -wal and -shm files removed from
        the path, so that the database created or found there next starts clean."""
        with contextlib.suppress(sqlite3.Error):
            self.set_busy_timeout(0)
            self.db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        with contextlib.suppress(sqlite3.Error):
            self.close()
        if self.opened is not None:
            self.opened.discard_sidecars()

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
        rows = [call_row(r, _rating_columns(charges.get(r.call_id), now), now) for r in records]
        with self.db.atomic():
            # INSERT OR REPLACE, not upsert_all: sqlite-utils probes ON CONFLICT support with a
            # scratch table, and a probe that meets a locked database leaves the connection on
            # its fallback (INSERT OR IGNORE + UPDATE), which drops rows of a NOT NULL table
            self._calls.insert_all(rows, pk="call_id", replace=True, batch_size=500)
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
        """A period's calls in rating order (ended_at, call_id), with where each is stored and
        its current rating, in one SELECT. `modules=False` skips module usage (for plans that
        price none)."""
        return self._read("WHERE ended_at >= ? AND ended_at < ? ORDER BY ended_at, call_id",
                          [iso_utc(start), iso_utc(end)], modules=modules)

    def _read(self, where: str, params: list[Any], *, modules: bool = True) -> StoredCalls:
        """Calls and their ratings, in one SELECT, each row decoded once (storage/columns.py)."""
        cursor = self.db.conn.execute(f"SELECT {select_list(modules=modules)} FROM calls {where}",
                                      params)
        with gc_paused():  # millions of small objects: the cyclic GC would rescan them all
            return StoredCalls(*decode_rows(cursor))

    def set_ratings(self, charges: Mapping[str, CallCharge]) -> int:
        """Store the ratings of calls already stored, in one transaction."""
        now = iso_utc(time.time())
        rows = [(*_rating_text(c), now, call_id) for call_id, c in charges.items()]
        with self.db.atomic():
            self.db.conn.executemany(
                f"UPDATE calls SET {_SET_RATING} WHERE call_id = ?", rows)
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
                    f"UPDATE calls SET {_SET_RATING} WHERE rowid = ?",
                    changed[first:first + UPDATE_CHUNK])
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

    def stored_call_ids(self, call_ids: Iterable[str]) -> set[str]:
        """Which of these calls are stored."""
        ids = list(call_ids)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows = self.db.conn.execute(
                f"SELECT call_id FROM calls WHERE call_id IN ({', '.join('?' * len(chunk))})",
                chunk)
            found.update(row[0] for row in rows)
        return found

    def count(self) -> int:
        return self._calls.count

    def calls(self, query: CallFilter = CallFilter()) -> list[CallRecord]:
        """Stored calls, oldest first."""
        return self.listing(query).calls

    def iter_calls(self, query: CallFilter = CallFilter()) -> Iterator[CallRecord]:
        return iter(self.calls(query))

    def listing(self, query: CallFilter = CallFilter()) -> StoredCalls:
        """Stored calls in `offered_at` order (ties by call_id) with their ratings, read in
        one SELECT (`.ratings()` gives the ratings by call_id)."""
        where: list[str] = []
        params: list[Any] = []
        if query.since is not None:
            where.append("offered_at >= ?")
            params.append(iso_utc(query.since))
        if query.until is not None:
            where.append("offered_at < ?")
            params.append(iso_utc(query.until))
        if query.outcomes:
            where.append(f"outcome IN ({', '.join('?' * len(query.outcomes))})")
            params.extend(query.outcomes)
        for bound, op in ((query.csat_min, ">="), (query.csat_max, "<=")):
            if bound is not None:
                clause, values = _csat_bound(bound, op)
                where.append(clause)
                params.extend(values)
        if query.session is not None:
            where.append("bot_session_id = ?")  # index calls_bot_session_id
            params.append(query.session)
        sql = f"WHERE {' AND '.join(where)} " if where else ""
        sql += "ORDER BY offered_at, call_id"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return self._read(sql, params)


def damaged(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is not a database, or a damaged one."""
    return isinstance(exc, sqlite3.DatabaseError) and str(exc) in (
        "file is not a database", "database disk image is malformed")


def database_problem(exc: sqlite3.Error) -> str:
    """What an SQLite error means for the file, in words."""
    text = str(exc)
    if damaged(exc):
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
        raise UnusableDatabase(path, f"cannot create its folder: {blocker} is not a folder"
                               ) from None
    except OSError as exc:
        raise UnusableDatabase(path, f"cannot create its folder {exc.filename or path.parent}: "
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
                raise UnusableDatabase(path, f"cannot give it to group {group}: "
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
        raise UnusableDatabase(path, f"no group {group!r} on this system") from None


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


#: plan_id = ?, cost = ?, currency = ?, charges = ?, rated_at = ?
_SET_RATING = ", ".join(f"{column} = ?" for column in RATING_COLUMNS)


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
