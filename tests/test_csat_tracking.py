"""The `csat` signal: its rules (docs/signals.md#csat), each way in (FastAGI over a loopback
socket, the `botmeter-agi` script as a subprocess, AMI UserEvents through the real frame
decoder), and how tracking attaches it to a call: while the bot talks, after a handoff, after
the caller channel hung up while the call goes on, and not after the call ended. The three
ways through the agent and the simulated Asterisk: test_csat_e2e.py."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from structlog.testing import capture_logs

from botmeter.bot.agi_script import parse_args
from botmeter.bot.fastagi import FastAgiServer
from botmeter.bot.protocol import user_event_data
from botmeter.bot.session import parse_env, parse_request
from botmeter.pbx.events import (
    AgentConnected,
    BotSignal,
    ChannelCreated,
    DialplanStep,
    QueueJoined,
)
from botmeter.pbx.stream import decode_capture
from botmeter.tracking.record import Csat
from botmeter.tracking.signals import CsatSignal, SignalError, parse_signal
from botmeter.tracking.tracker import CallTracker

from .test_agi_script import run_agi
from .test_fastagi import LINKEDID, UNIQUEID, agi_session, env_bytes
from .test_tracker import RULES, Call

#: (fields, the refusal's reason): each must be refused, naming the field
BAD = [
    ({"Score": "0"}, "csat signal: Score '0' is outside 1..5 (Scale 5)"),
    ({"Score": "6"}, "csat signal: Score '6' is outside 1..5 (Scale 5)"),
    ({"Score": "6", "Scale": "5"}, "csat signal: Score '6' is outside 1..5 (Scale 5)"),
    ({"Score": "11", "Scale": "10"}, "csat signal: Score '11' is outside 1..10 (Scale 10)"),
    ({"Score": "four"}, "csat signal: Score 'four' is not a whole number (ASCII digits only)"),
    ({"Score": "4.5"}, "csat signal: Score '4.5' is not a whole number (ASCII digits only)"),
    ({"Score": "4.0"}, "csat signal: Score '4.0' is not a whole number (ASCII digits only)"),
    ({"Score": "+4"}, "csat signal: Score '+4' is not a whole number (ASCII digits only)"),
    ({"Score": "-1"}, "csat signal: Score '-1' is not a whole number (ASCII digits only)"),
    ({"Score": "４"}, "csat signal: Score '４' is not a whole number (ASCII digits only)"),
    ({"Score": "٤"}, "csat signal: Score '٤' is not a whole number (ASCII digits only)"),
    ({"Score": "1_0", "Scale": "10"},
     "csat signal: Score '1_0' is not a whole number (ASCII digits only)"),
    ({"Score": "1", "Scale": "1"}, "csat signal: Scale '1' is outside 2..10"),
    ({"Score": "4", "Scale": "11"}, "csat signal: Scale '11' is outside 2..10"),
    ({"Score": "4", "Scale": "0"}, "csat signal: Scale '0' is outside 2..10"),
    ({"Score": "4", "Scale": "ten"}, "csat signal: Scale 'ten' is not a whole number "
                                     "(ASCII digits only)"),
    ({"Score": ""}, "csat signal without Score"),
    ({"Scale": "5", "Source": "dtmf"}, "csat signal without Score"),
]


@pytest.mark.parametrize(("fields", "reason"), BAD)
def test_bad_csat_values_are_refused_with_the_reason(fields: dict[str, str], reason: str,
                                                     ) -> None:
    with pytest.raises(SignalError) as refused:
        parse_signal("csat", fields)
    assert str(refused.value) == reason


@pytest.mark.parametrize(("fields", "expected"), [
    ({"Score": "4"}, CsatSignal(4, 5, None)),
    ({"score": "1", "SCALE": "2"}, CsatSignal(1, 2, None)),
    ({"Score": " 10 ", "Scale": "10", "Source": "speech"}, CsatSignal(10, 10, "speech")),
    ({"Score": "05", "Scale": ""}, CsatSignal(5, 5, None)),  # an empty Scale is the default
    ({"Score": "3", "Source": "dt\r\nmf"}, CsatSignal(3, 5, "dt  mf")),  # as Target, Reason
])
def test_good_csat_values(fields: dict[str, str], expected: CsatSignal) -> None:
    assert parse_signal("CSAT", fields) == expected


def test_the_agi_script_and_fastagi_read_the_same_csat_fields() -> None:
    name, fields, ignored = parse_args(["csat", "score=4", "scale=10", "source=dtmf"])
    assert (name, fields, ignored) == ("csat", {"Score": "4", "Scale": "10", "Source": "dtmf"}, [])
    assert user_event_data(name, fields) == "BotMeter,Signal: csat,Score: 4,Scale: 10,Source: dtmf"
    signal, query_fields, _ = parse_request(parse_env(env_bytes(
        "botmeter/csat?score=4&scale=10&source=dtmf")))
    assert (signal, query_fields) == ("csat", fields)


async def test_fastagi_delivers_a_good_csat_and_refuses_bad_ones_with_one_log_line() -> None:
    signals: list[BotSignal] = []
    async with FastAgiServer(port=0, on_signal=signals.append, clock=lambda: 1000.0) as server:
        commands = await agi_session(server.port, env_bytes(
            "botmeter/csat?score=4&scale=5&source=dtmf"))
        assert commands == ["GET VARIABLE CHANNEL(linkedid)", "SET VARIABLE BOTMETER_STATUS ok"]
        for fields, reason in BAD:
            query = "&".join(f"{k.lower()}={quote(v)}" for k, v in fields.items())
            with capture_logs() as logs:
                commands = await agi_session(server.port, env_bytes(f"botmeter/csat?{query}"))
            assert commands == [f'VERBOSE "botmeter: {reason}" 1',
                                "SET VARIABLE BOTMETER_STATUS error"]
            assert [(e["event"], e["reason"]) for e in logs if e["log_level"] == "warning"] == [
                ("fastagi bad signal refused", reason)]
    assert signals == [BotSignal(1000.0, LINKEDID, UNIQUEID, "csat",
                                 {"Score": "4", "Scale": "5", "Source": "dtmf"}, via="fastagi")]


def test_the_agi_script_relays_a_good_csat_and_refuses_a_bad_one() -> None:
    run = run_agi(["csat", "score=4", "scale=10", "source=dtmf"])
    assert run.commands == [
        'EXEC UserEvent "BotMeter,Signal: csat,Score: 4,Scale: 10,Source: dtmf"',
        "SET VARIABLE BOTMETER_STATUS ok"]
    assert (run.returncode, run.stderr) == (0, "")
    run = run_agi(["csat", "score=6", "source=dtmf"])
    reason = "csat signal: Score '6' is outside 1..5 (Scale 5)"
    assert run.commands == [f'VERBOSE "botmeter: {reason}" 1',
                            "SET VARIABLE BOTMETER_STATUS error"]
    assert (run.returncode, run.stderr) == (0, f"botmeter-agi: {reason}\n")


# -- tracking ------------------------------------------------------------------------------------


def _tracker() -> tuple[CallTracker, list[tuple[str, dict]]]:
    problems: list[tuple[str, dict]] = []
    return CallTracker(RULES, on_problem=lambda m, c: problems.append((m, c))), problems


def _bot_call(tracker: CallTracker, uid: str = "100.1") -> Call:
    return Call(tracker, uid=uid).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")


def test_the_last_valid_csat_wins_and_bad_ones_leave_the_record_unharmed() -> None:
    tracker, problems = _tracker()
    c = _bot_call(tracker)
    c.signal(3.0, "usage", Module="asr", Quantity="3", Unit="seconds")
    c.signal(4.0, "csat", Score="2", Source="dtmf")
    c.signal(5.0, "csat", Score="8", Scale="10", Source="speech")
    for fields, _ in BAD:
        c.signal(6.0, "csat", **fields)
    [r] = c.step(7.0, "from-pstn").hangup(8.0).done
    assert r.csat == Csat(8, 10)
    assert r.to_json()["csat"] == {"score": 8, "scale": 10}
    # the rest of the record is as without any csat
    assert (r.outcome, r.bot_answered_at, r.bot_ended_at, r.ended_at) == ("handled", 2.0, 7.0, 8.0)
    assert str(r.modules["asr"].quantity) == "3"
    refused = [c for m, c in problems if m == "malformed bot signal ignored"]
    assert [p["reason"] for p in refused] == [reason for _, reason in BAD]
    assert {p["linkedid"] for p in refused} == {"100.1"} and len(problems) == len(BAD)


def test_a_call_without_csat_records_null() -> None:
    tracker, _ = _tracker()
    [r] = _bot_call(tracker).hangup(5.0).done
    assert r.csat is None and r.to_json()["csat"] is None


def test_a_csat_is_not_the_bot_answering() -> None:
    """A survey may run outside the bot (an IVR after a human): unlike usage and outcome, a
    csat never marks the bot answered, so an unanswered call stays abandoned."""
    tracker, problems = _tracker()
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").signal(3.0, "csat", Score="1")
    [r] = c.hangup(4.0).done
    assert (r.outcome, r.bot_answered_at, r.bot_seconds, r.csat) == ("abandoned", None, None,
                                                                     Csat(1, 5))
    assert problems == []


def test_a_survey_after_the_human_hung_up_attaches() -> None:
    """Queue(support,c): the agent hangs up, the caller stays in the dialplan and is asked."""
    tracker, _ = _tracker()
    c = _bot_call(tracker).step(6.0, "from-pstn", "Queue", "support,c")
    c.feed(QueueJoined(6.1, c.uid, c.lid, "support"))
    c.feed(ChannelCreated(6.2, "100.5", c.lid, "Local/desk1@agents-00000001;1", "agents", "s",
                          "", ""))
    c.feed(AgentConnected(9.0, c.uid, c.lid, "support", "Local/desk1@agents-00000001;1"))
    c.hangup(20.0, uid="100.5")  # the agent hangs up
    c.step(20.1, "from-pstn", "Read", "CSAT,botmeter-survey,1,,1,5")
    c.signal(23.0, "csat", Score="5", Source="dtmf")
    [r] = c.step(23.1, "from-pstn", "Hangup").hangup(23.2).done
    assert (r.outcome, r.transfer_answered, r.csat) == ("transferred", True, Csat(5, 5))
    assert (r.bot_seconds, r.human_seconds) == (4.0, 14.2)  # the survey is after the human


@pytest.mark.parametrize("linkedid", ["100.1", ""], ids=["with-linkedid", "uniqueid-only"])
def test_a_csat_from_the_caller_channel_after_its_hangup_attaches_while_the_call_goes_on(
        linkedid: str) -> None:
    """The caller channel (a Local ;2 here, so its uniqueid is not the call's linkedid) has
    hung up; another channel keeps the call up. A csat from the caller channel still finds the
    call: by linkedid, or, when FastAGI could not get the linkedid, by the channel's uniqueid."""
    tracker, problems = _tracker()
    c = Call(tracker, uid="100.2", lid="100.1", name="Local/s@caller-00000001;2")
    c.feed(ChannelCreated(1.0, "100.1", "100.1", "Local/s@caller-00000001;1", "caller", "s",
                          "", ""))
    c.create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot").step(6.0, "from-pstn")
    c.hangup(7.0)  # the caller channel
    assert c.done == [] and tracker.active_calls == 1
    c.feed(BotSignal(7.5, linkedid or "100.2", "100.2", "csat", {"Score": "4"}, via="fastagi"))
    [r] = c.hangup(8.0, uid="100.1").done
    assert r.csat == Csat(4, 5) and r.ended_at == 8.0
    assert problems == [] and tracker.pending_signals == 0


def test_a_csat_after_the_call_ended_is_ignored_at_once_with_a_log_line() -> None:
    tracker, problems = _tracker()
    c = _bot_call(tracker).signal(3.0, "csat", Score="3")
    [r] = c.hangup(5.0).done
    assert r.csat == Csat(3, 5)
    for linkedid, uniqueid in (("100.1", "100.1"), ("100.1", ""), ("", "100.1")):
        assert tracker.feed(BotSignal(6.5, linkedid, uniqueid, "csat", {"Score": "5"})) == ()
    assert tracker.pending_signals == 0 and tracker.dropped_signals == 3  # not held
    assert problems == [("bot signal ignored: its call has ended and its record is written",
                         {"call_id": "100.1", "linkedid": "100.1", "signal": "csat",
                          "via": "ami", "seconds_after_end": 1.5})] * 3
    assert tracker.expire(1000.0, 3600) == ()  # nothing held, nothing later either


def test_a_csat_for_a_call_not_seen_yet_is_held_and_attached() -> None:
    tracker, _ = _tracker()
    tracker.feed(BotSignal(0.5, "200.1", "200.1", "csat", {"Score": "2", "Scale": "3"},
                           via="fastagi"))
    assert tracker.pending_signals == 1
    [r] = _bot_call(tracker, "200.1").hangup(5.0).done
    assert r.csat == Csat(2, 3)


def test_merged_calls_keep_the_later_csat() -> None:
    tracker, _ = _tracker()
    a = _bot_call(tracker, "400.1").signal(3.0, "csat", Score="2")
    b = Call(tracker, uid="400.2", name="PJSIP/agent-2").create(3.0)
    b.feed(BotSignal(3.5, "400.2", "400.2", "csat", {"Score": "5"}))
    b.feed(DialplanStep(4.0, "400.2", "400.1", "PJSIP/agent-2", "agents", "s", "NoOp", ""))
    assert tracker.active_calls == 1
    a.hangup(6.0)
    [r] = b.hangup(7.0, uid="400.2").done + a.done
    assert r.call_id == "400.1" and r.csat == Csat(5, 5)


USER_EVENT = ("Event: UserEvent\r\nPrivilege: user,all\r\nTimestamp: {ts}\r\n"
              "Channel: PJSIP/trunk-00000001\r\nUniqueid: 100.1\r\nLinkedid: 100.1\r\n"
              "UserEvent: BotMeter\r\nSignal: csat\r\n{fields}\r\n")


def test_user_events_through_the_frame_decoder() -> None:
    """`UserEvent(BotMeter,Signal: csat,Score: 4,Scale: 10,Source: dtmf)` as AMI sends it."""
    tracker, problems = _tracker()
    c = _bot_call(tracker)
    frames = [USER_EVENT.format(ts=3.0 + n, fields="".join(f"{k}: {v}\r\n" for k, v in f))
              for n, f in enumerate([
                  [("Score", "4"), ("Scale", "10"), ("Source", "dtmf")],
                  [("Score", "4.5")],
                  [("score", "9"), ("scale", "10")],
                  [("Score", "9"), ("Scale", "11")],
              ])]
    capture = "".join(frames).encode()
    for event in decode_capture(capture[i:i + 7] for i in range(0, len(capture), 7)):
        c.feed(event)
    [r] = c.hangup(9.0).done
    assert r.csat == Csat(9, 10)
    assert [p["reason"] for m, p in problems if m == "malformed bot signal ignored"] == [
        "csat signal: Score '4.5' is not a whole number (ASCII digits only)",
        "csat signal: Scale '11' is outside 2..10"]
