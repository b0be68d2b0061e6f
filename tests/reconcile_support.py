"""Recorded calls and hand-made vendor invoices for the reconcile tests.

The calls come from replaying the real lab capture under the per-minute plan (60 s first
block, then 6 s blocks, 0.12 CNY a minute, nothing below 3 s); the invoices are written here
line by line from those records, so each test says which discrepancy it plants.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
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


def recorded_calls(write_config: Any, sessions: Mapping[str, str] | None = None,
                   ) -> tuple[Path, list[dict[str, Any]]]:
    """A config whose database holds the lab's calls, rated under per-minute; the calls.
    `sessions`: call id -> the session id its bot sends with a `start` signal (a UserEvent
    added to the capture beside the call's first one, as the dialplan would send it)."""
    config = write_config(extra=PLANS)
    capture = LAB_CAPTURE
    if sessions:
        capture = config.parent / "lab-with-sessions.ami"
        capture.write_bytes(with_sessions(LAB_CAPTURE.read_bytes(), sessions))
    assert cli(config, "replay", str(capture)).exit_code == 0
    calls = json.loads(cli(config, "calls", "--format", "json").output)
    assert {c["plan_id"] for c in calls} == {"per-minute"}
    return config, calls


def with_sessions(capture: bytes, sessions: Mapping[str, str]) -> bytes:
    """The capture with a `start` signal carrying a Session (a BotMeter UserEvent, as the
    dialplan sends it) on each named call's channel, just after it reached the bot."""
    frames = capture.split(b"\r\n\r\n")
    out: list[bytes] = []
    pending = dict(sessions)
    for frame in frames:
        out.append(frame)
        call = next((c for c in pending if f"\r\nLinkedid: {c}\r\n".encode() in frame + b"\r\n"
                     and b"\r\nContext: voicebot\r\n" in frame), None)
        if call is None:
            continue
        lines = frame.split(b"\r\n")
        channel = lines[2:next(i for i, line in enumerate(lines) if line.startswith(b"Linkedid:")) + 1]
        out.append(b"\r\n".join([b"Event: UserEvent", b"Privilege: user,all", *channel,
                                   b"UserEvent: BotMeter", b"Signal: start",
                                   b"Session: " + pending.pop(call).encode()]))
    assert not pending, f"these calls never reach the bot in the capture: {sorted(pending)}"
    return b"\r\n\r\n".join(out)


def signalling_calls() -> list[str]:
    """The lab's calls whose bot sends BotMeter UserEvents (their linkedids)."""
    found: list[str] = []
    for frame in LAB_CAPTURE.read_bytes().split(b"\r\n\r\n"):
        if frame.startswith(b"Event: UserEvent") and b"UserEvent: BotMeter" in frame:
            linkedid = frame.split(b"\r\nLinkedid: ")[1].split(b"\r\n")[0].decode()
            if linkedid not in found:
                found.append(linkedid)
    return found


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
