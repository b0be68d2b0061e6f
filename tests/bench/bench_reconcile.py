"""Benchmark issue 15: reconcile a month of 1,000,000 calls against a 1,000,000-line invoice.

Run by hand: python tests/bench/bench_reconcile.py [--calls 1000000] [--format table|csv|json]
[--invoice-format csv|jsonl] [--keep DIR]
Builds a month of rated calls in a temporary SQLite file (in SQL, under the per-minute plan;
half of them with a bot session id) and the vendor's usage detail for them as CSV (1 % of the
calls not billed, 1 % billed longer, 1 % billed another amount, 1 % extra lines, callers in
international form; with --invoice-format jsonl the same lines as JSON lines, durations
as numbers), then times `botmeter reconcile` as a subprocess writing its output to a
file, and prints its CPU time and peak memory. Baseline in the same run: the bare SQL join of the same two
tables (the invoice loaded as it is into SQLite, joined with the calls on the session id and
on caller and exact time).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "agent"))

from botmeter.storage.store import CallStore  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.reconcile_support import MAPPING  # noqa: E402

BASE = 1793491200  # 2026-11-01T00:00:00+08:00 (the plan's Asia/Shanghai month)
SPACING = 2.5  # seconds between calls: 1,000,000 calls fill 29 days

CALLS_SQL = f"""
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1),
timed AS (
    SELECT i, {BASE} + i * {SPACING} + 60 AS offered, 20 + (i * 37) % 200 AS s,
           '139' || printf('%08d', (i * 7919) % 200000) AS caller FROM n),
billed AS (
    SELECT *, CASE WHEN s < 3 THEN 0 WHEN s <= 60 THEN 60 ELSE 60 + ((s - 60 + 5) / 6) * 6 END
              AS b FROM timed)
INSERT INTO calls (call_id, linkedid, caller_number, offered_at, bot_answered_at, bot_ended_at,
                   ended_at, bot_seconds, outcome, source, joined_late, plan_id, cost,
                   currency, charges, recorded_at, bot_session_id)
SELECT 'c' || i, 'c' || i, caller,
       strftime('%Y-%m-%dT%H:%M:%fZ', offered, 'unixepoch'),
       strftime('%Y-%m-%dT%H:%M:%fZ', offered + 1, 'unixepoch'),
       strftime('%Y-%m-%dT%H:%M:%fZ', offered + 1 + s, 'unixepoch'),
       strftime('%Y-%m-%dT%H:%M:%fZ', offered + 1 + s, 'unixepoch'),
       s, 'handled', 'ami', 0, 'per-minute', printf('%.4f', b * 0.002), 'CNY',
       json_array(json_array('Bot minutes', b, printf('%.4f', b * 0.002))),
       '2026-12-01T00:00:00.000Z', CASE WHEN i % 2 = 0 THEN 'sess-' || i END
FROM billed
"""

CONFIG = """
[agent]
id = "bench"
[ami]
username = "bench"
secret = "bench"
[calls]
inbound_contexts = ["from-pstn"]
[bot]
contexts = ["voicebot"]
[store]
path = "{db}"
[plans]
dir = "{plans}"
active = "per-minute"
"""



def build(tmp: Path, count: int) -> tuple[Path, Path]:
    db = tmp / "calls.db"
    store = CallStore(db)
    conn = store.db.conn
    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.execute(CALLS_SQL, {"count": count})
    conn.execute("COMMIT")
    print(f"stored {count:,} rated calls in {time.perf_counter() - start:.1f} s "
          f"({db.stat().st_size / 1e6:.0f} MB)")
    start = time.perf_counter()
    invoice = tmp / "invoice.csv"
    with invoice.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["CallSid", "From", "StartTime", "Duration", "Charge"])
        rows = conn.execute("SELECT rowid, bot_session_id, caller_number, bot_answered_at, "
                            "json_extract(charges, '$[0][1]'), cost FROM calls ORDER BY rowid")
        for i, session, caller, answered, billed, cost in rows:
            kind = i % 100
            if kind == 0:
                continue  # not billed: botmeter_only
            seconds = int(billed) + (30 if kind == 1 else 0)
            amount = f"{float(cost) + (0.01 if kind == 2 else 0):.4f}"
            out.writerow([session or "", "+86" + caller, answered, seconds, amount])
            if kind == 3:  # an extra line for a call nobody saw: vendor_only
                out.writerow(["", "+8613700000000", answered, 60, "0.1200"])
    store.close()
    print(f"wrote the invoice in {time.perf_counter() - start:.1f} s "
          f"({invoice.stat().st_size / 1e6:.0f} MB)")
    return db, invoice


def as_json_lines(invoice: Path) -> Path:
    """The CSV invoice as JSON lines (durations as numbers), written beside it once."""
    lines = invoice.with_suffix(".jsonl")
    if not lines.exists():
        with invoice.open(encoding="utf-8", newline="") as handle, \
                lines.open("w", encoding="utf-8") as out:
            reader = csv.reader(handle)
            header = next(reader)
            for row in reader:
                line = dict(zip(header, row, strict=True))
                line["Duration"] = int(line["Duration"])  # type: ignore[assignment]
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
    return lines


def bare_join(db: Path, invoice: Path) -> float:
    """Load the invoice as it is into SQLite and join it with the calls on indexed columns."""
    start = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TEMP TABLE inv (sid TEXT, caller TEXT, t TEXT, s TEXT, amount TEXT)")
    with invoice.open(encoding="utf-8", newline="") as handle:
        if invoice.suffix == ".jsonl":
            reader = (tuple(json.loads(line).values()) for line in handle)
        else:
            reader = csv.reader(handle)
            next(reader)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO inv VALUES (?, ?, ?, ?, ?)", reader)
        conn.execute("COMMIT")
    conn.execute("CREATE INDEX temp.inv_sid ON inv (sid)")
    conn.execute("CREATE INDEX temp.inv_key ON inv (caller, t)")
    joined = conn.execute("""
        SELECT (SELECT count(*) FROM inv JOIN calls ON calls.bot_session_id = inv.sid),
               (SELECT count(*) FROM inv JOIN calls
                  ON inv.caller = '+86' || calls.caller_number AND inv.t = calls.bot_answered_at)
    """).fetchone()
    took = time.perf_counter() - start
    conn.close()
    print(f"baseline: bare load + SQL join: {took:.1f} s (pairs by session {joined[0]:,}, "
          f"by caller and time {joined[1]:,})")
    return took


CPU_BEFORE = [0.0]


def reconcile(tmp: Path, db: Path, invoice: Path, fmt: str) -> float:
    config = tmp / "botmeter.toml"
    config.write_text(CONFIG.format(db=db, plans=ROOT / "config" / "plans"), encoding="utf-8")
    mapping = tmp / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    out = tmp / f"result.{fmt}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "agent")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_BEFORE[0] = before.ru_utime + before.ru_stime
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "reconcile",
         "--period", "2026-11", "--invoice", str(invoice), "--mapping", str(mapping),
         "--format", fmt, "--out", str(out)], env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"reconcile failed: {done.stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - CPU_BEFORE[0]
    print(f"botmeter reconcile --format {fmt}: {took:.1f} s (target < 10 s; {cpu:.1f} s of CPU "
          f"on {os.cpu_count()} CPUs), peak memory {usage.ru_maxrss / 1024:.0f} MiB, output "
          f"{out.stat().st_size / 1e6:.1f} MB")
    if fmt == "json":
        with out.open(encoding="utf-8") as handle:
            classes = json.load(handle)["classes"]
        print("  classes: " + ", ".join(f"{k} {v['lines']:,}" for k, v in classes.items()))
    else:
        print("  " + " | ".join(line.strip() for line in out.read_text(encoding="utf-8")
                                .splitlines()[9:16]))
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--format", default="table", choices=["table", "csv", "json"],
                    help="table: the totals and the first 100 lines in dispute (the default); "
                         "csv and json: every line")
    ap.add_argument("--invoice-format", default="csv", choices=["csv", "jsonl"],
                    help="the vendor's usage detail as CSV (the default) or JSON lines")
    ap.add_argument("--keep", type=Path, help="build the month here once and reuse it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = args.keep or Path(name)
        tmp.mkdir(exist_ok=True)
        if (tmp / "invoice.csv").exists():
            db, invoice = tmp / "calls.db", tmp / "invoice.csv"
        else:
            db, invoice = build(tmp, args.calls)
        if args.invoice_format == "jsonl":
            invoice = as_json_lines(invoice)
        bare = bare_join(db, invoice)
        took = reconcile(tmp, db, invoice, args.format)
        print(f"ratio reconcile / bare join: {took / bare:.1f}x")


if __name__ == "__main__":
    main()
