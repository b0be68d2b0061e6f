"""Benchmark start-up: how long the commands an admin (or Asterisk) runs take, end to end.

Run by hand: python tests/bench/bench_startup.py [--runs 15]
Each command runs --runs times in a fresh subprocess (round robin, after one warm-up run each,
so .pyc files exist); the median wall time is printed next to a bare `python -c pass` baseline
and as a ratio of it. The commands:

- `botmeter --help`: the installed console script (falls back to `python -m botmeter.cli`).
- `botmeter calls --help`: a command's help (the group's set-up, logging, runs first).
- `botmeter calls --limit 1`: against a small real database, filled by `botmeter replay` of the
  lab capture (tests/fixtures/lab-basic.ami) into a temporary directory, with a config file
  written there (so the config is loaded and validated, as in production).
- `botmeter-agi usage module=asr quantity=12 unit=seconds`: a valid signal, a full run. Stdin
  holds what Asterisk sends: the AGI environment, then the answers to the script's two
  commands (EXEC UserEvent, SET VARIABLE); its commands on stdout are checked.

Target: `botmeter --help` under 0.15 s (median).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_CAPTURE = ROOT / "tests" / "fixtures" / "lab-basic.ami"
HELP_TARGET = 0.15  # seconds, median

AGI_ENV = (b"agi_request: botmeter-agi\nagi_channel: PJSIP/bot-00000012\nagi_language: en\n"
           b"agi_type: PJSIP\nagi_uniqueid: 1795706738.7\nagi_version: 20.5.0\n"
           b"agi_callerid: 0612345678\nagi_calleridname: Alice\nagi_context: voicebot\n"
           b"agi_extension: s\nagi_priority: 3\nagi_enhanced: 0.0\nagi_accountcode: \n"
           b"agi_threadid: 140213411874560\nagi_arg_1: usage\n\n")
#: Asterisk's answers to EXEC UserEvent and SET VARIABLE, in order
AGI_ANSWERS = b"200 result=0\n200 result=1\n"
AGI_EXPECTED = (b'EXEC UserEvent "BotMeter,Signal: usage,Module: asr,Quantity: 12,Unit: seconds"\n'
                b"SET VARIABLE BOTMETER_STATUS ok\n")

CONFIG = """
[agent]
id = "bench-agent"

[ami]
host = "127.0.0.1"
port = 5038
username = "botmeter"
secret = "botmeter-bench"

[calls]
inbound_contexts = ["from-pstn"]

[bot]
contexts = ["voicebot"]

[store]
path = "{db}"
"""


@dataclass
class Case:
    name: str
    argv: list[str]
    stdin: bytes = b""
    expect_stdout: bytes | None = None  # the exact output a correct run prints, if checked
    expect_in_stdout: bytes | None = None  # a part of it otherwise


def script(name: str, module: str) -> list[str]:
    """The console script installed beside this interpreter, else `python -m module`."""
    path = Path(sys.executable).parent / name
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def run_once(case: Case, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(case.argv, input=case.stdin, capture_output=True, env=env,
                          timeout=30, check=False)
    seconds = time.perf_counter() - start
    ok = proc.returncode == 0
    if case.expect_stdout is not None:
        ok = ok and proc.stdout == case.expect_stdout
    if case.expect_in_stdout is not None:
        ok = ok and case.expect_in_stdout in proc.stdout
    if not ok:
        raise SystemExit(f"{case.name}: unexpected run (exit {proc.returncode})\n"
                         f"stdout: {proc.stdout[:500]!r}\nstderr: {proc.stderr[:500]!r}")
    return seconds


def prepare(tmp: Path, env: dict[str, str]) -> Path:
    """A config file and a small database of real calls (the lab capture, replayed)."""
    db = tmp / "calls.db"
    config = tmp / "botmeter.toml"
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    proc = subprocess.run([*script("botmeter", "botmeter.cli"), "--config", str(config),
                           "replay", str(LAB_CAPTURE)], capture_output=True, env=env,
                          check=False)
    if proc.returncode != 0 or not db.exists():
        raise SystemExit(f"cannot fill the database: {proc.stderr.decode()[:500]}")
    print(f"database: {proc.stdout.decode().strip()}")
    return config


def cases(config: Path) -> list[Case]:
    botmeter = script("botmeter", "botmeter.cli")
    return [
        Case("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
        Case("botmeter --help", [*botmeter, "--help"], expect_in_stdout=b"Usage:"),
        Case("botmeter calls --help", [*botmeter, "calls", "--help"],
             expect_in_stdout=b"Usage:"),
        Case("botmeter calls --limit 1",
             [*botmeter, "--config", str(config), "calls", "--limit", "1"],
             expect_in_stdout=b"\n"),
        Case("botmeter-agi usage (full AGI run)",
             [*script("botmeter-agi", "botmeter.bot.agi_script"), "usage", "module=asr",
              "quantity=12", "unit=seconds"],
             stdin=AGI_ENV + AGI_ANSWERS, expect_stdout=AGI_EXPECTED),
    ]


def measure(all_cases: Sequence[Case], runs: int, env: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {case.name: [] for case in all_cases}
    for case in all_cases:  # warm-up: .pyc files written, caches filled
        run_once(case, env)
    for _ in range(runs):  # round robin: a slow moment of the machine hits every command
        for case in all_cases:
            times[case.name].append(run_once(case, env))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    args = parser.parse_args(argv)
    unset = ("BOTMETER_CONFIG", "PYTHONSTARTUP", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        all_cases = cases(prepare(Path(tmp), env))
        times = measure(all_cases, args.runs, env)
    baseline = statistics.median(times[all_cases[0].name])
    print(f"\n{sys.executable} (Python {sys.version.split()[0]}), median of {args.runs} runs\n")
    print(f"{'command':<36} {'median':>9} {'min':>9} {'max':>9} {'x python':>9}")
    for case in all_cases:
        values = times[case.name]
        median = statistics.median(values)
        print(f"{case.name:<36} {median * 1000:7.1f}ms {min(values) * 1000:7.1f}ms "
              f"{max(values) * 1000:7.1f}ms {median / baseline:8.1f}x")
    help_median = statistics.median(times["botmeter --help"])
    verdict = "ok" if help_median < HELP_TARGET else "ABOVE TARGET"
    print(f"\nbotmeter --help: {help_median * 1000:.0f} ms, target < {HELP_TARGET * 1000:.0f} ms: "
          f"{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
