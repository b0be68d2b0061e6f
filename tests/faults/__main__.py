"""`python -m tests.faults [--full]`: the fault runs by hand, with the table of their figures.

Reduced counts by default (those of the pytest suite); `--full` plays 2,000 calls at 20 calls/s
per run, with the issue's pace of faults (SIGKILL every 4 s, a cut every 10 s, a 30 s lock).
Run it from the repository's root with the project's Python (the one botmeter is installed in,
or with PYTHONPATH=agent). Exit status 0 when every run is right, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path

from .faults import FAULTS, FULL, REDUCED
from .harness import run_suite
from .table import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split(
        "\n\n", 1)[0])
    parser.add_argument("--full", action="store_true",
                        help="2,000 calls at 20 calls/s per run, the issue's pace of faults")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"which, comma-separated (default: all: {','.join(FAULTS)})")
    parser.add_argument("--calls", type=int, help="calls per run (overrides the profile's)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="runs at once (default: all of them)")
    parser.add_argument("--dir", type=Path,
                        help="keep each run's files (config, logs, databases) here")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults' jitter")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        parser.error(f"unknown fault {', '.join(unknown)} (known: {', '.join(FAULTS)})")
    profile = FULL if args.full else REDUCED
    if args.calls:
        profile = dataclasses.replace(profile, calls=args.calls)
    jobs = args.jobs or len(faults) + 1
    with tempfile.TemporaryDirectory(prefix="botmeter-faults-") as scratch:
        root = args.dir or Path(scratch)
        results = asyncio.run(run_suite(faults, profile, root, jobs=jobs, seed=args.seed))
        print(render(results, profile))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
