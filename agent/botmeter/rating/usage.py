"""A period's statement from its summed usage, without rating each call.

A statement's usage line of a charge depends only on the sum of its calls' metered
quantities: the per-call amounts of a period add up to cost(total - allowance) (the meter
charges each call the difference of two such costs). So a period can be priced from sums
made elsewhere (the report sums them in SQL), per version in force and charge, plus the
SLA's counts. `period_total` is `build_statement` for those sums; tests check both agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from .book import PlanSeries
from .compare import ScaledTotal
from .compiled import compile_plan
from .plan import PlanVersion
from .sla import csat_measure, sla_measure
from .statement import Statement, statement_from


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """What a plan's statement of a period depends on, over the period's calls rated under
    the plan (ended in the period, offered since the plan starts).

    `quantities`: per version index (in `PlanSeries.versions`) with calls in the period, each
    charge's sum of the calls' metered quantities in scaled units (`ScaledCharge`); `calls`:
    how many calls; `answer`: (offered, counted, answered) of the fee version's answer-rate
    clause (None without one); `csat`: (responses, total score on the 5-point scale) of its
    satisfaction clause (None without one).
    """

    quantities: Mapping[int, Sequence[int]]
    calls: int
    answer: tuple[int, int, int] | None = None
    csat: tuple[int, Fraction] | None = None


@dataclass(frozen=True, slots=True)
class SummedState:
    """A version's period from its summed quantities, as a PeriodState's totals would be."""

    version: PlanVersion
    quantities: tuple[int, ...] = field(default=())

    def totals(self) -> list[tuple[int, int]]:
        """Per charge: (scaled quantity, amount in precision steps)."""
        charges = compile_plan(self.version).charges
        quantities = self.quantities or (0,) * len(charges)
        return [(q, sc.cost(q - sc.included) if q > sc.included else 0)
                for sc, q in zip(charges, quantities, strict=True)]


def period_total(series: PlanSeries, period: str, usage: PeriodUsage) -> ScaledTotal:
    """The plan's period priced from its summed usage: `.statement` is the statement
    `build_statement` makes of the same calls. NoStatement for a period before the plan."""
    fee_version = series.fee_version(period)
    states = [SummedState(series.versions[i], tuple(q)) for i, q in sorted(usage.quantities.items())]
    if not states:
        states = [SummedState(fee_version)]
    sla = fee_version.sla
    answer = csat = None
    if sla is not None and sla.has_answer_rate:
        offered, counted, answered = usage.answer or (0, 0, 0)
        answer = sla_measure(sla, offered, counted, answered)
    if sla is not None and sla.has_csat:
        responses, total = usage.csat or (0, Fraction(0))
        csat = csat_measure(sla, responses, total)
    statement: Statement = statement_from(series, period, states, usage.calls, answer, csat)
    return ScaledTotal(series, period, rated=(states, statement))
