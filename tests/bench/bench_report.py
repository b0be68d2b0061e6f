"""Benchmark issue 12: a month's report over 1,000,000 stored calls.

Run by hand: python tests/bench/bench_report.py [--calls 1000000] [--plan combined] [--write-cost]
Builds a month of calls in a temporary SQLite file (bench_rating.make_calls, rated under the
plan, with callers repeating and a third of the answered calls rated by the caller), then
times build_report + JSON and, when `botmeter.reports.render` is importable, the table and
HTML renders; next to a bare `SELECT count(*), sum(bot_seconds)` over the same rows.
Targets: table/JSON < 2 s, HTML < 3 s.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "agent"))

from botmeter.rating import PlanBook, PlanSeries, rate_calls  # noqa: E402
from botmeter.reports.metrics import Pricing, build_report  # noqa: E402
from botmeter.reports.window import Window  # noqa: E402
from botmeter.storage.store import CallStore  # noqa: E402
from botmeter.tracking.record import Csat  # noqa: E402
from tests.bench.bench_rating import make_calls  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--plan", default="combined")
    ap.add_argument("--write-cost", action="store_true",
                    help="also time storing 50,000 calls with and without the roll-ups")
    ap.add_argument("--keep", type=Path, metavar="PATH",
                    help="the bench database: reused when it exists (its calls are not "
                         "rebuilt, --calls is ignored), else built there and kept")
    args = ap.parse_args()
    book = PlanBook.load(ROOT / "config" / "plans")
    series = book.series(args.plan)
    rnd = random.Random(12)
    if args.write_cost:
        write_cost(series, rnd)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep if args.keep is not None else Path(tmp) / "bench.db"
        if not path.exists():
            build(path, args.calls, series, rnd)
        else:
            print(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)")
        run(path, book, series)


def write_cost(series: PlanSeries, rnd: random.Random, count: int = 50_000) -> None:
    """Store `count` calls with the roll-ups' triggers and without them (dropped), in one run."""
    calls = [c._replace(caller_number=f"139{rnd.randrange(20_000):08d}")
             for c in make_calls(count, modules=True)]
    charges = rate_calls(calls, series)
    took = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("without roll-ups", "with roll-ups"):
            store = CallStore(Path(tmp) / f"{kind}.db")
            if kind == "without roll-ups":
                for (name,) in store.db.conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                        "AND name LIKE 'rollup%'").fetchall():
                    store.db.conn.execute(f"DROP TRIGGER {name}")
            start = time.perf_counter()
            for i in range(0, count, 500):  # the live writer's batches are small
                chunk = calls[i:i + 500]
                store.save(chunk, {c.call_id: charges[c.call_id] for c in chunk
                                   if c.call_id in charges})
            took[kind] = time.perf_counter() - start
            store.close()
    base, rolled = took["without roll-ups"], took["with roll-ups"]
    print(f"storing {count:,} calls in batches of 500: {base:.2f} s without the roll-ups' "
          f"triggers ({count / base:,.0f} calls/s), {rolled:.2f} s with them "
          f"({count / rolled:,.0f} calls/s): {rolled / base:.1f}x")


def build(path: Path, count: int, series: PlanSeries, rnd: random.Random) -> None:
    """Store a month of `count` calls in a new database at `path`, rated under `series`."""
    store = CallStore(path)
    start = time.perf_counter()
    calls = make_calls(count, modules=True)
    calls = [c._replace(caller_number=f"139{rnd.randrange(200_000):08d}",
                        csat=Csat(rnd.randint(1, 5)) if c.bot_answered_at and i % 3 == 0
                        else None)
             for i, c in enumerate(calls)]
    charges = rate_calls(calls, series)
    for i in range(0, len(calls), 50_000):
        chunk = calls[i:i + 50_000]
        store.save(chunk, {c.call_id: charges[c.call_id] for c in chunk
                           if c.call_id in charges})
    del calls, charges
    store.close()
    print(f"stored {count:,} calls (rated under {series.plan_id}) in "
          f"{time.perf_counter() - start:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")


def run(path: Path, book: PlanBook, series: PlanSeries) -> None:
    """Time the report over the database at `path`."""
    store = CallStore(path)
    window = Window.month("2026-11", series.timezone)
    start = time.perf_counter()
    count, seconds = store.db.conn.execute(
        "SELECT count(*), sum(bot_seconds) FROM calls WHERE offered_at >= ? AND "
        "offered_at < ?", (window.start_text, window.end_text)).fetchone()
    bare = time.perf_counter() - start
    print(f"baseline: bare SELECT count(*), sum(bot_seconds) over {count:,} rows: "
          f"{bare:.2f} s")

    pricing = Pricing(series, list(book), None)
    start = time.perf_counter()
    report = build_report(store, window, "day", pricing, now=window.end + 86400)
    built = time.perf_counter() - start
    text = json.dumps(report, ensure_ascii=False, indent=2)
    total = time.perf_counter() - start
    print(f"build_report + JSON: {total:.2f} s (build {built:.2f} s; target < 2 s); "
          f"{total / bare:.1f}x the bare SELECT; {len(text):,} bytes")
    quick = Pricing(series, [series], None)
    start = time.perf_counter()
    build_report(store, window, "day", quick, now=window.end + 86400)
    print(f"build_report with the active plan only in [plans]: "
          f"{time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    build_report(store, window, "day", Pricing(), now=window.end + 86400)
    print(f"build_report without plans (no cost, SLA, advice): "
          f"{time.perf_counter() - start:.2f} s")
    try:
        from botmeter.reports.render import render_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("botmeter.reports.render not importable: table and HTML not timed")
    else:
        for fmt in ("table", "html"):
            start = time.perf_counter()
            render_report(build_report(store, window, "day", pricing,
                                       now=window.end + 86400), fmt, "en", io.BytesIO())
            print(f"{fmt}: build + render {time.perf_counter() - start:.2f} s "
                  f"(target < {2 if fmt == 'table' else 3} s)")
    store.close()


if __name__ == "__main__":
    main()
