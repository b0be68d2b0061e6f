"""Retention ([store] keep_months): which months may go, on real SQLite files, and the live
agent purging at start against the simulated PBX."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from botmeter.config import load_config
from botmeter.rating.periods import period_bounds, period_of, shift_period
from botmeter.service import AgentService
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall
from botmeter.storage.retention import (
    RetentionPolicy,
    first_kept,
    plan_purge,
    purge,
    purge_old_calls,
    retention_policy,
    why_held,
)
from botmeter.storage.store import CallStore
from botmeter.uplink import outbox
from botmeter.uplink.buckets import iso_z

from .helpers import eventually
from .test_db_cli import month_calls, outbox_row

SHANGHAI = ZoneInfo("Asia/Shanghai")
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+5:30: an hour bucket straddles its month's end
#: 2026-11-15 12:00 in Shanghai
NOW = datetime(2026, 11, 15, 12, tzinfo=SHANGHAI).timestamp()


@pytest.fixture
def store(tmp_path: Path):
    opened = CallStore(tmp_path / "calls.db")
    yield opened
    opened.close()


def test_the_months_kept_are_the_current_one_and_keep_months_before_it() -> None:
    assert first_kept(NOW, RetentionPolicy(1, SHANGHAI)) == "2026-10"
    assert first_kept(NOW, RetentionPolicy(12, SHANGHAI)) == "2025-11"
    # 2026-11-30 20:00 UTC is already December in Shanghai, still November in UTC
    late = datetime(2026, 11, 30, 20, tzinfo=ZoneInfo("UTC")).timestamp()
    assert first_kept(late, RetentionPolicy(1, SHANGHAI)) == "2026-11"
    assert first_kept(late, RetentionPolicy(1)) == "2026-10"


def test_only_undelivered_summaries_hold_a_month(store: CallStore) -> None:
    conn = store.db.conn
    policy = RetentionPolicy(1, SHANGHAI)
    start, _ = period_bounds("2026-08", SHANGHAI)
    for state, revision in (("delivered", 1), ("superseded", 2), ("delivered", 3)):
        outbox_row(conn, iso_z(start), iso_z(start + 3600), state, revision)
    assert why_held(conn, policy, "2026-08") is None
    outbox_row(conn, iso_z(start), iso_z(start + 3600), "parked", 4)
    assert "not delivered" in (why_held(conn, policy, "2026-08") or "")
    assert why_held(conn, policy, "2026-07") is None


def test_an_hour_bucket_across_the_month_end_holds_both_months(store: CallStore) -> None:
    policy = RetentionPolicy(1, KOLKATA)
    _, end = period_bounds("2026-08", KOLKATA)  # 2026-08-31 18:30 UTC
    outbox_row(store.db.conn, iso_z(end - 1800), iso_z(end + 1800), "pending")
    assert why_held(store.db.conn, policy, "2026-08") is not None
    assert why_held(store.db.conn, policy, "2026-09") is not None
    assert why_held(store.db.conn, policy, "2026-07") is None


def test_with_an_uplink_a_month_not_yet_summarised_stays(store: CallStore) -> None:
    conn = store.db.conn
    policy = RetentionPolicy(1, SHANGHAI, uplink_plans=("per-minute", "bundle"))
    assert "plan per-minute" in (why_held(conn, policy, "2026-07") or "")  # never summarised
    _, end = period_bounds("2026-07", SHANGHAI)
    with outbox.write_transaction(conn):
        outbox.set_state(conn, "closed_until", {"per-minute": end + 86400 * 40, "bundle": end})
    assert why_held(conn, policy, "2026-07") is None
    assert "plan bundle" in (why_held(conn, policy, "2026-08") or "")  # summarised to July


def test_purge_deletes_in_chunks_and_a_month_held_meanwhile_stays(store: CallStore) -> None:
    policy = RetentionPolicy(1, SHANGHAI)
    store.save(month_calls("2026-07", 25, "jul") + month_calls("2026-08", 25, "aug")
               + month_calls("2026-10", 5, "oct"))
    conn = store.db.conn
    plan = plan_purge(conn, policy, NOW)
    assert [(m.period, m.calls, m.held) for m in plan.months] == [("2026-07", 25, None),
                                                                  ("2026-08", 25, None)]
    start, _ = period_bounds("2026-08", SHANGHAI)
    outbox_row(conn, iso_z(start), iso_z(start + 3600), "pending")  # queued since the plan
    assert purge(conn, plan, policy, chunk=7) == {"2026-07": 25}
    assert conn.execute("SELECT count(*) FROM calls").fetchone() == (30,)


def test_the_policy_counts_months_in_utc_without_plans(write_config) -> None:
    assert retention_policy(load_config(write_config()), None) is None
    config = load_config(write_config(extra="keep_months = 6\n"))  # in [store]
    assert retention_policy(config, None) == RetentionPolicy(6, ZoneInfo("UTC"), ())


async def test_the_running_agent_purges_old_calls_at_start(tmp_path: Path, write_config) -> None:
    db = tmp_path / "calls.db"
    this_month = period_of(time.time(), ZoneInfo("UTC"))  # no plans: months in UTC
    seeded = CallStore(db)
    seeded.save(month_calls(shift_period(this_month, -2), 30, "old")
                + month_calls(shift_period(this_month, -1), 3, "prev"))
    seeded.close()
    async with SimulatedPBX(speed=40) as pbx:
        config = write_config(port=pbx.port, extra="keep_months = 1\n")
        service = AgentService(load_config(config))
        assert service.retention is not None
        running = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.client.connected.wait(), 5)
            await eventually(lambda: service.retention is not None
                             and service.retention.purged == 30)
            await pbx.play([ScriptedCall("13400000001", "", "handled", 1.0, 2.0)])
            await eventually(lambda: service.writer.saved == 1)
        finally:
            service.stop()
            await running
    conn = sqlite3.connect(db)
    try:
        ids = sorted(row[0] for row in conn.execute("SELECT call_id FROM calls"))
    finally:
        conn.close()
    assert [i for i in ids if i.startswith("old")] == []
    assert len([i for i in ids if i.startswith("prev")]) == 3 and len(ids) == 4


def test_a_call_stored_into_a_purged_month_is_never_summarised_again(store: CallStore) -> None:
    from botmeter.rating import PlanBook
    from botmeter.uplink.summarizer import refresh

    from .rating_support import PLANS_DIR, make_call

    series = PlanBook.load(PLANS_DIR).series("per-minute")
    conn = store.db.conn
    store.save(month_calls("2026-07", 5, "jul") + month_calls("2026-09", 5, "sep"))
    assert len(refresh(store, [series], "a", "hour", 300, NOW)) == 2  # one bucket a month
    conn.execute("UPDATE uplink_outbox SET state = 'delivered', attempts = 1")
    assert purge_old_calls(store, RetentionPolicy(3, SHANGHAI), NOW) == {"2026-07": 5}
    jul, sep = (period_bounds(p, SHANGHAI)[0] + 86400 for p in ("2026-07", "2026-09"))
    store.save([make_call("late-jul", end_ms=round(jul * 1000))])
    assert refresh(store, [series], "a", "hour", 300, NOW) == []
    store.save([make_call("late-sep", end_ms=round(sep * 1000))])  # a kept month: summarised
    assert [q["bucket_start"] for q in refresh(store, [series], "a", "hour", 300, NOW)] == [
        iso_z(sep)]
