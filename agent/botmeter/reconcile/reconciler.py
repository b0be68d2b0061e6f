"""`reconcile`: the vendor's usage detail against the calls botmeter recorded and rated.

The invoice's lines go into a temporary table beside the calls database in batches, the
period's bot-answered calls beside them, and matching and classing run as SQL
(`matching.py`). The result is the totals per class, the disputed amount, the problems, and
the lines themselves, read from the database as the output is written (never all in memory).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

from ..rating import PlanSeries, period_bounds
from ..rating.currencies import minor_unit
from ..tracking.record import iso_utc
from . import matching
from .callers import caller_key
from .invoice import Invoice, Problem, Problems
from .lines import PLACES

CLASSES = ("match", "duration_differs", "amount_differs", "vendor_only", "botmeter_only")
#: classes whose vendor amount above botmeter's is disputed
DISPUTED = ("duration_differs", "amount_differs", "vendor_only")
BATCH = 10_000
#: calls this far either side of the period are loaded too, so that a line billed for a call
#: of the next or last period is told apart from a line for a call never seen
MARGIN = timedelta(days=2).total_seconds()


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

    def amount(self, micro: int | None) -> str | None:
        """Millionths as a decimal string with at least the currency's minor digits."""
        return money(micro, minor_unit(self.currency) or 0)

    def lines(self, classes: tuple[str, ...] = CLASSES) -> Iterator[dict[str, Any]]:
        """Every line in `classes`: the vendor's lines in file order, then the calls the
        vendor did not bill, in answer order."""
        marks = ", ".join("?" * len(classes))
        cursor = self.conn.execute(f"""
            SELECT r.cls, r.rank, v.id, v.session_id, v.caller, v.t, v.dur, v.dur_field,
                   v.amount, c.call_id, c.session_id, c.caller, c.ta, c.tof, c.outcome,
                   {self.botmeter_ms_sql},
                   c.cost
            FROM result AS r
            LEFT JOIN vendor AS v ON v.id = r.v
            LEFT JOIN recorded AS c ON c.id = r.c
            WHERE r.cls IN ({marks})
            ORDER BY v.id IS NULL, v.id, c.ta, c.call_id""", classes)
        for row in cursor:
            yield self._line(row)

    def _line(self, row: tuple[Any, ...]) -> dict[str, Any]:
        (cls, rank, line, session, caller, t, dur, dur_field, amount, call_id, c_session,
         c_caller, ta, tof, outcome, bm_ms, cost) = row
        vendor = None if line is None else {
            "line": line, "session_id": session, "caller_number": caller,
            "started_at": iso_utc(t / 1000), dur_field: _seconds(dur, dur_field),
            "amount": amount}
        botmeter = None if call_id is None else {
            "caller_number": c_caller, "bot_session_id": c_session,
            "bot_answered_at": iso_utc(ta / 1000) if ta is not None else None,
            "offered_at": iso_utc(tof / 1000), "outcome": outcome,
            "seconds": _seconds(bm_ms, "seconds"), "amount": cost}
        entry: dict[str, Any] = {"class": cls, "vendor": vendor, "call_id": call_id,
                                 "botmeter": botmeter}
        if rank is not None:
            entry["matched_by"] = "session_id" if rank == 0 else "caller_time"
            entry["seconds_apart"] = _seconds(abs(t - (ta if ta is not None else tof)),
                                              "seconds")
        return entry

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


def _seconds(ms: int | None, field_name: str) -> str | None:
    if ms is None:
        return None
    value = Decimal(ms).scaleb(-3) / (60 if field_name == "minutes" else 1)
    return format(value.normalize(), "f") if value else "0"


def reconcile(conn: sqlite3.Connection, invoice: Invoice, series: PlanSeries, period: str,
              tolerances: Tolerances = Tolerances()) -> Reconciliation:
    """Match and class `invoice` against the calls in `conn` (the calls database) for
    `period` under `series`. Temporary tables stay on `conn` for `lines()`."""
    country = invoice.mapping.format.country_code
    conn.create_function("caller_key", 1, lambda number: caller_key(number, country),
                         deterministic=True)
    conn.executescript("DROP TABLE IF EXISTS temp.vendor; DROP TABLE IF EXISTS temp.recorded;"
                       "DROP TABLE IF EXISTS temp.pairs; DROP TABLE IF EXISTS temp.matched;"
                       "DROP TABLE IF EXISTS temp.result;" + matching.SCHEMA)
    start, end = period_bounds(period, series.timezone)
    conn.execute("BEGIN")
    try:
        _load_invoice(conn, invoice)
        metric, charge = _time_charge(series, period)
        matching.load_calls(conn, since=iso_utc(start - MARGIN), until=iso_utc(end + MARGIN),
                            start=iso_utc(start), end=iso_utc(end), plan_id=series.plan_id,
                            metric=metric, charge=charge)
        matching.index(conn)
        matching.find_pairs(conn)
        matching.match_pairs(conn)
        bm_ms = matching.botmeter_ms(invoice.mapping.format.seconds == "billed")
        _classify(conn, bm_ms, tolerances, round(start * 1000), round(end * 1000))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _period_problems(conn, invoice, period)
    classes, disputed = _totals(conn)
    unrated = conn.execute("SELECT count(*) FROM recorded WHERE in_period AND micro IS NULL"
                           ).fetchone()[0]
    if unrated:
        invoice.problems.add(Problem(
            invoice.name, None,
            f"{unrated} calls of {period} are not rated under plan {series.plan_id!r}: their "
            f"amounts are unknown here (botmeter rerate --period {period} rates them)"))
    return Reconciliation(period, series.plan_id, series.currency, invoice.name,
                          series.timezone.key, classes, disputed, invoice.problems,
                          invoice.lines_read, unrated, conn, bm_ms)


def _load_invoice(conn: sqlite3.Connection, invoice: Invoice) -> None:
    lines = invoice.lines()
    insert = ("INSERT OR IGNORE INTO vendor (id, session_id, caller, ckey, t, dur, dur_field, "
              "amount, micro) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    while batch := list(islice(lines, BATCH)):
        conn.executemany(insert, [(number, *line) for number, line in batch])


def _time_charge(series: PlanSeries, period: str) -> tuple[str, str | None]:
    """The plan's time metric and the name of the charge that bills it (the first), for the
    period's version; bot_seconds and no charge when the plan prices no time."""
    for charge in series.fee_version(period).charges:
        if charge.is_time:
            return charge.metric, charge.name
    return "bot_seconds", None


def _classify(conn: sqlite3.Connection, bm_ms: str, tolerances: Tolerances, start_ms: int,
              end_ms: int) -> None:
    conn.execute("CREATE TEMP TABLE result (cls TEXT NOT NULL, v INTEGER, c INTEGER, "
                 "rank INTEGER)")
    conn.execute(f"""
        INSERT INTO result (cls, v, c, rank)
        SELECT {matching.CLASS_SQL.format(botmeter_ms=bm_ms)}, m.v, m.c, m.rank
        FROM matched AS m JOIN vendor AS v ON v.id = m.v JOIN recorded AS c ON c.id = m.c
        WHERE c.in_period""",
                 {"tolerance_ms": int(tolerances.seconds * 1000),
                  "tolerance_micro": int(tolerances.amount.scaleb(PLACES))})
    conn.execute("""
        INSERT INTO result (cls, v)
        SELECT 'vendor_only', v.id FROM vendor AS v
        WHERE v.id NOT IN (SELECT v FROM matched) AND v.t >= ? AND v.t < ?""",
                 (start_ms, end_ms))
    conn.execute("""
        INSERT INTO result (cls, c)
        SELECT 'botmeter_only', c.id FROM recorded AS c
        WHERE c.in_period AND c.id NOT IN (SELECT c FROM matched)""")


def _totals(conn: sqlite3.Connection) -> tuple[dict[str, ClassTotal], int]:
    classes = {name: ClassTotal() for name in CLASSES}
    disputed = 0
    for cls, lines, vendor, botmeter, above in conn.execute("""
            SELECT r.cls, count(*), coalesce(sum(v.micro), 0), coalesce(sum(c.micro), 0),
                   coalesce(sum(max(v.micro - coalesce(c.micro, 0), 0)), 0)
            FROM result AS r LEFT JOIN vendor AS v ON v.id = r.v
            LEFT JOIN recorded AS c ON c.id = r.c
            GROUP BY r.cls"""):
        classes[cls] = ClassTotal(lines, vendor, botmeter)
        if cls in DISPUTED:
            disputed += above
    return classes, disputed


def _period_problems(conn: sqlite3.Connection, invoice: Invoice, period: str) -> None:
    """Lines outside the period, lines for calls of another period, repeated lines."""
    add = invoice.problems.add
    for line, ended in conn.execute("""
            SELECT m.v, c.tof FROM matched AS m JOIN recorded AS c ON c.id = m.c
            WHERE NOT c.in_period ORDER BY m.v"""):
        add(Problem(invoice.name, line, f"bills a call offered {iso_utc(ended / 1000)} that "
                                        f"ended outside {period}: not reconciled here"))
    for line, t in conn.execute("""
            SELECT v.id, v.t FROM vendor AS v
            WHERE v.id NOT IN (SELECT v FROM matched) AND v.id NOT IN (SELECT v FROM result
                                                                      WHERE v IS NOT NULL)
            ORDER BY v.id"""):
        add(Problem(invoice.name, line,
                    f"started_at {iso_utc(t / 1000)} is outside {period}: not reconciled"))
    for line, first, how in conn.execute("""
            SELECT id, first, 'session id' FROM (
                SELECT id, min(id) OVER (PARTITION BY session_id) AS first FROM vendor
                WHERE session_id IS NOT NULL)
            WHERE id != first
            UNION ALL
            SELECT id, first, 'caller, start, duration and amount' FROM (
                SELECT id, min(id) OVER (PARTITION BY ckey, t, dur, micro) AS first
                FROM vendor WHERE session_id IS NULL)
            WHERE id != first
            ORDER BY 1"""):
        add(Problem(invoice.name, line, f"repeats line {first} (same {how}): billed twice?"))
