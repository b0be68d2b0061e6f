"""Gaps to heal, for the hostile healing tests: Asterisk's records of calls the agent missed,
written by the simulated PBX's own CEL and CDR derivation (no sockets), an agent in this
process on the simulated PBX, and what a correct record of each call says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from botmeter.config import RecoverySection
from botmeter.demo import demo_config
from botmeter.pbx.events import PbxEvent
from botmeter.recorder import Recorder
from botmeter.recovery.gate import EventGate
from botmeter.recovery.heal import CdrFeed, CelFeed, Healer
from botmeter.service import AgentService
from botmeter.sim import CallIds, ScriptedCall, SimulatedPBX, call_events
from botmeter.sim.events import AGI_MARKER, SimEvent, ids_needed
from botmeter.sim.records import PbxRecords
from botmeter.sim.scenarios import mixed_calls
from botmeter.sim.truth import SIM_RULES, scripted_truth, typed_event
from botmeter.storage.store import CallStore
from botmeter.tracking.record import CallRecord

#: seconds a record's durations may differ from the truth (CEL and AMI: the simulator's exact
#: virtual times; the issue's bound for CEL is 0.35 s)
TOLERANCE = 0.35
#: CDRs are whole seconds: a CDR record is within a second, plus rounding at both ends
CDR_TOLERANCE = 2.0
#: uniqueid counters of calls written here: far above the simulated PBX's own
OFFLINE_UNIQUEIDS = 10**6
#: calls the healing harness stores at a time
WRITER_BATCH = 200


@dataclass
class Gap:
    """Calls written into Asterisk's records, and the truth line of each (by call_id)."""

    truth: dict[str, dict[str, Any]] = field(default_factory=dict)
    first: float = 0.0  # the first call's start
    last_end: float = 0.0  # the last call's end


Stamped = tuple[float, SimEvent]


def timeline(calls: Sequence[ScriptedCall], start: float, spacing: float, *,
             base: int = OFFLINE_UNIQUEIDS) -> tuple[list[Stamped], Gap]:
    """The events of `calls` (one every `spacing` seconds from `start`) in the order the
    simulated PBX emits them, and the truth of each call. Calls signal by UserEvent or
    FastAGI (its marker events stand for the FastAGI requests: `live_events` makes them the
    signals the agent's FastAGI server hands on); the AGI script needs a live PBX."""
    merged: list[tuple[float, int, int, SimEvent]] = []
    counters = [base, base, base]
    gap = Gap(first=start)
    for seq, call in enumerate(calls):
        ids = CallIds(seq=base + seq, start=start + seq * spacing, uniqueid_base=counters[0],
                      local_base=counters[1], sip_base=counters[2], bridge_id=f"b-{base}-{seq}")
        counters = [c + n for c, n in zip(counters, ids_needed(call), strict=True)]
        events = call_events(call, ids)
        assert not any(e.name == AGI_MARKER for e in events), "no AGI script calls"
        call_id = dict(events[0].headers)["Linkedid"]
        gap.truth[call_id] = scripted_truth(call, call_id, ids.start)
        gap.last_end = max(gap.last_end, ids.start + events[-1].offset)
        merged.extend((ids.start + e.offset, seq, n, e) for n, e in enumerate(events))
    return [(stamp, event) for stamp, _, _, event in sorted(merged, key=lambda m: m[:3])], gap


def write_records(events: Sequence[Stamped], *, cel_db: Path | None = None,
                  cdr_db: Path | None = None) -> None:
    """Asterisk's records of `events` as the simulated PBX derives them: CEL rows and/or CDRs
    appended to the files (created if missing)."""
    records = PbxRecords(cel_db=cel_db, cdr_db=cdr_db)
    try:
        for stamp, event in events:
            records.event(stamp, event.name, dict(event.headers))
    finally:
        records.close()


def gap_records(calls: Sequence[ScriptedCall], start: float, spacing: float, *,
                cel_db: Path | None = None, cdr_db: Path | None = None,
                base: int = OFFLINE_UNIQUEIDS) -> Gap:
    """`timeline` written into Asterisk's records (`write_records`): the truth of the calls."""
    events, gap = timeline(calls, start, spacing, base=base)
    write_records(events, cel_db=cel_db, cdr_db=cdr_db)
    return gap


def live_events(events: Sequence[Stamped], since: float) -> list[PbxEvent]:
    """What AMI and FastAGI give of the events from `since` on: the typed events (a FastAGI
    signal as its request reaches the agent, stamped when it was sent)."""
    typed = (typed_event(stamp, event) for stamp, event in events if stamp >= since)
    return [event for event in typed if event is not None]


def short_calls(count: int, seed: int = 7, **changes: Any) -> list[ScriptedCall]:
    """`mixed_calls` (every outcome, handoff, signal and survey kind) cut short: ring at most
    1.5 s, the bot at most 4 s, the human at most 3 s, so a live test waits seconds, not
    minutes, for its calls to end. `changes` apply to every call (e.g. signal_via)."""
    return [replace(call, ring_seconds=min(call.ring_seconds, 1.5),
                    bot_seconds=min(call.bot_seconds, 4.0),
                    human_seconds=None if call.human_seconds is None else
                    min(call.human_seconds, 3.0), **changes)
            for call in mixed_calls(count, seed)]


def truth_lines(path: Path) -> dict[str, dict[str, Any]]:
    """The simulated PBX's truth file, by call_id."""
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {str(line["call_id"]): line for line in lines}


def mismatches(line: Mapping[str, Any], record: CallRecord | None,
               tolerance: float = TOLERANCE) -> list[str]:
    """How a record differs from its truth line (empty: it is right)."""
    if record is None:
        return ["not recorded"]
    got = record.to_json()
    keys = ["outcome", "transfer_answered", "hangup_cause", "caller_number"]
    if record.source == "cdr" and record.hangup_cause is None:
        keys.remove("hangup_cause")  # a CDR has it only from the dialplan's Hangup(cause)
    problems = [f"{key} {got[key]!r} != {line[key]!r}" for key in keys if got[key] != line[key]]
    for key in ("ring_seconds", "bot_seconds", "human_seconds", "total_seconds"):
        a, b = got[key], line[key]
        if (a is None) != (b is None) or (a is not None and abs(a - float(b)) > tolerance):
            problems.append(f"{key} {a} != {b}")
    if record.source != "cdr":  # a CDR has no bot signals
        modules = {m: float(u["quantity"]) for m, u in got["modules"].items()}
        if modules != {m: float(u["quantity"]) for m, u in line["modules"].items()}:
            problems.append(f"modules {got['modules']} != {line['modules']}")
        if got["bot_session_id"] != line.get("bot_session_id"):
            problems.append(f"bot_session_id {got['bot_session_id']!r} != "
                            f"{line.get('bot_session_id')!r}")
    return problems


def joined_late_mismatches(line: Mapping[str, Any], record: CallRecord) -> list[str]:
    """How a record marked joined late (the agent saw the call first in progress, its history
    before unknown) differs from what it can know: the outcome (never 'abandoned' for a call
    the bot answered or handed off), and bot time for a call the bot handled (unless all
    the agent saw of it was its last moment)."""
    problems = [] if record.outcome == line["outcome"] else [
        f"outcome {record.outcome!r} != {line['outcome']!r}"]
    seen = record.ended_at > record.offered_at
    if line["outcome"] == "handled" and seen and not record.bot_seconds:
        problems.append(f"bot_seconds {record.bot_seconds} for a call the bot handled")
    return problems


def wrong_calls(truth: Mapping[str, Mapping[str, Any]], records: Sequence[CallRecord],
                tolerance: float = TOLERANCE, *, late_ok: bool = False,
                loose: Collection[str] = ()) -> dict[str, list[str]]:
    """Every call of `truth` that is not recorded once and right, and every record of a call
    not in the truth, with what is wrong. A record marked joined late (with `late_ok`), or
    of a call in `loose` (its end not seen), need only be as right as it can be
    (`joined_late_mismatches`)."""
    by_id: dict[str, CallRecord] = {}
    wrong: dict[str, list[str]] = {}
    for record in records:
        if record.call_id in by_id:
            wrong.setdefault(record.call_id, []).append("recorded twice")
        by_id[record.call_id] = record
    for call_id in by_id.keys() - truth.keys():
        wrong[call_id] = ["not a call of the PBX"]
    for call_id, line in truth.items():
        record = by_id.get(call_id)
        if record is not None and (late_ok and record.joined_late or call_id in loose):
            problems = joined_late_mismatches(line, record)
        else:
            problems = mismatches(line, record, tolerance)
        if problems:
            wrong.setdefault(call_id, []).extend(problems)
    return wrong


def stored(db: Path) -> list[CallRecord]:
    """Every call the database holds."""
    if not db.exists():
        return []
    store = CallStore(db, create=False)
    try:
        return store.calls()
    finally:
        store.close()


def show(wrong: Mapping[str, list[str]]) -> str:
    return "\n".join(f"{call_id}: {'; '.join(problems)}" for call_id, problems in
                     sorted(wrong.items())[:20])


# -- a healer over real files, no sockets -------------------------------------------------------


@dataclass
class Healing:
    """A healer over the database at `db`, its calls stored as they finish."""

    db: Path
    cel: Callable[[], CelFeed] | None = None
    cdr: Callable[[], CdrFeed] | None = None
    clock: Callable[[], float] = lambda: 0.0
    backlog: Callable[[], int] = lambda: 0  # the writer's queue, asked after each batch

    def __post_init__(self) -> None:
        self.store = CallStore(self.db)
        self.finished: list[CallRecord] = []  # stored in batches, as the writer does
        self.delivered: list[str] = []  # every call handed to the writer, in order
        self.recorder = Recorder(SIM_RULES, self._finished)
        self.gate = EventGate(self.recorder.handle)
        self.healer = Healer(self.recorder, self.gate, lambda: CallStore(self.db), cel=self.cel,
                             cdr=self.cdr, clock=self.clock, settle_seconds=0,
                             backlog=self.backlog)

    def _finished(self, record: CallRecord) -> None:
        self.finished.append(record)
        self.delivered.append(record.call_id)
        if len(self.finished) >= WRITER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Store the finished calls not stored yet."""
        self.store.save(self.finished)
        self.finished.clear()

    def attach(self, live: Sequence[PbxEvent] = (), *, store: bool = True) -> None:
        """An AMI session opens and `live` comes in (held) while it logs in: heal, then pass
        the held events on; then store what finished (`store=False`: a writer that lags, the
        calls stay handed over but not stored)."""

        async def attached() -> None:
            self.healer.hold()
            for event in live:
                self.gate.ami(event)
            await self.healer.attached()

        try:
            asyncio.run(attached())
        finally:
            if store:
                self.flush()

    def close(self) -> None:
        self.store.close()


# -- an agent in this process on the simulated PBX ---------------------------------------------


def agent_config(pbx: SimulatedPBX, db: Path, *, cel_db: Path | None = None,
                 cdr_db: Path | None = None, ping_timeout: float = 0.5) -> Any:
    """The demo's configuration for `pbx`, recording into `db`, with [recovery] as given. An
    AMI request goes unanswered after 1 s (`ping_timeout` 0.5 s): a session cut while it logs
    in, or while it heals, is given up sooner than the default's 10 s; and reconnects come
    within 0.2 s, so a storm packs many sessions into a few seconds."""
    config = demo_config(pbx.port, pbx.secret, db)
    recovery = RecoverySection(cel_db=str(cel_db or ""), cdr_db=str(cdr_db or ""))
    ami = config.ami.model_copy(update={"ping_timeout": ping_timeout, "reconnect_min": 0.05,
                                        "reconnect_max": 0.2})
    return config.model_copy(update={"recovery": recovery, "ami": ami})


@asynccontextmanager
async def live_agent(pbx: SimulatedPBX, config: Any, db: Path,
                     saved: dict[str, list[CallRecord]] | None = None,
                     ) -> AsyncIterator[AgentService]:
    """An agent attached to `pbx` on its virtual clock (so the PBX may run faster than wall
    time), its stored calls appended to `saved` by call_id (every time one is stored)."""

    def on_saved(records: list[CallRecord]) -> None:
        if saved is not None:
            for record in records:
                saved.setdefault(record.call_id, []).append(record)

    service = AgentService(config, store_path=db, clock=pbx.now, on_saved=on_saved)
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.client.connected.wait(), 15)
        if service.fastagi is not None:
            pbx.agi_port = service.fastagi.port
        yield service
    finally:
        service.stop()
        await running
