"""The roll-ups (storage/rollups.py) stay equal to the calls they sum, whatever writes them,
and a report read from them equals one worked out from the calls themselves."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from botmeter.rating import PlanBook, rate_calls
from botmeter.reports.metrics import HISTOGRAM_EDGES, build_report
from botmeter.reports.window import Window
from botmeter.storage.rollups import FAMILIES, Family
from botmeter.storage.store import CallStore
from botmeter.tracking.record import CSAT_SCALE, CallRecord
from tests.test_report_plan_usage import random_calls

ROOT = Path(__file__).resolve().parents[1]


def rows(conn: sqlite3.Connection, family: Family, table: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    keys, values = family.key_names(), family.value_names()
    return {row[:len(keys)]: row[len(keys):] for row in conn.execute(
        f"SELECT {', '.join(keys + values)} FROM {table}") if any(row[len(keys):])}


def assert_rollups_match(conn: sqlite3.Connection) -> None:
    """Every roll-up table holds what summing the stored calls afresh gives."""
    for family in FAMILIES:
        conn.execute(f"CREATE TEMP TABLE fresh AS SELECT * FROM {family.table} WHERE 0")
        conn.execute(family.fill().replace(f"INSERT INTO {family.table}", "INSERT INTO fresh"))
        fresh = rows(conn, family, "fresh")
        conn.execute("DROP TABLE fresh")
        assert rows(conn, family, family.table) == fresh, family.table


def numbered(calls: list[CallRecord], rnd: random.Random, numbers: int) -> list[CallRecord]:
    """The calls from a few caller numbers (and some with none), so that numbers repeat."""
    return [c._replace(caller_number=rnd.choice((None, "", *(f"1390{n:04d}" for n in range(numbers)))))
            for c in calls]


@pytest.mark.parametrize("recursive", (True, False))
def test_every_write_keeps_the_rollups_exact(tmp_path: Path, recursive: bool) -> None:
    """Inserts, replaces (a call stored again, moved, twice in one batch), re-ratings,
    updates and deletes, through sqlite-utils (recursive triggers on) and a plain sqlite3
    connection (off: INSERT OR REPLACE then fires no DELETE trigger)."""
    rnd = random.Random(7)
    series = PlanBook.load(ROOT / "config" / "plans").series("combined")
    calls = numbered(random_calls(rnd, 600), rnd, 25)
    store = CallStore(tmp_path / "calls.db")
    store.save(calls[:400], rate_calls(calls[:400], series))
    conn = store.db.conn if recursive else sqlite3.connect(tmp_path / "calls.db")
    assert conn.execute("PRAGMA recursive_triggers").fetchone()[0] == int(recursive)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
    moved = [c._replace(offered_at=c.offered_at - 3600 * 30, ended_at=c.ended_at + 7200,
                        caller_number="13900000")
             for c in calls[:80]]
    store.save(moved + calls[400:] + calls[5:10], {})  # calls 5..9 twice in one batch
    store.db.conn.commit()
    # a replace through the other connection, copying rows back in as they are
    conn.execute(f"INSERT OR REPLACE INTO calls ({', '.join(columns)}) "
                 f"SELECT {', '.join(columns)} FROM calls WHERE rowid % 3 = 0")
    conn.execute("UPDATE calls SET cost = '2.5', plan_id = 'other', charges = NULL "
                 "WHERE rowid % 5 = 0")
    conn.execute("UPDATE calls SET offered_at = replace(offered_at, 'T1', 'T0'), "
                 "caller_number = '13900001' WHERE rowid % 7 = 0")
    conn.execute("DELETE FROM calls WHERE rowid % 11 = 0")
    conn.commit()
    assert_rollups_match(store.db.conn)
    assert store.db.conn.execute("SELECT count(*) FROM rollup_replacing").fetchone()[0] == 0
    store.close()


def test_an_older_database_gains_filled_rollups(tmp_path: Path) -> None:
    """Migrating to version 9 fills the roll-ups from the calls already stored."""
    rnd = random.Random(3)
    store = CallStore(tmp_path / "calls.db")
    store.save(numbered(random_calls(rnd, 300), rnd, 10), {})
    store.close()
    conn = sqlite3.connect(tmp_path / "calls.db")
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'rollup%' "
                                "AND type IN ('table', 'trigger')").fetchall():
        kind = "TABLE" if not name.endswith(("_insert", "_replace", "_update", "_delete",
                                              "_mark", "_clear")) else "TRIGGER"
        conn.execute(f"DROP {kind} IF EXISTS {name}")
    conn.execute("PRAGMA user_version = 8")
    conn.commit()
    conn.close()
    store = CallStore(tmp_path / "calls.db")
    assert store.schema_version == 11
    assert store.db.conn.execute("SELECT sum(calls) FROM rollup_slots").fetchone()[0] == 300
    assert_rollups_match(store.db.conn)
    store.close()


def reference(calls: list[CallRecord], window: Window) -> dict[str, Any]:
    """What the report's roll-up metrics are, worked out from the records in Python."""
    inside = [c for c in calls if window.start <= c.offered_at < window.end]
    bot = sorted(round(c.bot_seconds * 1000) for c in inside
                 if c.bot_answered_at is not None and c.bot_seconds is not None)
    waits = sorted(round(c.human_answered_at * 1000) - round(c.transferred_at * 1000)
                   for c in inside if c.outcome == "transferred"
                   and c.human_answered_at is not None and c.transferred_at is not None)

    def percentile(values: list[int], p: float) -> float | None:
        if not values:
            return None
        position = p * (len(values) - 1)
        low = int(position)
        high = min(low + 1, len(values) - 1)
        return round((values[low] + (values[high] - values[low]) * (position - low)) / 1000, 3)

    histogram = []
    for i, edge in enumerate(HISTOGRAM_EDGES):
        upper = HISTOGRAM_EDGES[i + 1] if i + 1 < len(HISTOGRAM_EDGES) else None
        histogram.append({"from": edge, "to": upper, "calls": sum(
            1 for v in bot if v >= edge * 1000 and (upper is None or v < upper * 1000))})
    last: dict[str, float] = {}
    within = Counter[str]()
    for c in sorted(inside, key=lambda c: (c.offered_at, c.call_id)):
        if not c.caller_number:
            continue
        before = last.get(c.caller_number)
        if before is not None:
            gap = round(c.offered_at * 1000) - round(before * 1000)
            within["24h"] += gap <= 86_400_000
            within["7d"] += gap <= 7 * 86_400_000
        last[c.caller_number] = c.offered_at
    modules: dict[str, Decimal] = {}
    for c in inside:
        for name, usage in c.modules.items():
            modules[name] = modules.get(name, Decimal(0)) + usage.quantity
    scores = Counter[int]()
    for c in inside:
        if c.csat is not None:
            five = 1 + Fraction((c.csat.score - 1) * (CSAT_SCALE - 1), c.csat.scale - 1)
            scores[int(five + Fraction(1, 2))] += 1
    return {"median": percentile(bot, 0.5), "p90": percentile(bot, 0.9),
            "wait": percentile(waits, 0.5), "histogram": histogram,
            "within_24h": within["24h"], "within_7d": within["7d"],
            "modules": {name: float(q) if q != q.to_integral_value() else int(q)
                        for name, q in modules.items()},
            "offered": len(inside), "distribution": {str(s): scores[s] for s in range(1, 6)},
            "handled": sum(c.outcome == "handled" for c in inside)}


def _window(zone: str, start: tuple[int, ...], end: tuple[int, ...]) -> Window:
    tz = ZoneInfo(zone)
    return Window(datetime(*start, tzinfo=tz).timestamp(), datetime(*end, tzinfo=tz).timestamp(), tz)


WINDOWS = {
    "Shanghai month": lambda: Window.month("2026-11", ZoneInfo("Asia/Shanghai")),
    "UTC month": lambda: Window.month("2026-11", ZoneInfo("UTC")),
    "Kathmandu month (+5:45)": lambda: Window.month("2026-11", ZoneInfo("Asia/Kathmandu")),
    "St Johns month (-3:30)": lambda: Window.month("2026-11", ZoneInfo("America/St_Johns")),
    "Los Angeles days": lambda: _window("America/Los_Angeles", (2026, 10, 30), (2026, 11, 9)),
    "odd seconds": lambda: _window("Asia/Shanghai", (2026, 11, 2, 7, 13, 5), (2026, 11, 20, 3, 1)),
    "within a day": lambda: _window("UTC", (2026, 11, 5, 2), (2026, 11, 5, 20)),
}


@pytest.mark.parametrize("name", WINDOWS)
def test_a_report_from_the_rollups_equals_the_calls_worked_out(tmp_path: Path, name: str) -> None:
    rnd = random.Random(name)
    calls = numbered(random_calls(rnd, 1500), rnd, 40)
    calls += [c._replace(call_id=f"x{c.call_id}", offered_at=c.offered_at + rnd.choice(
        (3600, 86_400, 86_400.001, 7 * 86_400, 7 * 86_400 + 0.001)),
        ended_at=c.ended_at + 8 * 86_400) for c in calls[:300] if c.caller_number]
    window = WINDOWS[name]()
    # calls on the window's very edges, inside and out
    calls += [c._replace(call_id=f"edge{i}", offered_at=moment, ended_at=moment + 60)
              for i, (c, moment) in enumerate(zip(calls, (
                  window.start - 0.001, window.start, window.start + 1, window.end - 1,
                  window.end - 0.001, window.end), strict=False))]
    store = CallStore(tmp_path / "calls.db")
    store.save(calls, {})
    report = build_report(store, window)
    want = reference(calls, window)
    totals = report["totals"]
    assert (totals["offered"], totals["handled"]) == (want["offered"], want["handled"])
    assert totals["bot_seconds"]["median"] == want["median"]
    assert totals["bot_seconds"]["p90"] == want["p90"]
    assert totals["human_wait_seconds"]["median"] == want["wait"]
    assert report["charts"]["bot_seconds_histogram"] == want["histogram"]
    repeats = report["repeat_callers"]
    assert (repeats["within_24h"], repeats["within_7d"]) == (want["within_24h"], want["within_7d"])
    assert {m: v["quantity"] for m, v in totals["modules"].items()} == want["modules"]
    assert totals["csat"]["distribution"] == want["distribution"]
    assert want["within_24h"] > 0 and want["offered"] > 0  # the case has something to count
    store.close()


@pytest.mark.parametrize("column, value", [
    ("modules", "null"), ("modules", "[1, 2]"), ("modules", '{"asr": null}'),
    ("modules", '{"asr": ["1e999", "s"]}'), ("modules", "{not json"), ("charges", '"text"'),
    ("charges", "[[null, null, null]]"), ("csat", "garbage"), ("csat", '{"score": "4"}'),
    ("offered_at", "yesterday"), ("bot_answered_at", "2026-13-45T99:00:00Z"),
    ("caller_number", ""), ("cost", "lots"), ("cost", "1e300"), ("bot_seconds", 1e300),
    ("plan_id", None), ("outcome", "weird")])
def test_a_damaged_row_never_stops_a_write_and_the_rollups_stay_exact(
        tmp_path: Path, column: str, value: str | float | None) -> None:
    """Rows edited by hand into values botmeter never writes: the edit, later saves and a
    delete all go through, and the roll-ups still equal the calls summed afresh."""
    rnd = random.Random(column + str(value))
    series = PlanBook.load(ROOT / "config" / "plans").series("combined")
    calls = numbered(random_calls(rnd, 60), rnd, 5)
    store = CallStore(tmp_path / "calls.db")
    store.save(calls[:40], rate_calls(calls[:40], series))
    conn = store.db.conn
    conn.execute(f"UPDATE calls SET {column} = ? WHERE rowid % 4 = 0", (value,))
    conn.commit()
    store.save(calls[30:], {})
    assert store.count() == 60
    deleted = conn.execute("DELETE FROM calls WHERE rowid % 8 = 0").rowcount
    conn.commit()
    assert deleted > 0 and store.count() == 60 - deleted
    assert_rollups_match(conn)
    store.close()
