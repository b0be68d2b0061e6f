"""Storing calls outside the live agent (`replay`, `backfill`): in batches, rated, retried.

Each batch is rated under the plan in the transaction that stores it (`RatedSaver`); a record
the store refuses is set aside in `rejected` (`GuardedSaver`); a database that refuses writes
is retried with backoff. Periods that cannot be rated call by call (not opened yet, calls out
of order) are stored unrated and re-rated from the store once each, at `finish`.
"""

from __future__ import annotations

import structlog

from ..backoff import Backoff
from ..rating import PlanSeries
from ..rerating import rerate_period
from ..tracking.record import CallRecord
from .guard import GuardedSaver, StoreUnavailable
from .rated_saver import RatedSaver
from .store import CallStore

log = structlog.get_logger(__name__)

#: waits between attempts to store a batch the database refuses: 0.25-0.5 s, then doubling
RETRY_MIN, RETRY_MAX = 0.5, 4.0


class OfflineSaver:
    """Calls in (`add`, `store`), stored in batches of `batch`; `finish` stores the rest and
    re-rates the late periods. StoreUnavailable if the database refuses a batch `attempts`
    times in a row (the calls stored so far stay stored)."""

    def __init__(self, store: CallStore, series: PlanSeries | None, *, batch: int = 500,
                 attempts: int = 3, backoff: Backoff | None = None) -> None:
        self.store, self.batch, self.attempts = store, batch, attempts
        self._rated = RatedSaver(series, keep_late_calls=False) if series is not None else None
        self._saver = GuardedSaver(self._rated)
        self._backoff = backoff or Backoff(RETRY_MIN, RETRY_MAX)
        self._pending: list[CallRecord] = []

    @property
    def rejected(self) -> int:
        """Records the store refused, set aside in `rejected`."""
        return self._saver.rejected

    def add(self, record: CallRecord) -> None:
        """Queue one call; a full batch is stored at once."""
        self._pending.append(record)
        if len(self._pending) >= self.batch:
            self.store_batch(self._pending)
            self._pending = []

    def store_batch(self, records: list[CallRecord]) -> bool:
        """Store these calls now (True: stored; the `load_spill` callback's shape)."""
        for attempt in range(1, self.attempts + 1):
            try:
                self._saver(self.store, records)
            except StoreUnavailable as exc:
                if attempt == self.attempts:
                    raise
                records = exc.remaining
                log.warning("storing calls failed; retrying", error=str(exc), calls=len(records))
                self._backoff.wait()
            else:
                self._backoff.reset()
                return True
        return False  # pragma: no cover -- the last attempt returns or raises

    def finish(self) -> list[str]:
        """Store the queued calls and re-rate each late period once; the periods re-rated."""
        self.store_batch(self._pending)
        self._pending = []
        if self._rated is None:
            return []
        late = self._rated.late
        for period in late:
            rerate_period(self.store, self._rated.series, period)
        return late
