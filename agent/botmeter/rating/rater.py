"""Incremental rating: one arriving call at a time, O(1) per call in (ended_at, call_id) order."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..tracking.record import CallRecord
from .compiled import CallCharge
from .engine import PeriodState, Plan, as_series, rate_period
from .errors import NotRated, RerateNeeded
from .periods import PeriodFinder, period_bounds

#: told of each call `rerate` leaves unrated (offered before the plan starts), and why
NotRatedHook = Callable[[CallRecord, str], None]


class Rater:
    """Keeps the running state of each open period of one plan.

    `rate(call)` rates a call that ends after every call already rated in its period. It
    raises RerateNeeded(period) when it cannot: the call is out of order (or rated before),
    or the period was not opened since this Rater was made. The caller then passes *all* of
    that period's calls (including the new one) to `rerate(period, calls)`, stores every
    amount it returns, and carries on with `rate`. A call already rated that changes must
    also go through `rerate` (the Rater keeps no per-call memory).

    A call offered before the plan starts is not rated: `rate` raises NotRated (a
    RatingError naming the call), `rerate` leaves it out and tells `on_not_rated`.
    """

    def __init__(self, plan: Plan, on_not_rated: NotRatedHook | None = None) -> None:
        self.series = as_series(plan)
        self._on_not_rated = on_not_rated or (lambda _call, _why: None)
        self._period_of = PeriodFinder(self.series.timezone)
        self._states: dict[tuple[str, int], PeriodState] = {}
        self._open: set[str] = set()

    def period_of(self, call: CallRecord) -> str:
        """The period a call belongs to: its ended_at's month in the plan's time zone."""
        return self._period_of(call.ended_at)

    def rate(self, call: CallRecord) -> CallCharge:
        index = self.series.version_index(call.offered_at)
        if index is None:
            why = self.series.not_rated(call)
            assert why is not None
            raise NotRated(why)
        period = self._period_of(call.ended_at)
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
        if len(out) < len(mine):
            for call in mine:
                why = self.series.not_rated(call)
                if why is not None:
                    self._on_not_rated(call, why)
        for key in [k for k in self._states if k[0] == period]:
            del self._states[key]
        self._states.update(states)
        self._open.add(period)
        return out
