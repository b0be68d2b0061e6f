"""The simulated PBX signalling by AGI: FastAGI sessions to the agent's real server and the
real `botmeter-agi` script run as Asterisk runs it, over loopback sockets and pipes."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace

import pytest

from botmeter.bot.fastagi import FastAgiServer
from botmeter.bot.protocol import agi_quote, user_event_data
from botmeter.pbx.events import BotSignal
from botmeter.sim import (
    CallIds,
    ScriptedCall,
    SimulatedPBX,
    call_events,
    expected_record,
    mixed_calls,
)
from botmeter.sim.agi import split_app_args, split_command, user_event_fields
from botmeter.sim.events import AGI_MARKER, FASTAGI_MARKER, dialplan_escape, is_marker
from tests.helpers import eventually
from tests.test_sim import (
    CASES,
    EPOCH,
    Event,
    as_wire,
    by_call,
    expected,
    logged_in,
    record_of,
)

SIGNAL_KEYS = ("UserEvent", "Signal", "Module", "Quantity", "Unit", "Outcome", "Target", "Reason",
               "Session")
SLEEPER = (sys.executable, "-c", "import time; time.sleep(30)")
IDS = CallIds(seq=0, start=EPOCH, uniqueid_base=10, local_base=3, sip_base=1, bridge_id="b-1")


@pytest.fixture
async def fastagi():
    """The agent's FastAGI server on a free port, and the signals it hands over."""
    received: list[BotSignal] = []
    async with FastAgiServer(port=0, on_signal=received.append) as server:
        yield server, received


def signals_of(events: list[Event]) -> list[dict[str, str]]:
    """The BotMeter UserEvents' signal headers, in order."""
    return [{k: e[k] for k in SIGNAL_KEYS if k in e} | {"Priority": e["Priority"]}
            for e in events if e["Event"] == "UserEvent"]


def wire_without_markers(events, start: float = EPOCH) -> list[Event]:
    return as_wire([e for e in events if not is_marker(e)], start)


# ---- Asterisk's argument parsing ----------------------------------------------


@pytest.mark.parametrize(("line", "words"), [
    ('EXEC UserEvent "BotMeter,Signal: usage"', ["EXEC", "UserEvent", "BotMeter,Signal: usage"]),
    ("SET  VARIABLE\tBOTMETER_STATUS ok", ["SET", "VARIABLE", "BOTMETER_STATUS", "ok"]),
    ('VERBOSE "a \\"quoted\\" \\\\ word" 1', ["VERBOSE", 'a "quoted" \\ word', "1"]),
    ('x ab"c d"e ""', ["x", "abc de", ""]),
    ("a\\ b", ["a b"]),
])
def test_split_command_is_res_agi_parse_args(line: str, words: list[str]) -> None:
    assert split_command(line) == words


@pytest.mark.parametrize(("data", "args"), [
    ("botmeter-agi,usage,module=asr", ["botmeter-agi", "usage", "module=asr"]),
    ("a,(b,c),[d,e],\"f,g\"", ["a", "(b,c)", "[d,e]", "f,g"]),
    ("a\\,b,c\\\\d,", ["a,b", "c\\d", ""]),
    ("", []),
    ("one", ["one"]),
])
def test_split_app_args_is_ast_app_separate_args(data: str, args: list[str]) -> None:
    assert split_app_args(data) == args


def test_split_app_args_keeps_the_rest_in_the_last_argument() -> None:
    assert split_app_args("a,b,c\\,d", limit=2) == ["a", "b,c\\,d"]


@pytest.mark.parametrize("reason", ["nlu timeout", 'say "hi", (then) [go] \\ away', "a: b"])
def test_the_agi_scripts_quoting_is_undone_exactly(reason: str) -> None:
    fields = {"Outcome": "failed", "Reason": reason}
    words = split_command(f"EXEC UserEvent {agi_quote(user_event_data('outcome', fields))}")
    assert words[:2] == ["EXEC", "UserEvent"] and len(words) == 3
    assert user_event_fields(words[2]) == (
        "BotMeter", [("Signal", "outcome"), ("Outcome", "failed"), ("Reason", reason)])
    assert split_app_args(f"botmeter-agi,outcome,reason={dialplan_escape(reason)}")[2] == (
        f"reason={reason}")


def test_user_event_fields_like_app_userevent() -> None:
    assert user_event_fields("") is None
    assert user_event_fields("Ev,A: 1,no colon, B :  x y ,A: 2") == (
        "Ev", [("A", "2"), (" B ", "x y")])


# ---- the call's events --------------------------------------------------------


@pytest.mark.parametrize("via", ["fastagi", "agi"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_agi_calls_differ_only_in_their_signal_steps(name: str, via: str) -> None:
    call = CASES[name]
    plain = call_events(call, IDS)
    events = call_events(replace(call, signal_via=via), IDS, agi_url="agi://10.0.0.9:4999")
    markers = [e for e in events if is_marker(e)]
    user_events = [e for e in plain if e.name == "UserEvent"]
    assert len(markers) == len(user_events)
    assert {e.name for e in markers} <= {FASTAGI_MARKER if via == "fastagi" else AGI_MARKER}
    # the same events, but each UserEvent step is an AGI step followed by its marker
    assert len(events) == len(plain)
    for before, now in zip(plain, events, strict=True):
        assert before.offset == now.offset
        if before.name == "UserEvent":
            assert is_marker(now)
            assert dict(now.headers)["Priority"] == dict(before.headers)["Priority"]
        elif before.name == "Newexten" and dict(before.headers)["Application"] == "UserEvent":
            data = dict(now.headers)["AppData"]
            assert dict(now.headers)["Application"] == "AGI"
            if via == "fastagi":
                assert data.startswith("agi://10.0.0.9:4999/botmeter/")
            else:
                assert data.startswith("botmeter-agi,")
        else:
            assert before == now
    # what AMI shows (markers are not sent) gives the scripted record, except the signalled
    # usage, rating and session id
    want = expected(call) | {"modules": {}, "csat": None, "bot_session_id": None}
    assert record_of(wire_without_markers(events)) == want


def test_agi_step_data() -> None:
    call = ScriptedCall("1", "x", "failed", 1.0, 2.5, signal_via="fastagi")
    (marker,) = [e for e in call_events(call, IDS) if is_marker(e)]
    assert dict(marker.headers)["AppData"] == (
        "agi://127.0.0.1:4573/botmeter/outcome?outcome=failed&reason=nlu%20timeout")
    call = ScriptedCall("1", "x", "handled", 1.0, 2.5, signal_via="agi")
    data = [dict(e.headers)["AppData"] for e in call_events(call, IDS) if is_marker(e)]
    assert data == ["botmeter-agi,usage,module=asr,quantity=2.5,unit=seconds",
                    "botmeter-agi,usage,module=nlu,quantity=2,unit=requests"]


def test_signal_via_is_checked_and_mixed_calls_use_it() -> None:
    with pytest.raises(ValueError):
        ScriptedCall("1", "x", "handled", 1.0, signal_via="smoke")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mixed_calls(3, 1, "smoke")  # type: ignore[arg-type]
    plain = mixed_calls(12)
    assert {c.signal_via for c in plain} == {"userevent"}
    for via in ("userevent", "fastagi", "agi"):
        calls = mixed_calls(12, 7, signal_via=via)
        assert [replace(c, signal_via="userevent") for c in calls] == plain
        assert [expected_record(c) for c in calls] == [expected_record(c) for c in plain]


# ---- live, over loopback --------------------------------------------------------


async def test_fastagi_call_signals_the_agents_server(fastagi) -> None:
    server, received = fastagi
    async with SimulatedPBX(speed=400, epoch=EPOCH, agi_port=server.port) as pbx:
        ami = await logged_in(pbx)
        call = ScriptedCall("13900080001", "张三", "handled", 1.5, 3.2, signal_via="fastagi")
        await pbx.play([call])
        events = await ami.events_until_ping()
        await ami.close()
    assert pbx.agi_sessions == 2 and pbx.agi_failures == 0
    (linkedid, mine), = by_call(events).items()
    got = [(s.linkedid, s.signal, dict(s.fields)) for s in received]
    assert got == [
        (linkedid, "usage", {"Module": "asr", "Quantity": "3.2", "Unit": "seconds"}),
        (linkedid, "usage", {"Module": "nlu", "Quantity": "2", "Unit": "requests"}),
    ]
    assert server.counters()["signals"] == 2 and server.counters()["errors"] == 0
    assert record_of(mine) == expected(call) | {"modules": {}}  # the usage went by FastAGI
    steps = [e for e in mine if e["Event"] == "Newexten" and e["Application"] == "AGI"]
    assert steps[0]["AppData"] == (
        f"agi://127.0.0.1:{server.port}/botmeter/usage?module=asr&quantity=3.2&unit=seconds")
    kinds = [e["Event"] for e in mine]
    assert kinds.count("AGIExecStart") == kinds.count("AGIExecEnd") == 4  # GET + SET, twice
    status = [(e["Variable"], e["Value"]) for e in mine if e["Event"] == "VarSet"
              and e["Variable"] in ("BOTMETER_STATUS", "AGISTATUS")]
    assert status == [("BOTMETER_STATUS", "ok"), ("AGISTATUS", "SUCCESS")] * 2
    assert not any(e["Event"] == "UserEvent" for e in mine)
    stamps = [float(e["Timestamp"]) for e in events]
    assert stamps == sorted(stamps)


async def test_a_session_stops_the_clock_and_blocks_every_call() -> None:
    """An AGI session that takes wall time: virtual time stands still, the signal is stamped
    at the AGI step's time, and another call's events wait for the session, in order."""
    seen: list[tuple[float, float]] = []
    pbx = SimulatedPBX(speed=400, epoch=EPOCH)

    async def slow(sig: BotSignal) -> None:
        before = pbx.now()
        await asyncio.sleep(0.25)  # 100 virtual seconds at speed 400
        seen.append((before, pbx.now()))

    async with FastAgiServer(port=0, on_signal=slow, clock=pbx.now) as server, pbx:
        pbx.agi_port = server.port
        ami = await logged_in(pbx)
        calls = [ScriptedCall("13900080002", "A", "handled", 1.0, 2.0, signal_via="fastagi"),
                 ScriptedCall("13900080003", "B", "handled", 1.0, 30.0, start_offset=2.0)]
        await pbx.play(calls)
        events = await ami.events_until_ping()
    stamps = [float(e["Timestamp"]) for e in events]
    assert stamps == sorted(stamps)
    agi_steps = [float(e["Timestamp"]) for e in events
                 if e["Event"] == "Newexten" and e["Application"] == "AGI"]
    assert len(agi_steps) == len(seen) == 2
    for (before, after), step in zip(seen, agi_steps, strict=True):
        assert before == after == pytest.approx(step, abs=1e-6)
    records = {r["caller_number"]: r for r in map(record_of, by_call(events).values())}
    assert records["13900080003"] == expected(calls[1])
    assert records["13900080002"] == expected(calls[0]) | {"modules": {}}


@pytest.mark.parametrize("name", ["queue-answered", "failed", "dial-answered-sip",
                                  "session-hostile"])
async def test_agi_script_raises_the_same_user_events(name: str) -> None:
    call = CASES[name]
    seen: dict[str, list[dict[str, str]]] = {}
    full: dict[str, list[Event]] = {}
    async with SimulatedPBX(speed=400, epoch=EPOCH) as pbx:
        ami = await logged_in(pbx)
        for via in ("userevent", "agi"):
            await pbx.play([replace(call, signal_via=via)])
            (mine,) = by_call(await ami.events_until_ping()).values()
            seen[via], full[via] = signals_of(mine), mine
        await ami.close()
    assert pbx.agi_failures == 0 and pbx.agi_sessions == len(seen["agi"]) > 0
    assert seen["agi"] == seen["userevent"]
    for via in seen:
        assert record_of(full[via]) == expected(call)
    # the script's UserEvent: the channel's headers and order as the dialplan's, stamped at
    # its AGI step
    plain = [e for e in full["userevent"] if e["Event"] == "UserEvent"]
    relayed = [e for e in full["agi"] if e["Event"] == "UserEvent"]
    ids = ("Channel", "Uniqueid", "Linkedid", "Timestamp")
    for a, b in zip(plain, relayed, strict=True):
        assert list(a) == list(b)
        assert {k: v for k, v in a.items() if k not in ids} == {
            k: v for k, v in b.items() if k not in ids}
    step_stamps = [e["Timestamp"] for e in full["agi"]
                   if e["Event"] == "Newexten" and e["Application"] == "AGI"]
    assert [e["Timestamp"] for e in relayed] == step_stamps
    commands = [e["Command"] for e in full["agi"] if e["Event"] == "AGIExecStart"]
    assert commands[0].startswith('EXEC UserEvent "BotMeter,Signal: ')
    assert commands[1] == "SET VARIABLE BOTMETER_STATUS ok"


async def test_agi_script_relays_a_start_without_the_session_it_drops() -> None:
    call = replace(CASES["session-too-long"], signal_via="agi")
    async with SimulatedPBX(speed=400, epoch=EPOCH) as pbx:
        ami = await logged_in(pbx)
        await pbx.play([call])
        (mine,) = by_call(await ami.events_until_ping()).values()
        await ami.close()
    assert pbx.agi_failures == 0
    starts = [s for s in signals_of(mine) if s["Signal"] == "start"]
    assert len(starts) == 1 and "Session" not in starts[0]  # the start counts, without it
    assert record_of(mine) == expected(call)
    commands = [e["Command"] for e in mine if e["Event"] == "AGIExecStart"]
    assert commands[0].startswith('VERBOSE "botmeter: start signal: Session \'sss')
    assert "is longer than 128 characters: dropped, the start counts" in commands[0]
    assert commands[1:3] == ['EXEC UserEvent "BotMeter,Signal: start"',
                             "SET VARIABLE BOTMETER_STATUS ok"]


async def test_slow_agi_script_is_killed_and_counted() -> None:
    call = ScriptedCall("13900080004", "李四", "handled", 1.0, 2.0, signal_via="agi")
    async with SimulatedPBX(speed=400, epoch=EPOCH, agi_command=SLEEPER, agi_timeout=0.3) as pbx:
        ami = await logged_in(pbx)
        begin = time.monotonic()
        await asyncio.wait_for(pbx.play([call]), 10)
        took = time.monotonic() - begin
        # two AGI steps, each killed at 0.3 s (the call's own 3 s take 7.5 ms at speed 400):
        # 0.6 s, plus starting and killing two Python processes on a loaded host
        assert 0.6 <= took < 1.5, took
        events = await ami.events_until_ping()
    assert pbx.agi_sessions == pbx.agi_failures == 2
    assert "not done within 0.3s" in pbx.agi_last_failure
    (mine,) = by_call(events).values()
    assert record_of(mine) == expected(call) | {"modules": {}}  # the call went on
    statuses = [e["Value"] for e in mine if e["Event"] == "VarSet" and e["Variable"] == "AGISTATUS"]
    assert statuses == ["FAILURE", "FAILURE"]


@pytest.mark.parametrize("command", [
    (sys.executable, "-c", "import sys; sys.exit(3)"),
    (sys.executable, "-c", "print('SET VARIABLE BOTMETER_STATUS error', flush=True); input()"),
    ("/nonexistent/botmeter-agi",),
])
async def test_failing_agi_scripts_are_counted(command: tuple[str, ...]) -> None:
    call = ScriptedCall("13900080005", "x", "failed", 1.0, 2.0, signal_via="agi")
    async with SimulatedPBX(speed=400, epoch=EPOCH, agi_command=command, agi_timeout=3) as pbx:
        await asyncio.wait_for(pbx.play([call]), 10)
    assert pbx.agi_sessions == pbx.agi_failures == 1


async def test_fastagi_nobody_listening_and_no_port() -> None:
    async with FastAgiServer(port=0) as server:
        closed = server.port
    call = ScriptedCall("13900080006", "x", "handled", 1.0, 2.0, signal_via="fastagi")
    async with SimulatedPBX(speed=400, epoch=EPOCH) as pbx:
        with pytest.raises(ValueError, match="agi_port"):
            await pbx.play([call])
        pbx.agi_port = closed
        ami = await logged_in(pbx)
        await asyncio.wait_for(pbx.play([call]), 10)
        (mine,) = by_call(await ami.events_until_ping()).values()
    assert pbx.agi_sessions == pbx.agi_failures == 2
    assert mine[-1]["Event"] == "Hangup"


async def test_stop_cuts_a_session_short() -> None:
    call = ScriptedCall("13900080007", "x", "handled", 1.0, 2.0, signal_via="agi")
    pbx = SimulatedPBX(speed=400, epoch=EPOCH, agi_command=SLEEPER, agi_timeout=60)
    await pbx.start()
    play = asyncio.create_task(pbx.play([call]))
    await eventually(lambda: pbx.agi_sessions > 0)
    await asyncio.sleep(0.2)  # pacing: the script is running
    begin = time.monotonic()
    await pbx.stop()
    await asyncio.wait_for(play, 5)
    assert time.monotonic() - begin < 3
    assert pbx.agi_failures == 1 and "stopped" in pbx.agi_last_failure


def test_agi_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        SimulatedPBX(agi_command=())
    with pytest.raises(ValueError):
        SimulatedPBX(agi_command="botmeter-agi")
    with pytest.raises(ValueError):
        SimulatedPBX(agi_timeout=0)
    assert SimulatedPBX(agi_host="::1", agi_port=4600).agi_url == "agi://[::1]:4600"
