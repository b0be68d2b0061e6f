"""The running agent's budget warning: with `[budget] monthly`, the month's cost to date (as
the report computes it: stored amounts plus the month's fees) is checked every few minutes,
and `budget threshold reached` is logged once per threshold (0.8, 1.0) and month; the table
`budget_alerts` remembers which were given, across restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import structlog

from ..periodic import PeriodicJob
from ..rating import PlanSeries, period_of
from ..storage.store import CallStore
from ..tracking.record import iso_utc
from .forecast import cost_to_date, minor

log = structlog.get_logger(__name__)

THRESHOLDS = (Decimal("0.8"), Decimal("1.0"))
#: seconds between two checks
CHECK_INTERVAL = 300.0


def check_budget(store: CallStore, series: PlanSeries, monthly: Decimal,
                 now: float) -> list[Decimal]:
    """Check the month holding `now` (plan's time zone); log and remember each threshold
    newly reached. Returns the thresholds warned about by this call."""
    period = period_of(now, series.timezone)
    conn = store.db.conn
    cost = cost_to_date(conn, series, period)
    amount = format(minor(series, cost, period), "f")
    given = {row[0] for row in conn.execute(
        "SELECT threshold FROM budget_alerts WHERE period = ?", (period,))}
    warned = []
    for threshold in THRESHOLDS:
        key = format(threshold, "f")
        if cost < monthly * threshold or key in given:
            continue
        with store.db.atomic():
            inserted = conn.execute(
                "INSERT OR IGNORE INTO budget_alerts (period, threshold, amount, budget, "
                "alerted_at) VALUES (?, ?, ?, ?, ?)",
                (period, key, amount, format(monthly, "f"), iso_utc(now))).rowcount
        if inserted:
            log.warning("budget threshold reached", threshold=float(threshold),
                        amount=amount, budget=format(monthly, "f"),
                        currency=series.currency, period=period)
            warned.append(threshold)
    return warned


class BudgetWatch:
    """Runs `check_budget` every `interval` seconds on a daemon thread of its own (with its
    own connection), so the event loop never waits for it. A failed check is logged and
    tried again at the next interval."""

    def __init__(self, store_factory: Callable[[], CallStore], series: PlanSeries,
                 monthly: Decimal, *, clock: Callable[[], float] = time.time,
                 interval: float = CHECK_INTERVAL) -> None:
        self.series, self.monthly, self._clock = series, monthly, clock
        self._job = PeriodicJob("botmeter-budget", store_factory, self._check,
                                interval=interval, failure="budget check failed")

    def start(self) -> None:
        self._job.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._job.stop(timeout)

    def _check(self, store: CallStore) -> None:
        check_budget(store, self.series, self.monthly, self._clock())
