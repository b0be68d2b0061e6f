"""Signals with control characters or odd digits: refused with a log line, over FastAGI and
UserEvent, and the call's record is unharmed."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from urllib.parse import quote

import pytest
from structlog.testing import capture_logs

from botmeter.bot.agi_script import parse_args
from botmeter.bot.fastagi import FastAgiServer
from botmeter.demo import demo_config
from botmeter.service import AgentService
from botmeter.storage.store import CallStore
from botmeter.tracking.signals import SignalError, Usage, parse_signal

from .conftest import LAB_CAPTURE
from .fake_ami import start_fake_ami
from .helpers import eventually
from .test_fastagi import agi_session, env_bytes

#: (field, value): each must be refused, whichever way it comes
BAD = [
    ("Module", "a\r\nsr"),
    ("Module", "asr\x1b[2J"),
    ("Module", "语音"),
    ("Unit", "sec\ronds"),
    ("Unit", "sec onds"),
    ("Quantity", "1_000"),
    ("Quantity", "１２"),
    ("Quantity", "١٢"),
    ("Quantity", "1e3"),
    ("Quantity", "+5"),
    ("Quantity", "1.2.3"),
    ("Quantity", "NaN"),
]
GOOD = {"Module": "asr", "Quantity": "2", "Unit": "seconds"}

#: the lab call of 13900010002: linkedid, and the frame after which bad signals are slipped in
LAB_LINKEDID = "1795706738.4"


def _usage(field: str, value: str) -> dict[str, str]:
    return {**GOOD, field: value}


@pytest.mark.parametrize(("field", "value"), BAD)
def test_parse_signal_refuses_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(SignalError, match=field):
        parse_signal("usage", _usage(field, value))


@pytest.mark.parametrize(("quantity", "expected"), [
    ("12", "12"), ("12.5", "12.5"), ("0.000001", "0.000001"), (".5", "0.5"), ("7.", "7"),
    ("007", "7"), (" 3 ", "3"),
])
def test_plain_ascii_quantities_still_pass(quantity: str, expected: str) -> None:
    usage = parse_signal("usage", _usage("Quantity", quantity))
    assert isinstance(usage, Usage) and usage.quantity == Decimal(expected)


def test_names_allow_the_documented_characters_only() -> None:
    usage = parse_signal("usage", {"Module": "ASR.v2:zh_CN-x", "Quantity": "1", "Unit": "s"})
    assert isinstance(usage, Usage) and usage.module == "asr.v2:zh_cn-x"
    with pytest.raises(SignalError, match="Module"):  # the Kelvin sign lowercases to ASCII "k"
        parse_signal("usage", {"Module": "\u212asr", "Quantity": "1"})
    with pytest.raises(SignalError, match="Module"):
        parse_signal("usage", {"Module": "m" * 65, "Quantity": "1"})


def test_the_agi_script_refuses_the_same_values() -> None:
    name, fields, _ = parse_args(["usage", "module=a\rsr", "quantity=1"])
    with pytest.raises(SignalError, match="Module"):
        parse_signal(name, fields)


def test_outcome_text_loses_control_characters_like_the_agi_relay_does() -> None:
    meaning = parse_signal("outcome", {"Outcome": "transferred", "Target": "sales\r\nq2"})
    assert meaning.target == "sales  q2"  # type: ignore[union-attr]


async def test_fastagi_refuses_each_bad_value_with_one_log_line() -> None:
    signals: list = []
    async with FastAgiServer(port=0, on_signal=signals.append) as server:
        for field, value in BAD:
            query = "&".join(f"{k.lower()}={quote(v)}" for k, v in _usage(field, value).items())
            with capture_logs() as logs:
                commands = await agi_session(server.port, env_bytes(f"botmeter/usage?{query}"))
            assert commands[0].startswith('VERBOSE "botmeter: ') and field in commands[0]
            assert commands[-1] == "SET VARIABLE BOTMETER_STATUS error"
            refused = [e for e in logs if e["event"] == "fastagi bad signal refused"]
            assert len(refused) == 1 and field in refused[0]["reason"], (field, value, logs)
    assert signals == []


def _user_event(linkedid: str, fields: dict[str, str]) -> bytes:
    head = ("Event: UserEvent\r\nPrivilege: user,all\r\nTimestamp: 1795706741.8\r\n"
            f"Uniqueid: {linkedid}\r\nLinkedid: {linkedid}\r\nUserEvent: BotMeter\r\n"
            "Signal: usage\r\n")
    return (head + "\r\n".join(f"{k}: {v}" for k, v in fields.items())).encode()


def _lab_with_bad_user_events(bad: list[tuple[str, str]]) -> bytes:
    """The lab capture with one bad UserEvent per entry of `bad` right after the first real
    usage signal of 13900010002's call, and the same again for a linkedid never seen."""
    raw = LAB_CAPTURE.read_bytes()
    frames = raw[raw.index(b"Event: "):].split(b"\r\n\r\n")
    at = next(i for i, f in enumerate(frames) if f.startswith(b"Event: UserEvent")
              and f"Linkedid: {LAB_LINKEDID}".encode() in f)
    # AMI lines end at LF: a value can carry a CR but not an LF
    injected = [_user_event(lid, _usage(field, value.replace("\n", "")))
                for lid in (LAB_LINKEDID, "4242.1") for field, value in bad]
    return b"\r\n\r\n".join(frames[:at + 1] + injected + frames[at + 1:])


async def test_bad_values_over_userevent_and_fastagi_leave_every_record_unharmed(tmp_path,
                                                                               lab_expected):
    go = asyncio.Event()

    async def capture(writer: asyncio.StreamWriter) -> None:
        await go.wait()
        writer.write(_lab_with_bad_user_events(BAD))

    server, port, _ = await start_fake_ami(after_snapshot=capture)
    db = tmp_path / "bad-signals.db"
    service = AgentService(demo_config(port, "s", db), store_path=db)
    with capture_logs() as logs:
        running = asyncio.create_task(service.run())
        await asyncio.wait_for(service.client.connected.wait(), 5)
        assert service.fastagi is not None
        for field, value in BAD:  # the bot of the same call signals over FastAGI too
            query = "&".join(f"{k.lower()}={quote(v)}" for k, v in _usage(field, value).items())
            await agi_session(service.fastagi.port, env_bytes(f"botmeter/usage?{query}",
                                                              uniqueid=LAB_LINKEDID))
        go.set()
        await eventually(lambda: service.writer.saved >= 13, timeout=20)
        service.stop()
        await running
    server.close()
    records = {r.caller_number: r for r in CallStore(db).calls()}
    assert {n: r.outcome for n, r in records.items()} == {
        e["caller_number"]: e["outcome"] for e in lab_expected}
    for e in lab_expected:
        assert {m: float(u.quantity) for m, u in records[e["caller_number"]].modules.items()} == (
            e["modules"]), e["caller_number"]
    assert {u.unit for r in records.values() for u in r.modules.values()} <= {"seconds", "requests"}
    assert service.fastagi.stats.invalid == len(BAD) and service.fastagi.stats.signals == 0
    fastagi = [e for e in logs if e["event"] == "fastagi bad signal refused"]
    assert [e["reason"].split()[2] for e in fastagi] == [field for field, _ in BAD]
    ignored = [e for e in logs if e["event"] == "malformed bot signal ignored"]
    assert [(e["linkedid"], e["reason"].split()[2]) for e in ignored] == [
        (lid, field) for lid in (LAB_LINKEDID, "4242.1") for field, _ in BAD]
    assert service.recorder.tracker.pending_signals == 0  # nothing bad was held for 4242.1
