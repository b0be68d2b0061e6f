"""The simulated PBX plays ARI voice-bot calls (Stasis, ExternalMedia or AudioSocket media,
`continue` into a queue or an extension, warm transfers in the bot's bridge), and botmeter's
tracker turns each into the scripted record under every `[bot]` style."""

from __future__ import annotations

import asyncio

import pytest

from botmeter.pbx.events import from_ami
from botmeter.pbx.stream import AmiEventDecoder
from botmeter.sim.events import CallIds, SimEvent, call_events
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import (
    ARI_APP,
    ARI_MEDIA_CHANNELS,
    ScriptedCall,
    ari_calls,
    expected_record,
)
from botmeter.tracking.record import CallRecord
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker

from .helpers import eventually

EPOCH = 1_795_700_000.0
STYLES = {
    "applications": {"bot_applications": [f"Stasis:{ARI_APP}"]},
    "channels": {"bot_channels": list(ARI_MEDIA_CHANNELS)},
    "both": {"bot_applications": [f"Stasis:{ARI_APP}"], "bot_channels": list(ARI_MEDIA_CHANNELS)},
}


def _tracker(style: str) -> CallTracker:
    return CallTracker(TrackingRules.build(inbound_contexts=["from-pstn"],
                                           **STYLES[style]))  # type: ignore[arg-type]


def _feed(tracker: CallTracker, events: list[SimEvent], start: float) -> list[CallRecord]:
    records: list[CallRecord] = []
    for e in events:
        if e.name.startswith("@"):
            continue
        frame = {"Event": e.name, "Timestamp": f"{start + e.offset:.6f}", **dict(e.headers)}
        event = from_ami(frame, 0.0)
        if event is not None:
            records.extend(tracker.feed(event))
    return records


def _check(record: CallRecord, call: ScriptedCall) -> None:
    want = expected_record(call)
    who = (call.handoff, call.media, call.human_seconds, call.hangs_up_on_hold, call.via)
    assert record.outcome == want["outcome"], who
    assert record.transfer_answered == want["transfer_answered"], who
    for key in ("ring_seconds", "bot_seconds", "human_seconds", "total_seconds"):
        if want[key] is None:
            assert getattr(record, key) is None, (who, key)
        else:
            assert getattr(record, key) == pytest.approx(want[key], abs=0.02), (who, key)
    assert {m: (float(u.quantity), u.unit) for m, u in record.modules.items()} == {
        m: (float(v["quantity"]), v["unit"]) for m, v in want["modules"].items()}, who
    assert record.hangup_cause == want["hangup_cause"], who
    if record.outcome == "transferred":
        assert record.transferred_at == record.bot_ended_at, who
        target = {"queue": "support", "dial": "Local/agent1@human-agents",
                  "warm": "Local/warm1@human-agents"}[call.handoff]
        if call.handoff != "warm" or record.transfer_answered:
            assert record.transfer_target == target, who


def test_ari_calls_cover_every_flow_with_both_media() -> None:
    calls = ari_calls(16)
    kinds = {(c.outcome, c.handoff, c.human_seconds is not None, c.hangs_up_on_hold, c.media)
             for c in calls if c.outcome != "abandoned"}
    for media in ("rtp", "audiosocket"):
        assert ("handled", "queue", False, False, media) in kinds
        for handoff in ("queue", "dial", "warm"):
            assert ("transferred", handoff, True, False, media) in kinds
        assert ("transferred", "warm", False, False, media) in kinds  # nobody answers
        assert ("transferred", "warm", False, True, media) in kinds  # caller gives up on hold
    assert any(c.outcome == "abandoned" for c in calls)
    assert {c.via for c in calls} == {"local", "sip"} and {c.signals for c in calls} == {True, False}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_ari_flow_gives_the_scripted_record(style: str) -> None:
    tracker = _tracker(style)
    for seq, call in enumerate(ari_calls(16)):
        ids = CallIds(seq=seq, start=EPOCH + 100 * seq, uniqueid_base=10 * seq,
                      local_base=4 * seq, sip_base=seq, bridge_id=f"b-{seq}")
        records = _feed(tracker, call_events(call, ids), ids.start)
        assert len(records) == 1, (seq, call)
        _check(records[0], call)
    assert tracker.active_calls == 0


def test_warm_transfer_nobody_answers_the_caller_returns_to_the_bot_and_it_stays_unanswered():
    call = ScriptedCall("13990000001", "Bob", "transferred", 1.0, 5.0, handoff="warm",
                        bot="ari", signals=False)
    [record] = _feed(_tracker("both"), call_events(call, CallIds(0, EPOCH, 0, 0, 0, "b")), EPOCH)
    # the record keeps the first handoff: bot time up to the hold, no person, and the time
    # back with the bot counts as neither (each moment is taken once)
    assert (record.outcome, record.transfer_answered, record.human_seconds) == (
        "transferred", False, None)
    assert record.bot_seconds == pytest.approx(5.0, abs=0.01)
    assert record.total_seconds == pytest.approx(expected_record(call)["total_seconds"], abs=0.01)


def test_scripted_ari_calls_refuse_what_an_ari_bot_does_not_do() -> None:
    with pytest.raises(ValueError):
        ScriptedCall("1", "", "failed", 1.0, 2.0, bot="ari")
    with pytest.raises(ValueError):
        ScriptedCall("1", "", "transferred", 1.0, 2.0, handoff="warm")  # dialplan bot
    with pytest.raises(ValueError):
        ScriptedCall("1", "", "transferred", 1.0, 2.0, 3.0, handoff="warm", bot="ari",
                     hangs_up_on_hold=True)


async def test_ari_calls_over_the_wire_reach_the_tracker() -> None:
    """The simulated PBX sends the ARI calls over AMI like any other; a client that tracks
    them gets every scripted record."""
    calls = ari_calls(8)
    tracker = _tracker("both")
    records: list[CallRecord] = []
    async with SimulatedPBX(speed=400.0, epoch=EPOCH) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(b"Action: Login\r\nUsername: botmeter\r\nSecret: botmeter-sim\r\n\r\n")
        await writer.drain()
        stream = AmiEventDecoder()
        play = asyncio.create_task(sim.play(calls))

        async def pump() -> None:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for event in stream.feed(data, 0.0):
                    records.extend(tracker.feed(event))

        pumping = asyncio.create_task(pump())
        await play
        await eventually(lambda: len(records) == len(calls))
        pumping.cancel()
        writer.close()
    by_number = {r.caller_number: r for r in records}
    for call in calls:
        _check(by_number[call.caller_number], call)


async def test_the_agent_records_every_ari_flow_from_the_simulated_pbx(tmp_path) -> None:
    """The whole agent (AMI client, tracker, writer) against the simulator: every ARI flow,
    both media kinds, recorded exactly as scripted; the demo's mix includes them."""
    from botmeter.demo import mismatches, record_scripted_calls
    from botmeter.sim.scenarios import demo_calls

    calls = ari_calls(16)
    records = await record_scripted_calls(calls, tmp_path / "ari.db", speed=400.0,
                                          concurrency=None)
    by_number = {r.caller_number: r for r in records}
    assert len(records) == len(calls)
    assert {c.caller_number: mismatches(c, by_number.get(c.caller_number)) for c in calls} == {
        c.caller_number: [] for c in calls}
    mix = demo_calls(12)
    assert sum(c.bot == "ari" for c in mix) == 3 and len({c.caller_number for c in mix}) == 12


@pytest.mark.parametrize("media", ["rtp", "audiosocket"])
def test_caller_hanging_up_during_the_warm_hold_is_an_unanswered_transfer(media: str) -> None:
    call = ScriptedCall("13990000002", "李四", "transferred", 1.0, 4.0, handoff="warm",
                        bot="ari", media=media, hangs_up_on_hold=True)
    for style in STYLES:
        [record] = _feed(_tracker(style), call_events(call, CallIds(0, EPOCH, 0, 0, 0, "b")),
                         EPOCH)
        assert (record.outcome, record.transfer_answered, record.human_answered_at) == (
            "transferred", False, None), style
        assert record.bot_seconds == pytest.approx(4.0, abs=0.01)
        assert record.transferred_at == record.bot_ended_at
        assert record.total_seconds == pytest.approx(expected_record(call)["total_seconds"],
                                                     abs=0.01)
