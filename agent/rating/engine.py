"""Rating calls (Semantics 1-3): per call, per charge, the marginal amount in its period.

A period's calls are rated in (ended_at, call_id) order, separately for each plan version in
force (by offered_at) within the period, each with its own allowance.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter

from ..tracking.record import CallRecord
from .book import PlanSeries
from .compiled import CallCharge, CompiledPlan, compile_plan
from .errors import RatingError, RerateNeeded
from .meters import make_meter
from .periods import PeriodFinder
from .plan import PlanVersion

ORDER = attrgetter("ended_at", "call_id")
_ENDED = attrgetter("ended_at")
Plan = PlanVersion | PlanSeries


def as_series(plan: Plan) -> PlanSeries:
    """A version on its own rates every call, whatever its effective_from."""
    return plan if isinstance(plan, PlanSeries) else PlanSeries([plan])


class PeriodState:
    """Running totals of one plan version in one period: rates each next call in O(1)."""

    def __init__(self, version: PlanVersion, period: str) -> None:
        self.version = version
        self.period = period
        self.plan: CompiledPlan = compile_plan(version)
        self.meters = tuple(make_meter(sc) for sc in self.plan.charges)
        self.last: tuple[float, str] | None = None
        self.calls = 0

    def add(self, call: CallRecord) -> CallCharge:
        """Rate the next call; RerateNeeded if it does not come after the last one."""
        key = (call.ended_at, call.call_id)
        if self.last is not None and key <= self.last:
            raise RerateNeeded(self.period, f"call {call.call_id} arrived out of order")
        result = self._rate((call,), None)
        self.last = key
        return result

    def add_sorted(self, calls: Sequence[CallRecord], out: dict[str, CallCharge] | None) -> None:
        """Rate calls already in (ended_at, call_id) order, after every call rated so far."""
        if not calls:
            return
        first = calls[0]
        if self.last is not None and (first.ended_at, first.call_id) <= self.last:
            raise RerateNeeded(self.period, f"call {first.call_id} arrived out of order")
        self._rate(calls, out)
        last = calls[-1]
        self.last = (last.ended_at, last.call_id)

    def totals(self) -> list[tuple[int, int]]:
        """Per charge: (scaled quantity so far, amount so far in precision steps)."""
        return [m.totals() for m in self.meters]

    def _rate(self, calls: Sequence[CallRecord], out: dict[str, CallCharge] | None,
              ) -> CallCharge:
        results = self.plan.results
        build = self.plan.build
        steps = tuple(m.step for m in self.meters)
        keyer = _keyer(steps)
        result: CallCharge | None = None
        for call in calls:
            key = keyer(call)
            result = results.get(key)
            if result is None:
                result = build(key)
            if out is not None:
                out[call.call_id] = result
        self.calls += len(calls)
        assert result is not None
        return result


def _keyer(steps: tuple) -> object:
    """One call's meter readings as a tuple, unrolled for the usual few charges."""
    if len(steps) == 1:
        (a,) = steps
        return lambda call: (a(call),)
    if len(steps) == 2:
        a, b = steps
        return lambda call: (a(call), b(call))
    if len(steps) == 3:
        a, b, c = steps
        return lambda call: (a(call), b(call), c(call))
    return lambda call: tuple([s(call) for s in steps])


def split_periods(ordered: Sequence[CallRecord], series: PlanSeries,
                  ) -> Iterator[tuple[str, int, Sequence[CallRecord]]]:
    """(period, version index, calls) groups of calls sorted by (ended_at, call_id)."""
    finder = PeriodFinder(series.timezone)
    lo = 0
    while lo < len(ordered):
        period = finder(ordered[lo].ended_at)
        hi = bisect_left(ordered, finder.end, lo, key=_ENDED)
        chunk = ordered[lo:hi]
        if len(series.versions) == 1:
            yield period, 0, chunk
        else:
            groups: dict[int, list[CallRecord]] = {}
            index = series.version_index
            for call in chunk:
                groups.setdefault(index(call.offered_at), []).append(call)
            for i in sorted(groups):
                yield period, i, groups[i]
        lo = hi


def rate_calls(calls: Iterable[CallRecord], plan: Plan) -> dict[str, CallCharge]:
    """Every call's amount and per-charge lines, rating each period from its start.

    `plan` is one version (rates every call) or a series (the version in force by offered_at).
    """
    return rate_period(calls, plan)[0]


def rate_period(calls: Iterable[CallRecord], plan: Plan,
                ) -> tuple[dict[str, CallCharge], dict[tuple[str, int], PeriodState]]:
    """Like rate_calls, also returning the period states keyed by (period, version index)."""
    series = as_series(plan)
    ordered = sorted(calls, key=ORDER)
    out: dict[str, CallCharge] = {}
    states: dict[tuple[str, int], PeriodState] = {}
    for period, index, group in split_periods(ordered, series):
        state = states[period, index] = PeriodState(series.versions[index], period)
        state.add_sorted(group, out)
    if len(out) != len(ordered):
        raise RatingError("duplicate call_id among the calls to rate")
    return out, states
