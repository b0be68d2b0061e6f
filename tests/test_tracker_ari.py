"""ARI voice bots, fed to the tracker event by event: warm transfers in the bot's own bridge,
media-channel blips, `continue` into Queue or Dial, and the bounded history of answers of legs
not yet in any call."""

from __future__ import annotations

import pytest

from botmeter.pbx.events import (
    BridgeEntered,
    BridgeLeft,
    ChannelCreated,
    ChannelHungUp,
    DestAnswered,
    DialplanStep,
    DialStarted,
    HoldStarted,
    QueueJoined,
    from_ami,
)
from botmeter.tracking import tracker as tracker_module
from botmeter.tracking.record import CallRecord
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker

APP = "asterisk-ai-voice-agent"
CALLER, LID = "500.1", "500.1"
MEDIA, MEDIA_NAME = "500.2", "UnicastRTP/127.0.0.1:18100-0x7f9560014e30"
HUMAN, HUMAN_NAME = "500.3", "Local/warm1@human-agents-000000b5;1"
BRIDGE = "bridge-1"


def _rules(style: str, rejoin: float = 1.0) -> TrackingRules:
    apps = [f"Stasis:{APP}"] if style in ("applications", "both") else []
    chans = ["UnicastRTP/*", "AudioSocket/*"] if style in ("channels", "both") else []
    return TrackingRules.build(inbound_contexts=["from-pstn"], bot_applications=apps,
                               bot_channels=chans, rejoin_seconds=rejoin)


class Ari:
    """One ARI-bot call: the caller enters Stasis at 1.0 and is bridged with the media at 1.1."""

    def __init__(self, style: str = "both", rejoin: float = 1.0) -> None:
        self.t = CallTracker(_rules(style, rejoin))
        self.done: list[CallRecord] = []
        self.feed(ChannelCreated(0.0, CALLER, LID, "Local/s@caller-sim-0000008c;1", "from-pstn",
                                 "4700", "13990900000", "Bob"))
        self.feed(DialplanStep(0.0, CALLER, LID, "Local/s@caller-sim-0000008c;1", "from-pstn",
                               "4700", "NoOp", ""))
        self.feed(DialplanStep(1.0, CALLER, LID, "Local/s@caller-sim-0000008c;1", "from-ai-agent",
                               "s", "Stasis", APP))
        self.feed(BridgeEntered(1.0, CALLER, LID, "Local/s@caller-sim-0000008c;1", BRIDGE))
        self.feed(ChannelCreated(1.05, MEDIA, MEDIA, MEDIA_NAME, "default", "s", "", ""))
        self.feed(BridgeEntered(1.1, MEDIA, LID, MEDIA_NAME, BRIDGE))

    def feed(self, event: object) -> Ari:
        self.done.extend(self.t.feed(event))  # type: ignore[arg-type]
        return self

    def media_blip(self, left: float, back: float) -> Ari:
        self.feed(BridgeLeft(left, MEDIA, LID, MEDIA_NAME, BRIDGE))
        return self.feed(BridgeEntered(back, MEDIA, LID, MEDIA_NAME, BRIDGE))

    def end(self, ts: float) -> CallRecord:
        for uid in (HUMAN, MEDIA, CALLER):
            self.feed(ChannelHungUp(ts, uid, LID, "", 16))
        [record] = self.done
        return record


@pytest.mark.parametrize("style", ["applications", "channels", "both"])
def test_a_media_blip_does_not_end_the_bots_time(style):
    record = Ari(style).media_blip(1.2, 1.3).end(5.0)
    assert record.outcome == "handled"
    assert record.bot_seconds == pytest.approx(4.0, abs=0.11)


def test_a_bot_channel_that_does_not_come_back_in_time_ended_the_bot_when_it_left():
    call = Ari("channels").feed(BridgeLeft(2.0, MEDIA, LID, MEDIA_NAME, BRIDGE))
    call.feed(DialplanStep(3.5, CALLER, LID, "x", "from-ai-agent", "s", "Stasis", APP))  # next event
    record = call.end(6.0)
    assert record.bot_ended_at == 2.0 and record.outcome == "handled"


def test_caller_hanging_up_inside_the_window_after_the_bot_left_did_not_end_inside_the_bot():
    call = Ari("channels").feed(BridgeLeft(2.0, MEDIA, LID, MEDIA_NAME, BRIDGE))
    call.feed(ChannelHungUp(2.4, CALLER, LID, "", 41))
    call.feed(ChannelHungUp(2.5, MEDIA, LID, "", 16))
    [record] = call.done
    assert record.bot_ended_at == 2.0 and record.outcome == "handled"


def test_rejoin_seconds_zero_ends_the_bot_at_the_first_leave():
    record = Ari("channels", rejoin=0.0).media_blip(1.2, 1.3).end(5.0)
    assert record.bot_ended_at == 1.2


@pytest.mark.parametrize("style", ["applications", "channels", "both"])
def test_warm_transfer_starts_at_the_hold_and_the_human_answers_at_their_leg_answer(style):
    call = Ari(style).media_blip(1.2, 1.25)
    call.feed(HoldStarted(4.0, CALLER, LID, "aava"))
    call.feed(ChannelCreated(4.01, HUMAN, "600.1", HUMAN_NAME, "human-agents", "warm1", "", ""))
    call.feed(DestAnswered(6.0, HUMAN, HUMAN_NAME))
    call.feed(BridgeLeft(9.0, MEDIA, LID, MEDIA_NAME, BRIDGE))
    call.feed(BridgeEntered(9.01, HUMAN, LID, HUMAN_NAME, BRIDGE))  # joins the caller's call
    record = call.end(20.0)
    assert record.outcome == "transferred" and record.transfer_answered is True
    assert (record.bot_ended_at, record.transferred_at, record.human_answered_at) == (4.0, 4.0, 6.0)
    assert record.human_seconds == 14.0
    assert record.transfer_target == "Local/warm1@human-agents"


@pytest.mark.parametrize("style", ["applications", "channels", "both"])
def test_warm_transfer_without_hold_starts_when_the_human_enters_the_bots_bridge(style):
    call = Ari(style)
    call.feed(ChannelCreated(4.01, HUMAN, "600.1", HUMAN_NAME, "human-agents", "warm1", "", ""))
    call.feed(DestAnswered(6.0, HUMAN, HUMAN_NAME))
    call.feed(BridgeLeft(9.0, MEDIA, LID, MEDIA_NAME, BRIDGE))
    call.feed(BridgeEntered(9.01, HUMAN, LID, HUMAN_NAME, BRIDGE))
    record = call.end(20.0)
    assert record.outcome == "transferred" and record.transfer_answered is True
    assert record.transferred_at == 9.01
    assert record.bot_ended_at == (9.0 if style == "channels" else 9.01)
    # the person answered before the handoff, while the bot still had the caller: human time
    # starts at the handoff, so bot and human time never overlap
    assert record.human_answered_at == 9.01


def test_human_who_never_answers_leaves_a_transfer_that_was_not_answered():
    call = Ari("both").feed(HoldStarted(4.0, CALLER, LID, "aava"))
    call.feed(ChannelCreated(4.01, HUMAN, "600.1", HUMAN_NAME, "human-agents", "warm1", "", ""))
    call.feed(ChannelHungUp(12.0, HUMAN, "600.1", HUMAN_NAME, 19))  # no answer; back to the bot
    record = call.end(15.0)
    assert record.outcome == "transferred" and record.transfer_answered is False
    assert record.bot_ended_at == 4.0 and record.human_seconds is None


def test_hold_before_the_bot_answered_or_after_a_handoff_is_not_a_new_handoff():
    t = CallTracker(_rules("both"))
    t.feed(ChannelCreated(0.0, CALLER, LID, "PJSIP/x-1", "from-pstn", "4700", "1", ""))
    t.feed(DialplanStep(0.0, CALLER, LID, "PJSIP/x-1", "from-pstn", "4700", "NoOp", ""))
    t.feed(HoldStarted(1.0, CALLER, LID, "default"))
    [record] = t.feed(ChannelHungUp(2.0, CALLER, LID, "", 16))
    assert record.outcome == "abandoned" and record.transferred_at is None


@pytest.mark.parametrize("style", ["applications", "channels", "both"])
def test_continue_into_a_queue_hands_off_when_the_caller_leaves_the_bot(style):
    call = Ari(style)
    call.feed(BridgeLeft(4.0, CALLER, LID, "x", BRIDGE))
    call.feed(DialplanStep(4.01, CALLER, LID, "x", "ext-queues", "300", "Queue", "support"))
    call.feed(QueueJoined(4.02, CALLER, LID, "support"))
    record = call.end(9.0)
    assert record.outcome == "transferred" and record.transfer_target == "support"
    assert record.bot_ended_at == record.transferred_at == pytest.approx(4.0, abs=0.011)


@pytest.mark.parametrize("style", ["applications", "channels", "both"])
def test_continue_into_dial_hands_off_to_the_dialled_target(style):
    call = Ari(style)
    call.feed(BridgeLeft(4.0, CALLER, LID, "x", BRIDGE))
    call.feed(DialplanStep(4.01, CALLER, LID, "x", "from-internal", "2765", "Dial", "Local/2765"))
    call.feed(DialStarted(4.02, CALLER, LID, "Local/2765@humans-0000001a;1", "700.1"))
    record = call.end(9.0)
    assert record.transfer_target == "Local/2765@humans"
    assert record.transferred_at == pytest.approx(4.0, abs=0.011)


def test_answers_of_legs_in_no_call_are_kept_bounded_by_count_and_age(monkeypatch):
    monkeypatch.setattr(tracker_module, "ANSWERS_MAX", 3)
    t = CallTracker(_rules("both"))
    for i in range(5):
        t.feed(DestAnswered(float(i), f"9.{i}", "Local/x"))
    assert list(t._answers) == ["9.2", "9.3", "9.4"]
    t.feed(DestAnswered(4.0 + tracker_module.ANSWER_SECONDS + 0.5, "9.9", "Local/x"))
    assert list(t._answers) == ["9.9"]


def test_dial_end_of_an_originate_becomes_a_dest_answer_and_moh_a_hold():
    answered = from_ami({"Event": "DialEnd", "DestChannel": HUMAN_NAME, "DestUniqueid": HUMAN,
                         "DialStatus": "ANSWER", "Timestamp": "1795782870.119749"}, 0.0)
    assert answered == DestAnswered(1795782870.12, HUMAN, HUMAN_NAME) or (
        isinstance(answered, DestAnswered) and answered.dest_uniqueid == HUMAN)
    busy = from_ami({"Event": "DialEnd", "DestChannel": HUMAN_NAME, "DestUniqueid": HUMAN,
                     "DialStatus": "BUSY"}, 0.0)
    assert busy is None
    hold = from_ami({"Event": "MusicOnHoldStart", "Channel": "Local/s@c-1;1", "Uniqueid": CALLER,
                     "Linkedid": LID, "Class": "aava"}, 5.0)
    assert hold == HoldStarted(5.0, CALLER, LID, "aava")


def test_media_channels_are_never_taken_for_a_person():
    rules = _rules("applications")
    assert not rules.is_person(MEDIA_NAME)
    assert not rules.is_person("AudioSocket/127.0.0.1:18090-f979052a")
    assert rules.is_person(HUMAN_NAME)


def test_an_ari_user_event_reaches_botmeter_as_a_signal():
    """`POST /ari/events/user/BotMeter?application=...&source=channel:<caller uniqueid>` with
    body {"variables": {...}}: Asterisk (main/stasis.c multi_user_event_to_ami) writes the
    caller's channel state, `UserEvent: BotMeter` and each variable as `key: value`, keys
    exactly as the bot spelled them (here lower case)."""
    frame = {
        "Event": "UserEvent", "Privilege": "user,all", "Timestamp": "1795782866.5",
        "Channel": "Local/s@caller-sim-0000008c;1", "ChannelState": "6",
        "ChannelStateDesc": "Up", "CallerIDNum": "13990900000", "CallerIDName": "Bob",
        "ConnectedLineNum": "<unknown>", "ConnectedLineName": "<unknown>", "Language": "en",
        "AccountCode": "", "Context": "from-ai-agent", "Exten": "s", "Priority": "3",
        "Uniqueid": CALLER, "Linkedid": LID, "UserEvent": "BotMeter",
        "signal": "usage", "module": "asr", "quantity": "12.5", "unit": "seconds",
    }
    sig = from_ami(frame, 0.0)
    assert sig is not None and not isinstance(sig, DestAnswered)
    assert (sig.signal, sig.uniqueid, sig.linkedid) == ("usage", CALLER, LID)  # type: ignore[union-attr]
    assert dict(sig.fields) == {"module": "asr", "quantity": "12.5", "unit": "seconds"}  # type: ignore[union-attr]
    call = Ari("applications").feed(sig)
    record = call.end(5.0)
    assert str(record.modules["asr"].quantity) == "12.5"


def test_hold_music_inside_a_bot_context_is_not_a_handoff():
    t = CallTracker(TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"]))
    t.feed(ChannelCreated(0.0, CALLER, LID, "PJSIP/x-1", "from-pstn", "4700", "1", ""))
    t.feed(DialplanStep(0.0, CALLER, LID, "PJSIP/x-1", "from-pstn", "4700", "NoOp", ""))
    t.feed(DialplanStep(1.0, CALLER, LID, "PJSIP/x-1", "voicebot", "s", "MusicOnHold", "default"))
    t.feed(HoldStarted(1.0, CALLER, LID, "default"))
    [record] = t.feed(ChannelHungUp(9.0, CALLER, LID, "", 16))
    assert record.outcome == "handled" and record.bot_seconds == 8.0
