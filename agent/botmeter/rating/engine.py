"""Rating calls (Semantics 1-3, 6): per call, per charge, the marginal amount in its period.

A period's calls are rated in (ended_at, call_id) order, separately for each plan version in
force (by offered_at) within the period, each with its own allowance. A call offered before
the plan starts is not rated.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from operator import attrgetter, eq

from ..tracking.record import CallRecord
from .book import PlanSeries
from .compiled import CallCharge, CompiledPlan, compile_plan
from .errors import RatingError, RerateNeeded
from .meters import Step, make_meter
from .periods import PeriodFinder
from .plan import PlanVersion

_ENDED = attrgetter("ended_at")
_OFFERED = attrgetter("offered_at")
_ID = attrgetter("call_id")
Plan = PlanVersion | PlanSeries
Reading = tuple[int, int]


def as_series(plan: Plan) -> PlanSeries:
    """A version on its own is a plan of one version (its effective_from, if any, is when the
    plan starts)."""
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
        self._steps: tuple[Step, ...] = tuple(m.step for m in self.meters)
        self._get = self.plan.results.get
        self._build = self.plan.build

    def add(self, call: CallRecord) -> CallCharge:
        """Rate the next call; RerateNeeded if it does not come after the last one."""
        key = (call.ended_at, call.call_id)
        if self.last is not None and key <= self.last:
            raise RerateNeeded(self.period, f"call {call.call_id} arrived out of order")
        self.last = key
        self.calls += 1
        readings = tuple([step(call) for step in self._steps])
        return self._get(readings) or self._build(readings)

    def add_sorted(self, calls: Sequence[CallRecord], out: dict[str, CallCharge]) -> None:
        """Rate calls already in (ended_at, call_id) order, after every call rated so far,
        into `out` by call_id."""
        if not calls:
            return
        first = calls[0]
        if self.last is not None and (first.ended_at, first.call_id) <= self.last:
            raise RerateNeeded(self.period, f"call {first.call_id} arrived out of order")
        get, build = self._get, self._build
        readings: tuple[Reading, ...]
        if len(self._steps) == 1:
            (a,) = self._steps
            for call in calls:
                readings = (a(call),)
                out[call.call_id] = get(readings) or build(readings)
        elif len(self._steps) == 2:
            a, b = self._steps
            for call in calls:
                readings = (a(call), b(call))
                out[call.call_id] = get(readings) or build(readings)
        else:
            steps = self._steps
            for call in calls:
                readings = tuple([step(call) for step in steps])
                out[call.call_id] = get(readings) or build(readings)
        self.calls += len(calls)
        last = calls[-1]
        self.last = (last.ended_at, last.call_id)

    def totals(self) -> list[tuple[int, int]]:
        """Per charge: (scaled quantity so far, amount so far in precision steps)."""
        return [m.totals() for m in self.meters]


def order_calls(calls: Iterable[CallRecord]) -> list[CallRecord]:
    """Calls in rating order, (ended_at, call_id): a float sort, then ties by call_id."""
    ordered = sorted(calls, key=_ENDED)
    ends = list(map(_ENDED, ordered))
    same = list(map(eq, ends, islice(ends, 1, None)))  # same[i]: i and i + 1 end together
    start = 0
    while True:
        try:
            start = same.index(True, start)
        except ValueError:
            return ordered
        stop = start + 1
        while stop < len(same) and same[stop]:
            stop += 1
        ordered[start:stop + 1] = sorted(ordered[start:stop + 1], key=_ID)
        start = stop


def split_periods(ordered: Sequence[CallRecord], series: PlanSeries,
                  ) -> Iterator[tuple[str, int, Sequence[CallRecord]]]:
    """(period, version index, calls) groups of calls sorted by (ended_at, call_id) and offered
    since the plan starts (`since_plan_start`)."""
    finder = PeriodFinder(series.timezone)
    single = len(series.versions) == 1
    index = series.version_index
    lo = 0
    while lo < len(ordered):
        period = finder(ordered[lo].ended_at)
        hi = bisect_left(ordered, finder.end, lo, key=_ENDED)
        chunk = ordered[lo:hi]
        lo = hi
        if single:
            yield period, 0, chunk
            continue
        groups: dict[int, list[CallRecord]] = {}
        for call in chunk:
            i = index(call.offered_at)
            if i is not None:
                groups.setdefault(i, []).append(call)
        for i in sorted(groups):
            yield period, i, groups[i]


def since_plan_start(calls: Iterable[CallRecord], series: PlanSeries) -> list[CallRecord]:
    """The calls offered since the plan starts: the others are not rated (Semantics 6).

    Checked before the calls are sorted, while they are still in memory order: the scan is
    then a few milliseconds a million calls, where after sorting it costs a cache miss a call.
    """
    calls = calls if isinstance(calls, list) else list(calls)
    begins = series.starts[0]
    if calls and min(map(_OFFERED, calls)) < begins:
        return [call for call in calls if call.offered_at >= begins]
    return calls


def rate_calls(calls: Iterable[CallRecord], plan: Plan) -> dict[str, CallCharge]:
    """Every rated call's amount and per-charge lines, rating each period from its start.

    `plan` is one version or a series (the version in force by offered_at). Calls offered
    before the plan starts are not rated: they have no entry.
    """
    return rate_period(calls, plan)[0]


def rate_period(calls: Iterable[CallRecord], plan: Plan,
                ) -> tuple[dict[str, CallCharge], dict[tuple[str, int], PeriodState]]:
    """Like rate_calls, also returning the period states keyed by (period, version index)."""
    series = as_series(plan)
    ordered = order_calls(since_plan_start(calls, series))
    out: dict[str, CallCharge] = {}
    states: dict[tuple[str, int], PeriodState] = {}
    rated = 0
    for period, index, group in split_periods(ordered, series):
        state = states[period, index] = PeriodState(series.versions[index], period)
        state.add_sorted(group, out)
        rated += len(group)
    if len(out) != rated:
        raise RatingError("duplicate call_id among the calls to rate")
    return out, states
