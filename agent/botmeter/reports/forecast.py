"""Where the month's bill is heading: cost to date, the month-end forecast, the day a bundle's
allowance runs out, and the budget (docs/reports.md#forecast).

"Cost to date" follows the bill: the stored amounts of the calls rated under the plan that
ended in the plan's month (its time zone), plus the month's fees (period fees, once fees due
in it, the SLA fee). The agent's budget warning uses the same definition.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from itertools import chain
from typing import Any

from ..rating import NoStatement, PlanSeries, Statement, period_bounds
from ..rating.statement import fee_lines
from ..storage import rollups
from ..storage.rollup_query import Range, day_start, next_day, totals
from ..storage.rollups import COST, METERED
from ..tracking.record import iso_utc

#: stored amounts are summed in SQL as whole millionths (plan precision is at most 0.000001)
MICRO = 6
#: a stored rating line's metered quantity (charges: [[charge, metered, amount], ...])
METERED_LINE = "json_extract(line.value, '$[1]')"
BUDGET_WARNING, BUDGET_OVER = Decimal("0.8"), Decimal(1)


def from_micro(value: int | None) -> Decimal:
    return Decimal(value or 0).scaleb(-MICRO)


def period_fees(series: PlanSeries, period: str) -> Decimal:
    """The month's fees as its statement bills them: period fees of the version in force on
    the 1st, once fees due in the month, the SLA fee; 0 for a month before the plan starts."""
    try:
        version = series.fee_version(period)
    except NoStatement:
        return Decimal(0)
    fees = sum((line.amount for line in fee_lines(series, period)), Decimal(0))
    return fees + (version.sla.fee if version.sla is not None else Decimal(0))


def _month(series: PlanSeries, period: str) -> Range:
    start, end = (iso_utc(moment) for moment in period_bounds(period, series.timezone))
    return Range("ended_at", start, end)


def usage_to_date(conn: sqlite3.Connection, series: PlanSeries, period: str) -> Decimal:
    """The stored amounts of the month's calls rated under the plan (ended in the month)."""
    rows = chain(*totals(conn, COST, ("plan_id",), _month(series, period)))
    return from_micro(sum(cost for plan, _, cost in rows if plan == series.plan_id))


def cost_to_date(conn: sqlite3.Connection, series: PlanSeries, period: str) -> Decimal:
    """Usage to date plus the month's fees."""
    return usage_to_date(conn, series, period) + period_fees(series, period)


def minor(series: PlanSeries, amount: Decimal, period: str) -> Decimal:
    """An amount rounded half-up to the currency's minor unit (as statement totals are)."""
    try:
        digits = series.fee_version(period).minor_unit
    except NoStatement:
        digits = series.latest.minor_unit
    return amount.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class MonthPace:
    """How far into the month `now` is, in seconds."""

    start: float
    end: float
    now: float

    @property
    def elapsed(self) -> float:
        return min(max(self.now - self.start, 0.0), self.end - self.start)

    @property
    def left(self) -> float:
        return self.end - self.start - self.elapsed


def forecast(conn: sqlite3.Connection, series: PlanSeries, period: str,
             statement: Statement | None, now: float) -> dict[str, Any]:
    """`forecast`: month_end_cost = usage to date + usage to date / elapsed days x days left
    + the month's fees (a month over: its cost; a month not begun: its fees), rounded to the
    minor unit; bundle_exhausted_on per `bundle_exhausted_on`."""
    start, end = period_bounds(period, series.timezone)
    pace = MonthPace(start, end, now)
    usage = usage_to_date(conn, series, period)
    with localcontext() as ctx:
        ctx.prec = 40
        projected = usage
        if pace.elapsed > 0 and pace.left > 0:
            projected += usage * Decimal(pace.left) / Decimal(pace.elapsed)
        total = minor(series, projected + period_fees(series, period), period)
    return {"month_end_cost": format(total, "f"),
            "bundle_exhausted_on": bundle_exhausted_on(conn, series, period, statement, pace)}


def bundle_exhausted_on(conn: sqlite3.Connection, series: PlanSeries, period: str,
                        statement: Statement | None, pace: MonthPace) -> str | None:
    """For the first charge with an allowance (`included`) of the version in force on the
    1st: the local date its allowance ran out (the call that used it up ended that day), or,
    not used up yet, the date it runs out at the month's pace so far (null when that falls
    after the month: the allowance lasts). Null without an allowance or without usage."""
    if statement is None:
        return None
    try:
        version = series.fee_version(period)
    except NoStatement:
        return None
    charge = next((c for c in version.charges if c.included > 0), None)
    if charge is None:
        return None
    allowance = charge.included * charge.unit  # in the metric's own unit, as stored per call
    month = _month(series, period)
    daily: dict[str, int] = {}
    for day, plan, name, _, metered in chain(
            *totals(conn, METERED, ("ended_day", "plan_id", "charge"), month)):
        if plan == series.plan_id and name == charge.name:
            daily[day] = daily.get(day, 0) + metered
    used = sum(daily.values())
    allowance_micro = int(allowance.scaleb(MICRO))
    reached = None
    if used >= allowance_micro:
        before = 0
        for day in sorted(daily):
            if before + daily[day] >= allowance_micro:
                reached = _reached(conn, series, charge.name, month, day,
                                   allowance_micro - before)
                break
            before += daily[day]
    used_total = from_micro(used)
    if used_total >= allowance and reached is not None:
        moment = datetime.fromisoformat(reached.replace("Z", "+00:00")).timestamp()
        return datetime.fromtimestamp(moment, series.timezone).date().isoformat()
    if used_total <= 0 or pace.elapsed <= 0 or pace.left <= 0:
        return None
    # at the pace so far: the allowance left takes (left / used) x the time elapsed
    runs_out = pace.now + float(Fraction(allowance - used_total) * Fraction(pace.elapsed)
                                / Fraction(used_total))
    if runs_out >= pace.end:
        return None
    return datetime.fromtimestamp(runs_out, series.timezone).date().isoformat()


def _reached(conn: sqlite3.Connection, series: PlanSeries, charge: str, month: Range, day: str,
             allowance_micro: int) -> str | None:
    """The end of the first call of a UTC day of the month (in rating order) whose running
    total of the charge's metered quantity reaches `allowance_micro`."""
    start = max(month.start, day_start(day))
    end = min(month.end, day_start(next_day(day)))
    (reached,) = conn.execute(f"""
        SELECT min(CASE WHEN running >= :allowance THEN ended_at END) FROM (
            SELECT ended_at,
                   sum({rollups.MICRO.format(q=METERED_LINE)}) OVER (ORDER BY ended_at, call_id) AS running
            FROM calls, json_each(CASE WHEN json_valid(calls.charges) THEN calls.charges
                                       ELSE '[]' END) AS line
            WHERE ended_at >= :start AND ended_at < :end AND plan_id = :plan
              AND json_extract(line.value, '$[0]') = :charge)""",
        {"start": start, "end": end, "plan": series.plan_id, "charge": charge,
         "allowance": allowance_micro}).fetchone()
    return reached


def budget_level(share: Decimal) -> str:
    return "over" if share >= BUDGET_OVER else "warning" if share >= BUDGET_WARNING else "ok"


def budget_status(cost: Decimal, monthly: Decimal, money: Decimal) -> dict[str, Any]:
    """`budget`: used_share = cost to date (fees included) / monthly, 4 places; status ok,
    warning (>= 0.8) or over (>= 1); cost_to_date at the plan's precision `money`."""
    share = cost / monthly
    return {"monthly": format(monthly, "f"),
            "cost_to_date": format(cost.quantize(money, ROUND_HALF_UP), "f"),
            "used_share": float(share.quantize(Decimal("0.0001"), ROUND_HALF_UP)),
            "status": budget_level(share)}
