"""Benchmark healing a gap from CEL: how fast the agent rebuilds the calls of a long outage.

Run by hand: python tests/bench/bench_heal.py [--calls 10000]
The simulated PBX plays `--calls` mixed calls (clock sped up) and writes their CEL into an
SQLite file as cel_sqlite3_custom does. Then, as an agent that was down for all of them:
  baseline  read the CEL rows and translate them to typed events, nothing else;
  heal      the healer's whole path: read, translate, rebuild each call through the tracker,
            check which calls are stored, hand the new ones on (to a list here);
  store     storing the rebuilt calls in a fresh calls database (the writer's work).
It prints the figures, the heal/baseline ratio, and the peak memory of the heal (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "agent"))

from botmeter.recorder import Recorder  # noqa: E402
from botmeter.recovery.cel import cel_events  # noqa: E402
from botmeter.recovery.cel_source import open_cel  # noqa: E402
from botmeter.recovery.checkpoint import write_checkpoint  # noqa: E402
from botmeter.recovery.gate import EventGate  # noqa: E402
from botmeter.recovery.heal import Healer  # noqa: E402
from botmeter.recovery.sources import CelFile  # noqa: E402
from botmeter.sim import SimulatedPBX, mixed_calls  # noqa: E402
from botmeter.sim.scenarios import ARI_APP, ARI_MEDIA_CHANNELS  # noqa: E402
from botmeter.storage.store import CallStore  # noqa: E402
from botmeter.tracking.record import CallRecord  # noqa: E402
from botmeter.tracking.rules import TrackingRules  # noqa: E402

RULES = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"],
                            bot_applications=[f"Stasis:{ARI_APP}"],
                            bot_channels=list(ARI_MEDIA_CHANNELS))


async def make_cel(path: Path, calls: int) -> tuple[float, float]:
    """Play the calls; (first, last) CEL time."""
    async with SimulatedPBX(speed=2000.0, cel_db=path) as pbx:
        await pbx.play(mixed_calls(calls, seed=14), rate=20.0)
    with open_cel(path) as cel:
        first = next(iter(cel.rows(0.0))).ts
        last = cel.latest_time()
    assert last is not None
    return first, last


def baseline(path: Path, since: float, until: float) -> tuple[float, int]:
    start = time.perf_counter()
    with open_cel(path) as cel:
        events = sum(1 for _ in cel_events(cel.rows(since, until)))
    return time.perf_counter() - start, events


async def heal(path: Path, db: Path, since: float, *,
               trace: bool = False) -> tuple[float, list[CallRecord], int]:
    db.unlink(missing_ok=True)
    store = CallStore(db)
    write_checkpoint(store.db.conn, since)
    store.close()
    healed: list[CallRecord] = []
    recorder = Recorder(RULES, healed.append)
    healer = Healer(recorder, EventGate(recorder.handle), lambda: CallStore(db),
                    cel=lambda: CelFile(path), settle_seconds=0.0)
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    healer.hold()
    await healer.attached()
    took = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    return took, healed, peak


def store_all(db: Path, records: list[CallRecord]) -> float:
    store = CallStore(db)
    start = time.perf_counter()
    for first in range(0, len(records), 1000):
        store.save(records[first:first + 1000])
    took = time.perf_counter() - start
    store.close()
    return took


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cel, db = Path(folder) / "master.db", Path(folder) / "calls.db"
        started = time.perf_counter()
        first, last = asyncio.run(make_cel(cel, args.calls))
        print(f"CEL of {args.calls} calls written in {time.perf_counter() - started:.1f} s "
              f"({cel.stat().st_size / 1e6:.1f} MB, {last - first:.0f} s of calls)")
        since = first - 1.0
        read_s, events = baseline(cel, since, last + 1)
        peak = asyncio.run(heal(cel, db, since + 5.0, trace=True))[2]  # memory, traced
        heal_s, healed, _ = asyncio.run(heal(cel, db, since + 5.0))  # time, untraced
        store_s = store_all(db, healed)
        print(f"baseline  read + translate  {read_s:7.2f} s  {events / read_s:9,.0f} events/s")
        print(f"heal      whole path        {heal_s:7.2f} s  {len(healed) / heal_s:9,.0f} calls/s"
              f"  ({heal_s / read_s:.2f}x baseline; peak memory {peak / 2**20:.1f} MiB)")
        print(f"store     rebuilt calls     {store_s:7.2f} s  {len(healed) / store_s:9,.0f} calls/s")
        print(f"calls rebuilt: {len(healed)} of {args.calls}")


if __name__ == "__main__":
    main()
