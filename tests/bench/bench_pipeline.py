"""Benchmark issue 2: AMI parse + track + store, against panoramisk's own parser on the same bytes.

Run by hand: python tests/bench/bench_pipeline.py [--events 500000]
Prints events/s of the whole pipeline, of panoramisk's AMIProtocol alone, their ratio, and peak
memory (RSS) of a process holding 10,000 calls in progress at once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.capture import repeated_capture  # noqa: E402

CHUNK = 64 * 1024


def chunks(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def run_botmeter(parts: list[bytes]) -> tuple[float, dict[str, int]]:
    from botmeter.replay import replay
    from botmeter.storage.store import CallStore
    from botmeter.tracking.rules import TrackingRules

    rules = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"])
    with tempfile.TemporaryDirectory() as tmp:
        store = CallStore(Path(tmp) / "bench.db")
        start = time.perf_counter()
        stats = replay(iter(parts), rules, store)
        elapsed = time.perf_counter() - start
        stats["stored_rows"] = store.count()
        store.close()
    return elapsed, stats


def run_panoramisk(parts: list[bytes]) -> tuple[float, int]:
    from panoramisk.ami_protocol import AMIProtocol

    class Factory:
        count = 0
        save_stream = None

        def dispatch(self, message: object) -> None:
            Factory.count += 1

    class Transport:
        def write(self, data: bytes) -> None: ...
        def close(self) -> None: ...

    async def go() -> float:
        protocol = AMIProtocol()
        protocol.connection_made(Transport())
        protocol.factory = Factory()
        protocol.encoding = "utf-8"
        start = time.perf_counter()
        for part in parts:
            protocol.data_received(part)
        return time.perf_counter() - start

    elapsed = asyncio.run(go())
    return elapsed, Factory.count


MEMORY_PROBE = r"""
import sys
sys.path.insert(0, {root!r})
def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from botmeter.pbx.events import ChannelCreated, DialplanStep, CallerIdChanged
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker
before = hwm_kb()
t = CallTracker(TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"]))
for i in range({calls}):
    uid = f"1795706734.{{i}}"
    for n, suffix in ((0, ";1"), (1, ";2")):
        u = f"{{uid}}{{n}}"
        t.feed(ChannelCreated(1.0, u, uid, f"Local/s@caller-sim-{{i:08x}}{{suffix}}", "caller-sim", "s", "", ""))
        t.feed(CallerIdChanged(1.0, u, uid, f"139{{i:08d}}", "张三"))
    t.feed(DialplanStep(1.1, uid + "0", uid, "Local/x;1", "from-pstn", "4000", "NoOp", "inbound"))
    t.feed(DialplanStep(2.1, uid + "0", uid, "Local/x;1", "voicebot", "s", "Wait", "20"))
assert t.active_calls == {calls}, t.active_calls
after = hwm_kb()
print(before, after)
"""


def memory_with_calls_in_progress(calls: int) -> tuple[float, float]:
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE.format(root=root, calls=calls)],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


SIM_PROCESS = r"""
import asyncio, sys
from dataclasses import replace
sys.path.insert(0, {root!r})
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import mixed_calls

async def main():
    async with SimulatedPBX(speed=1.0, secret="s") as pbx:
        print(pbx.port, flush=True)
        while pbx.clients == 0:
            await asyncio.sleep(0.01)
        calls = [replace(c, ring_seconds=c.ring_seconds / 10, bot_seconds=c.bot_seconds / 10,
                         human_seconds=None if c.human_seconds is None else c.human_seconds / 10)
                 for c in mixed_calls({calls}, seed=5)]
        await pbx.play(calls, rate={rate})
        sys.stdin.read()  # until the benchmark is done

asyncio.run(main())
"""


async def live_hangup_to_disk(calls: int, rate: float) -> tuple[list[float], list[float]]:
    """The simulator in its own process at real speed (a PBX beside the agent); the agent here.

    Delays from each call's last hangup (its Timestamp) to the record leaving tracking
    (baseline) and to the record committed on disk.
    """
    from botmeter.demo import demo_config
    from botmeter.service import AgentService

    to_record: list[float] = []
    to_disk: list[float] = []
    root = str(Path(__file__).resolve().parents[2])
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIM_PROCESS.format(root=root, calls=calls, rate=rate),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert sim.stdout is not None and sim.stdin is not None
    port = int((await sim.stdout.readline()).decode())
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "live.db"

        def saved(batch: list) -> None:
            now = time.time()
            to_disk.extend(now - r.ended_at for r in batch)

        service = AgentService(demo_config(port, "s", db), store_path=db, on_saved=saved)
        sink = service.recorder._sink

        def tracked(record) -> None:  # type: ignore[no-untyped-def]
            to_record.append(time.time() - record.ended_at)
            sink(record)

        service.recorder._sink = tracked
        running = asyncio.create_task(service.run())
        while len(to_disk) < calls:
            await asyncio.sleep(0.01)
        service.stop()
        await running
    sim.stdin.close()
    await sim.wait()
    return to_record, to_disk


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--calls-in-progress", type=int, default=10_000)
    ap.add_argument("--live-calls", type=int, default=400)
    ap.add_argument("--live-rate", type=float, default=40.0, help="new calls per second")
    args = ap.parse_args()
    data, events = repeated_capture(args.events)
    parts = chunks(data)
    print(f"capture: {events:,} events, {len(data) / 1e6:.1f} MB, {len(parts)} reads of 64 KiB")
    gc.collect()
    p_time, p_count = run_panoramisk(parts)
    gc.collect()
    b_time, stats = run_botmeter(parts)
    b_rate, p_rate = events / b_time, p_count / p_time
    print(f"panoramisk AMIProtocol (parse only): {p_count:,} events in {p_time:.2f} s = {p_rate:,.0f} events/s")
    print(f"botmeter parse+track+store:          {events:,} events in {b_time:.2f} s = {b_rate:,.0f} events/s")
    print(f"ratio botmeter/panoramisk: {b_rate / p_rate:.2f}x   (target >= 1.0)")
    print(f"calls recorded: {stats['calls_recorded']:,} (rows {stats['stored_rows']:,}), "
          f"unfinished {stats['calls_unfinished']}")
    base, peak = memory_with_calls_in_progress(args.calls_in_progress)
    print(f"peak RSS (VmHWM) with {args.calls_in_progress:,} calls in progress: {peak:.1f} MB "
          f"(interpreter + imports before: {base:.1f} MB; target < 150 MB)")
    rec, disk = asyncio.run(live_hangup_to_disk(args.live_calls, args.live_rate))
    print(f"live vs simulator (own process), {len(disk)} calls at {args.live_rate:g}/s: last hangup -> record "
          f"p50 {percentile(rec, 50) * 1000:.1f} ms p99 {percentile(rec, 99) * 1000:.1f} ms (baseline); "
          f"-> on disk p50 {percentile(disk, 50) * 1000:.1f} ms p99 {percentile(disk, 99) * 1000:.1f} ms "
          f"(target p99 < 50 ms)")
    print(f"this process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")


if __name__ == "__main__":
    main()
