"""Recorded calls and hand-made vendor invoices for the reconcile tests.

The calls come from replaying the real lab capture under the per-minute plan (60 s first
block, then 6 s blocks, 0.12 CNY a minute, nothing below 3 s); the invoices are written here
line by line from those records, so each test says which discrepancy it plants.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from botmeter.cli import main

from .conftest import LAB_CAPTURE
from .rating_support import PLANS_DIR

PLANS = f'\n[plans]\ndir = "{PLANS_DIR}"\nactive = "per-minute"\n'
HEADER = ("CallSid", "From", "StartTime", "Duration", "Charge")
MAPPING = """
[columns]
session_id = "CallSid"
caller_number = "From"
started_at = "StartTime"
seconds = "Duration"
amount = "Charge"
[format]
country_code = "86"
"""
PERIOD = "2026-11"


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def per_minute_billed(bot_seconds: float) -> tuple[int, Decimal]:
    """The per-minute plan's billed seconds and amount for a call's bot time, by its rule."""
    if bot_seconds < 3:
        return 0, Decimal("0.0000")
    billed = 60 if bot_seconds <= 60 else 60 + -(-(bot_seconds - 60) // 6) * 6
    return int(billed), (Decimal(int(billed)) / 60 * Decimal("0.12")).quantize(Decimal("0.0001"))


def recorded_calls(write_config: Any) -> tuple[Path, list[dict[str, Any]]]:
    """A config whose database holds the lab's calls, rated under per-minute; the calls."""
    config = write_config(extra=PLANS)
    assert cli(config, "replay", str(LAB_CAPTURE)).exit_code == 0
    calls = json.loads(cli(config, "calls", "--format", "json").output)
    assert {c["plan_id"] for c in calls} == {"per-minute"}
    with sqlite3.connect(config.parent / "calls.db") as conn:  # TEMPORARY until v11 lands
        if "bot_session_id" not in {r[1] for r in conn.execute("PRAGMA table_info(calls)")}:
            conn.execute("ALTER TABLE calls ADD COLUMN bot_session_id TEXT")
    return config, calls


def set_session(config: Path, call_id: str, session: str) -> None:
    """Give a stored call the session id its bot would have sent with `start`."""
    db = config.parent / "calls.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE calls SET bot_session_id = ? WHERE call_id = ?", (session, call_id))


def invoice_line(call: dict[str, Any], *, session: str = "", caller: str | None = None,
                 start: str | None = None, seconds: int | str | None = None,
                 amount: Decimal | str | None = None) -> tuple[str, ...]:
    """The vendor's line for a recorded call: by default what the plan says it costs."""
    billed, cost = per_minute_billed(call["bot_seconds"])
    return (session, caller if caller is not None else call["caller_number"],
            start or call["bot_answered_at"], str(billed if seconds is None else seconds),
            str(cost if amount is None else amount))


def write_invoice(path: Path, lines: Sequence[Sequence[str]], header: Sequence[str] = HEADER,
                  delimiter: str = ",", bom: bool = False) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    path.write_text(("\ufeff" if bom else "") + out.getvalue(), encoding="utf-8")
    return path


def write_mapping(path: Path, text: str = MAPPING) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def reconcile_json(config: Path, invoice: Path, mapping: Path, *args: str) -> dict[str, Any]:
    done = cli(config, "reconcile", "--period", PERIOD, "--invoice", str(invoice),
               "--mapping", str(mapping), "--format", "json", *args)
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)
