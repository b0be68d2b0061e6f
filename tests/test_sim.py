"""Tests of the simulated PBX: AMI protocol over a real loopback socket, and the
event sequences of every scripted outcome."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

import pytest

from botmeter.sim import (
    CallIds,
    ScriptedCall,
    SimulatedPBX,
    call_events,
    expected_record,
    mixed_calls,
)
from botmeter.sim.events import PRIVILEGES
from botmeter.sim.scenarios import expected_csat, expected_session

from .helpers import eventually

SECRET = "botmeter-sim"
EPOCH = 1_800_000_000.0
Event = dict[str, str]


# ---- a tiny AMI client on plain asyncio streams ------------------------------


class Ami:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._ids = 0

    @classmethod
    async def connect(cls, port: int) -> Ami:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await asyncio.wait_for(reader.readline(), 5)
        assert banner == b"Asterisk Call Manager/9.0.0\r\n"
        return cls(reader, writer)

    def send(self, *pairs: tuple[str, str]) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n")

    async def read(self, timeout: float = 5.0) -> Event | None:
        """Next message, or None when the server closed the connection."""
        try:
            raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        message: Event = {}
        for line in raw.decode("utf-8").split("\r\n"):
            if line:
                key, _, value = line.partition(": ")
                message.setdefault(key, value)
        return message

    async def action(self, name: str, *pairs: tuple[str, str]) -> Event:
        """Send an action; return its response (events met on the way are dropped)."""
        self._ids += 1
        action_id = f"t-{self._ids}"
        self.send(("Action", name), ("ActionID", action_id), *pairs)
        while True:
            message = await self.read()
            assert message is not None, "connection closed"
            if message.get("ActionID") == action_id and "Response" in message:
                return message

    async def login(self, secret: str = SECRET, *pairs: tuple[str, str]) -> Event:
        challenge = await self.action("Challenge", ("AuthType", "MD5"))
        key = hashlib.md5((challenge["Challenge"] + secret).encode()).hexdigest()
        return await self.action("Login", ("Username", "botmeter"), ("AuthType", "MD5"),
                                 ("Key", key), *pairs)

    async def events_until_ping(self) -> list[Event]:
        """Every event already sent, up to the answer of a Ping sent now."""
        self.send(("Action", "Ping"), ("ActionID", "flush"))
        events = []
        while True:
            message = await self.read()
            assert message is not None, "connection closed"
            if message.get("ActionID") == "flush":
                return events
            events.append(message)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def pbx():
    sim = SimulatedPBX(speed=400, epoch=EPOCH)
    await sim.start()
    yield sim
    await sim.stop()


async def logged_in(sim: SimulatedPBX) -> Ami:
    ami = await Ami.connect(sim.port)
    assert (await ami.login())["Response"] == "Success"
    return ami


# ---- a reference reading of the events (the rules of docs/calls.md) ---------

INBOUND, BOT = "from-pstn", "voicebot"
NORMAL_CAUSES = {"0", "16", "17", "19"}


def by_call(events: Iterable[Event]) -> dict[str, list[Event]]:
    calls: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        linkedid = event.get("Linkedid") or event.get("DestLinkedid") or event.get("LocalOneLinkedid")
        if linkedid:
            calls[linkedid].append(event)
    return dict(calls)


def record_of(events: list[Event]) -> dict:
    """What a correct agent derives from one call's events."""
    ts = [float(e["Timestamp"]) for e in events]
    caller = next(e["Channel"] for e in events
                  if e["Event"] == "Newexten" and e["Context"] == INBOUND)
    answered = bot_ended = transferred = human = None
    outcome_signal = None
    modules: dict[str, dict] = {}
    csat: list[tuple[str, str]] = []
    sessions: list[str | None] = []
    cause = None
    number = name = None
    for event, t in zip(events, ts, strict=True):
        kind, on_caller = event["Event"], event.get("Channel") == caller
        if on_caller:
            number, name = event["CallerIDNum"], event["CallerIDName"]
        if on_caller and answered is None and kind == "Newexten" and event["Context"] == BOT:
            answered = t
        elif answered is not None and bot_ended is None and on_caller and (
            (kind == "Newexten" and event["Context"] != BOT)
            or kind in ("Hangup", "QueueCallerJoin", "DialBegin")
        ):
            bot_ended = t
        if answered is not None and transferred is None and on_caller and kind in (
            "QueueCallerJoin", "DialBegin"
        ):
            transferred = t
        if transferred is not None and human is None and on_caller and (
            kind == "AgentConnect" or (kind == "DialEnd" and event["DialStatus"] == "ANSWER")
        ):
            human = t
        if kind == "UserEvent" and event["UserEvent"] == "BotMeter":
            if event["Signal"] == "outcome":
                outcome_signal = event["Outcome"]
            elif event["Signal"] == "usage":
                entry = modules.setdefault(event["Module"], {"quantity": 0.0, "unit": event["Unit"]})
                entry["quantity"] += float(event["Quantity"])
            elif event["Signal"] == "csat":
                csat.append((event["Score"], event.get("Scale", "")))
            elif event["Signal"] == "start":
                sessions.append(expected_session(event.get("Session")))
        if kind == "Hangup" and on_caller:
            cause = event["Cause"]
    offered, ended = ts[0], ts[-1]
    if answered is None:
        outcome = "abandoned"
    elif outcome_signal:
        outcome = outcome_signal
    elif transferred is not None:
        outcome = "transferred"
    elif cause not in NORMAL_CAUSES:
        outcome = "failed"
    else:
        outcome = "handled"

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    return {
        "caller_number": None if number == "<unknown>" else number,
        "caller_name": None if name == "<unknown>" else name,
        "dialed_number": next(e["Exten"] for e in events
                              if e.get("Channel") == caller and e.get("Context") == INBOUND),
        "outcome": outcome,
        "ring_seconds": span(offered, answered if answered is not None else ended),
        "bot_seconds": span(answered, bot_ended),
        "human_seconds": span(human, ended),
        "total_seconds": span(offered, ended),
        "transfer_answered": (human is not None) if outcome == "transferred" else None,
        "hangup_cause": int(cause) if cause is not None else None,
        "modules": modules,
        "csat": expected_csat(tuple(csat)),
        "bot_session_id": next((s for s in sessions if s is not None), None),  # the first
    }


def expected(call: ScriptedCall) -> dict:
    want = expected_record(call)
    for key in ("ring_seconds", "bot_seconds", "human_seconds", "total_seconds"):
        if want[key] is not None:
            want[key] = round(want[key], 3)
    for entry in want["modules"].values():
        entry["quantity"] = float(entry["quantity"])
    return want


def as_wire(events, start: float) -> list[Event]:
    """Events of `call_events` as a client would parse them."""
    return [{"Event": e.name, "Timestamp": f"{start + e.offset:.6f}", **dict(e.headers)}
            for e in events]


CASES = {
    "handled-local": ScriptedCall("13900010001", "张三", "handled", 1.5, 3.2),
    "handled-sip-quiet": ScriptedCall("13900010002", "", "handled", 0.7, 12.0,
                                      signals=False, via="sip"),
    "queue-answered": ScriptedCall("13900010003", "陳大文", "transferred", 2.0, 4.0, 5.5),
    "queue-answered-sip-quiet": ScriptedCall("13900010004", "Bob", "transferred", 1.0, 2.5, 3.0,
                                             via="sip", signals=False),
    "queue-timeout": ScriptedCall("13900010005", "李四", "transferred", 1.0, 6.0),
    "dial-answered-sip": ScriptedCall("13900010006", "Ünïcødé", "transferred", 3.0, 7.0, 9.0,
                                      handoff="dial", via="sip", dialed_number="4200"),
    "dial-noanswer-quiet": ScriptedCall("13900010007", "王小明", "transferred", 0.5, 2.0,
                                        handoff="dial", signals=False),
    "failed": ScriptedCall("13900010008", "Alice", "failed", 2.0, 5.0),
    "failed-sip-quiet": ScriptedCall("13900010009", "María José", "failed", 1.0, 4.0,
                                     via="sip", signals=False),
    "abandoned-local": ScriptedCall("13900010010", "赵六", "abandoned", 3.5),
    "abandoned-sip": ScriptedCall("13900010011", "Bob", "abandoned", 2.5, via="sip"),
    "csat-in-bot": ScriptedCall("13900010012", "Bob", "handled", 1.0, 4.0,
                                csat=(("4", ""), ("6", ""), ("9", "10"))),
    "csat-after-queue": ScriptedCall("13900010013", "黄丽", "transferred", 1.0, 3.0, 4.0,
                                     csat=(("5", "5"),), survey="after_human"),
    "csat-after-dial-sip": ScriptedCall("13900010014", "Alice", "transferred", 1.0, 3.0, 4.0,
                                        handoff="dial", via="sip", csat=(("2", ""),),
                                        survey="after_human"),
    "csat-caller-gone": ScriptedCall("13900010015", "周杰", "handled", 1.0, 3.0,
                                     csat=(("3", ""),), survey="caller_gone"),
    "caller-drop-local": ScriptedCall("13900010016", "王五", "handled", 1.0, 4.5,
                                      caller_hangs_up=True),
    "caller-drop-sip": ScriptedCall("13900010017", "Bob", "handled", 2.0, 3.0, via="sip",
                                    caller_hangs_up=True),
    "session-plain": ScriptedCall("13900010018", "Alice", "handled", 1.0, 3.0,
                                  session="conv-7f3a9c21"),
    "session-hostile": ScriptedCall("13900010019", "黄丽", "transferred", 1.0, 3.0, 4.0,
                                    session='a&b=c,d%25 e/会话 "q\\" (x) [y]?#'),
    "session-too-long": ScriptedCall("13900010020", "Bob", "failed", 1.0, 2.0, via="sip",
                                     session="s" * 129),
}


# ---- pure parts ---------------------------------------------------------------


@pytest.mark.parametrize("seq", [0, 1])
@pytest.mark.parametrize("name", sorted(CASES))
def test_call_events_reproduce_the_scripted_record(name: str, seq: int) -> None:
    call = CASES[name]
    ids = CallIds(seq=seq, start=EPOCH, uniqueid_base=10, local_base=3, sip_base=1,
                  bridge_id="b-1")
    events = call_events(call, ids)
    offsets = [e.offset for e in events]
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    assert events[0].name == "Newchannel"
    assert record_of(as_wire(events, EPOCH)) == expected(call)
    contexts = {dict(e.headers).get("Context") for e in events}
    assert (BOT in contexts) == (call.outcome != "abandoned")


def test_call_events_use_the_reserved_ids() -> None:
    call = CASES["queue-answered"]
    events = call_events(call, CallIds(5, EPOCH + 0.25, 40, 7, 0, "b-9"))
    uniqueids = {dict(e.headers)["Uniqueid"] for e in events if e.name == "Newchannel"}
    assert uniqueids == {f"{int(EPOCH)}.40", f"{int(EPOCH)}.41"} | {
        f"{int(EPOCH + 6.25)}.{n}" for n in range(42, 46)
    }
    linked = {dict(e.headers).get("Linkedid") for e in events} - {None}
    assert linked == {f"{int(EPOCH)}.40"}
    channels = {dict(e.headers)["Channel"] for e in events if e.name == "Newchannel"}
    assert "Local/s@caller-sim-00000007;1" in channels
    assert "Local/desk2@human-agents-00000009;2" in channels


def test_mixed_calls_are_deterministic_and_cover_everything() -> None:
    calls = mixed_calls(16)
    # the same calls on every run and every machine (random.Random(seed) is stable)
    assert replace(calls[0], csat=(), session=None) == ScriptedCall(
        "13920246633", "赵六", "handled", 2.8, 11.1, None, "queue", True, "local", "4000", 0.0,
        "userevent")
    assert (calls[0].csat, calls[0].survey) == ((("5", ""),), "bot")
    assert calls[0].session == "conv-33db61b69"
    assert [c.caller_number for c in calls[1:4]] == ["13907784483", "13909375836", "13929962626"]
    assert calls != mixed_calls(16, seed=8)
    assert [replace(c, signal_via="userevent") for c in mixed_calls(16, signal_via="agi")] == calls
    assert {c.outcome for c in calls[:8]} == {"handled", "transferred", "abandoned", "failed"}
    assert {c.via for c in calls[:8]} == {"local", "sip"}
    assert {c.signals for c in calls[:8]} == {True, False}
    transfers = [c for c in calls[:8] if c.outcome == "transferred"]
    assert {(c.handoff, c.human_seconds is None) for c in transfers} == {
        ("queue", False), ("queue", True), ("dial", False), ("dial", True)
    }
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in c.caller_name) for c in calls)
    for c in calls:
        assert 0.5 <= c.ring_seconds <= 4
        assert c.outcome == "abandoned" or 2 <= c.bot_seconds <= 30
        assert c.human_seconds is None or 3 <= c.human_seconds <= 20
    assert [c.start_offset for c in calls] == sorted(c.start_offset for c in calls)
    # session ids on two in three calls whose bot answers and signals, hostile ones included
    sessions = [c.session for c in calls if c.signals and c.outcome != "abandoned"]
    assert [s is not None for s in sessions[:6]] == [True, True, False, True, True, False]
    assert all(c.session is None for c in calls if not c.signals or c.outcome == "abandoned")
    assert any(s and set("&=,%? ") <= set(s) for s in sessions)
    assert any(s and any("\u4e00" <= ch <= "\u9fff" for ch in s) for s in sessions)
    assert any(s and set('"\\()[]') <= set(s) for s in sessions)
    assert all(s is None or expected_session(s) == s for s in sessions)  # all to be kept


@pytest.mark.parametrize("kwargs", [
    {"outcome": "abandoned", "ring_seconds": 1, "bot_seconds": 2},
    {"outcome": "handled", "ring_seconds": 1, "human_seconds": 2},
    {"outcome": "handled", "ring_seconds": -1},
    {"outcome": "nope", "ring_seconds": 1},
    {"outcome": "failed", "ring_seconds": 1, "bot_seconds": 2, "caller_hangs_up": True},
    {"outcome": "abandoned", "ring_seconds": 1, "session": "s-1"},
    {"outcome": "handled", "ring_seconds": 1, "signals": False, "session": "s-1"},
    {"outcome": "handled", "ring_seconds": 1, "session": "s-1\r\nEvent: Hangup"},
])
def test_scripted_call_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ScriptedCall("1", "x", **kwargs)


# ---- AMI protocol -------------------------------------------------------------


async def test_md5_login_ping_and_logoff(pbx: SimulatedPBX) -> None:
    ami = await Ami.connect(pbx.port)
    challenge = await ami.action("Challenge", ("AuthType", "MD5"))
    assert challenge["Response"] == "Success" and challenge["Challenge"].isdigit()
    key = hashlib.md5((challenge["Challenge"] + SECRET).encode()).hexdigest()
    ok = await ami.action("Login", ("Username", "botmeter"), ("AuthType", "MD5"), ("Key", key))
    assert ok == {"Response": "Success", "ActionID": ok["ActionID"],
                  "Message": "Authentication accepted"}
    assert pbx.clients == 1
    pong = await ami.action("Ping")
    assert pong["Ping"] == "Pong"
    assert abs(float(pong["Timestamp"]) - pbx.now()) < 5 * pbx.speed
    bye = await ami.action("Logoff")
    assert bye["Response"] == "Goodbye"
    assert await ami.read() is None
    await eventually(lambda: pbx.clients == 0)
    assert pbx.login_failures == 0


async def test_failed_login_is_refused_and_closed(pbx: SimulatedPBX) -> None:
    ami = await Ami.connect(pbx.port)
    refused = await ami.login(secret="wrong")
    assert refused["Response"] == "Error" and refused["Message"] == "Authentication failed"
    assert await ami.read() is None
    assert pbx.login_failures == 1 and pbx.clients == 0
    other = await Ami.connect(pbx.port)  # wrong user, plain secret
    refused = await other.action("Login", ("Username", "root"), ("Secret", SECRET))
    assert refused["Message"] == "Authentication failed"
    assert pbx.login_failures == 2


async def test_plain_login_and_actions_before_login(pbx: SimulatedPBX) -> None:
    ami = await Ami.connect(pbx.port)
    denied = await ami.action("Ping")
    assert denied["Response"] == "Error" and denied["Message"] == "Authentication Required"
    ami.send(("Action", "Ping"))  # no ActionID: none echoed
    assert await ami.read() == {"Response": "Error", "Message": "Authentication Required"}
    ok = await ami.action("Login", ("Username", "botmeter"), ("Secret", SECRET))
    assert ok["Message"] == "Authentication accepted"
    unknown = await ami.action("Originate", ("Channel", "Local/s@x"))
    assert unknown["Response"] == "Error" and unknown["Message"] == "Invalid/unknown command"
    await ami.close()


async def test_core_show_channels_during_a_call(pbx: SimulatedPBX) -> None:
    ami = await logged_in(pbx)
    call = ScriptedCall("13900020000", "张三", "handled", 1.0, 200.0)
    play = asyncio.create_task(pbx.play([call]))
    while True:  # wait until the bot talks
        event = await ami.read()
        assert event is not None
        if event.get("Event") == "Newexten" and event.get("Application") == "Wait" \
                and event.get("Context") == BOT:
            break
    ami.send(("Action", "CoreShowChannels"), ("ActionID", "cs"))
    listed = []
    while True:
        message = await ami.read()
        assert message is not None
        if message.get("ActionID") != "cs":
            continue
        if message.get("Response"):
            assert message["EventList"] == "start"
            assert message["Message"] == "Channels will follow"
        elif message["Event"] == "CoreShowChannel":
            listed.append(message)
        else:
            assert message["Event"] == "CoreShowChannelsComplete"
            assert message["EventList"] == "Complete" and message["ListItems"] == "2"
            break
    caller = next(c for c in listed if c["Channel"].endswith(";1"))
    assert caller["Context"] == BOT and caller["Application"] == "Wait"
    assert caller["CallerIDName"] == "张三" and caller["ChannelStateDesc"] == "Up"
    assert caller["Duration"].count(":") == 2 and caller["BridgeId"] == ""
    assert {c["Linkedid"] for c in listed} == {caller["Uniqueid"]}
    await pbx.stop()  # ends the call's playback early
    await asyncio.wait_for(play, 5)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_outcome_over_the_wire(pbx: SimulatedPBX, name: str) -> None:
    ami = await logged_in(pbx)
    call = CASES[name]
    await pbx.play([call])
    events = await ami.events_until_ping()
    calls = by_call(events)
    assert len(calls) == 1
    (linkedid, mine), = calls.items()
    assert record_of(mine) == expected(call)
    assert float(linkedid.split(".")[0]) >= int(EPOCH)
    for event in events:
        assert list(event)[:3] == ["Event", "Privilege", "Timestamp"]
        assert event["Privilege"] == PRIVILEGES.get(event["Event"], "call,all")
    stamps = [float(e["Timestamp"]) for e in events]
    assert stamps == sorted(stamps)
    await ami.close()


async def test_many_calls_with_rate_and_concurrency(pbx: SimulatedPBX) -> None:
    ami = await logged_in(pbx)
    other = await logged_in(pbx)  # every client gets every event
    calls = mixed_calls(16)
    await pbx.play(calls, rate=1.0, concurrency=4)
    events = await ami.events_until_ping()
    assert len(await other.events_until_ping()) == len(events)
    records = [record_of(call_events_) for call_events_ in by_call(events).values()]
    assert len(records) == 16
    by_number = {r["caller_number"]: r for r in records}
    for call in calls:
        assert by_number[call.caller_number] == expected(call)
    uniqueids = [e["Uniqueid"] for e in events if e["Event"] == "Newchannel"]
    channels = [e["Channel"] for e in events if e["Event"] == "Newchannel"]
    assert len(set(uniqueids)) == len(uniqueids) and len(set(channels)) == len(channels)
    # never more than 4 calls in progress; rate 1/s spaces the starts
    spans = sorted((float(v[0]["Timestamp"]), float(v[-1]["Timestamp"]))
                   for v in by_call(events).values())
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 4
    starts = [s for s, _ in spans]
    assert all(b - a >= 1.0 - 1e-6 for a, b in zip(starts, starts[1:], strict=False))


async def test_start_offsets_and_virtual_timestamps(pbx: SimulatedPBX) -> None:
    ami = await logged_in(pbx)
    first = ScriptedCall("13900030001", "A", "handled", 1.0, 2.0, start_offset=0.0)
    second = ScriptedCall("13900030002", "B", "abandoned", 1.0, start_offset=30.0)
    begin = pbx.now()
    await pbx.play([second, first])
    events = await ami.events_until_ping()
    offered = {record_of(v)["caller_number"]: float(v[0]["Timestamp"])
               for v in by_call(events).values()}
    assert offered["13900030002"] - offered["13900030001"] == pytest.approx(30.0, abs=1e-6)
    assert begin - 1 <= offered["13900030001"] <= begin + 1
    assert EPOCH <= begin < EPOCH + 60 * pbx.speed


async def test_drop_clients_closes_connections_and_calls_go_on(pbx: SimulatedPBX) -> None:
    ami = await logged_in(pbx)
    call = ScriptedCall("13900040000", "李四", "handled", 1.0, 200.0)  # 0.5 s wall
    play = asyncio.create_task(pbx.play([call]))
    first = await ami.read()
    assert first is not None and first["Event"] == "Newchannel"
    pbx.drop_clients()
    assert pbx.clients == 0
    while await ami.read() is not None:
        pass  # whatever was already on the wire, then the connection is gone
    again = await logged_in(pbx)
    assert pbx.clients == 1
    await play
    events = await again.events_until_ping()
    hangups = [e for e in events if e["Event"] == "Hangup"]
    assert hangups and {e["Linkedid"] for e in hangups} == {first["Linkedid"]}
    assert not any(e["Event"] == "Newchannel" for e in events)  # not replayed
    await again.close()


async def test_garbage_and_huge_lines_do_not_hurt_others(pbx: SimulatedPBX) -> None:
    good = await logged_in(pbx)
    rude = await Ami.connect(pbx.port)
    rude.writer.write(b"\x00\xff garbage without colon\r\n: \r\nAction\r\n\r\n")
    assert (await rude.read())["Message"] == "Missing action in request"
    rude.writer.write(b"Action: Ping\r\nX: " + b"y" * (70 * 1024) + b"\r\n\r\n")
    assert await rude.read() is None  # closed for the huge line
    many = b"".join(b"H%d: v\r\n" % n for n in range(1000))
    noisy = await Ami.connect(pbx.port)
    noisy.writer.write(b"Action: Ping\r\n" + many + b"\r\n")
    assert await noisy.read() is None  # closed for too many headers
    quitter = await Ami.connect(pbx.port)
    quitter.writer.transport.abort()
    half = await Ami.connect(pbx.port)
    half.writer.write(b"Action: Chall")
    await half.close()
    assert (await good.action("Ping"))["Ping"] == "Pong"
    await pbx.play([ScriptedCall("13900050000", "张", "abandoned", 0.5)])
    assert any(e["Event"] == "Hangup" for e in await good.events_until_ping())
    assert pbx.clients == 1


async def test_events_off_and_shutdown(pbx: SimulatedPBX) -> None:
    quiet = await Ami.connect(pbx.port)
    assert (await quiet.login(SECRET, ("Events", "off")))["Response"] == "Success"
    loud = await logged_in(pbx)
    await pbx.play([ScriptedCall("13900060000", "x", "abandoned", 0.5)])
    assert await quiet.events_until_ping() == []
    assert (await quiet.action("Events", ("EventMask", "on")))["Events"] == "On"
    assert len(await loud.events_until_ping()) > 5
    await pbx.stop()
    for ami in (quiet, loud):
        shutdown = await ami.read()
        assert shutdown is not None and shutdown["Event"] == "Shutdown"
        assert shutdown["Privilege"] == "system,all" and "Timestamp" in shutdown
        assert await ami.read() is None


async def test_panoramisk_client_can_log_in_and_listen(pbx: SimulatedPBX) -> None:
    panoramisk = pytest.importorskip("panoramisk")
    manager = panoramisk.Manager(host="127.0.0.1", port=pbx.port, username="botmeter",
                                 secret=SECRET, encoding="utf-8", ping_delay=60)
    seen: list = []
    manager.register_event("*", lambda _, message: seen.append(message))
    await manager.connect()
    try:
        await eventually(lambda: pbx.clients == 1, timeout=2)
        await pbx.play([ScriptedCall("13900070000", "张三", "handled", 1.0, 2.0)])
        listing = await manager.send_action({"Action": "CoreShowChannels"})
        assert listing[-1].Event == "CoreShowChannelsComplete"
        assert any(m.Event == "NewCallerid" and m.CallerIDName == "张三" for m in seen)
        assert seen[-1].Event == "Hangup"
    finally:
        manager.close()
