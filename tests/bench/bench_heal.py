"""Benchmark healing a long gap: how fast the agent rebuilds calls from Asterisk's CEL, and
how much memory it takes meanwhile (the live events wait that long).

Run by hand: python tests/bench/bench_heal.py [--calls 2000 5000] [--spacing 0.1]
For each count, the simulated PBX's CEL rows of that many mixed calls (one every `--spacing`
seconds) are written to a fresh file; a healer with an empty database heals the whole gap
(reading, rebuilding and storing every call, in batches as the agent's writer does). Printed:
the rows read, wall seconds, calls and rows per second, and the peak memory the heal allocated
(tracemalloc, in a second run: tracing slows it).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "agent"))
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from botmeter.recovery.checkpoint import write_checkpoint  # noqa: E402
from botmeter.recovery.sources import CelFile  # noqa: E402
from botmeter.sim import mixed_calls  # noqa: E402
from tests.gap_support import Healing, timeline, write_records  # noqa: E402

START = 1_800_000_000.0


def heal(cel: Path, folder: Path, name: str) -> tuple[float, int]:
    """(wall seconds, calls recorded) of healing the whole of `cel` into a new database."""
    healing = Healing(folder / f"{name}.db", cel=lambda: CelFile(cel))
    write_checkpoint(healing.store.db.conn, START - 1)
    started = time.perf_counter()
    healing.attach()
    took = time.perf_counter() - started
    healing.close()
    assert healing.healer.last is not None
    return took, healing.healer.last.recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--spacing", type=float, default=0.1)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    print(f"{'calls':>7} {'rows':>8} {'seconds':>8} {'calls/s':>8} {'rows/s':>9} {'peak MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for count in args.calls:
            cel = folder / f"cel-{count}.db"
            events, _ = timeline(mixed_calls(count), START, args.spacing)
            write_records(events, cel_db=cel)
            with sqlite3.connect(cel) as conn:
                rows = int(conn.execute("SELECT count(*) FROM cel").fetchone()[0])
            conn.close()
            took, recorded = heal(cel, folder, f"plain-{count}")
            tracemalloc.start()
            heal(cel, folder, f"traced-{count}")
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{recorded:>7} {rows:>8} {took:>8.2f} {recorded / took:>8.0f} "
                  f"{rows / took:>9.0f} {peak / 1e6:>8.1f}")


if __name__ == "__main__":
    main()
