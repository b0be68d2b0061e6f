"""Rating at the storage edge: rate each call as it is stored; re-rate a period from the store.

Pure rating lives in `botmeter.rating`; this shell feeds it stored calls and writes its amounts
back, so stored amounts always equal rating the period's calls in order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from .config import Config
from .plans import active_series, load_plan_book
from .rating import PlanSeries, Rater, RerateNeeded
from .rating.compiled import CallCharge
from .rating.errors import RatingError
from .rating.periods import period_bounds
from .storage.store import CallStore, gc_paused
from .tracking.record import CallRecord

log = structlog.get_logger(__name__)
Progress = Callable[[str, int], None]


class RatingSaver:
    """Stores calls rated under one plan; late or unseen periods are re-rated from the store."""

    def __init__(self, series: PlanSeries) -> None:
        self.series = series
        self.rater = Rater(series)
        self.prices_modules = any(
            charge.metric.startswith("module:") for version in series.versions
            for charge in version.charges)

    def save(self, store: CallStore, records: list[CallRecord]) -> None:
        """Store calls with their ratings (one thread does both: replays, tests)."""
        charges, late = self._rate(records)
        store.save(records, charges)
        for period in sorted(late):
            self.rerate(store, period)

    def rate_stored(self, store: CallStore, records: list[CallRecord]) -> None:
        """Rate calls that are already stored (the live agent stores first, then rates)."""
        charges, late = self._rate(records)
        store.set_ratings(charges)
        for period in sorted(late):
            self.rerate(store, period)

    def _rate(self, records: list[CallRecord]) -> tuple[dict[str, CallCharge], set[str]]:
        charges: dict[str, CallCharge] = {}
        late: set[str] = set()
        for record in sorted(records, key=lambda r: (r.ended_at, r.call_id)):
            try:
                charges[record.call_id] = self.rater.rate(record)
            except RerateNeeded as exc:
                late.add(exc.period)
            except RatingError as exc:
                log.error("call not rated", call_id=record.call_id, reason=str(exc))
        return charges, late

    def rerate(self, store: CallStore, period: str, progress: Progress | None = None) -> int:
        """Re-rate every stored call of `period` (in the plan's time zone); returns how many.

        `progress(step, done)` is told of the three steps: "load", "rate", "store".
        """
        report = progress or (lambda _step, _done: None)
        start, end = period_bounds(period, self.series.timezone)
        with gc_paused(), store.bulk_mode():
            stored = store.period_for_rating(start, end, modules=self.prices_modules)
            count = len(stored.calls)
            report("load", count)
            charges = self.rater.rerate(period, stored.calls)
            report("rate", count)
            store.replace_ratings(stored, charges, progress=lambda done: report("store", done))
            del stored, charges
        log.info("period re-rated", period=period, plan=self.series.plan_id, calls=count)
        return count


class ReplayRating:
    """Rates a replay's calls as they are stored, re-rating each late period once, at the end.

    A period that cannot be rated call by call (not opened yet, or its calls arrive out of
    order: a capture replayed over calls already stored) is stored unrated until `finish`,
    which re-rates it from the store once, whatever its size and however many batches
    touched it. (Re-rating it at every batch made replaying a half-stored month quadratic.)
    """

    def __init__(self, series: PlanSeries) -> None:
        self._saver = RatingSaver(series)
        self.late: set[str] = set()

    def save(self, store: CallStore, records: list[CallRecord]) -> None:
        """Store calls, with their ratings where their period can be rated call by call."""
        rater = self._saver.rater
        late = self.late
        charges: dict[str, CallCharge] = {}
        for record in sorted(records, key=lambda r: (r.ended_at, r.call_id)):
            if rater.period_of(record) in late:
                continue
            try:
                charges[record.call_id] = rater.rate(record)
            except RerateNeeded as exc:
                late.add(exc.period)
            except RatingError as exc:
                log.error("call not rated", call_id=record.call_id, reason=str(exc))
        store.save(records, charges)

    def finish(self, store: CallStore) -> list[str]:
        """Re-rate every late period once, from the store; returns them."""
        periods = sorted(self.late)
        for period in periods:
            self._saver.rerate(store, period)
            self.late.discard(period)
        return periods


def replay_rating_for(config: Config) -> ReplayRating | None:
    """Rating for a replay (None without plans); PlanError/ConfigError if a file is bad."""
    book = load_plan_book(config)
    if book is None:
        return None
    return ReplayRating(active_series(config, book))


class RatingWorker:
    """Rates stored calls in a thread of its own, so that re-rating a month (seconds) never holds
    up storing the next call (milliseconds). Its store commits re-rated periods in chunks."""

    def __init__(self, store_factory: Callable[[], CallStore], series: PlanSeries) -> None:
        self._factory = store_factory
        self._saver = RatingSaver(series)
        self._queue: queue.SimpleQueue[list[CallRecord] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="botmeter-rating", daemon=True)
        self.rated = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, records: list[CallRecord]) -> None:
        self._queue.put(list(records))

    def close(self, timeout: float | None = 60.0) -> bool:
        """Rate what is queued, then stop; False if that did not finish within `timeout`
        (the calls are stored; their period is re-rated when next rated)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        store = self._factory()
        try:
            stopping = False
            while not stopping:
                batch: list[CallRecord] = []
                item = self._queue.get()
                while item is not None:
                    batch.extend(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                stopping = item is None
                if batch:
                    self._rate(store, batch)
        finally:
            store.close()

    def _rate(self, store: CallStore, batch: list[CallRecord]) -> None:
        try:
            self._saver.rate_stored(store, batch)
            self.rated += len(batch)
        except Exception as exc:  # the calls are stored; `botmeter rerate` can rate them later
            log.error("rating failed; calls stay stored unrated", calls=len(batch), error=str(exc))


def rating_worker_for(config: Config, store_factory: Callable[[], CallStore]) -> RatingWorker | None:
    """The live agent's rating thread (None without plans); PlanError/ConfigError if bad."""
    book = load_plan_book(config)
    if book is None:
        return None
    return RatingWorker(store_factory, active_series(config, book))
