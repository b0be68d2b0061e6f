"""Benchmark issue 4: re-rate 1,000,000 stored calls from SQLite under the combined plan.

Run by hand: python tests/bench/bench_rerate.py [--calls 1000000]
Builds a month of calls in a temporary SQLite file (through CallStore, with module usage), then
times rerate_period: load from SQLite, rate, write every amount back. Prints the phases
and, as a baseline in the same run, the time to read the same rows with a bare SELECT.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from botmeter.rating import PlanBook  # noqa: E402
from botmeter.rerating import rerate_period  # noqa: E402
from botmeter.storage.store import CallStore  # noqa: E402
from tests.bench.bench_rating import make_calls  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=1_000_000)
    args = ap.parse_args()
    series = PlanBook.load(ROOT / "config" / "plans").series("combined")
    with tempfile.TemporaryDirectory() as tmp:
        store = CallStore(Path(tmp) / "bench.db")
        start = time.perf_counter()
        calls = make_calls(args.calls, modules=True)
        for i in range(0, len(calls), 50_000):
            store.save(calls[i:i + 50_000])
        print(f"stored {len(calls):,} calls with modules in {time.perf_counter() - start:.1f} s "
              f"({(Path(tmp) / 'bench.db').stat().st_size / 1e6:.0f} MB)")
        del calls

        start = time.perf_counter()
        rows = store.db.conn.execute("SELECT * FROM calls ORDER BY ended_at, call_id").fetchall()
        bare = time.perf_counter() - start
        print(f"baseline: bare SELECT of {len(rows):,} rows: {bare:.1f} s")
        del rows

        phases: dict[str, float] = {}
        last = time.perf_counter()

        def progress(step: str, done: int) -> None:
            nonlocal last
            now = time.perf_counter()
            phases[step] = phases.get(step, 0.0) + now - last
            last = now

        start = last = time.perf_counter()
        count = rerate_period(store, series, "2026-11", progress)
        total = time.perf_counter() - start
        print(f"re-rated {count:,} stored calls in {total:.1f} s (target < 30 s): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
              + f"; {total / bare:.1f}x the bare SELECT")
        sample = store.db.conn.execute("SELECT cost, charges FROM calls LIMIT 1").fetchone()
        print(f"sample stored rating: cost {sample[0]} lines {sample[1]}")
        store.close()


if __name__ == "__main__":
    main()
