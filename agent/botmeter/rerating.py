"""Re-rating a period from the store, so stored amounts equal rating its calls in order.

Done by hand (`botmeter rerate`), at the end of a replay (`rerate_period`), and in the live
agent by a background thread (`RerateWorker`) for the periods the writer found late: seconds
of work for a big month that must never hold up storing calls. Amounts are written only
where they changed, in chunks (`CallStore.replace_ratings`), so a re-rate cut short is
completed by running it again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable

import structlog

from .drain import DrainThread
from .rating import PlanSeries, Rater
from .rating.compiled import CallCharge
from .rating.periods import period_bounds
from .storage.rated_saver import RatedSaver, logged_rater
from .storage.reopen import at_path
from .storage.store import CallStore, StoredPeriod, gc_paused

log = structlog.get_logger(__name__)

Progress = Callable[[str, int], None]
#: seconds before the stop's deadline at which a re-rate still running is abandoned (at most
#: a quarter of the time left), so that it ends cleanly by the deadline
ABANDON_MARGIN = 1.0


def prices_modules(series: PlanSeries) -> bool:
    """Whether any version of the plan prices module usage (else usage is not even read)."""
    return any(charge.metric.startswith("module:")
               for version in series.versions for charge in version.charges)


def rate_stored(store: CallStore, series: PlanSeries, period: str,
                ) -> tuple[StoredPeriod, Rater, dict[str, CallCharge]]:
    """Read a period's stored calls and rate them all, in order: (what was read, a Rater
    that continues after them, each call's rating)."""
    start, end = period_bounds(period, series.timezone)
    stored = store.period_for_rating(start, end, modules=prices_modules(series))
    rater = logged_rater(series)
    return stored, rater, rater.rerate(period, stored.calls)


def rerate_period(store: CallStore, series: PlanSeries, period: str,
                  progress: Progress | None = None) -> int:
    """Re-rate every stored call of `period` (in the plan's time zone); returns how many.

    `progress(step, done)` is told of the three steps: "load", "rate", "store".
    """
    report = progress or (lambda _step, _done: None)
    with gc_paused(), store.bulk_mode():
        start, end = period_bounds(period, series.timezone)
        stored = store.period_for_rating(start, end, modules=prices_modules(series))
        count = len(stored.calls)
        report("load", count)
        charges = logged_rater(series).rerate(period, stored.calls)
        report("rate", count)
        store.replace_ratings(stored, charges, progress=lambda done: report("store", done))
        del stored, charges
    log.info("period re-rated", period=period, plan=series.plan_id, calls=count)
    return count


class Abandoned(Exception):
    """The stop came: the re-rate in progress ends here (what it committed stays)."""


class RerateWorker:
    """Re-rates the periods `saver` found late, one at a time, in a thread of its own.

    Each re-rate reads the period, rates it, hands it back to `saver` (which rates the calls
    stored meanwhile: their ratings are stored first) and writes the changed amounts in
    chunks. `submit` is the saver's `on_late`. A re-rate that fails (the database refused)
    is logged and forgotten: the period's next call asks for it again.
    """

    def __init__(self, store_factory: Callable[[], CallStore], saver: RatedSaver) -> None:
        self._factory = store_factory
        self._saver = saver
        self._store: CallStore | None = None
        self._store_lock = threading.Lock()
        self._cancelled = threading.Event()
        self._drain: DrainThread[str] = DrainThread(
            "botmeter-rerate", self._handle, teardown=self._close_store)
        self.current: str | None = None
        self.rerated: list[str] = []  # periods re-rated, in order
        self.abandoned: list[str] = []  # periods left at the stop

    def start(self) -> None:
        """Start the thread; it opens the database at its first re-rate (a database that
        cannot be opened then is a re-rate that failed: its period's next call asks again)."""
        self._drain.start()

    def submit(self, period: str) -> None:
        self._drain.submit(period)

    @property
    def alive(self) -> bool:
        """Whether the thread runs (after `close`: still in an uninterruptible step)."""
        return self._drain.alive

    def close(self, deadline: float) -> bool:
        """Finish the re-rates queued, by `deadline` (`time.monotonic()`): one still running
        shortly before is abandoned, those not started are dropped (the calls are stored;
        the log names the periods). Whether every re-rate was done and the thread ended."""
        if self._drain.alive:
            margin = min(ABANDON_MARGIN, max(0.0, deadline - time.monotonic()) / 4)
            if not self._drain.close(deadline - margin):
                self._cancel()
                self._drain.join(deadline)
        current = [self.current] if self.current is not None else []
        left = sorted({*self.abandoned, *current, *self._drain.take_queued()})
        self.abandoned = left
        if left:
            log.warning("re-rating unfinished at stop: the calls are stored; the current period "
                        "is re-rated at the next start, any other by botmeter rerate --period",
                        periods=left)
        return not left and not self._drain.alive

    # -- the thread ----------------------------------------------------------------------

    def _open(self) -> CallStore:
        """The database at the path (opened anew if its file was deleted or replaced)."""
        with self._store_lock:
            store, self._store = self._store, None
        store = at_path(store, self._factory)
        with self._store_lock:
            self._store = store
        return store

    def _close_store(self) -> None:
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def _cancel(self) -> None:
        """Abandon the re-rate in progress: checked between its steps and chunks, and a
        statement running in SQLite is interrupted."""
        self._cancelled.set()
        with self._store_lock:
            if self._store is not None:
                with contextlib.suppress(sqlite3.Error):  # closed meanwhile
                    self._store.db.conn.interrupt()

    def _handle(self, periods: list[str]) -> bool:
        for period in dict.fromkeys(periods):  # each once, in order
            if self._cancelled.is_set():
                self.abandoned.append(period)
                continue
            self.current = period
            try:
                self._rerate(period)
            finally:
                self.current = None
        return not self._cancelled.is_set()

    def _check(self, _done: int = 0) -> None:
        if self._cancelled.is_set():
            raise Abandoned

    def _rerate(self, period: str) -> None:
        try:
            store = self._open()
            with gc_paused(), store.bulk_mode():
                series = self._saver.series  # the plan in force now (a reload may change it)
                stored, rater, charges = rate_stored(store, series, period)
                self._check()
                caught_up = self._saver.reopen(period, rater, charges)
                if caught_up is None:  # a call came in before the calls just read: again
                    self.submit(period)
                    return
                if caught_up:
                    store.set_ratings(caught_up)
                changed = store.replace_ratings(stored, charges, progress=self._check)
                count = len(stored.calls)
                del stored, charges
        except Abandoned:
            self.abandoned.append(period)
            log.warning("re-rate abandoned at stop", period=period)
        except Exception as exc:
            if self._cancelled.is_set():  # interrupted by the stop
                self.abandoned.append(period)
                log.warning("re-rate abandoned at stop", period=period, error=str(exc))
                return
            self._saver.forget(period)
            log.error("period not re-rated; its next call asks again", period=period,
                      error=str(exc))
        else:
            self.rerated.append(period)
            log.info("period re-rated", period=period, plan=series.plan_id, calls=count,
                     changed=changed, caught_up=len(caught_up))
