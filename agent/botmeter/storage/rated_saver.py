"""Rate and store in one transaction: each call is written once, with its amount.

A call is rated as it is stored (microseconds: the period's running state, `rating.Rater`),
so its row carries its amount from the first write. A call whose period cannot be rated
call by call is stored unrated and its period is *late*:

- the period was not opened since start (nothing is known of its stored calls), or
- the call comes before a call already rated in its period (it ended earlier but arrived
  later: closed at its last event after an idle timeout, picked up after a reconnect...).

A late period is re-rated from the store by someone else (the live agent's background
`rerating.RerateWorker`; `replay` at its end), never here: re-rating a month takes seconds,
storing a call must not wait for it. Until the re-rate hands the period back (`reopen`), its
calls are stored unrated and kept in memory, so that those stored after the re-rate read the
period are rated then (one UPDATE each, as for every call of a re-rated period).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Container, Sequence
from operator import attrgetter

import structlog

from ..rating import PlanSeries, Rater, RerateNeeded
from ..rating.compiled import CallCharge
from ..rating.errors import NotRated
from ..rating.periods import PeriodFinder, period_bounds
from ..tracking.record import CallRecord
from .guard import store_unavailable
from .store import CallStore

log = structlog.get_logger(__name__)


def logged_rater(series: PlanSeries) -> Rater:
    """A Rater that logs each call it leaves unrated (offered before the plan starts)."""
    return Rater(series, on_not_rated=lambda call, why: log.warning(
        "call not rated", call_id=call.call_id, reason=why))

#: calls of one late period kept for rating when its re-rate ends; beyond that the period
#: is simply re-rated again (its calls are all stored by then)
MAX_LATE_CALLS = 100_000
_ORDER = attrgetter("ended_at", "call_id")


class RatedSaver:
    """Stores batches of calls rated under one plan (a `SaveBatch` for `GuardedSaver`).

    `on_late(period)` is told once each time a period becomes late. `keep_late_calls=False`
    (a replay, which re-rates its late periods from the store at the end) keeps no calls in
    memory. Periods that begin after `fresh_after` (an epoch time: when this agent started)
    cannot hold calls stored before, so they are opened here, empty, without a re-rate.
    Thread-safe: the writer stores, a re-rating thread calls `reopen`/`forget`.
    """

    def __init__(self, series: PlanSeries, *, on_late: Callable[[str], None] | None = None,
                 keep_late_calls: bool = True, fresh_after: float | None = None) -> None:
        self.series = series
        self.lock = threading.Lock()
        self._on_late = on_late
        self._keep = keep_late_calls
        self._fresh_after = fresh_after
        self._period_of = PeriodFinder(series.timezone)
        self._raters: dict[str, Rater] = {}  # open periods, each rated call by call
        self._late: dict[str, list[CallRecord] | None] = {}  # late periods: calls stored since
        #: rated, but their save failed (database unavailable): reused when it is retried
        self._unsaved: dict[str, tuple[str, CallCharge]] = {}

    @property
    def late(self) -> list[str]:
        """The periods waiting for a re-rate."""
        with self.lock:
            return sorted(self._late)

    def __call__(self, store: CallStore, records: list[CallRecord]) -> None:
        """Rate the calls and store them with their amounts in one transaction."""
        newly_late: list[str] = []
        with self.lock:
            charges, unrated = self._rate(records, newly_late)
            try:
                store.save(records, charges)
            except Exception as exc:
                if not store_unavailable(exc):  # a record the store refuses may be rated, so
                    rated = (self._unsaved.get(i) for i in charges)  # counted: re-rate its period
                    for period in sorted({r[0] for r in rated if r is not None}):
                        self._make_late(period, newly_late)
                raise
            finally:
                self._notify(newly_late)
            for record in records:
                self._unsaved.pop(record.call_id, None)
            for period, record in unrated:
                self._keep_late(period, record)

    def request_rerate(self, period: str) -> None:
        """Have `period` re-rated (e.g. the current one at start): its calls are stored
        unrated until the re-rate hands it back."""
        newly_late: list[str] = []
        with self.lock:
            self._make_late(period, newly_late)
        self._notify(newly_late)

    def use(self, series: PlanSeries, *, fresh_after: float | None = None) -> None:
        """Rate under `series` from the next batch on (a reload changed the plan): every
        period is forgotten, so each is re-rated from the store when its next call comes
        (the caller asks for the current one at once). A re-rate under the old plan that is
        handed back afterwards is refused (`reopen`)."""
        with self.lock:
            self.series = series
            self._period_of = PeriodFinder(series.timezone)
            self._fresh_after = fresh_after
            self._raters.clear()
            self._late.clear()
            self._unsaved.clear()

    def reopen(self, period: str, rater: Rater, covered: Container[str]) -> dict[str, CallCharge] | None:
        """Hand back a period re-rated from the store: `rater` has rated its calls, `covered`
        are their call ids. Calls of the period stored since the re-rate read it are rated
        now; returns their ratings (for the caller to store), or None if the period must be
        re-rated again (one of them came before the re-rated calls, too many came, or the
        plan changed meanwhile)."""
        with self.lock:
            if rater.series is not self.series:
                return None
            waiting = self._late.get(period, [])
            if waiting is None:
                self._late[period] = []
                return None
            rest = sorted((c for c in waiting if c.call_id not in covered), key=_ORDER)
            charges: dict[str, CallCharge] = {}
            for call in rest:
                try:
                    charges[call.call_id] = rater.rate(call)
                except RerateNeeded:
                    self._late[period] = rest
                    return None
                except Exception as exc:  # stored unrated, as when it arrived
                    log.error("call not rated", call_id=call.call_id, reason=str(exc))
            self._late.pop(period, None)
            self._raters[period] = rater
            return charges

    def forget(self, period: str) -> None:
        """Drop what is known of `period` (its re-rate failed): its next call makes it late
        again, and so has it re-rated."""
        with self.lock:
            self._late.pop(period, None)
            self._drop_rater(period)

    # -- inside the lock -----------------------------------------------------------------

    def _rate(self, records: Sequence[CallRecord], newly_late: list[str],
              ) -> tuple[dict[str, CallCharge], list[tuple[str, CallRecord]]]:
        """Ratings of the calls that can be rated now; the others with their late period."""
        charges: dict[str, CallCharge] = {}
        unrated: list[tuple[str, CallRecord]] = []
        for record in sorted(records, key=_ORDER):
            call_id = record.call_id
            known = self._unsaved.get(call_id)
            if known is not None:  # rated by an attempt the database refused: counted once
                charges[call_id] = known[1]
                continue
            try:
                period = self._period_of(record.ended_at)
                rater = None if period in self._late else self._rater(period)
                if rater is None:
                    self._make_late(period, newly_late)
                    unrated.append((period, record))
                    continue
                charge = rater.rate(record)
            except RerateNeeded:
                self._make_late(period, newly_late)
                unrated.append((period, record))
            except NotRated as exc:  # offered before the plan starts: stored without an amount
                log.warning("call not rated", call_id=call_id, reason=str(exc))
            except Exception as exc:  # stored unrated; the store decides whether it can hold it
                log.error("call not rated", call_id=call_id, reason=str(exc))
            else:
                charges[call_id] = charge
                self._unsaved[call_id] = (period, charge)
        return charges, unrated

    def _rater(self, period: str) -> Rater | None:
        rater = self._raters.get(period)
        if rater is None and self._fresh_after is not None:
            start, _ = period_bounds(period, self.series.timezone)
            if start >= self._fresh_after:  # begun since this agent started: no stored calls
                rater = self._raters[period] = logged_rater(self.series)
                rater.rerate(period, [])
        return rater

    def _make_late(self, period: str, newly_late: list[str]) -> None:
        if period in self._late:
            return
        self._late[period] = [] if self._keep else None
        self._drop_rater(period)
        newly_late.append(period)

    def _drop_rater(self, period: str) -> None:
        if self._raters.pop(period, None) is not None:  # its rated-but-unsaved calls go too
            for call_id in [k for k, (p, _) in self._unsaved.items() if p == period]:
                del self._unsaved[call_id]

    def _keep_late(self, period: str, record: CallRecord) -> None:
        waiting = self._late.get(period)
        if waiting is None:
            return
        if len(waiting) >= MAX_LATE_CALLS:
            self._late[period] = None
        else:
            waiting.append(record)

    def _notify(self, periods: list[str]) -> None:
        if self._on_late is not None:
            for period in periods:
                self._on_late(period)
        periods.clear()
