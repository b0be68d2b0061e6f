"""`reconcile`: the vendor's usage detail against the calls botmeter recorded and rated.

Three scratch databases in a temporary folder: the invoice's lines (`loading.load_invoice`,
column-wise when it can), the period's bot-answered calls (copied by SQL alone in a thread
meanwhile), and the repeated lines (found in a thread while the main connection matches).
Matching and classing run as SQL over them (`matching.py`). The result is the totals per
class, the disputed amount, the problems, and the lines themselves, read from the database
as the output is written (never all in memory).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from ..rating import PlanSeries, period_bounds
from ..rating.currencies import minor_unit
from ..storage.store import gc_paused
from ..tracking.record import iso_utc
from . import matching
from .callers import caller_key
from .invoice import Invoice, Problem, Problems
from .lines import PLACES
from .loading import load_invoice
from .worker import T, Worker, stops_held

CLASSES = ("match", "duration_differs", "amount_differs", "vendor_only", "botmeter_only")
#: classes whose vendor amount above botmeter's is disputed
DISPUTED = ("duration_differs", "amount_differs", "vendor_only")
#: calls this far either side of the period are loaded too, so that a line billed for a call
#: of the next or last period is told apart from a line for a call never seen
MARGIN = timedelta(days=2).total_seconds()


#: SQLite's errors of writing (the scratch databases: the calls database is only read)
_WRITE_ERRORS = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_FSYNC,
                 sqlite3.SQLITE_IOERR_TRUNCATE}


class ScratchError(Exception):
    """The scratch databases cannot be written (a full disk): names the folder and what to do."""


@dataclass(frozen=True, slots=True)
class Tolerances:
    seconds: Decimal = Decimal(1)
    amount: Decimal = Decimal(0)


@dataclass
class ClassTotal:
    lines: int = 0
    vendor_micro: int = 0
    botmeter_micro: int = 0


@dataclass
class Reconciliation:
    """The outcome: totals per class, the disputed amount, problems; `lines()` reads the lines."""

    period: str
    plan_id: str
    currency: str
    invoice: str
    timezone: str
    classes: dict[str, ClassTotal]
    disputed_micro: int
    problems: Problems
    vendor_lines: int
    unrated_calls: int
    conn: sqlite3.Connection = field(repr=False)
    botmeter_ms_sql: str = field(repr=False, default="")
    folder: tempfile.TemporaryDirectory[str] | None = field(repr=False, default=None)

    def close(self) -> None:
        """Drop the work: its connection and temporary folder (a second Ctrl-C waits)."""
        with stops_held():
            self.conn.close()
            if self.folder is not None:
                self.folder.cleanup()

    def amount(self, micro: int | None) -> str | None:
        """Millionths as a decimal string with at least the currency's minor digits."""
        return money(micro, minor_unit(self.currency) or 0)

    def lines(self, classes: tuple[str, ...] = CLASSES) -> Iterator[dict[str, Any]]:
        """Every line in `classes` as the spec's JSON object: the vendor's lines in file
        order, then the calls the vendor did not bill, in answer order."""
        return map(json.loads, self.lines_json(classes))

    def lines_json(self, classes: tuple[str, ...] = CLASSES) -> Iterator[str]:
        """`lines()` as JSON text, built by SQLite."""
        for (text,) in self._select(matching.line_json(self.botmeter_ms_sql), classes):
            yield text

    def rows(self, classes: tuple[str, ...] = CLASSES) -> Iterator[tuple[Any, ...]]:
        """The lines as flat rows of `COLUMNS`."""
        yield from self._select(", ".join(self.columns().values()), classes)

    def columns(self) -> dict[str, str]:
        return matching.line_columns(self.botmeter_ms_sql)

    def _select(self, what: str, classes: tuple[str, ...]) -> sqlite3.Cursor:
        marks = ", ".join("?" * len(classes))
        return self.conn.execute(f"""
            SELECT {what}
            FROM result AS r
            LEFT JOIN vendor AS v ON v.id = r.v
            LEFT JOIN recorded AS c ON c.id = r.c
            WHERE r.cls IN ({marks})
            ORDER BY r.id""", classes)

    def summary(self) -> dict[str, Any]:
        """The JSON head (everything but the lines)."""
        return {
            "period": self.period, "plan_id": self.plan_id, "currency": self.currency,
            "invoice": self.invoice,
            "classes": {name: {"lines": t.lines, "vendor_amount": self.amount(t.vendor_micro),
                               "botmeter_amount": self.amount(t.botmeter_micro)}
                        for name, t in self.classes.items()},
            "disputed_amount": self.amount(self.disputed_micro),
            "vendor_lines": self.vendor_lines,
            "unrated_calls": self.unrated_calls,
            "problems": [{"file": p.file, "line": p.line, "message": p.message}
                         for p in self.problems.items],
            "problem_count": self.problems.count,
        }


def money(micro: int | None, minor: int) -> str | None:
    if micro is None:
        return None
    value = Decimal(micro).scaleb(-PLACES)
    places = max(minor, -value.normalize().as_tuple().exponent)  # type: ignore[operator]
    return format(value.quantize(Decimal(1).scaleb(-places)), "f")


def reconcile(store_path: Path, invoice: Invoice, series: PlanSeries, period: str,
              tolerances: Tolerances = Tolerances()) -> Reconciliation:
    """Match and class `invoice` against the calls of the database at `store_path` for
    `period` under `series`. The work is done in a temporary folder, removed by the result's
    `close()`. The calls are loaded (SQL, in a thread) while the invoice is read."""
    start, end = period_bounds(period, series.timezone)
    metric, charge = time_charge(series, period)
    since, until = iso_utc(start - MARGIN), iso_utc(end + MARGIN)
    folder = tempfile.TemporaryDirectory(prefix="botmeter-reconcile-")
    scratch = Path(folder.name)
    recorded_db = scratch / "recorded.db"
    conn = sqlite3.connect(scratch / "work.db", isolation_level=None,
                           check_same_thread=False)
    side: sqlite3.Connection | None = None
    calls: Worker[tuple[bool, int]] | None = None
    repeats: Worker[None] | None = None
    candidates: Worker[None] | None = None
    try:
        side = _open_calls_side(store_path, recorded_db)
        calls = _sql_worker("botmeter-calls", side, partial(
            _load_calls, side, country_code=invoice.mapping.format.country_code, since=since,
            until=until, start=iso_utc(start), end=iso_utc(end), plan_id=series.plan_id,
            metric=metric, charge=charge))
        _tune(conn)
        conn.executescript(matching.SCHEMA)
        invoice_db = scratch / "invoice.db"
        with gc_paused():
            load_invoice(invoice, invoice_db)
        _attach(conn, invoice_db, "invoice")
        lines_unique = matching.index_vendor(conn, "invoice")
        repeats = _repeats_worker(scratch, lines_unique)
        calls_unique, unrated = calls.result()
        _attach(conn, recorded_db, "calls_side")
        unique = lines_unique and calls_unique
        if unique:
            candidates = _candidates_worker(scratch)
        conn.execute("BEGIN")
        matching.match_sessions(conn, unique)
        if candidates is not None:
            candidates.result()  # its database opened once it is written
            _attach(conn, scratch / "candidates.db", "candidates", written=False)
            matching.match_pairs(conn, "candidates.pairs")
        else:
            matching.caller_pairs(conn, sessions_unique=False)
            matching.match_pairs(conn)
        bm_ms = matching.botmeter_ms(invoice.mapping.format.seconds == "billed")
        _classify(conn, bm_ms, tolerances, round(start * 1000), round(end * 1000))
        conn.execute("COMMIT")
        repeats.result()
        _attach(conn, scratch / "repeats.db", "repeated")
        _period_problems(conn, invoice, period, series.timezone.key)
        classes, disputed = _totals(conn)
    except BaseException as exc:
        with stops_held():  # a second Ctrl-C must not leave the scratch folder behind
            if calls is not None:
                calls.cancel()
            elif side is not None:
                side.close()
            for worker in (repeats, candidates):
                if worker is not None:
                    worker.cancel()
            conn.close()
            folder.cleanup()
        if getattr(exc, "sqlite_errorcode", None) in _WRITE_ERRORS:
            raise ScratchError(
                f"{folder.name}: cannot write the scratch databases ({exc}): free space there "
                "or set TMPDIR to a folder that has it (a month of a million calls needs about "
                "300 MB)") from None
        raise
    invoice.problems.items.sort(key=lambda p: -1 if p.line is None else p.line)
    if unrated:
        invoice.problems.add(Problem(
            invoice.name, None,
            f"{unrated} calls of {period} are not rated under plan {series.plan_id!r}: their "
            f"amounts are unknown here (botmeter rerate --period {period} --plan "
            f"{series.plan_id} rates them)"))
    return Reconciliation(period, series.plan_id, series.currency, invoice.name,
                          series.timezone.key, classes, disputed, invoice.problems,
                          invoice.lines_read, unrated, conn, bm_ms, folder)


def _tune(conn: sqlite3.Connection, schema: str = "main", *, written: bool = True) -> None:
    """A scratch database: no journal, no syncs (when `written`), a 256 MiB page cache, read
    through mmap (its pages written by another connection, ADBC's or a thread's)."""
    writing = ("journal_mode = OFF", "synchronous = OFF") if written else ()
    for pragma in (*writing, "cache_size = -262144", "mmap_size = 1073741824"):
        conn.execute(f"PRAGMA {schema}.{pragma}")
    if schema == "main":
        conn.execute("PRAGMA temp.cache_size = -262144")


def _attach(conn: sqlite3.Connection, path: Path, schema: str, *, written: bool = True) -> None:
    conn.execute(f"ATTACH DATABASE ? AS {schema}", (str(path),))
    _tune(conn, schema, written=written)


def _open_calls_side(store_path: Path, recorded_db: Path) -> sqlite3.Connection:
    """The calls' side's database, with the calls database attached read-only (as the agent
    opens it: not mapped into memory, which would count its whole file as ours)."""
    conn = sqlite3.connect(recorded_db, isolation_level=None, check_same_thread=False)
    try:
        _tune(conn)
        conn.execute("ATTACH DATABASE ? AS store", (f"{store_path.resolve().as_uri()}?mode=ro",))
        conn.executescript(matching.RECORDED_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _load_calls(conn: sqlite3.Connection, *, country_code: str | None,
                **bounds: Any) -> tuple[bool, int]:
    """The calls' side, in one transaction (one snapshot of the calls database, which the
    agent may write meanwhile): SQL but for the keys of callers that are not plain digits.
    Returns whether each session id is on one call only, and how many calls of the period
    are not rated under the plan."""
    conn.execute("BEGIN")
    matching.load_calls(conn, **bounds)
    matching.fill_caller_keys(conn, lambda number: caller_key(number, country_code))
    unique = matching.index_recorded(conn)
    unrated = conn.execute("SELECT count(*) FROM recorded WHERE in_period AND micro IS NULL"
                           ).fetchone()[0]
    conn.execute("COMMIT")
    return unique, unrated


def _sql_worker(name: str, conn: sqlite3.Connection, work: Callable[[], T]) -> Worker[T]:
    """`work` on `conn` in a thread, the connection closed as soon as it ends (its page cache
    freed); cancelling interrupts its SQL."""
    lock = threading.Lock()  # interrupt() must never meet a closing connection
    closed = False

    def run() -> T:
        nonlocal closed
        try:
            return work()
        finally:
            with lock:
                conn.close()
                closed = True

    def stop() -> None:
        with lock:
            if not closed:
                conn.interrupt()

    return Worker(name, run, stop)


def _reader(path: Path, schema: str, **reads: Path) -> sqlite3.Connection:
    """A connection for a thread: its own scratch database at `path` (`schema` made in it),
    and the databases it only reads attached read-only."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _tune(conn)
        conn.executescript(schema)
        for name, read in reads.items():
            conn.execute(f"ATTACH DATABASE ? AS {name}", (f"{read.resolve().as_uri()}?mode=ro",))
            _tune(conn, name, written=False)
    except BaseException:
        conn.close()
        raise
    return conn


def _repeats_worker(folder: Path, sessions_unique: bool) -> Worker[None]:
    """`matching.repeated_lines` into repeats.db, in a thread: the invoice's side alone, read
    while the main connection matches."""
    conn = _reader(folder / "repeats.db", "", invoice=folder / "invoice.db")
    return _sql_worker("botmeter-repeats", conn,
                       partial(matching.repeated_lines, conn, sessions_unique))


def _candidates_worker(folder: Path) -> Worker[None]:
    """`matching.caller_pairs` into candidates.db, in a thread, while the main connection
    matches by session id (session ids unique on both sides: the lines and calls that match
    by session are known without that matching)."""
    conn = _reader(folder / "candidates.db", matching.PAIRS_SCHEMA,
                   invoice=folder / "invoice.db", calls_side=folder / "recorded.db")
    return _sql_worker("botmeter-pairs", conn,
                       partial(matching.caller_pairs, conn, sessions_unique=True))


def time_charge(series: PlanSeries, period: str) -> tuple[str, str | None]:
    """The plan's time metric and the name of the charge that bills it (the first), for the
    period's version; bot_seconds and no charge when the plan prices no time."""
    for charge in series.fee_version(period).charges:
        if charge.is_time:
            return charge.metric, charge.name
    return "bot_seconds", None


def _classify(conn: sqlite3.Connection, bm_ms: str, tolerances: Tolerances, start_ms: int,
              end_ms: int) -> None:
    """Every line and every call of the period into `result`, with its class, in the output's
    order (the lines by number, then the calls not billed by answer); the lines that are not
    the period's as `outside` (started outside it, no call) or `elsewhere` (a call
    of another period), for the problems."""
    conn.execute(f"""
        INSERT INTO result (id, cls, v, c, rank, vmicro, cmicro)
        SELECT m.v, CASE WHEN c.in_period THEN {matching.CLASS_SQL.format(botmeter_ms=bm_ms)}
                    ELSE 'elsewhere' END,
               m.v, m.c, m.rank, v.micro, c.micro
        FROM matched AS m  -- CROSS JOIN: in the lines' order, not an index's (random reads)
        CROSS JOIN vendor AS v ON v.id = m.v CROSS JOIN recorded AS c ON c.id = m.c""",
                 {"tolerance_ms": int(tolerances.seconds * 1000),
                  "tolerance_micro": int(tolerances.amount.scaleb(PLACES))})
    conn.execute("""
        INSERT INTO result (id, cls, v, vmicro)
        SELECT v.id, CASE WHEN v.t >= ? AND v.t < ? THEN 'vendor_only' ELSE 'outside' END, v.id,
               v.micro
        FROM vendor AS v NOT INDEXED WHERE v.id NOT IN (SELECT v FROM matched)""",
                 (start_ms, end_ms))
    conn.execute("""
        INSERT INTO result (cls, c, cmicro)  -- after the lines, in answer order
        SELECT 'botmeter_only', c.id, c.micro FROM recorded AS c
        WHERE c.in_period AND c.id NOT IN (SELECT c FROM matched)
        ORDER BY c.ta, c.call_id""")


def _totals(conn: sqlite3.Connection) -> tuple[dict[str, ClassTotal], int]:
    classes = {name: ClassTotal() for name in CLASSES}
    disputed = 0
    for cls, lines, vendor, botmeter, above in conn.execute("""
            SELECT cls, count(*), coalesce(sum(vmicro), 0), coalesce(sum(cmicro), 0),
                   coalesce(sum(max(vmicro - coalesce(cmicro, 0), 0)), 0)
            FROM result GROUP BY cls"""):
        if cls not in classes:  # outside, elsewhere: problems, not classes
            continue
        classes[cls] = ClassTotal(lines, vendor, botmeter)
        if cls in DISPUTED:
            disputed += above
    return classes, disputed


def _period_problems(conn: sqlite3.Connection, invoice: Invoice, period: str,
                     zone: str) -> None:
    """Lines outside the period (the month in the plan's time `zone`), lines for calls of
    another period, repeated lines (`matching.repeated_lines`). A line's start is named as
    the vendor wrote it (it may be no date Python can show: year 0, year 10000)."""
    add = invoice.problems.add
    for cls, line, started, call_id, offered in conn.execute("""
            SELECT r.cls, r.v, v.started, c.call_id, c.offered_at
            FROM result AS r JOIN vendor AS v ON v.id = r.v
            LEFT JOIN recorded AS c ON c.id = r.c
            WHERE r.cls IN ('outside', 'elsewhere') ORDER BY r.v"""):
        if cls == "elsewhere":
            add(Problem(invoice.name, line, f"bills call {call_id} (offered {offered}) that "
                                            f"ended outside {period}: not reconciled here"))
        else:
            add(Problem(invoice.name, line, f"started_at {started!r} is outside {period} "
                                            f"({zone}): not reconciled"))
    for line, first, how in conn.execute("SELECT id, first, how FROM repeats ORDER BY id"):
        add(Problem(invoice.name, line, f"repeats line {first} (same {how}): billed twice?"))
