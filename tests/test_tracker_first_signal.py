"""The bot's first signal is its answer: a bot the [bot] settings do not recognise still answers
its calls (bot_answered_at is its first start, usage or outcome signal), and the agent says once
per run that the settings miss the bot."""

from __future__ import annotations

from decimal import Decimal

from botmeter.pbx.events import (
    BotSignal,
    ChannelCreated,
    ChannelHungUp,
    DialplanStep,
    PbxEvent,
    QueueJoined,
)
from botmeter.pbx.stream import decode_capture
from botmeter.rating.plan import Sla
from botmeter.rating.sla import measure_sla
from botmeter.tracking.record import CallRecord
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker

from .conftest import LAB_CAPTURE

#: the bot lives in context "voicebot", but [bot] names another one: nothing in the call flow
#: shows the bot answering
BLIND = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["elsewhere"])
SEEING = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"])
WARNING = "the bot signalled before any sign that it answered"
SLA = Sla(fee=Decimal(0), answer_rate=Decimal(1), max_ring_seconds=Decimal(5),
          credit_percent=Decimal(10))


def tracker(rules: TrackingRules = BLIND) -> tuple[CallTracker, list[tuple[str, dict]]]:
    problems: list[tuple[str, dict]] = []
    return CallTracker(rules, on_problem=lambda m, c: problems.append((m, c))), problems


def feed(t: CallTracker, *events: PbxEvent) -> list[CallRecord]:
    return [record for event in events for record in t.feed(event)]


def call(uid: str, start: float, *signals: tuple[float, str, dict[str, str]],
         end: float, context: str = "voicebot") -> list[PbxEvent]:
    """An offered call that goes to `context`, signals, and hangs up at `end`."""
    events: list[PbxEvent] = [
        ChannelCreated(start, uid, uid, "PJSIP/trunk-1", "from-pstn", "4000", "139", ""),
        DialplanStep(start, uid, uid, "PJSIP/trunk-1", "from-pstn", "4000", "NoOp", ""),
        DialplanStep(start + 1.0, uid, uid, "PJSIP/trunk-1", context, "s", "Answer", ""),
    ]
    events += [BotSignal(ts, uid, uid, name, fields) for ts, name, fields in signals]
    events.append(ChannelHungUp(end, uid, uid, "PJSIP/trunk-1", 16))
    return events


USAGE = {"Module": "asr", "Quantity": "4", "Unit": "seconds"}
HANDLED = {"Outcome": "handled"}


def test_a_usage_signal_before_any_answer_is_the_answer() -> None:
    t, problems = tracker()
    [r] = feed(t, *call("1.1", 100.0, (103.0, "usage", USAGE), (130.0, "outcome", HANDLED),
                        end=131.0))
    assert (r.outcome, r.bot_answered_at, r.bot_ended_at) == ("handled", 103.0, 131.0)
    assert (r.ring_seconds, r.bot_seconds) == (3.0, 28.0)
    assert r.modules["asr"].quantity == Decimal(4)
    assert t.answered_by_signal == 1
    [(message, context)] = problems
    assert message.startswith(WARNING) and "[bot]" in message
    assert context == {"call_id": "1.1", "linkedid": "1.1", "signal": "usage", "via": "ami"}
    # the SLA counts it answered (3 s of ringing, within 5 s)
    assert measure_sla(SLA, [r]).answered == 1


def test_an_outcome_signal_first_is_the_answer_and_a_transfer_starts_then() -> None:
    t, _ = tracker()
    events = call("2.1", 100.0, (110.0, "outcome", {"Outcome": "transferred", "Target": "sales"}),
                  end=150.0)
    events.insert(-1, QueueJoined(111.0, "2.1", "2.1", "support"))
    [r] = feed(t, *events)
    assert (r.outcome, r.bot_answered_at, r.transferred_at, r.bot_ended_at) == (
        "transferred", 110.0, 110.0, 110.0)
    assert r.transfer_target == "sales" and r.ring_seconds == 10.0


def test_the_warning_is_said_once_per_tracker_whatever_the_number_of_calls() -> None:
    t, problems = tracker()
    for n in range(5):
        feed(t, *call(f"{n}.1", 100.0 + n, (102.0 + n, "usage", USAGE), end=120.0 + n))
    t.expire(1_000.0, 60.0)  # a sweep resets the per-kind report limits: not this one
    feed(t, *call("9.1", 200.0, (203.0, "outcome", HANDLED), end=220.0))
    assert t.answered_by_signal == 6
    assert [m for m, _ in problems if m.startswith(WARNING)] == [problems[0][0]]
    again, problems_again = tracker()  # a new agent run says it again
    feed(again, *call("1.1", 100.0, (101.0, "usage", USAGE), end=110.0))
    assert len(problems_again) == 1


def test_a_start_signal_is_the_documented_answer_and_no_warning() -> None:
    t, problems = tracker()
    [r] = feed(t, *call("3.1", 100.0, (102.0, "start", {}), (104.0, "usage", USAGE),
                        end=110.0))
    assert r.bot_answered_at == 102.0 and problems == [] and t.answered_by_signal == 0


def test_a_recognised_bot_keeps_its_dialplan_answer_and_no_warning() -> None:
    t, problems = tracker(SEEING)
    [r] = feed(t, *call("4.1", 100.0, (105.0, "usage", USAGE), end=110.0))
    assert r.bot_answered_at == 101.0 and problems == [] and t.answered_by_signal == 0


def test_an_end_signal_alone_is_no_answer() -> None:
    t, problems = tracker()
    [r] = feed(t, *call("5.1", 100.0, (105.0, "end", {}), end=110.0))
    assert (r.outcome, r.bot_answered_at) == ("abandoned", None) and problems == []


def test_a_signal_that_beats_the_call_answers_when_the_call_is_offered() -> None:
    """A FastAGI signal stamped by the agent's clock can come before AMI's first event."""
    t, _ = tracker()
    early = BotSignal(99.5, "6.1", "", "usage", USAGE, via="fastagi")
    [r] = feed(t, early, *call("6.1", 100.0, (120.0, "outcome", HANDLED), end=121.0))
    assert r.bot_answered_at == r.offered_at == 100.0 and r.ring_seconds == 0.0


def _replay(rules: TrackingRules) -> tuple[dict[str, CallRecord], list[tuple[str, dict]],
                                           CallTracker, dict[str, float]]:
    t, problems = tracker(rules)
    first_signal: dict[str, float] = {}
    records: dict[str, CallRecord] = {}
    for event in decode_capture([LAB_CAPTURE.read_bytes()]):
        if isinstance(event, BotSignal):
            first_signal.setdefault(event.linkedid, event.ts)
        for record in t.feed(event):
            records[record.caller_number or ""] = record
    return records, problems, t, first_signal


def test_replaying_the_lab_capture_with_the_bot_unrecognised() -> None:
    seen, _, _, _ = _replay(SEEING)
    blind, problems, t, first_signal = _replay(BLIND)
    assert len(blind) == len(seen) == 13
    signalled = {number for number, r in seen.items() if r.linkedid in first_signal}
    assert len(signalled) == 7  # 6 with usage and an outcome, 1 with a failed outcome only
    for number, r in blind.items():
        if number in signalled:  # answered at the bot's first signal, outcome as signalled
            assert r.bot_answered_at == first_signal[r.linkedid], number
            assert r.bot_answered_at >= (seen[number].bot_answered_at or 0.0), number
            assert r.outcome == seen[number].outcome, number
            assert r.modules == seen[number].modules, number
        else:  # nothing says the bot answered
            assert r.bot_answered_at is None and r.outcome == "abandoned", number
    assert t.answered_by_signal == 7
    assert len([m for m, _ in problems if m.startswith(WARNING)]) == 1
