"""`botmeter report`'s numbers: one JSON-ready dict (the keys of docs/reports.md).

Everything is read from the roll-ups (storage/rollups.py; docs/reports.md#how-it-is-computed):
one GROUP BY over the window's 15-minute UTC slots gives every count and sum per slot, and
the totals, days, weeks, hours, weekdays, the heat map and the daily chart are folded from
those slot rows in Python. Percentiles come from `durations.py`; the SLA clauses and plan
advice from `plan_usage.py` and the rating's statement and `compare_totals`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from itertools import chain
from typing import Any

from ..rating import Comparison, NoStatement, PlanSeries, Statement, period_of
from ..rating.compare import compare_totals
from ..rating.usage import period_total
from ..storage.columns import csat_from_sql
from ..storage.rollup_query import Range, summed, totals
from ..storage.rollups import CSAT, MODULES, SLOTS
from ..storage.store import CallStore
from ..tracking.record import CSAT_SCALE, OUTCOMES
from .durations import Durations
from .forecast import budget_status, cost_to_date, forecast, from_micro
from .plan_usage import period_usages
from .repeat import repeat_callers
from .window import WEEKDAYS, Window, iso_week, slot_epoch

#: the roll-up's slots (storage/rollups.py SLOT)
ROLLUP_SLOT_MINUTES = 15
BY = ("day", "week", "hour", "weekday", "outcome", "dialed_number", "transfer_target")
#: bot_seconds histogram edges; the last bucket is open
HISTOGRAM_EDGES = (0, 15, 30, 60, 90, 120, 180, 300, 600)

#: per group of rows of the slots roll-up (storage/rollups.py): counts, then sums (cost and
#: durations in whole millionths / milliseconds), in the order of _FIELDS
_SLOT_SUMS = """coalesce(sum(calls), 0), coalesce(sum(bot_answered), 0),
    coalesce(sum(CASE WHEN outcome = 'handled' THEN calls END), 0),
    coalesce(sum(CASE WHEN outcome = 'transferred' THEN calls END), 0),
    coalesce(sum(CASE WHEN outcome = 'abandoned' THEN calls END), 0),
    coalesce(sum(CASE WHEN outcome = 'failed' THEN calls END), 0),
    coalesce(sum(transfer_answered), 0),
    coalesce(sum(CASE WHEN plan_id = :plan THEN cost END), 0),
    coalesce(sum(bot_ms), 0), coalesce(sum(human_ms), 0), coalesce(sum(abandoned_ring_ms), 0)"""
_FIELDS = ("offered", "bot_answered", "handled", "transferred", "abandoned", "failed",
           "transfer_answered", "cost", "bot_ms", "human_ms", "abandoned_ring_ms")


@dataclass(slots=True)
class Counts:
    """Summable counts of a group of calls."""

    values: list[int] = field(default_factory=lambda: [0] * len(_FIELDS))

    def add(self, row: Iterable[int]) -> None:
        self.values = [a + (b or 0) for a, b in zip(self.values, row, strict=True)]

    def __getattr__(self, name: str) -> int:
        try:
            return self.values[_FIELDS.index(name)]
        except ValueError:
            raise AttributeError(name) from None


def rate(part: int, whole: int) -> float | None:
    """part / whole rounded to 4 places; None when whole is 0."""
    return round(part / whole, 4) if whole else None


def seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


@dataclass(frozen=True, slots=True)
class Pricing:
    """The active plan (None without [plans]), every plan to compare, the budget."""

    active: PlanSeries | None = None
    plans: Sequence[PlanSeries] = ()
    budget: Decimal | None = None


class _Report:
    def __init__(self, store: CallStore, window: Window, by: str, pricing: Pricing,
                 now: float) -> None:
        if by not in BY:
            raise ValueError(f"by must be one of {', '.join(BY)}")
        self.conn: sqlite3.Connection = store.db.conn
        self.store, self.window, self.by, self.pricing, self.now = store, window, by, pricing, now
        active = pricing.active
        self.period = period_of(window.start, active.timezone) if active else None
        self.params = {"start": window.start_text, "end": window.end_text,
                       "plan": active.plan_id if active else None,
                       # the window in the roll-up's slots (`2026-11-26T07:45`)
                       "first": window.start_text[:16], "last": window.end_text[:16]}
        self.money = self._money()
        self.span = Range("offered_at", window.start_text, window.end_text)
        self.slot_rows = self._slot_rows()

    def _slot_rows(self) -> str:
        """FROM: the window's rows of the slots roll-up, or, when the window does not start
        and end on its 15-minute slots or they would straddle a local hour (no zone in use
        today), the same rows summed from the calls in UTC slots that never do
        (`Window.slot_width`)."""
        window, width = self.window, ROLLUP_SLOT_MINUTES * 60
        if window.start % width == 0 and window.end % width == 0 \
                and window.aligned(ROLLUP_SLOT_MINUTES):
            return f"(SELECT * FROM {SLOTS.table} WHERE slot >= :first AND slot < :last) AS s"
        _, prefix = window.slot_width()
        rows = SLOTS.select("calls", keys={"slot": f"substr(calls.offered_at, 1, {prefix})"})
        return (f"(SELECT {rows} FROM calls WHERE offered_at >= :start "
                "AND offered_at < :end) AS s")

    def _money(self) -> Decimal | None:
        active = self.pricing.active
        if active is None or self.period is None:
            return None
        try:
            return active.fee_version(self.period).precision
        except NoStatement:
            return active.latest.precision

    def cost(self, micro: int) -> str | None:
        if self.money is None:
            return None
        return format(from_micro(micro).quantize(self.money, ROUND_HALF_UP), "f")

    # -- counts by slot -------------------------------------------------------------------

    def slots(self) -> list[tuple[float, list[int]]]:
        """(UTC epoch of the slot's start, its counts) per UTC slot holding calls."""
        rows = self.conn.execute(
            f"SELECT slot, {_SLOT_SUMS} FROM {self.slot_rows} GROUP BY slot "
            "HAVING sum(calls) <> 0", self.params).fetchall()
        return [(slot_epoch(row[0]), list(row[1:])) for row in rows]

    def row(self, key: Any, counts: Counts) -> dict[str, Any]:
        c = counts
        return {"key": key, "offered": c.offered, "bot_answered": c.bot_answered,
                "handled": c.handled, "transferred": c.transferred, "abandoned": c.abandoned,
                "failed": c.failed, "answer_rate": rate(c.bot_answered, c.offered),
                "containment_rate": rate(c.handled, c.bot_answered),
                "transfer_rate": rate(c.transferred, c.bot_answered),
                "transfer_answered_rate": rate(c.transfer_answered, c.transferred),
                "cost": self.cost(c.cost)}

    def build(self) -> dict[str, Any]:
        window = self.window
        days = {day: Counts() for day in window.days()}
        heatmap = [[0] * 24 for _ in WEEKDAYS]
        hours: dict[int, Counts] = {h: Counts() for h in range(24)}
        total = Counts()
        for epoch, values in self.slots():
            local = window.local(epoch)
            days[local.date()].add(values)
            hours[local.hour].add(values)
            heatmap[local.weekday()][local.hour] += values[0]
            total.add(values)
        statement, comparison = self.statements()
        active = self.pricing.active
        report: dict[str, Any] = {
            "period": {"from": window.local(window.start).isoformat(),
                       "to": window.local(window.end).isoformat(),
                       "timezone": window.tz.key},
            "plan": None if active is None else {"plan_id": active.plan_id,
                                                 "name": active.latest.name},
            "by": self.by,
            "totals": self.totals(total),
        }
        clauses = statement.sla_clauses if statement is not None else ()
        report["totals"]["sla_answer_rate"] = next(
            (_number(c.measured, 4) for c in clauses if c.clause == "answer_rate"), None)
        report["sla"] = [{"clause": c.clause, "measured": _number(c.measured, 4),
                          "target": _number(c.target, 6), "sample": c.sample, "met": c.met}
                         for c in clauses]
        report["plans"] = self.plan_rows(comparison)
        report["forecast"], report["budget"] = self.forecast_and_budget(statement)
        report["repeat_callers"] = repeat_callers(self.conn, window)
        report["rows"] = self.rows(days, hours)
        report["charts"] = {
            "daily": [{"date": day.isoformat(), "handled": c.handled,
                       "transferred": c.transferred, "abandoned": c.abandoned,
                       "failed": c.failed, "cost": self.cost(c.cost)}
                      for day, c in days.items()],
            "bot_seconds_histogram": self.histogram,
            "heatmap": heatmap,
        }
        return report

    # -- totals ---------------------------------------------------------------------------

    def totals(self, c: Counts) -> dict[str, Any]:
        totals = self.row(None, c)
        del totals["key"], totals["cost"]
        durations = Durations(self.conn, self.window)
        bot = durations.of("bot")
        self.histogram = bot.histogram(HISTOGRAM_EDGES)
        totals["bot_seconds"] = {
            "total": seconds(c.bot_ms), "mean": seconds(c.bot_ms / bot.count) if bot.count else None,
            "median": seconds(bot.percentile(0.5)), "p90": seconds(bot.percentile(0.9))}
        totals["human_seconds"] = {"total": seconds(c.human_ms)}
        totals["human_wait_seconds"] = {"median": seconds(durations.of("wait").percentile(0.5))}
        totals["abandoned_wait_seconds"] = {
            "mean": seconds(c.abandoned_ring_ms / c.abandoned) if c.abandoned else None}
        totals["modules"] = self.modules()
        totals["csat"] = self.csat(c.bot_answered)
        active = self.pricing.active
        totals["cost"] = self.cost(c.cost)
        totals["currency"] = active.currency if active else None
        per_call = None
        if self.money is not None and c.handled:
            per_call = format((from_micro(c.cost) / c.handled).quantize(
                self.money, ROUND_HALF_UP), "f")
        totals["cost_per_handled_call"] = per_call
        return totals

    def modules(self) -> dict[str, dict[str, Any]]:
        """Each module's usage summed exactly (to the millionth) over the window's calls; a
        module reported in two units is listed as `module (unit)` for the later unit."""
        found: dict[str, dict[str, Any]] = {}
        usage = summed(chain(*totals(self.conn, MODULES, ("module", "unit"), self.span)), 2)
        for (module, unit), (_, micro, _, _) in sorted(usage.items(), key=_module_order):
            name = module if module not in found else f"{module} ({unit})"
            found[name] = {"quantity": _exact(from_micro(micro)), "unit": unit}
        return found

    def csat(self, bot_answered: int) -> dict[str, Any]:
        """Responses, response rate (rated / bot answered), the exact mean on the 5-point
        scale (2 places), the distribution by the 5-point value rounded half up, and the mean
        by outcome."""
        groups = []
        for (outcome, text), (count,) in summed(
                chain(*totals(self.conn, CSAT, ("outcome", "csat"), self.span)), 2).items():
            rating = csat_from_sql(text)
            if rating is not None:  # the tracker never stores another; a hand edit is left out
                groups.append((outcome, rating.score, rating.scale, count))
        distribution = {str(score): 0 for score in range(1, CSAT_SCALE + 1)}
        sums: dict[str, list[Any]] = {}
        responses, total = 0, Fraction(0)
        for outcome, score, scale, count in groups:
            five = 1 + Fraction((score - 1) * (CSAT_SCALE - 1), scale - 1)
            distribution[str(int(five + Fraction(1, 2)))] += count
            responses += count
            total += five * count
            entry = sums.setdefault(outcome, [0, Fraction(0)])
            entry[0] += count
            entry[1] += five * count
        return {"responses": responses,
                "response_rate": rate(responses, bot_answered) if responses else None,
                "mean": _mean(total, responses), "distribution": distribution,
                "by_outcome": {outcome: _mean(s, n) for outcome, (n, s) in
                               sorted(sums.items(), key=lambda item: _outcome_order(item[0]))}}

    # -- statements, plans, forecast, budget ----------------------------------------------

    def statements(self) -> tuple[Statement | None, Comparison | None]:
        """The active plan's statement of the month holding the window's start, and every
        plan priced for that month (plans in another currency or not yet started left out)."""
        active, period = self.pricing.active, self.period
        if active is None or period is None:
            return None, None
        plans = [s for s in self.pricing.plans
                 if s.currency == active.currency and _has_statement(s, period)]
        if not _has_statement(active, period):
            return None, None
        if all(s.plan_id != active.plan_id for s in plans):
            plans.append(active)
        usages = period_usages(self.conn, plans, period)
        comparison = compare_totals(
            [period_total(s, period, usages[s.plan_id]) for s in plans], period,
            active=active.plan_id, low=Decimal(1), high=Decimal(1))
        statement = next(p.statement for p in comparison.plans if p.plan_id == active.plan_id)
        return statement, comparison

    @staticmethod
    def plan_rows(comparison: Comparison | None) -> list[dict[str, Any]]:
        if comparison is None:
            return []
        return [{"plan_id": p.plan_id, "total": format(p.total, "f"),
                 "vs_active": None if p.difference is None else format(p.difference, "f")}
                for p in comparison.plans]

    def forecast_and_budget(self, statement: Statement | None,
                            ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        active, period = self.pricing.active, self.period
        if active is None or period is None or statement is None:
            return None, None
        ahead = forecast(self.conn, active, period, statement, self.now)
        budget = None
        if self.pricing.budget is not None and self.money is not None:
            budget = budget_status(cost_to_date(self.conn, active, period), self.pricing.budget,
                                   self.money)
        return ahead, budget

    # -- rows -----------------------------------------------------------------------------

    def rows(self, days: dict[Any, Counts], hours: dict[int, Counts]) -> list[dict[str, Any]]:
        by = self.by
        if by == "day":
            return [self.row(day.isoformat(), c) for day, c in days.items()]
        if by == "week":
            weeks: dict[str, Counts] = {}
            for day, c in days.items():
                weeks.setdefault(iso_week(day), Counts()).add(c.values)
            return [self.row(key, c) for key, c in weeks.items()]
        if by == "hour":
            return [self.row(f"{hour:02d}", c) for hour, c in hours.items()]
        if by == "weekday":
            weekdays = {name: Counts() for name in WEEKDAYS}
            for day, c in days.items():
                weekdays[WEEKDAYS[day.weekday()]].add(c.values)
            return [self.row(key, c) for key, c in weekdays.items()]
        groups: dict[Any, Counts] = {o: Counts() for o in OUTCOMES} if by == "outcome" else {}
        for key, *values in self.conn.execute(
                f"SELECT {by}, {_SLOT_SUMS} FROM {self.slot_rows} GROUP BY 1 "
                "HAVING sum(calls) <> 0", self.params):
            key = None if isinstance(key, bytes) else key  # the roll-up's NULL
            groups.setdefault(key, Counts()).add(values)
        if by == "outcome":
            return [self.row(key, c) for key, c in groups.items()]
        ordered = sorted(groups.items(), key=lambda item: (-item[1].offered, item[0] is None,
                                                           item[0] or ""))
        return [self.row(key, c) for key, c in ordered]


def _has_statement(series: PlanSeries, period: str) -> bool:
    try:
        series.fee_version(period)
    except NoStatement:
        return False
    return True


def _outcome_order(outcome: str) -> tuple[int, str]:
    return (OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES), outcome)


def _mean(total: Fraction, count: int) -> float | None:
    if not count:
        return None
    mean = total / count
    return float((Decimal(mean.numerator) / Decimal(mean.denominator)).quantize(
        Decimal("0.01"), ROUND_HALF_UP))


def _number(value: Decimal | None, places: int) -> float | None:
    if value is None:
        return None
    return float(value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP))


def _exact(value: Decimal) -> int | float:
    """A quantity as a JSON number: an int when whole."""
    return int(value) if value == value.to_integral_value() else float(value)


def _module_order(item: tuple[tuple[str, str | None], list[int]]) -> tuple[str, bool, str]:
    (module, unit), _ = item
    return module, unit is not None, unit or ""


def build_report(store: CallStore, window: Window, by: str = "day",
                 pricing: Pricing = Pricing(), now: float | None = None) -> dict[str, Any]:
    """The report of the calls offered in `window`, rows by `by` (see `BY`); `pricing` gives
    the plans (cost, SLA, plan advice, forecast, budget: null or [] without an active plan);
    `now` (UTC epoch, default the clock) places the forecast."""
    return _Report(store, window, by, pricing, time.time() if now is None else now).build()
