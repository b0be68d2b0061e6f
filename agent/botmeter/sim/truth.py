"""What a correct record of each simulated call says: the truth a fault-injection run is judged by.

A call that runs to its end is what its script says (`expected_record`). A call cut by a PBX
restart has no script for its end: its complete history is the events it had up to the cut
plus the hangups the restart gave its channels, and its correct record is what the project's
own `CallTracker` makes of exactly that history, every event seen (the question a fault run
asks is whether the agent under faults records what an agent that missed nothing records).

`truth_line` is one JSON object per call, in the record's field names (docs/calls.md):
`call_id` (the call's linkedid), `cut`, the caller, `offered_at`/`ended_at` (ISO 8601 UTC),
`outcome`, the durations, `transfer_answered`, `hangup_cause`, `modules` (`{"asr":
{"quantity": 12.5, "unit": "seconds"}}`), `csat` and `bot_session_id`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from botmeter.bot.session import parse_env, parse_request
from botmeter.pbx.events import BotSignal, PbxEvent, from_ami
from botmeter.sim.agi import AgiRequest
from botmeter.sim.events import FASTAGI_MARKER, SimEvent, is_marker
from botmeter.sim.records import open_append
from botmeter.sim.scenarios import ARI_APP, ARI_MEDIA_CHANNELS, ScriptedCall, expected_record
from botmeter.tracking.record import CallRecord, iso_utc
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.signals import SignalError
from botmeter.tracking.tracker import CallTracker

#: the simulator's dialplan, as an agent watching it is configured (see `botmeter demo`)
SIM_RULES = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"],
                                bot_applications=[f"Stasis:{ARI_APP}"],
                                bot_channels=ARI_MEDIA_CHANNELS)
#: the fields of a truth line besides `call_id`, `cut`, `offered_at` and `ended_at`
TRUTH_FIELDS = ("caller_number", "caller_name", "dialed_number", "outcome", "ring_seconds",
                "bot_seconds", "human_seconds", "total_seconds", "transfer_answered",
                "hangup_cause", "modules", "csat", "bot_session_id")

Stamped = tuple[float, SimEvent]


def scripted_truth(call: ScriptedCall, call_id: str, offered_at: float) -> dict[str, Any]:
    """The truth line of a call that ran as scripted."""
    want = expected_record(call)
    return {"call_id": call_id, "cut": False, "offered_at": iso_utc(offered_at),
            "ended_at": iso_utc(offered_at + want["total_seconds"]),
            **{name: want[name] for name in TRUTH_FIELDS}}


def replayed_truth(history: Iterable[Stamped], call_id: str,
                   rules: TrackingRules = SIM_RULES) -> dict[str, Any] | None:
    """The truth line of a call cut short: its whole history through a `CallTracker` (None if
    that makes no record of it, e.g. a call cut before it reached an inbound context)."""
    tracker = CallTracker(rules)
    records: list[CallRecord] = []
    for stamp, event in history:
        typed = typed_event(stamp, event)
        if typed is not None:
            records.extend(tracker.feed(typed))
    record = next((r for r in records if r.call_id == call_id), None)
    if record is None:
        return None
    got = record.to_json()
    return {"call_id": call_id, "cut": True, "offered_at": got["offered_at"],
            "ended_at": got["ended_at"], **{name: got[name] for name in TRUTH_FIELDS}}


def typed_event(stamp: float, event: SimEvent) -> PbxEvent | None:
    """The typed event the agent makes of one simulated event: an AMI event as `from_ami`
    reads it, a FastAGI marker as the signal its session delivers (other markers: None)."""
    if not is_marker(event):
        headers = {"Event": event.name, "Timestamp": f"{stamp:.6f}", **dict(event.headers)}
        return from_ami(headers, stamp)
    if event.name != FASTAGI_MARKER:
        return None
    request = AgiRequest.from_marker(event)
    try:
        signal, fields, _ = parse_request(parse_env(request.environment()))
    except SignalError:
        return None
    return BotSignal(round(stamp, 3), request.header("Linkedid"), request.header("Uniqueid"),
                     signal, fields, via="fastagi")


def truth_json(line: Mapping[str, Any]) -> str:
    """One truth line as JSON (exact quantities as numbers), with its newline."""
    return json.dumps(line, ensure_ascii=False, default=_number) + "\n"


def _number(value: object) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


class TruthFile:
    """Appends truth lines to a file, each flushed as it is written (a reader tails it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: TextIO = open_append(path)
        self.lines = 0

    def write(self, line: Mapping[str, Any]) -> None:
        self._out.write(truth_json(line))
        self._out.flush()
        self.lines += 1

    def close(self) -> None:
        self._out.close()
