"""Healing a gap, its mechanics: the lab capture's own events stand in for Asterisk's records
(the CEL translation has tests of its own), so that any difference from a clean run is the
healer's. An agent handles the events up to a crash, stores its calls and checkpoint; a new
one attaches later, heals from the records, and goes on live. Every call must come out once,
exactly as a run without the crash made it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from botmeter.pbx.events import ChannelSnapshot, PbxEvent, SnapshotComplete, SnapshotStarted
from botmeter.pbx.stream import decode_capture
from botmeter.recorder import Recorder
from botmeter.recovery.checkpoint import (
    CheckpointUnusable,
    Unstored,
    low_water,
    read_checkpoint,
    write_checkpoint,
)
from botmeter.recovery.gate import EventGate
from botmeter.recovery.heal import Healer
from botmeter.storage.store import CallStore
from botmeter.tracking.record import CallRecord
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker

from .conftest import LAB_CAPTURE

RULES = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"])
EVENTS: list[PbxEvent] = list(decode_capture([LAB_CAPTURE.read_bytes()]))


def _clean() -> dict[str, CallRecord]:
    tracker = CallTracker(RULES)
    return {r.call_id: r for ev in EVENTS for r in tracker.feed(ev)}


CLEAN = _clean()


class ListFeed:
    """Asterisk's records of the calls, as the events they translate to."""

    name = "test"

    def __init__(self, events: list[PbxEvent]) -> None:
        self._events = events

    def latest_time(self) -> float | None:
        return max((ev.ts for ev in self._events), default=None)

    def events(self, since: float, until: float) -> Iterator[PbxEvent]:
        return (ev for ev in self._events if since <= ev.ts < until)

    def close(self) -> None:
        self.closed = True


def _without_source(record: CallRecord) -> CallRecord:
    return record._replace(source="ami")


def _crash_then_heal(db: Path, crash: float, attach: float, *, stale: float | None = None,
                     feed: bool = True) -> tuple[list[CallRecord], Healer]:
    """Agent 1 handles the events before `crash`, stores its calls and its checkpoint (or the
    `stale` one, as if it died between the two); agent 2 attaches at `attach`, heals, and
    handles the rest live."""
    store = CallStore(db)
    first = Recorder(RULES, lambda r: store.save([r]))
    for ev in EVENTS:
        if ev.ts >= crash:
            break
        first.handle(ev)
    checkpoint = low_water(first.tracker, Unstored()) if stale is None else stale
    if checkpoint is not None:
        write_checkpoint(store.db.conn, checkpoint)

    second = Recorder(RULES, lambda r: store.save([r]))
    gate = EventGate(second.handle)
    healer = Healer(second, gate, lambda: CallStore(db),
                    cel=(lambda: ListFeed(EVENTS)) if feed else None, settle_seconds=0,
                    clock=lambda: attach)

    async def reattach() -> None:
        healer.hold()
        for ev in EVENTS:
            if ev.ts >= attach:
                gate.ami(ev)
        await healer.attached()

    asyncio.run(reattach())
    records = store.calls()
    store.close()
    return records, healer


CUTS = sorted({round(ev.ts, 1) for ev in EVENTS})


@pytest.mark.parametrize("crash", CUTS[:: max(1, len(CUTS) // 40)])
@pytest.mark.parametrize("down", [0.0, 2.5, 30.0])
def test_a_crash_anywhere_heals_to_the_clean_run(tmp_path: Path, crash: float, down: float) -> None:
    records, healer = _crash_then_heal(tmp_path / "calls.db", crash, crash + down)
    by_id = {r.call_id: r for r in records}
    assert len(by_id) == len(records) == len(CLEAN)  # each call once
    for call_id, clean in CLEAN.items():
        assert _without_source(by_id[call_id]) == clean, call_id
    # Asterisk's records gave the calls in progress at the crash and those in the gap (marked
    # so); the calls stored before the crash, and those begun after the attach, are AMI's
    assert healer.last is not None and healer.last.source == "cel"
    for record in records:
        if record.ended_at >= crash and record.offered_at < crash + down:
            assert record.source == "cel", record.call_id
        elif record.ended_at < crash or record.offered_at >= crash + down:
            assert record.source == "ami", record.call_id


def test_dying_between_storing_calls_and_the_checkpoint_stores_each_call_once(tmp_path: Path) -> None:
    crash = CUTS[len(CUTS) // 2]
    records, healer = _crash_then_heal(tmp_path / "calls.db", crash, crash + 5, stale=EVENTS[0].ts)
    assert sorted(r.call_id for r in records) == sorted(CLEAN)
    assert healer.last is not None and healer.last.already_stored > 0
    for record in records:
        assert _without_source(record) == CLEAN[record.call_id]


def test_no_checkpoint_no_healing_and_no_source_no_healing(tmp_path: Path) -> None:
    crash = CUTS[len(CUTS) // 2]
    records, healer = _crash_then_heal(tmp_path / "a.db", crash, crash + 60, feed=False)
    assert healer.mode == "ami"
    assert {r.call_id for r in records} < set(CLEAN)  # the calls in the gap are lost
    assert all(r.source == "ami" for r in records)


def test_the_checkpoint_is_the_earliest_start_not_stored(tmp_path: Path) -> None:
    tracker = CallTracker(RULES)
    unstored = Unstored()
    assert low_water(tracker, unstored) is None
    middle = CUTS[len(CUTS) // 2]
    finished = [r for ev in EVENTS if ev.ts < middle for r in tracker.feed(ev)]
    live = tracker.oldest_offered()
    assert live is not None and live <= middle
    assert low_water(tracker, unstored) == live
    early = min(finished, key=lambda r: r.offered_at)
    unstored.add(early)
    assert low_water(tracker, unstored) == min(live, early.offered_at)
    unstored.done([early])
    assert low_water(tracker, unstored) == live
    store = CallStore(tmp_path / "c.db")
    assert read_checkpoint(store.db.conn) is None
    write_checkpoint(store.db.conn, 1795706735.25)
    assert read_checkpoint(store.db.conn) == 1795706735.25
    store.db.conn.execute("UPDATE recovery_state SET value = 'junk'")
    with pytest.raises(CheckpointUnusable, match="'junk' is not a time"):
        read_checkpoint(store.db.conn)


def test_the_gate_holds_and_drops_only_what_the_healing_fed() -> None:
    seen: list[PbxEvent] = []
    gate = EventGate(seen.append)
    a, b, c = SnapshotStarted(10.0), SnapshotStarted(20.0), SnapshotStarted(25.0)
    gate.ami(a)
    assert seen == [a]
    gate.hold()
    gate.signal(SnapshotStarted(3.0))  # a FastAGI signal from before the cut: CEL had it
    gate.ami(b)
    gate.signal(c)
    gate.ami(SnapshotStarted(4.0))
    assert seen == [a] and gate.first_ami_ts == 20.0
    assert gate.release(cutoff=15.0) == 2
    assert seen == [a, b, c]
    gate.ami(SnapshotStarted(1.0))  # passing again, whatever its time
    assert len(seen) == 4


def test_forget_drops_a_call_in_progress_so_it_can_be_fed_again() -> None:
    middle = CUTS[len(CUTS) // 2]
    tracker = CallTracker(RULES)
    for ev in EVENTS:
        if ev.ts < middle:
            tracker.feed(ev)
    live = tracker.active_calls
    assert live > 0
    lids = [lid for lid in CLEAN if tracker.is_live(lid)]
    assert tracker.forget(lids) == live and tracker.active_calls == 0
    assert not any(tracker.is_live(lid) for lid in lids)
    tracker.source = "cel"
    # fed again from the start: the forgotten calls come out whole, the finished ones not again
    again = [r for ev in EVENTS for r in tracker.feed(ev)]
    assert sorted(r.call_id for r in again) == sorted(c for c in CLEAN if c in lids or
                                                      CLEAN[c].offered_at >= middle)
    for record in again:
        assert record._replace(source="ami") == CLEAN[record.call_id]
        assert record.source == "cel"


def test_a_call_first_seen_in_progress_is_joined_late() -> None:
    tracker = CallTracker(RULES)
    tracker.feed(SnapshotStarted(100.0))
    with_bot = ChannelSnapshot(100.0, "90.1", "90.1", "PJSIP/trunk-0001", "voicebot", "s", "Wait",
                               "5", "13800000001", "A", 20.0, "")
    queued = ChannelSnapshot(100.0, "91.1", "91.1", "PJSIP/trunk-0002", "voicebot", "s", "Queue",
                             "support,,,,30", "13800000002", "B", 40.0, "")
    tracker.feed(with_bot)
    tracker.feed(queued)
    tracker.feed(SnapshotComplete(100.1))
    tracker.feed(SnapshotStarted(200.0))
    records = {r.call_id: r for r in tracker.feed(SnapshotComplete(200.0))}
    handled, transferred = records["90.1"], records["91.1"]
    assert handled.joined_late and transferred.joined_late
    assert handled.outcome == "handled" and handled.offered_at == 80.0
    assert handled.bot_answered_at == 100.0 and handled.bot_seconds == 100.0
    assert transferred.outcome == "transferred" and transferred.transfer_target == "support"
    assert transferred.bot_seconds == 0.0 and transferred.offered_at == 60.0
