"""Benchmark issue 10: drain an uplink backlog of 30 days x 24 hourly buckets x 3 plans
(2,160 summaries) to the reference receiver on loopback.

Run by hand: python tests/bench/bench_uplink.py [--calls-per-hour 100] [--batch-size 500]
Stores a month of calls in a temporary SQLite file, summarises every closed bucket under three
plans (timed), then drains the outbox to a local receiver (timed), at the configured batch
size and at one summary a request. Baseline, in the same run: the receiver alone answering the
same requests (the same signed bodies posted by a bare client to a fresh receiver). Also the
hourly cost once the month is full: one more closed hour summarised.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from botmeter.storage.store import CallStore  # noqa: E402
from botmeter.uplink.agent import Uplink  # noqa: E402
from botmeter.uplink.receiver import Receiver  # noqa: E402
from botmeter.uplink.signing import batch_key, idempotency_key, signature  # noqa: E402
from botmeter.uplink.summary import canonical  # noqa: E402
from tests.uplink_support import (  # noqa: E402
    KEY,
    T0,
    TOKEN,
    Clock,
    hourly_calls,
    settings_of,
    write_agent_config,
)

PLANS = ("per-minute", "bundle-5000", "combined")
HOURS = 30 * 24


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def drain(tmp: Path, batch: int, per_hour: int) -> tuple[float, int, list[list[dict]], float]:
    """Store, summarise and drain; returns (drain seconds, requests, the batches sent,
    summarise seconds)."""
    work = tmp / f"agent-{batch}"
    work.mkdir()
    shutil.copy(ROOT / "config" / "plans" / "combined.toml", _plans(work) / "combined.toml")
    clock = Clock(T0)
    with Receiver(work / "vendor.db", TOKEN, KEY.encode(), clock=clock) as receiver:
        config_path = write_agent_config(work, receiver.url, plans=PLANS,
                                         extra=f"batch_size = {batch}")
        config, settings = settings_of(config_path)
        store = CallStore(config.store_path())
        calls = hourly_calls(HOURS, per_hour)
        for i in range(0, len(calls), 50_000):
            store.save(calls[i:i + 50_000])
        clock.now = T0 + HOURS * 3600 + 301
        uplink = Uplink(settings, store, clock=clock)
        start = time.perf_counter()
        queued = uplink.refresh()
        summarise = time.perf_counter() - start
        assert len(queued) == HOURS * len(PLANS), len(queued)
        start = time.perf_counter()
        report = uplink.deliver()
        seconds = time.perf_counter() - start
        assert report.delivered == len(queued) and report.failed is None
        assert len(receiver.effects()) == len(queued)
        sent = [[d["body"] for d in receiver.deliveries()[i:i + batch]]
                for i in range(0, len(queued), batch)]
        if batch != 1:
            calls = hourly_calls(1, per_hour, start=T0 + HOURS * 3600, prefix="next")
            store.save(calls)
            clock.now += 3600
            start = time.perf_counter()
            more = uplink.refresh()
            hourly = time.perf_counter() - start
            print(f"  one more closed hour with the month's {len(calls) * HOURS:,} calls behind "
                  f"it: summarised ({len(more)} summaries) in {hourly * 1000:.0f} ms")
        uplink.close()
        store.close()
    return seconds, report.requests, sent, summarise


def _plans(work: Path) -> Path:
    path = work / "plans"
    path.mkdir(exist_ok=True)
    return path


def receiver_alone(tmp: Path, batches: list[list[dict]]) -> float:
    """The same bodies, signed and posted one after another by a bare client."""
    clock = Clock(T0 + HOURS * 3600 + 301)
    with Receiver(tmp / f"alone-{len(batches)}.db", TOKEN, KEY.encode(), clock=clock) as receiver, \
            httpx.Client(timeout=30) as client:
        requests = []
        for batch in batches:
            body = canonical({"agent_id": "pbx-test-01", "summaries": batch})
            keys = [idempotency_key("pbx-test-01", s["plan_id"], s["bucket_start"], s["revision"])
                    for s in batch]
            stamp = str(int(clock.now))
            requests.append((body, {
                "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}",
                "Idempotency-Key": batch_key(keys), "X-Botmeter-Timestamp": stamp,
                "X-Botmeter-Signature": signature(KEY.encode(), stamp, body)}))
        start = time.perf_counter()
        for body, headers in requests:
            response = client.post(receiver.url + "/v1/usage/summaries", content=body,
                                   headers=headers)
            assert response.status_code == 200, response.text
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls-per-hour", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    print(f"backlog: {HOURS} hourly buckets x {len(PLANS)} plans = {HOURS * len(PLANS):,} "
          f"summaries over {HOURS * args.calls_per_hour:,} calls")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (args.batch_size, 1):
            seconds, requests, sent, summarise = drain(Path(tmp), batch, args.calls_per_hour)
            alone = receiver_alone(Path(tmp), sent)
            print(f"batch_size {batch}: summarised in {summarise:.2f} s; drained in "
                  f"{seconds:.2f} s ({requests:,} requests; target < 20 s); receiver alone, "
                  f"same requests: {alone:.2f} s; ratio {seconds / alone:.2f}x")
    print(f"peak RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
