"""Benchmark: calls rated per second, in memory, under the combined example plan.

Run by hand: python tests/bench/bench_rating.py [--calls 200000] [--repeat 5]
Prints calls/s of rate_calls (a month at once, sorting included), of Rater.rate (one arriving
call at a time), of a naive baseline in the same run (sum of Decimal(bot_seconds) x price per
call, nothing else), and their ratios; then the per-module plan with random quantities (no two
calls alike, so no result is shared) for comparison. Caches are cleared before each run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from botmeter.rating import Rater, build_statement, load_plan, rate_calls  # noqa: E402
from botmeter.rating.compiled import compile_plan  # noqa: E402
from botmeter.tracking.record import CallRecord, ModuleUsage  # noqa: E402

NOVEMBER = 1_793_462_400_000  # 2026-11-01 00:00 Asia/Shanghai, epoch ms
MONTH_MS = 29 * 86_400_000
OUTCOMES = ["handled"] * 6 + ["transferred"] * 2 + ["abandoned", "failed"]


def make_calls(count: int, modules: bool, seed: int = 7) -> list[CallRecord]:
    """A month of calls: rings 0.5-8 s, bot 1-300 s (ms precision), a mix of outcomes."""
    rnd = random.Random(seed)
    calls = []
    for i in range(count):
        offered = NOVEMBER + rnd.randrange(MONTH_MS)
        outcome = rnd.choice(OUTCOMES)
        ring = rnd.randint(500, 8_000)
        used = {}
        if outcome == "abandoned":
            answered = bot_end = None
            ended = offered + ring
        else:
            answered = offered + ring
            bot_end = answered + rnd.randint(1_000, 300_000)
            ended = bot_end + (rnd.randint(5_000, 120_000) if outcome == "transferred" else 0)
            if modules:
                used = {"asr": ModuleUsage(Decimal(rnd.randint(1_000, 300_000)).scaleb(-3), "s"),
                        "nlu": ModuleUsage(Decimal(rnd.randint(1, 40)), "requests"),
                        "tts": ModuleUsage(Decimal(rnd.randint(20, 3_000)), "characters"),
                        "qa": ModuleUsage(Decimal(rnd.randint(0, 5)), "answers")}
        calls.append(CallRecord(
            f"call-{i:07d}", f"call-{i:07d}", "13900000001", None, "4000", offered / 1000,
            answered / 1000 if answered else None, bot_end / 1000 if bot_end else None,
            None, None, ended / 1000, outcome, None, 16, used))  # type: ignore[arg-type]
    return calls


def best(run: Callable[[], object], repeat: int) -> float:
    """Best wall time of `repeat` runs, caches cleared before each."""
    times = []
    for _ in range(repeat):
        compile_plan.cache_clear()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def naive(calls: list[CallRecord], price: Decimal) -> Decimal:
    """The baseline: only sum Decimal(bot_seconds) x price per call."""
    total = Decimal(0)
    for call in calls:
        seconds = call.bot_seconds
        if seconds:
            total += Decimal(str(seconds)) * price
    return total


def one_by_one(calls: list[CallRecord], plan) -> None:  # type: ignore[no-untyped-def]
    rater = Rater(plan)
    rater.rerate("2026-11", [])
    for call in calls:
        rater.rate(call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plans = ROOT / "config" / "plans"
    combined = load_plan(plans / "combined.toml")
    calls = make_calls(args.calls, modules=False)
    ordered = sorted(calls, key=lambda c: (c.ended_at, c.call_id))
    price = Decimal("0.12") / 60
    n = len(calls)

    base = n / best(lambda: naive(calls, price), args.repeat)
    batch = n / best(lambda: rate_calls(calls, combined), args.repeat)
    single = n / best(lambda: one_by_one(ordered, combined), args.repeat)
    statement = n / best(lambda: build_statement(combined, "2026-11", calls), args.repeat)
    print(f"{n:,} calls, combined plan ({len(combined.charges)} charges, fees, SLA)")
    print(f"  baseline (Decimal bot_seconds x price) {base:>12,.0f} calls/s")
    print(f"  rate_calls (whole month, sorted)       {batch:>12,.0f} calls/s   "
          f"{batch / base:.2f}x baseline")
    print(f"  Rater.rate (one arriving call)         {single:>12,.0f} calls/s   "
          f"{single / base:.2f}x baseline")
    print(f"  build_statement (month, with SLA)      {statement:>12,.0f} calls/s")

    modular = load_plan(plans / "per-module.toml")
    module_calls = make_calls(args.calls, modules=True)
    worst = n / best(lambda: rate_calls(module_calls, modular), args.repeat)
    print(f"per-module plan ({len(modular.charges)} charges), random quantities: "
          f"rate_calls {worst:,.0f} calls/s ({worst / base:.2f}x baseline)")
    status = "ok" if batch >= 200_000 else "BELOW TARGET"
    print(f"target 200,000 calls/s under the combined plan: {status}")


if __name__ == "__main__":
    main()
