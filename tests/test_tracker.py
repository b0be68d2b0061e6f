"""Call tracking fed typed events directly: each rule of the spec, and hostile sequences."""

from __future__ import annotations

from decimal import Decimal

import pytest

from botmeter.pbx.events import (
    AgentConnected,
    BotSignal,
    BridgeEntered,
    BridgeLeft,
    CallerIdChanged,
    ChannelCreated,
    ChannelHungUp,
    ChannelSnapshot,
    DialEnded,
    DialplanStep,
    DialStarted,
    QueueJoined,
    SnapshotComplete,
    SnapshotStarted,
    TransferStarted,
)
from botmeter.tracking.outcome import OutcomeFacts, decide_outcome
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker

RULES = TrackingRules.build(
    inbound_contexts=["from-pstn"], inbound_numbers=["88880000"], bot_contexts=["voicebot"],
    bot_applications=["AudioSocket", "Stasis:voicebot"], bot_channels=["PJSIP/voicebot-*"],
)


class Call:
    """Builds the events of one call on channel `uid` (linkedid `lid`)."""

    def __init__(self, tracker: CallTracker, uid: str = "100.1", lid: str | None = None,
                 name: str = "PJSIP/trunk-00000001") -> None:
        self.t, self.uid, self.lid, self.name = tracker, uid, lid or uid, name
        self.done: list = []

    def feed(self, event) -> Call:
        self.done.extend(self.t.feed(event))
        return self

    def create(self, ts: float, number: str = "13900000001", name: str = "张三") -> Call:
        return self.feed(ChannelCreated(ts, self.uid, self.lid, self.name, "from-pstn", "4000",
                                        number, name))

    def step(self, ts: float, context: str, app: str = "NoOp", data: str = "",
             uid: str | None = None, exten: str = "4000") -> Call:
        return self.feed(DialplanStep(ts, uid or self.uid, self.lid, self.name, context, exten,
                                      app, data))

    def hangup(self, ts: float, cause: int | None = 16, uid: str | None = None) -> Call:
        return self.feed(ChannelHungUp(ts, uid or self.uid, self.lid, self.name, cause))

    def signal(self, ts: float, signal: str, **fields: str) -> Call:
        return self.feed(BotSignal(ts, self.lid, self.uid, signal, fields))


@pytest.fixture
def tracker() -> CallTracker:
    return CallTracker(RULES)


def test_handled_call_times_and_fields(tracker):
    c = Call(tracker).create(10.0).step(10.001, "from-pstn").step(12.0, "voicebot")
    c.feed(CallerIdChanged(12.5, c.uid, c.lid, "13900000002", "李四"))
    c.step(20.0, "from-pstn", "Hangup").hangup(20.1)
    [r] = c.done
    assert (r.outcome, r.offered_at, r.bot_answered_at, r.bot_ended_at, r.ended_at) == (
        "handled", 10.0, 12.0, 20.0, 20.1)
    assert (r.ring_seconds, r.bot_seconds, r.total_seconds, r.human_seconds) == (2.0, 8.0, 10.1, None)
    assert (r.caller_number, r.caller_name, r.dialed_number) == ("13900000002", "李四", "4000")
    assert r.transfer_answered is None and r.hangup_cause == 16


def test_abandoned_when_the_bot_never_answers(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").hangup(4.5)
    [r] = c.done
    assert r.outcome == "abandoned" and r.ring_seconds == 3.5 and r.bot_seconds is None


def test_calls_that_never_enter_an_inbound_context_are_not_recorded(tracker):
    c = Call(tracker).create(1.0).step(1.0, "internal").step(2.0, "voicebot").hangup(3.0)
    assert c.done == [] and tracker.active_calls == 0


def test_inbound_number_makes_a_call_offered(tracker):
    c = Call(tracker).create(1.0).step(1.0, "other", exten="88880000").step(2.0, "voicebot")
    [r] = c.hangup(3.0).done
    assert r.dialed_number == "88880000" and r.outcome == "handled"


@pytest.mark.parametrize(("cause", "outcome"), [(41, "failed"), (16, "handled"), (17, "handled"),
                                                (19, "handled"), (0, "handled"), (None, "handled")])
def test_hangup_cause_inside_the_bot(tracker, cause, outcome):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    [r] = c.hangup(5.0, cause).done
    assert r.outcome == outcome and r.hangup_cause == cause and r.bot_ended_at == 5.0


def test_abnormal_cause_after_the_bot_is_not_a_failure(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot").step(4.0, "from-pstn")
    [r] = c.hangup(5.0, 41).done
    assert r.outcome == "handled" and r.bot_seconds == 2.0


def test_queue_handoff_answered_by_an_agent(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot").step(6.0, "from-pstn")
    c.feed(QueueJoined(6.1, c.uid, c.lid, "support"))
    c.feed(DialStarted(6.2, c.uid, c.lid, "Local/desk1@agents-0000000a;1", "100.5"))
    c.feed(AgentConnected(9.0, c.uid, c.lid, "support", "Local/desk1@agents-0000000a;1"))
    [r] = c.hangup(20.0).done
    assert (r.outcome, r.transferred_at, r.human_answered_at, r.transfer_target) == (
        "transferred", 6.1, 9.0, "support")
    assert r.transfer_answered is True and r.human_seconds == 11.0 and r.bot_seconds == 4.0


def test_dial_handoff_not_answered(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.feed(DialStarted(5.0, c.uid, c.lid, "PJSIP/agent7-0000000b", "100.9"))
    c.feed(DialEnded(25.0, c.uid, c.lid, "PJSIP/agent7-0000000b", "100.9", "NOANSWER"))
    [r] = c.hangup(25.5).done
    assert (r.outcome, r.transfer_answered, r.human_seconds) == ("transferred", False, None)
    assert r.bot_ended_at == 5.0 and r.transfer_target == "PJSIP/agent7"


def test_dial_before_the_bot_answers_is_not_a_handoff(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn")
    c.feed(DialStarted(1.5, c.uid, c.lid, "PJSIP/ringgroup-00000001", "100.2"))
    c.feed(DialEnded(3.0, c.uid, c.lid, "PJSIP/ringgroup-00000001", "100.2", "NOANSWER"))
    c.step(3.1, "voicebot")
    [r] = c.hangup(9.0).done
    assert r.outcome == "handled" and r.transferred_at is None


def test_blind_transfer_is_a_handoff(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.feed(TransferStarted(4.0, c.uid, c.lid, "2001"))
    [r] = c.hangup(8.0).done
    assert r.outcome == "transferred" and r.transfer_target == "2001"


def test_bot_application_with_data_prefix(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn")
    c.step(1.5, "from-pstn", "Stasis", "other-app")
    c.step(2.0, "from-pstn", "Stasis", "voicebot,arg")
    c.step(9.0, "from-pstn", "Hangup")
    [r] = c.hangup(9.1).done
    assert (r.bot_answered_at, r.bot_ended_at) == (2.0, 9.0)


def test_bot_reached_by_bridge_with_a_bot_channel_and_human_after(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn")
    bot = ChannelCreated(1.9, "100.7", c.lid, "PJSIP/voicebot-0000000c", "bots", "s", "", "")
    c.feed(bot)
    c.feed(BridgeEntered(2.0, "100.7", c.lid, "PJSIP/voicebot-0000000c", "b1"))
    c.feed(BridgeEntered(2.1, c.uid, c.lid, c.name, "b1"))
    c.feed(BridgeLeft(7.0, "100.7", c.lid, "PJSIP/voicebot-0000000c", "b1"))
    c.hangup(7.0, uid="100.7")
    c.feed(QueueJoined(7.5, c.uid, c.lid, "sales"))
    human = ChannelCreated(7.6, "100.8", c.lid, "PJSIP/agent1-0000000d", "agents", "s", "", "")
    c.feed(human)
    c.feed(BridgeEntered(9.0, "100.8", c.lid, "PJSIP/agent1-0000000d", "b2"))
    c.feed(BridgeEntered(9.0, c.uid, c.lid, c.name, "b2"))
    c.hangup(15.0, uid="100.8")
    [r] = c.hangup(15.0).done
    assert (r.bot_answered_at, r.bot_ended_at, r.transferred_at, r.human_answered_at) == (
        2.1, 7.0, 7.5, 9.0)
    assert r.outcome == "transferred" and r.transfer_answered


def test_signals_set_usage_outcome_and_win_over_the_flow(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.signal(3.0, "usage", Module="asr", Quantity="12.5", Unit="seconds")
    c.signal(4.0, "usage", Module="ASR", Quantity="2.5", Unit="seconds")
    c.signal(4.1, "usage", Module="nlu", Quantity="2", Unit="requests")
    c.signal(4.2, "usage", Module="tts", Quantity="-1", Unit="characters")  # malformed: ignored
    c.signal(4.3, "usage", Quantity="3")  # no module: ignored
    c.signal(4.4, "outcome", Outcome="maybe")  # unknown outcome: ignored
    c.signal(4.5, "dance")  # unknown signal: ignored
    c.signal(5.0, "outcome", Outcome="failed", Reason="nlu timeout")
    [r] = c.hangup(6.0, 16).done
    assert r.outcome == "failed"
    assert {m: (u.quantity, u.unit) for m, u in r.modules.items()} == {
        "asr": (Decimal("15.0"), "seconds"), "nlu": (Decimal("2"), "requests")}


def test_start_and_end_signals_time_the_bot(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").signal(2.5, "start").signal(7.5, "end")
    [r] = c.hangup(9.0).done
    assert (r.bot_answered_at, r.bot_ended_at, r.outcome) == (2.5, 7.5, "handled")


def test_transferred_signal_starts_the_handoff(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.signal(4.0, "outcome", Outcome="transferred", Target="sales")
    [r] = c.hangup(6.0).done
    assert (r.outcome, r.transferred_at, r.transfer_target, r.transfer_answered) == (
        "transferred", 4.0, "sales", False)


def test_signal_before_the_call_is_seen_is_kept_and_attached(tracker):
    tracker.feed(BotSignal(0.5, "200.1", "", "usage", {"Module": "qa", "Quantity": "1", "Unit": "answers"}))
    c = Call(tracker, uid="200.1").create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    [r] = c.hangup(3.0).done
    assert r.modules["qa"].quantity == Decimal("1")


def test_linkedid_change_moves_the_call_without_splitting(tracker):
    c = Call(tracker, uid="300.1").create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.lid = "299.9"  # the channel joined a bridge holding an older linkedid
    c.step(5.0, "from-pstn")
    c.feed(ChannelCreated(5.5, "300.4", "299.9", "PJSIP/agent-1", "agents", "s", "", ""))
    c.feed(QueueJoined(5.1, "300.1", "299.9", "support"))
    c.hangup(9.0)
    assert c.done == []  # the agent's leg is still up
    [r] = c.hangup(9.5, uid="300.4").done
    assert r.call_id == "300.1" and r.linkedid == "299.9" and r.outcome == "transferred"
    assert tracker.active_calls == 0


def test_linkedid_change_into_an_existing_call_merges_them(tracker):
    a = Call(tracker, uid="400.1").create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    b = Call(tracker, uid="400.2", name="PJSIP/agent-2").create(3.0)
    assert tracker.active_calls == 2
    b.feed(BridgeEntered(4.0, "400.2", "400.1", "PJSIP/agent-2", "b9"))
    assert tracker.active_calls == 1
    a.hangup(6.0)
    [r] = b.hangup(7.0, uid="400.2").done + a.done
    assert r.call_id == "400.1" and r.ended_at == 7.0


def test_duplicate_and_out_of_order_hangups_give_one_record(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.hangup(5.0)
    c.hangup(5.0)
    c.step(5.1, "voicebot")  # a late event for a channel already gone
    c.hangup(5.2)
    assert len(c.done) == 1 and tracker.active_calls == 0


def test_hangup_of_one_leg_before_the_other_waits_for_the_last(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.feed(ChannelCreated(1.0, "100.2", c.lid, "Local/s@phone-1;2", "phone", "s", "", ""))
    c.hangup(4.0, uid="100.2")
    assert c.done == []
    [r] = c.hangup(4.2).done
    assert r.ended_at == 4.2


def test_events_without_linkedid_or_for_unseen_channels_do_not_crash(tracker):
    assert tracker.feed(DialplanStep(1.0, "500.1", "", "X", "from-pstn", "1", "NoOp", "")) == ()
    assert tracker.feed(ChannelHungUp(1.0, "500.2", "", "X", 16)) == ()
    assert tracker.feed(DialEnded(1.0, "500.3", "500.3", "X", "", "ANSWER")) == ()
    assert tracker.feed(BotSignal(1.0, "", "", "usage", {})) == ()
    # a channel first seen mid-call is tracked from then on
    c = Call(tracker, uid="500.9").step(2.0, "voicebot")
    c.step(2.5, "from-pstn").step(3.0, "voicebot")
    [r] = c.hangup(6.0).done
    assert r.offered_at == 2.0 and r.outcome == "handled"


def test_snapshot_after_reconnect_ends_calls_that_hung_up_meanwhile(tracker):
    Call(tracker, uid="600.1").create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    alive = Call(tracker, uid="600.2").create(1.5).step(1.5, "from-pstn").step(2.5, "voicebot")
    tracker.feed(SnapshotStarted(30.0))
    tracker.feed(ChannelSnapshot(30.0, "600.2", "600.2", alive.name, "voicebot", "s", "Wait", "",
                                 "13900000001", "", 28.5, ""))
    fresh = ChannelSnapshot(30.0, "600.3", "600.3", "PJSIP/x-3", "from-pstn", "4000", "Wait", "1",
                            "13900000003", "王五", 2.0, "")
    tracker.feed(fresh)
    [r] = tracker.feed(SnapshotComplete(30.1))
    assert r.call_id == "600.1" and r.ended_at == 30.1
    assert tracker.active_calls == 2
    [r2] = alive.hangup(40.0).done
    assert r2.bot_answered_at == 2.5 and r2.bot_seconds == 37.5
    third = Call(tracker, uid="600.3").step(31.0, "voicebot").hangup(35.0)
    [r3] = third.done
    assert r3.offered_at == 28.0 and r3.caller_name == "王五" and r3.outcome == "handled"


def test_expire_closes_calls_whose_hangup_was_lost(tracker):
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    assert tracker.expire(100.0, idle_seconds=1000) == ()
    [r] = tracker.expire(5000.0, idle_seconds=1000)
    assert r.ended_at == 2.0 and r.call_id == c.uid and tracker.active_calls == 0


@pytest.mark.parametrize(("facts", "outcome"), [
    (OutcomeFacts(False, False, False, None, None), "abandoned"),
    (OutcomeFacts(True, False, True, 41, None), "failed"),
    (OutcomeFacts(True, False, False, 41, None), "handled"),
    (OutcomeFacts(True, True, True, 41, None), "transferred"),
    (OutcomeFacts(True, True, False, 16, "handled"), "handled"),
    (OutcomeFacts(True, False, False, 16, "failed"), "failed"),
    (OutcomeFacts(False, False, False, None, "transferred"), "transferred"),
])
def test_decide_outcome(facts, outcome):
    assert decide_outcome(facts) == outcome
