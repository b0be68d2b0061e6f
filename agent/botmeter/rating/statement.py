"""A period's statement (Semantics 4-5): usage lines, fees, the SLA, and the total."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any, Literal, Protocol

from ..tracking.record import CallRecord
from .book import PlanSeries
from .compiled import compile_plan
from .engine import PeriodState, Plan, as_series, order_calls, split_periods
from .periods import period_bounds, period_of_date
from .plan import PlanVersion, Sla
from .sla import CsatMeasure, SlaMeasure, measure_csat, measure_sla

LineKind = Literal["usage", "fee", "sla_fee", "sla_credit"]
Clause = Literal["answer_rate", "csat"]
QUANTITY_PLACES = 6


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One line; usage lines also carry quantity, included (allowance used) and billed; SLA
    credit lines the clause, what was measured, its target and the sample it was measured on
    (as the statement's SlaClause of that clause)."""

    kind: LineKind
    name: str
    amount: Decimal
    quantity: Decimal | None = None
    included: Decimal | None = None
    billed: Decimal | None = None
    clause: Clause | None = None
    measured: Decimal | None = None
    target: Decimal | None = None
    sample: int | None = None

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.kind == "usage":
            line["quantity"] = decimal_text(self.quantity)
            line["included"] = decimal_text(self.included)
            line["billed"] = decimal_text(self.billed)
        line["amount"] = decimal_text(self.amount)
        if self.kind == "sla_credit":
            line["clause"] = self.clause
            line["measured"] = decimal_text(self.measured)
            line["target"] = decimal_text(self.target)
            line["sample"] = self.sample
        return line


@dataclass(frozen=True, slots=True)
class SlaClause:
    """One SLA clause as a period's statement measures it, whatever the verdict.

    `measured` is the answer rate or the mean score on the 5-point scale (None when nothing
    was measured), exact when it fits in 6 decimal places, else cut to 6 (rounded down);
    `sample` the counted calls or the responses; `met` None when the clause is not judged
    (too few responses); `credit` the (negative) credit when it is missed, else None.
    """

    clause: Clause
    measured: Decimal | None
    target: Decimal
    sample: int
    met: bool | None
    credit_percent: Decimal
    credit: Decimal | None = None
    credit_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"clause": self.clause, "measured": decimal_text(self.measured),
                "target": decimal_text(self.target), "sample": self.sample, "met": self.met}

    def credit_line(self) -> StatementLine | None:
        """The credit line of a missed clause (None when met or not judged)."""
        if self.credit is None:
            return None
        return StatementLine("sla_credit", self.credit_name, self.credit, clause=self.clause,
                             measured=self.measured, target=self.target, sample=self.sample)


@dataclass(frozen=True, slots=True)
class Statement:
    """What a period costs under a plan; `total` is rounded once, to the currency's minor unit."""

    plan_id: str
    name: str
    period: str
    currency: str
    lines: tuple[StatementLine, ...]
    total: Decimal
    calls: int
    sla: SlaMeasure | None = None  # the answer-rate clause's measure (None without it)
    csat: CsatMeasure | None = None  # the satisfaction clause's measure (None without it)
    sla_clauses: tuple[SlaClause, ...] = ()  # the plan's clauses, answer rate first

    @property
    def usage_amount(self) -> Decimal:
        return sum((line.amount for line in self.lines if line.kind == "usage"), Decimal(0))

    def to_json(self) -> dict[str, Any]:
        """The statement JSON of the spec; amounts and quantities as decimal strings."""
        return {
            "plan_id": self.plan_id,
            "period": self.period,
            "currency": self.currency,
            "lines": [line.to_json() for line in self.lines],
            "sla": [clause.to_json() for clause in self.sla_clauses],
            "total": decimal_text(self.total),
        }


def decimal_text(value: Decimal | None) -> str | None:
    """A Decimal as a plain decimal string (never an exponent)."""
    return None if value is None else format(value, "f")


def units_decimal(value: Fraction, rounding: str = ROUND_HALF_UP) -> Decimal:
    """Exact priced units as a Decimal: exact up to 6 places, else rounded to 6 (half-up)."""
    with localcontext() as ctx:
        ctx.prec = 60
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        if exact.as_tuple().exponent >= -QUANTITY_PLACES:  # type: ignore[operator]
            return exact
        return exact.quantize(Decimal(1).scaleb(-QUANTITY_PLACES), rounding)


def measured_decimal(value: Fraction) -> Decimal:
    """A measured rate or mean score: exact up to 6 places, else cut (rounded down) to 6, so
    that a value just below its target never reads as equal to it."""
    return units_decimal(value, ROUND_DOWN)


def in_period(calls: Iterable[CallRecord], series: PlanSeries, period: str) -> list[CallRecord]:
    """The plan's calls of the period, in rating order: those whose ended_at falls in it (plan's
    time zone), except calls offered before the plan starts (they are not rated under it)."""
    start, end = period_bounds(period, series.timezone)
    begins = series.starts[0]
    return order_calls(c for c in calls if start <= c.ended_at < end and c.offered_at >= begins)


def period_states(series: PlanSeries, period: str, ordered: list[CallRecord],
                  ) -> list[PeriodState]:
    """One rated state per version with calls in the period (else the fee version, empty)."""
    states = []
    for _, index, group in split_periods(ordered, series):
        state = PeriodState(series.versions[index], period)
        state.add_sorted(group, {})
        states.append(state)
    return states or [PeriodState(series.fee_version(period), period)]


class RatedState(Protocol):
    """A version's rated period: a PeriodState, or its totals summed elsewhere (usage.py)."""

    @property
    def version(self) -> PlanVersion: ...

    def totals(self) -> list[tuple[int, int]]: ...


def usage_lines(states: Sequence[RatedState]) -> list[StatementLine]:
    """Usage lines per charge (per version and charge when the period spans versions)."""
    lines = []
    for state in states:
        plan = compile_plan(state.version)
        suffix = f" ({state.version.label})" if len(states) > 1 else ""
        for sc, (total, charged) in zip(plan.charges, state.totals(), strict=True):
            quantity = sc.to_units(total)
            included = sc.to_units(min(total, sc.included))
            lines.append(StatementLine(
                "usage", sc.charge.name + suffix, plan.amount(charged),
                units_decimal(quantity), units_decimal(included),
                units_decimal(quantity - included)))
    return lines


def fee_lines(series: PlanSeries, period: str) -> list[StatementLine]:
    """The fee version's period fees, and every once fee due in this period.

    A once fee is billed when the version in force on its `on` date lists it (so a fee
    repeated in a later version is not billed twice); `PlanSeries.warnings` names the once
    fees that are never billed.
    """
    lines = [StatementLine("fee", fee.name, fee.amount)
             for fee in series.fee_version(period).fees if fee.every == "period"]
    for version in series.versions:
        for fee in version.fees:
            if (fee.every == "once" and fee.on is not None and period_of_date(fee.on) == period
                    and series.version_on(fee.on) is version):
                lines.append(StatementLine("fee", fee.name, fee.amount))
    return lines


def sla_clauses(sla: Sla | None, answer: SlaMeasure | None, csat: CsatMeasure | None,
                usage: Decimal, precision: Decimal) -> tuple[SlaClause, ...]:
    """The SLA's clauses with their verdicts; a missed clause credits its percent of the
    usage amount (negative, rounded half-up to the plan's precision)."""
    if sla is None:
        return ()
    clauses = []
    if answer is not None:
        assert sla.answer_rate is not None and sla.max_ring_seconds is not None
        assert sla.credit_percent is not None
        name = (f"SLA credit: answer rate {answer.percent()}% < {_plain(sla.answer_rate * 100)}% "
                f"within {_plain(sla.max_ring_seconds)} s")
        measured = (measured_decimal(Fraction(answer.answered, answer.counted))
                    if answer.counted else None)
        clauses.append(SlaClause("answer_rate", measured, sla.answer_rate, answer.counted,
                                 answer.met, sla.credit_percent,
                                 None if answer.met else _credit(usage, sla.credit_percent,
                                                                 precision), name))
    if csat is not None:
        assert sla.min_csat is not None and sla.csat_credit_percent is not None
        mean = csat.mean
        name = (f"SLA credit: satisfaction {csat.shown()} < {sla.min_csat:f} of 5 "
                f"({csat.responses} responses)")
        clauses.append(SlaClause("csat", measured_decimal(mean) if mean is not None else None,
                                 sla.min_csat, csat.responses, csat.met, sla.csat_credit_percent,
                                 _credit(usage, sla.csat_credit_percent, precision)
                                 if csat.met is False else None, name))
    return tuple(clauses)


def _credit(usage: Decimal, percent: Decimal, precision: Decimal) -> Decimal:
    """A credit: percent of the usage amount, rounded half-up to precision, negative."""
    with localcontext() as ctx:
        ctx.prec = 60
        return -(usage * percent / 100).quantize(precision, ROUND_HALF_UP)


def sla_lines(sla: Sla | None, clauses: Iterable[SlaClause]) -> list[StatementLine]:
    """The SLA fee and a credit line per missed clause."""
    if sla is None:
        return []
    lines = [StatementLine("sla_fee", "SLA guarantee", sla.fee)]
    for clause in clauses:
        line = clause.credit_line()
        if line is not None:
            lines.append(line)
    return lines


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def total_of(lines: Iterable[StatementLine], minor_unit: int) -> Decimal:
    """The sum of the lines, rounded half-up to the currency's minor unit."""
    with localcontext() as ctx:
        ctx.prec = 60
        total = sum((line.amount for line in lines), Decimal(0))
        return total.quantize(Decimal(1).scaleb(-minor_unit), ROUND_HALF_UP)


def build_statement(plan: Plan, period: str, calls: Iterable[CallRecord]) -> Statement:
    """The statement of `period` (`YYYY-MM`) from its calls (calls outside it are ignored).

    Period fees and the SLA come from the version in force on the period's first day (the
    first version in the month the plan starts); the SLA is measured over all the period's
    calls rated under the plan. NoStatement for a period that ends before the plan starts.
    """
    series = as_series(plan)
    series.fee_version(period)  # NoStatement before anything else
    ordered = in_period(calls, series, period)
    return statement_of(series, period, ordered, period_states(series, period, ordered))


def statement_of(series: PlanSeries, period: str, ordered: list[CallRecord],
                 states: Sequence[RatedState]) -> Statement:
    """The statement from a period's calls under the plan (in order) and their rated states."""
    sla = series.fee_version(period).sla
    answer = measure_sla(sla, ordered) if sla is not None and sla.has_answer_rate else None
    csat = measure_csat(sla, ordered) if sla is not None and sla.has_csat else None
    return statement_from(series, period, states, len(ordered), answer, csat)


def statement_from(series: PlanSeries, period: str, states: Sequence[RatedState], calls: int,
                   answer: SlaMeasure | None, csat: CsatMeasure | None) -> Statement:
    """The statement from the rated states of a period's `calls` calls under the plan and the
    SLA's measures over them (those of the fee version's clauses, else None)."""
    fee_version = series.fee_version(period)
    usage = usage_lines(states)
    sla = fee_version.sla
    usage_amount = sum((line.amount for line in usage), Decimal(0))
    clauses = sla_clauses(sla, answer, csat, usage_amount, fee_version.precision)
    lines = (*usage, *fee_lines(series, period), *sla_lines(sla, clauses))
    return Statement(series.plan_id, fee_version.name, period, series.currency, lines,
                     total_of(lines, fee_version.minor_unit), calls, answer, csat,
                     clauses)
