"""The SQLite store: schema versions, one row per call, module usage, filters, the writer."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from botmeter.storage.schema import SCHEMA_VERSION, SchemaError
from botmeter.storage.store import CallFilter, CallStore
from botmeter.storage.writer import RecordWriter
from botmeter.tracking.record import CallRecord, ModuleUsage


def record(call_id: str = "1.1", offered: float = 1_795_000_000.0, outcome: str = "handled",
           **modules: tuple[str, str]) -> CallRecord:
    return CallRecord(
        call_id=call_id, linkedid=call_id, caller_number="139", caller_name="张三",
        dialed_number="4000", offered_at=offered, bot_answered_at=offered + 1.5,
        bot_ended_at=offered + 10.25, transferred_at=None, human_answered_at=None,
        ended_at=offered + 11.0, outcome=outcome, transfer_target=None, hangup_cause=16,  # type: ignore[arg-type]
        modules={m: ModuleUsage(Decimal(q), u) for m, (q, u) in modules.items()},
    )


def test_schema_is_created_in_wal_mode_with_a_version(tmp_path):
    store = CallStore(tmp_path / "a.db")
    store.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    CallStore(tmp_path / "a.db").close()  # reopening migrates nothing and keeps working


def test_newer_schema_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "b.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError):
        CallStore(tmp_path / "b.db")


def test_a_call_stored_twice_is_one_row_with_its_modules(tmp_path):
    store = CallStore(tmp_path / "c.db")
    store.save([record(asr=("12.5", "seconds"), nlu=("2", "requests"))])
    store.save([record(asr=("13", "seconds"))])
    [got] = store.calls()
    assert store.count() == 1
    assert got.modules == {"asr": ModuleUsage(Decimal("13"), "seconds")}
    assert got == record(asr=("13", "seconds"))


def test_round_trip_and_filters(tmp_path):
    store = CallStore(tmp_path / "d.db")
    store.save([record("1", 1_795_000_000.0), record("2", 1_795_000_100.0, "failed"),
                record("3", 1_795_000_200.0, "abandoned")])
    assert [r.call_id for r in store.calls(CallFilter(since=1_795_000_100.0))] == ["2", "3"]
    assert [r.call_id for r in store.calls(CallFilter(until=1_795_000_100.0))] == ["1"]
    assert [r.call_id for r in store.calls(CallFilter(outcomes=("failed", "abandoned")))] == ["2", "3"]
    assert [r.call_id for r in store.calls(CallFilter(limit=1))] == ["1"]


def test_writer_puts_a_call_on_disk_within_a_second(tmp_path):
    path = tmp_path / "e.db"
    writer = RecordWriter(lambda: CallStore(path))
    writer.start()
    try:
        start = time.monotonic()
        writer.submit(record("w1"))
        reader = CallStore(path)
        while reader.count() == 0 and time.monotonic() - start < 2:
            time.sleep(0.01)
        assert reader.count() == 1 and time.monotonic() - start < 1.0
    finally:
        writer.close()


def test_writer_keeps_retrying_when_storing_fails(tmp_path):
    path = tmp_path / "f.db"
    errors: list[int] = []
    fail = {"left": 2}

    class Flaky(CallStore):
        def save(self, records):  # type: ignore[override]
            if fail["left"]:
                fail["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            return super().save(records)

    writer = RecordWriter(lambda: Flaky(path), on_error=lambda exc, n: errors.append(n))
    writer.start()
    writer.submit(record("r1"))
    writer.close()
    assert errors == [1, 1]
    assert [r.call_id for r in CallStore(path).calls()] == ["r1"]


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_fast_iso_parse_is_the_exact_inverse(ms):
    from datetime import UTC, datetime

    from botmeter.tracking.record import iso_utc, parse_iso_utc

    text = iso_utc(ms / 1000)
    assert parse_iso_utc(text) == ms / 1000 == round(datetime.fromisoformat(text).timestamp(), 3)
    assert parse_iso_utc("2026-11-26T23:00:00+08:00") == datetime(2026, 11, 26, 15, tzinfo=UTC).timestamp()
