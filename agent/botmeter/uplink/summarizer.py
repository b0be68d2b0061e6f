"""Turning stored calls into queued summary revisions (the outbox's producer).

Each run looks at what changed since the last one: buckets that have closed since (a bucket
closes `close_delay` seconds after it ends) and calls stored since (by rowid: a call stored
again gets a new one, and the trigger `calls_moved` keeps the end it had before). A call that lands in a closed bucket can change the amounts of every
later call of its period (allowances, tiers), so the rest of that period's closed buckets are
summarised again too; only those whose content changed get a new revision. A month whose
calls were purged (`storage.retention`) is never summarised again.

The calls are read in one snapshot and rated outside any write lock; the revisions and the
watermarks are then written in one short transaction, which checks that no other process moved
the watermarks meanwhile (else the run starts over).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..rating import CallCharge, PlanSeries, rate_calls
from ..rating.periods import period_bounds, period_of
from ..storage.columns import EPOCH_SECONDS
from ..storage.retention import purged_spans
from ..storage.store import CallStore
from ..tracking.record import CallRecord
from . import outbox
from .buckets import bucket_start, buckets
from .summary import Summary, summarize


@dataclass(frozen=True, slots=True)
class Marks:
    """Where the last run stopped: calls up to this rowid were seen; per plan, buckets ending
    by this UTC epoch were summarised."""

    seen_rowid: int
    closed_until: dict[str, float]


def read_marks(conn: sqlite3.Connection) -> Marks:
    return Marks(int(outbox.get_state(conn, "seen_rowid", 0)),
                 dict(outbox.get_state(conn, "closed_until", {})))


def refresh(store: CallStore, plans: Sequence[PlanSeries], agent_id: str, kind: str,
            close_delay: float, now: float, attempts: int = 5) -> list[Summary]:
    """Queue new revisions for what changed; returns them."""
    conn = store.db.conn
    for _ in range(attempts):
        with outbox.read_snapshot(conn):
            marks = read_marks(conn)
            top = conn.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0]
            new_ends = [row[0] for row in conn.execute(
                f"SELECT {EPOCH_SECONDS.format('ended_at')} FROM calls WHERE rowid > ?",
                (marks.seen_rowid,))]
            moved_top = conn.execute("SELECT max(id) FROM uplink_moved").fetchone()[0]
            new_ends.extend(row[0] for row in conn.execute(  # where calls stored again were
                f"SELECT {EPOCH_SECONDS.format('ended_at')} FROM uplink_moved"))
            purged = purged_spans(conn)
            new_ends = [e for e in new_ends if not any(a <= e < b for a, b in purged)]
            first = conn.execute(
                f"SELECT {EPOCH_SECONDS.format('min(ended_at)')} FROM calls").fetchone()[0]
            work = {s.plan_id: _dirty(s, marks, new_ends, first, kind, close_delay, now)
                    for s in plans}
            calls = _read_periods(store, plans, work)
        summaries = [summary for s in plans
                     for summary in _summaries(s, work[s.plan_id], calls, kind)]
        with outbox.write_transaction(conn):
            if read_marks(conn) != marks:  # another process ran meanwhile: look again
                conn.execute("SELECT 1")
                continue
            queued = outbox.queue(conn, agent_id, summaries, now)
            outbox.set_state(conn, "seen_rowid", top)
            if moved_top is not None:
                conn.execute("DELETE FROM uplink_moved WHERE id <= ?", (moved_top,))
            outbox.set_state(conn, "closed_until", {
                **marks.closed_until, **{p: w.edge for p, w in work.items()}})
        return queued
    return []


@dataclass(frozen=True, slots=True)
class _Work:
    edge: float  # buckets ending by here are closed
    buckets: list[tuple[float, float]]  # the closed buckets to summarise again, in order
    periods: list[str]  # the periods holding them (their calls are rated from the period start)


def _dirty(series: PlanSeries, marks: Marks, new_ends: list[float], first: float | None,
           kind: str, close_delay: float, now: float) -> _Work:
    """What to summarise again for one plan. A plan never summarised before starts from the
    first stored call. A clock that moved back lowers the edge: buckets summarised early are
    summarised again as they close (only a changed one gets a revision)."""
    tz = series.timezone
    previous = marks.closed_until.get(series.plan_id)
    edge = bucket_start(now - close_delay, kind, tz)
    if previous is None and first is not None:
        previous = bucket_start(first, kind, tz)
    since: dict[str, float] = {}  # period -> the earliest moment in it to summarise again

    def mark(moment: float) -> None:
        period = period_of(moment, tz)
        since[period] = min(since.get(period, moment), moment)

    for ended in new_ends:  # calls stored since: their bucket, and the rest of its period
        if ended < edge:
            mark(ended)
    if previous is not None and previous < edge:  # buckets closed since
        moment = previous
        while moment < edge:
            mark(moment)
            moment = period_bounds(period_of(moment, tz), tz)[1]
    wanted: set[tuple[float, float]] = set()
    for period, moment in since.items():
        end = min(period_bounds(period, tz)[1], edge)
        wanted.update(b for b in buckets(moment, end, kind, tz) if b[1] <= edge)
    periods = {period_of(t, tz) for b in wanted for t in (b[0], b[1] - 0.001)}
    return _Work(edge, sorted(wanted), sorted(periods))


_Key = tuple[float, float]


def _span(period: str, series: PlanSeries, edge: float) -> _Key:
    start, end = period_bounds(period, series.timezone)
    return start, min(end, edge)


def _read_periods(store: CallStore, plans: Sequence[PlanSeries],
                  work: dict[str, _Work]) -> dict[_Key, list[CallRecord]]:
    """The calls of every period some plan must summarise again, from the period's start (the
    amounts depend on every call before) to the plan's closed edge."""
    spans = {_span(period, s, work[s.plan_id].edge) for s in plans
             for period in work[s.plan_id].periods}
    return {span: store.calls_ended_between(*span) for span in spans if span[0] < span[1]}


def _summaries(series: PlanSeries, job: _Work, calls: dict[_Key, list[CallRecord]],
               kind: str) -> list[Summary]:
    if not job.buckets:
        return []
    tz = series.timezone
    charges: dict[str, CallCharge] = {}
    by_bucket: dict[float, list[CallRecord]] = defaultdict(list)
    first = job.buckets[0][0]
    for period in job.periods:
        period_calls = calls.get(_span(period, series, job.edge), [])
        charges.update(rate_calls(period_calls, series))
        for call in period_calls:
            if call.ended_at >= first:
                by_bucket[bucket_start(call.ended_at, kind, tz)].append(call)
    return [summarize(series, start, end, by_bucket.get(start, []), charges)
            for start, end in job.buckets]
