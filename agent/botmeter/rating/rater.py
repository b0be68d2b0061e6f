"""Incremental rating: one arriving call at a time, O(1) per call in (ended_at, call_id) order."""

from __future__ import annotations

from collections.abc import Iterable

from ..tracking.record import CallRecord
from .compiled import CallCharge
from .engine import PeriodState, Plan, as_series, rate_period
from .errors import RerateNeeded
from .periods import PeriodFinder, period_bounds


class Rater:
    """Keeps the running state of each open period of one plan.

    `rate(call)` rates a call that ends after every call already rated in its period. It
    raises RerateNeeded(period) when it cannot: the call is out of order (or rated before),
    or the period was not opened since this Rater was made. The caller then passes *all* of
    that period's calls (including the new one) to `rerate(period, calls)`, stores every
    amount it returns, and carries on with `rate`. A call already rated that changes must
    also go through `rerate` (the Rater keeps no per-call memory).
    """

    def __init__(self, plan: Plan) -> None:
        self.series = as_series(plan)
        self._period_of = PeriodFinder(self.series.timezone)
        self._states: dict[tuple[str, int], PeriodState] = {}
        self._open: set[str] = set()

    def period_of(self, call: CallRecord) -> str:
        """The period a call belongs to: its ended_at's month in the plan's time zone."""
        return self._period_of(call.ended_at)

    def rate(self, call: CallRecord) -> CallCharge:
        period = self._period_of(call.ended_at)
        index = self.series.version_index(call.offered_at)
        state = self._states.get((period, index))
        if state is None:
            if period not in self._open:
                raise RerateNeeded(period, "period not opened yet: rerate it with its calls")
            state = self._states[period, index] = PeriodState(self.series.versions[index], period)
        return state.add(call)

    def rerate(self, period: str, calls: Iterable[CallRecord]) -> dict[str, CallCharge]:
        """Rate all of a period's calls from scratch (calls ending outside it are ignored) and
        keep its state, so `rate` continues after them."""
        start, end = period_bounds(period, self.series.timezone)
        mine = [c for c in calls if start <= c.ended_at < end]
        out, states = rate_period(mine, self.series)
        for key in [k for k in self._states if k[0] == period]:
            del self._states[key]
        self._states.update(states)
        self._open.add(period)
        return out

    def forget(self, period: str) -> None:
        """Drop a period's state (e.g. once it is closed and billed)."""
        self._open.discard(period)
        for key in [k for k in self._states if k[0] == period]:
            del self._states[key]

    def open_periods(self) -> list[str]:
        return sorted(self._open)
