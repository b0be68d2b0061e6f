"""Retention: with `[store] keep_months`, calls older than that many full months before the
current one are deleted, daily by the running agent (`RetentionWorker`) and by hand
(`botmeter db purge`).

A call's month is its billing period: the month of its `ended_at` in the active plan's time
zone (UTC without `[plans]`). Never purged:

- the current month and the `keep_months` full months before it (so never the previous one);
- a month that still has an uplink summary the vendor has not got: a revision in
  `uplink_outbox` pending or parked for a bucket overlapping the month (checked again under
  the write lock before each chunk is deleted);
- with `[uplink]`, a month the uplink has not summarised to its end for each of its plans
  (`closed_until`), so the vendor never misses the calls of a month.

Calls are deleted in chunks of `PURGE_CHUNK`, each its own short transaction, so the writer
waits for one chunk at most. The file does not shrink by itself: `botmeter db vacuum` does
that. Each purged month is recorded (`uplink_state` "purged", with its first chunk), and the
uplink never summarises it again: a call stored into it later (a replay of an old capture)
would otherwise send the vendor revisions that count only what is left of the month.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from zoneinfo import ZoneInfo

import structlog

from ..config import Config
from ..periodic import PeriodicJob
from ..rating import PlanSeries
from ..rating.periods import period_bounds, period_of, shift_period
from ..tracking.record import iso_utc
from ..uplink import outbox
from ..uplink.buckets import iso_z
from .columns import EPOCH_SECONDS
from .store import CallStore

log = structlog.get_logger(__name__)

#: calls deleted per transaction
PURGE_CHUNK = 5000
#: seconds between two purges in the running agent
PURGE_INTERVAL = 86400.0
UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long calls are kept, which time zone their months are in, and the uplink's plans
    (whose months are kept until summarised)."""

    keep_months: int
    timezone: tzinfo = UTC_ZONE
    uplink_plans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Month:
    """A month that holds calls older than the policy keeps: `held` says why it stays."""

    period: str
    calls: int
    held: str | None = None


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What a purge would do: the first month kept whatever happens, and each older month."""

    first_kept: str
    months: tuple[Month, ...] = field(default_factory=tuple)

    @property
    def purgeable(self) -> list[Month]:
        return [m for m in self.months if m.held is None]

    @property
    def held(self) -> list[Month]:
        return [m for m in self.months if m.held is not None]


def retention_policy(config: Config, series: PlanSeries | None) -> RetentionPolicy | None:
    """The policy of `[store] keep_months` (None: calls are kept forever); months in the
    active plan's time zone (`series`), else UTC."""
    keep = config.store.keep_months
    if keep is None:
        return None
    uplink = config.uplink
    plans: tuple[str, ...] = ()
    if uplink.enabled:
        plans = tuple(uplink.plans or ([config.plans.active] if config.plans else []))
    return RetentionPolicy(keep, series.timezone if series is not None else UTC_ZONE, plans)


def first_kept(now: float, policy: RetentionPolicy) -> str:
    """The oldest month kept by age: `keep_months` full months before the current one."""
    return shift_period(period_of(now, policy.timezone), -policy.keep_months)


def plan_purge(conn: sqlite3.Connection, policy: RetentionPolicy, now: float) -> PurgePlan:
    """The months older than the policy keeps, with their calls and why any must stay."""
    keep_from = first_kept(now, policy)
    limit = iso_utc(period_bounds(keep_from, policy.timezone)[0])
    with outbox.read_snapshot(conn):
        months = [Month(period, count, why_held(conn, policy, period))
                  for period, count in month_counts(conn, policy.timezone, until=limit)]
    return PurgePlan(keep_from, tuple(months))


def purge(conn: sqlite3.Connection, plan: PurgePlan, policy: RetentionPolicy, *,
          chunk: int = PURGE_CHUNK, stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """Delete the calls of the plan's purgeable months; returns how many went, by month. A
    month that a new summary holds by the time its chunk is deleted stays."""
    deleted: dict[str, int] = {}
    for month in plan.purgeable:
        start, end = (iso_utc(t) for t in period_bounds(month.period, policy.timezone))
        while not stop():
            with outbox.write_transaction(conn):
                if why_held(conn, policy, month.period) is not None:
                    break
                record_purged(conn, *period_bounds(month.period, policy.timezone))
                gone = conn.execute(
                    "DELETE FROM calls WHERE rowid IN (SELECT rowid FROM calls WHERE "
                    "ended_at >= ? AND ended_at < ? LIMIT ?)", (start, end, chunk)).rowcount
            deleted[month.period] = deleted.get(month.period, 0) + gone
            if gone < chunk:
                break
    return {period: count for period, count in deleted.items() if count}


def why_held(conn: sqlite3.Connection, policy: RetentionPolicy, period: str) -> str | None:
    """Why a month's calls must stay although they are old enough to go (None: they may go)."""
    start, end = period_bounds(period, policy.timezone)
    if has_table(conn, "uplink_outbox") and conn.execute(
            "SELECT 1 FROM uplink_outbox WHERE state IN (?, ?) AND bucket_start < ? AND "
            "bucket_end > ? LIMIT 1",
            (outbox.PENDING, outbox.PARKED, iso_z(end), iso_z(start))).fetchone():
        return "an uplink summary of this month is not delivered yet (botmeter sync status)"
    if policy.uplink_plans:
        summarised = outbox.get_state(conn, "closed_until", {}) \
            if has_table(conn, "uplink_state") else {}
        behind = [p for p in policy.uplink_plans
                  if not isinstance(summarised, dict) or not _at_least(summarised.get(p), end)]
        if behind:
            return f"the uplink has not summarised this month yet (plan {behind[0]})"
    return None


def _at_least(value: object, edge: float) -> bool:
    return isinstance(value, int | float) and value >= edge


#: `uplink_state` name of the purged spans: [[start, end], ...] as UTC epochs
PURGED_STATE = "purged"


def record_purged(conn: sqlite3.Connection, start: float, end: float) -> None:
    """Remember that the calls ending in [start, end) are being purged (in the caller's write
    transaction)."""
    spans = purged_spans(conn)
    if (start, end) not in spans:
        outbox.set_state(conn, PURGED_STATE, [list(s) for s in sorted({*spans, (start, end)})])


def purged_spans(conn: sqlite3.Connection) -> list[tuple[float, float]]:
    """The [start, end) spans whose calls were purged (an older layout: none)."""
    if not has_table(conn, "uplink_state"):
        return []
    spans = outbox.get_state(conn, PURGED_STATE, [])
    return [(float(a), float(b)) for a, b in spans] if isinstance(spans, list) else []


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the database has this table (an older layout may lack the uplink's)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def month_counts(conn: sqlite3.Connection, tz: tzinfo,
                 until: str | None = None) -> list[tuple[str, int]]:
    """(period, calls) of every month holding calls (by `ended_at` in `tz`), oldest first;
    with `until` (stored time text), only calls ending before it. One indexed count per
    month, skipping empty ones."""
    sql = f"SELECT {EPOCH_SECONDS.format('min(ended_at)')} FROM calls WHERE ended_at >= ?"
    if until is not None:
        sql += " AND ended_at < ?"
    bound = [until] if until is not None else []
    counts: list[tuple[str, int]] = []
    first = conn.execute(sql, ["", *bound]).fetchone()[0]
    while first is not None:
        period = period_of(first, tz)
        start, end = (iso_utc(t) for t in period_bounds(period, tz))
        stop = min(end, until) if until is not None else end
        count = conn.execute("SELECT count(*) FROM calls WHERE ended_at >= ? AND ended_at < ?",
                             (start, stop)).fetchone()[0]
        counts.append((period, count))
        first = conn.execute(sql, [end, *bound]).fetchone()[0]
    return counts


def purge_old_calls(store: CallStore, policy: RetentionPolicy, now: float, *,
                    stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """Plan and run a purge, logging what went and what stays; calls deleted by month."""
    conn = store.db.conn
    plan = plan_purge(conn, policy, now)
    for month in plan.held:
        log.info("old calls kept", period=month.period, calls=month.calls, reason=month.held)
    deleted = purge(conn, plan, policy, stop=stop)
    if deleted:
        log.info("old calls purged", calls=sum(deleted.values()), months=sorted(deleted),
                 keep_months=policy.keep_months, kept_from=plan.first_kept)
    return deleted


class RetentionWorker:
    """The running agent's purge: at start, then every `interval` seconds, on a thread of
    its own. `update(policy)` (a reload) takes effect at once."""

    def __init__(self, store_factory: Callable[[], CallStore], policy: RetentionPolicy, *,
                 clock: Callable[[], float] = time.time, interval: float = PURGE_INTERVAL) -> None:
        self.policy = policy
        self._clock = clock
        self.purged = 0
        self._job = PeriodicJob("botmeter-retention", store_factory, self._purge,
                                interval=interval, failure="purging old calls failed; "
                                                           "tried again at the next purge")

    def start(self) -> None:
        self._job.start()

    def update(self, policy: RetentionPolicy) -> None:
        if policy != self.policy:
            self.policy = policy
            self._job.wake()

    def stop(self, timeout: float = 1.0) -> bool:
        return self._job.stop(timeout)

    def _purge(self, store: CallStore) -> None:
        deleted = purge_old_calls(store, self.policy, self._clock(),
                                  stop=lambda: self._job.stopping)
        self.purged += sum(deleted.values())
