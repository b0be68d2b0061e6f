"""The live agent rates each call in the transaction that stores it: one write per call,
counted by SQLite itself (triggers on `calls`), over loopback against the simulated PBX.
And a stop while a long re-rate runs keeps the one deadline."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from botmeter.demo import demo_config
from botmeter.rating import PlanBook, rate_calls
from botmeter.service import AgentService
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import mixed_calls
from botmeter.storage.store import CallStore, StoredPeriod

from .helpers import eventually
from .rating_support import PLANS_DIR
from .write_log import log_writes, writes

#: mid-November 2026 in the plans' time zone: every simulated call ends in 2026-11
EPOCH = datetime(2026, 11, 15, 12, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


async def test_a_live_call_is_written_once_and_carries_its_amount(tmp_path: Path) -> None:
    db = tmp_path / "once.db"
    log_writes(db)
    calls = mixed_calls(12, seed=5)
    async with SimulatedPBX(speed=60, secret="s", epoch=EPOCH) as pbx:
        service = AgentService(demo_config(pbx.port, "s", db, PLANS_DIR), store_path=db,
                               clock=pbx.now)
        running = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.client.connected.wait(), 5)
            assert service.rerater is not None
            rerater = service.rerater
            await eventually(lambda: rerater.rerated == ["2026-11"])  # opened at start
            await pbx.play(calls, concurrency=6)
            await eventually(lambda: service.writer.saved >= len(calls), timeout=10)
        finally:
            service.stop()
            await running
    store = CallStore(db)
    records = store.calls()
    assert len(records) == len(calls)
    log = writes(db)
    assert set(log) == {r.call_id for r in records}
    for call_id, ops in log.items():  # one INSERT carrying the amount, no UPDATE after it
        assert [op for op, _ in ops] == ["INSERT"], (call_id, ops)
        assert ops[0][1] is not None, call_id
    series = PlanBook.load(PLANS_DIR).series("combined")
    expected = rate_calls(records, series)
    stored = store.ratings(r.call_id for r in records)
    assert {cid: Decimal(r["cost"]) for cid, r in stored.items()} == {
        cid: charge.amount for cid, charge in expected.items()}
    assert {r["plan_id"] for r in stored.values()} == {"combined"}
    assert rerater.rerated == ["2026-11"]  # no other re-rate was needed


def _nap() -> int:
    time.sleep(0.02)
    return 0


class SlowReads(CallStore):
    """A store whose period reads take ~forever in SQLite (until interrupted)."""

    def period_for_rating(self, start: float, end: float, *, modules: bool = True) -> StoredPeriod:
        self.db.conn.create_function("nap", 0, _nap)
        self.db.conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) "
            "SELECT sum(nap()) FROM n").fetchone()
        return super().period_for_rating(start, end, modules=modules)


async def test_a_stop_during_a_long_rerate_ends_within_the_deadline(tmp_path: Path) -> None:
    db = tmp_path / "slow.db"
    log_writes(db)
    calls = mixed_calls(4, seed=3)
    stop_timeout = 2.0
    with structlog.testing.capture_logs() as logs:
        async with SimulatedPBX(speed=60, secret="s", epoch=EPOCH) as pbx:
            service = AgentService(demo_config(pbx.port, "s", db, PLANS_DIR), store_path=db,
                                   clock=pbx.now, stop_timeout=stop_timeout,
                                   store_factory=lambda: SlowReads(db))
            running = asyncio.create_task(service.run())
            await asyncio.wait_for(service.client.connected.wait(), 5)
            rerater = service.rerater
            assert rerater is not None
            await eventually(lambda: rerater.current == "2026-11")  # the start's re-rate runs
            await pbx.play(calls, concurrency=4)
            await eventually(lambda: service.writer.saved >= len(calls), timeout=10)
            start = time.monotonic()
            service.stop()
            await running
            took = time.monotonic() - start
    assert took < stop_timeout + 0.5, took  # one deadline for storing and re-rating
    assert not rerater.alive  # abandoned cleanly: the SQLite read was interrupted
    assert rerater.abandoned == ["2026-11"] and rerater.rerated == []
    [line] = [e for e in logs if e["event"].startswith("re-rating unfinished at stop")]
    assert line["periods"] == ["2026-11"]
    assert service.writer.spilled == service.writer.lost == 0
    conn = sqlite3.connect(db)
    try:  # the calls are stored (unrated: their period is re-rated at the next start)
        assert conn.execute("SELECT count(*), count(cost) FROM calls").fetchone() == (4, 0)
    finally:
        conn.close()
    assert all([op for op, _ in ops] == ["INSERT"] for ops in writes(db).values())
