"""Price one period's calls under several plans, side by side, and find break-even volumes.

Volume scaling assumes the period's mix scales: k times the calls means k times every
charge's metered quantity, with fees unchanged. The SLA's measures scale with the mix: the
answer rate and the mean score stay as measured, and k times the responses may reach
csat_min_responses, so a satisfaction clause below its target that was not judged becomes
missed (and one that was missed is not judged at a volume too small to judge). Since a
period's per-call amounts add up to the rounded cost of its total quantity, the usage amount
at k is exactly round(model(k * quantity - allowance)) per charge, evaluated with Fractions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any

from ..tracking.record import CallRecord
from .compiled import compile_plan
from .engine import Plan, as_series
from .statement import RatedState, Statement, decimal_text, in_period, period_states, statement_of

LOW, HIGH = Decimal("0.01"), Decimal(100)
GRID = 400
BISECTIONS = 60


@dataclass(frozen=True, slots=True)
class PlanCost:
    """One plan's row: its total and the difference to the active plan (+ = dearer)."""

    plan_id: str
    name: str
    total: Decimal
    difference: Decimal | None
    active: bool
    statement: Statement


@dataclass(frozen=True, slots=True)
class BreakEven:
    """The smallest volume in [0.01x, 100x] where two plans cost the same or swap order
    (compared before the totals' final rounding to the minor unit)."""

    plan_a: str
    plan_b: str
    multiple: Decimal | None  # of the period's calls; None = they never cross in range
    calls: int | None
    cheaper_below: str | None  # None = equal
    cheaper_above: str | None


@dataclass(frozen=True, slots=True)
class Comparison:
    period: str
    currency: str
    calls: int
    active: str | None
    plans: tuple[PlanCost, ...]  # cheapest first
    break_even: tuple[BreakEven, ...]

    def rows(self) -> list[dict[str, str]]:
        """Table-ready rows of plan costs, cheapest first."""
        return [{"plan": p.plan_id, "name": p.name, "total": f"{p.total:f}",
                 "vs_active": _signed(p.difference), "active": "*" if p.active else ""}
                for p in self.plans]

    def sla_rows(self) -> list[dict[str, str]]:
        """Table-ready rows of each plan's SLA clauses (plans in the order of `plans`)."""
        return [{"plan": p.plan_id, "clause": CLAUSE_NAMES[c.clause],
                 "measured": decimal_text(c.measured) or "n/a",
                 "target": decimal_text(c.target) or "", "sample": str(c.sample),
                 "verdict": verdict(c.met)}
                for p in self.plans for c in p.statement.sla_clauses]

    def break_even_rows(self) -> list[dict[str, str]]:
        return [{"plans": f"{b.plan_a} / {b.plan_b}",
                 "multiple": f"{b.multiple:f}x" if b.multiple is not None else "never",
                 "calls": str(b.calls) if b.calls is not None else "",
                 "cheaper_below": b.cheaper_below or "equal",
                 "cheaper_above": b.cheaper_above or "equal"} for b in self.break_even]

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "currency": self.currency,
            "calls": self.calls,
            "active": self.active,
            "plans": [{"plan_id": p.plan_id, "name": p.name, "total": decimal_text(p.total),
                       "difference": decimal_text(p.difference), "active": p.active,
                       "sla": [clause.to_json() for clause in p.statement.sla_clauses]}
                      for p in self.plans],
            "break_even": [{"plans": [b.plan_a, b.plan_b], "multiple": decimal_text(b.multiple),
                            "calls": b.calls, "cheaper_below": b.cheaper_below,
                            "cheaper_above": b.cheaper_above} for b in self.break_even],
        }


CLAUSE_NAMES = {"answer_rate": "answer rate", "csat": "satisfaction"}


def verdict(met: bool | None) -> str:
    """A clause's verdict in words: met, missed or not judged."""
    return "not judged" if met is None else "met" if met else "missed"


def _signed(value: Decimal | None) -> str:
    if value is None:
        return ""
    return f"+{value:f}" if value > 0 else f"{value:f}"


class ScaledTotal:
    """A plan's period total as a function of the volume multiple k (exact)."""

    def __init__(self, plan: Plan, period: str, calls: Sequence[CallRecord] = (), *,
                 rated: tuple[Sequence[RatedState], Statement] | None = None) -> None:
        """From the period's calls, or `rated`: the period's rated states and the statement
        made of them (`usage.period_total`)."""
        series = as_series(plan)
        fee_version = series.fee_version(period)  # NoStatement: a period before the plan
        if rated is None:
            ordered = in_period(calls, series, period)
            states: Sequence[RatedState] = period_states(series, period, ordered)
            rated = states, statement_of(series, period, ordered, states)
        self.states, self.statement = rated
        self._totals: dict[Fraction, Decimal] = {}
        self.fixed = sum((line.amount for line in self.statement.lines
                          if line.kind in ("fee", "sla_fee")), Decimal(0))
        #: (credit percent, fewest responses) of each clause missed at volume k when k times
        #: its sample reaches the fewest: the answer rate and the mean score stay as measured
        #: (the mix scales), so the answer rate keeps its verdict and the satisfaction clause
        #: keeps its mean but is judged once k times its responses reach csat_min_responses
        self.credits: list[tuple[Decimal, Fraction]] = []
        for clause in self.statement.sla_clauses:
            if clause.clause == "answer_rate" and clause.met is False:
                self.credits.append((clause.credit_percent, Fraction(0)))
            elif clause.clause == "csat" and self.statement.csat is not None:
                csat, sla = self.statement.csat, fee_version.sla
                assert sla is not None and sla.min_csat is not None
                mean = csat.mean
                if mean is not None and mean < Fraction(sla.min_csat):
                    fewest = Fraction(csat.min_responses, csat.responses)
                    self.credits.append((clause.credit_percent, fewest))
        self.precision = fee_version.precision
        self.quantum = Decimal(1).scaleb(-fee_version.minor_unit)

    def usage(self, k: Fraction) -> Decimal:
        total = Decimal(0)
        for state in self.states:
            plan = compile_plan(state.version)
            steps = 0
            for sc, (quantity, _) in zip(plan.charges, state.totals(), strict=True):
                billed = k * quantity - sc.included
                if billed > 0:
                    steps += sc.cost(billed)  # type: ignore[arg-type]
            total += Decimal(steps).scaleb(-plan.digits)
        return total

    def total(self, k: Fraction, rounded: bool = True) -> Decimal:
        """The statement total at k times the volume (rounded=False: before the final
        rounding to the minor unit, which break-evens compare so ties are not widened)."""
        if not rounded:
            exact = self._totals.get(k)
            if exact is None:
                exact = self._totals[k] = self._exact(k)
            return exact
        return self._exact(k).quantize(self.quantum, ROUND_HALF_UP)

    def _exact(self, k: Fraction) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 60
            usage = self.usage(k)
            total = usage + self.fixed
            for percent, fewest in self.credits:
                if k >= fewest:
                    total -= (usage * percent / 100).quantize(self.precision, ROUND_HALF_UP)
            return total


def _grid(low: Decimal, high: Decimal, points: int) -> list[Fraction]:
    """Log-spaced multiples from low to high (6 significant digits), with 1 exactly."""
    ratio = float(high / low)
    values = {Fraction(low), Fraction(high), Fraction(1)}
    for i in range(1, points):
        values.add(Fraction(Decimal(f"{float(low) * ratio ** (i / points):.6g}")))
    return sorted(v for v in values if Fraction(low) <= v <= Fraction(high))


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def break_even(a: ScaledTotal, b: ScaledTotal, ids: tuple[str, str], calls: int,
               grid: list[Fraction]) -> BreakEven:
    """First k on the grid where a - b is zero or changes sign, refined by bisection.

    A sign change between two grid points is bisected 60 times (far below the 0.0001x
    reported); two crossings between neighbouring grid points (2.3% apart) go unnoticed.
    """
    def sign(k: Fraction) -> int:
        return _sign(a.total(k, rounded=False) - b.total(k, rounded=False))

    def cheaper(s: int) -> str | None:
        return None if s == 0 else (ids[1] if s > 0 else ids[0])

    first = sign(grid[0])
    crossing = grid[0] if first == 0 else _crossing(sign, grid, first)
    if crossing is None:
        return BreakEven(ids[0], ids[1], None, None, cheaper(first), cheaper(first))
    later = [crossing * (1 + Fraction(1, 10**6)), *(k for k in grid if k > crossing)]
    after = next((s for s in map(sign, later) if s != 0), 0)
    multiple = (Decimal(crossing.numerator) / Decimal(crossing.denominator))
    return BreakEven(ids[0], ids[1], multiple.quantize(Decimal("0.0001"), ROUND_HALF_UP),
                     int((crossing * calls + Fraction(1, 2)) // 1), cheaper(first), cheaper(after))


def _crossing(sign: Callable[[Fraction], int], grid: list[Fraction], first: int,
              ) -> Fraction | None:
    previous = grid[0]
    for k in grid[1:]:
        s = sign(k)
        if s == 0:
            return k
        if s != first:
            low, high = previous, k
            for _ in range(BISECTIONS):
                middle = (low + high) / 2
                if sign(middle) == first:
                    low = middle
                else:
                    high = middle
            return high
        previous = k
    return None


def compare_plans(plans: Sequence[Plan], period: str, calls: Iterable[CallRecord],
                  active: str | None = None, low: Decimal = LOW, high: Decimal = HIGH,
                  ) -> Comparison:
    """Each plan's statement total for the period's calls, cheapest first (ties by plan id),
    the difference to the `active` plan id, and break-even volumes for every pair."""
    calls = list(calls)
    return compare_totals([ScaledTotal(plan, period, calls) for plan in plans], period,
                          active, low, high)


def compare_totals(priced: Sequence[ScaledTotal], period: str, active: str | None = None,
                   low: Decimal = LOW, high: Decimal = HIGH) -> Comparison:
    """`compare_plans` of plans already priced for the period."""
    currencies = {p.statement.currency for p in priced}
    if len(currencies) > 1:
        raise ValueError(f"cannot compare plans in different currencies: {sorted(currencies)}")
    base = next((p.statement.total for p in priced if p.statement.plan_id == active), None)
    rows = sorted((PlanCost(p.statement.plan_id, p.statement.name, p.statement.total,
                            p.statement.total - base if base is not None else None,
                            p.statement.plan_id == active, p.statement) for p in priced),
                  key=lambda row: (row.total, row.plan_id))
    reference = next((p for p in priced if p.statement.plan_id == active), priced[0] if priced
                     else None)
    count = reference.statement.calls if reference else 0
    grid = _grid(low, high, GRID)
    pairs = [break_even(priced[i], priced[j],
                        (priced[i].statement.plan_id, priced[j].statement.plan_id), count, grid)
             for i in range(len(priced)) for j in range(i + 1, len(priced))]
    return Comparison(period, currencies.pop() if currencies else "", count, active,
                      tuple(rows), tuple(pairs))
