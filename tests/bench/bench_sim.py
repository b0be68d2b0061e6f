"""Benchmark the simulated PBX writing its own records: can it keep up with a fault run's load?

Run by hand: python tests/bench/bench_sim.py [--calls 2000] [--rate 20] [--speed 1000]
A fault run plays 2,000 mixed calls at 20 calls/s (about 40 CEL rows per call: some 800 rows/s).
Here the same calls are played with the clock running `--speed` times faster than the wall, so
the simulator is always behind and plays as fast as it can; what it reaches, in calls per wall
second, is how many calls per second it could keep up with. Four runs: no records (the baseline),
CEL and CDR committed per row (as Asterisk does), per step (the default), and per step with a
truth file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "agent"))

from botmeter.sim import SimulatedPBX, mixed_calls  # noqa: E402
from botmeter.sim.records import Commit  # noqa: E402


async def play(calls: int, rate: float, speed: float, folder: Path | None,
               commit: Commit, truth: bool) -> tuple[float, int, int]:
    """(wall seconds, CEL rows, CDR rows) of one run."""
    files: dict[str, Path | None] = {"cel_db": None, "cdr_db": None, "cdr_csv": None}
    if folder is not None:
        files = {"cel_db": folder / "cel.db", "cdr_db": folder / "cdr.db",
                 "cdr_csv": folder / "Master.csv"}
    pbx = SimulatedPBX(speed=speed, records_commit=commit,
                       truth=folder / "truth.jsonl" if folder is not None and truth else None,
                       **files)
    await pbx.start()
    started = time.perf_counter()
    try:
        await pbx.play(mixed_calls(calls), rate=rate)
    finally:
        wall = time.perf_counter() - started
        records = pbx.records
        await pbx.stop()
    return wall, records.cel_rows if records else 0, records.cdr_rows if records else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--speed", type=float, default=1000.0)
    args = parser.parse_args()
    runs: list[tuple[str, Commit | None, bool]] = [
        ("no records (baseline)", None, False), ("CEL+CDR, commit per row", "row", False),
        ("CEL+CDR, commit per step", "step", False), ("CEL+CDR per step + truth", "step", True)]
    print(f"{args.calls} mixed calls at {args.rate:g}/s, clock x{args.speed:g}")
    base = None
    for label, commit, truth in runs:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) if commit is not None else None
            wall, cel, cdr = asyncio.run(play(args.calls, args.rate, args.speed, folder,
                                              commit or "row", truth))
        calls_per_s = args.calls / wall
        base = base or calls_per_s
        print(f"  {label:28s} {wall:6.1f} s  {calls_per_s:7.1f} calls/s  "
              f"{cel / wall:8.0f} CEL rows/s  {cdr / wall:6.0f} CDRs/s  "
              f"({calls_per_s / base:.2f} of baseline; {calls_per_s / args.rate:.1f}x the "
              f"{args.rate:g}/s a fault run needs)")


if __name__ == "__main__":
    main()
