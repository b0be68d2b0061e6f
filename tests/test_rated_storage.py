"""Rating in the writer's transaction, and re-rating late periods in the background.

Writes are counted by SQLite itself (triggers on `calls`, see write_log)."""

from __future__ import annotations

import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

import structlog

from botmeter.backoff import Backoff
from botmeter.rating import PlanBook, rate_calls
from botmeter.rerating import RerateWorker
from botmeter.storage.rated_saver import RatedSaver
from botmeter.storage.store import CallStore, StoredPeriod
from botmeter.storage.writer import RecordWriter
from botmeter.tracking.record import CallRecord

from .helpers import eventually_sync
from .rating_support import PLANS_DIR, local_ms, make_call
from .write_log import log_writes, writes

SERIES = PlanBook.load(PLANS_DIR).series("combined")
PERIOD = "2026-11"


def month_of_calls(count: int) -> list[CallRecord]:
    """`count` calls of 50 bot minutes, an hour apart: the 5,000-minute bundle of the
    combined plan runs out after 100, so amounts depend on the order of the calls."""
    return [make_call(f"c{i:03d}", bot=3000.0, end_ms=local_ms(2026, 11, 2) + i * 3_600_000)
            for i in range(count)]


def costs(db: Path) -> dict[str, Decimal | None]:
    store = CallStore(db)
    try:
        return {cid: None if r["cost"] is None else Decimal(r["cost"])
                for cid, r in store.ratings(r.call_id for r in store.calls()).items()}
    finally:
        store.close()


class Hold:
    """While `on` is set, a period read waits after reading (a long re-rate) until `release`."""

    def __init__(self) -> None:
        self.on = threading.Event()
        self.reading = threading.Event()
        self.release = threading.Event()

    def store(self, db: Path) -> CallStore:
        hold = self

        class HeldAfterReading(CallStore):
            def period_for_rating(self, start: float, end: float, *,
                                  modules: bool = True) -> StoredPeriod:
                stored = super().period_for_rating(start, end, modules=modules)
                if hold.on.is_set():
                    hold.reading.set()
                    hold.release.wait(30)
                return stored

        return HeldAfterReading(db)


def test_a_late_call_rerates_its_period_once_in_the_background_while_calls_keep_being_stored(
        tmp_path: Path) -> None:
    db = tmp_path / "late.db"
    log_writes(db)
    calls = month_of_calls(120)
    late, early, rest = calls[10], calls[:10] + calls[11:60], calls[60:]
    hold = Hold()
    saver = RatedSaver(SERIES, on_late=lambda period: worker.submit(period))
    worker = RerateWorker(lambda: hold.store(db), saver)
    writer = RecordWriter(lambda: CallStore(db), saver=saver)
    with structlog.testing.capture_logs() as logs:
        writer.start()
        worker.start()
        saver.request_rerate(PERIOD)  # as at the agent's start: opens the period
        eventually_sync(lambda: worker.rerated == [PERIOD])
        for call in early:
            writer.submit(call)
        eventually_sync(lambda: writer.saved == len(early))

        hold.on.set()
        writer.submit(late)  # ended before 50 stored calls: their amounts change
        eventually_sync(hold.reading.is_set)  # the re-rate has read the period...
        for call in rest:  # ...and is busy: calls keep being stored meanwhile
            writer.submit(call)
        eventually_sync(lambda: writer.saved == len(calls))
        assert worker.current == PERIOD and worker.rerated == [PERIOD]
        hold.release.set()
        eventually_sync(lambda: worker.rerated == [PERIOD, PERIOD])
        writer.close(time.monotonic() + 5)
        assert worker.close(time.monotonic() + 5)

    expected = rate_calls(calls, SERIES)
    assert costs(db) == {cid: charge.amount for cid, charge in expected.items()}
    assert any(charge.amount > 0 for charge in expected.values())  # the bundle ran out
    rerates = [e for e in logs if e["event"] == "period re-rated"]
    assert [(e["period"], e["calls"], e["caught_up"]) for e in rerates] == [
        (PERIOD, 0, 0), (PERIOD, 60, len(rest))]  # one re-rate for the late call
    log = writes(db)
    for call in calls:  # each call inserted once; updated only by the re-rate of its period
        ops = log[call.call_id]
        assert ops[0][0] == "INSERT" and all(op == "UPDATE" for op, _ in ops[1:]), ops
        assert len(ops) <= 2, (call.call_id, ops)
    assert [op for op, _ in log[early[0].call_id]] == ["INSERT"]  # its amount did not change
    assert log[late.call_id] == [("INSERT", None), ("UPDATE", str(expected[late.call_id].amount))]


def test_calls_rated_but_refused_by_a_locked_database_are_counted_once(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    log_writes(db)
    failures = {"left": 2}

    class Locked(CallStore):
        def save(self, records, charges=None):  # type: ignore[no-untyped-def]
            if failures["left"]:
                failures["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            return super().save(records, charges)

    late: list[str] = []
    slept: list[float] = []
    saver = RatedSaver(SERIES, on_late=late.append, fresh_after=0.0)  # periods open empty
    writer = RecordWriter(lambda: Locked(db), saver=saver,
                          backoff=Backoff(0.2, 5.0, rand=lambda: 1.0, sleep=slept.append))
    calls = month_of_calls(110)
    writer.start()
    for call in calls:
        writer.submit(call)
    writer.close(time.monotonic() + 10)
    assert slept == [0.2, 0.4] and writer.saved == len(calls)  # retried with the backoff
    assert late == []  # the retries reused the ratings: nothing counted twice
    expected = rate_calls(calls, SERIES)
    assert costs(db) == {cid: charge.amount for cid, charge in expected.items()}
    assert all([op for op, _ in ops] == ["INSERT"] for ops in writes(db).values())


def test_without_plans_the_writer_stores_calls_unrated(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    writer = RecordWriter(lambda: CallStore(db))
    writer.start()
    writer.submit(make_call("c001"))
    writer.close(time.monotonic() + 5)
    assert costs(db) == {"c001": None}
