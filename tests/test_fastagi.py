"""FastAGI server over real loopback sockets: a fake Asterisk, and hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import pytest
from structlog.testing import capture_logs

from botmeter.bot.fastagi import FastAgiServer, Reply, parse_reply, parse_request
from botmeter.bot.session import AgiSession
from botmeter.config import ConfigError, load_config
from botmeter.pbx.events import BotSignal
from botmeter.tracking.signals import SignalError

UNIQUEID = "1795706738.7"
LINKEDID = "1795706738.4"
NOW = 1795706800.123456

Responder = Callable[[str], bytes | None]


def env_bytes(script: str, *, uniqueid: str = UNIQUEID, extra: dict[str, str] | None = None,
              network_script: bool = True) -> bytes:
    """The AGI environment Asterisk sends first (as Asterisk 20 does, plus `extra`)."""
    env = {
        "agi_network": "yes",
        "agi_request": f"agi://127.0.0.1:4573/{script}",
        "agi_channel": "PJSIP/bot-00000012",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": uniqueid,
        "agi_version": "20.5.0",
        "agi_callerid": "0612345678",
        "agi_calleridname": "Alice",
        "agi_context": "voicebot",
        "agi_extension": "s",
        "agi_priority": "4",
        "agi_threadid": "140213411874560",
    }
    if network_script:
        env["agi_network_script"] = script
    env.update(extra or {})
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


def asterisk(linkedid: str = LINKEDID) -> Responder:
    """Answers like Asterisk: the linkedid for GET VARIABLE, `200 result=1` otherwise."""

    def respond(command: str) -> bytes:
        if command == "GET VARIABLE CHANNEL(linkedid)":
            return f"200 result=1 ({linkedid})\n".encode()
        return b"200 result=1\n"

    return respond


async def agi_session(port: int, head: bytes, respond: Responder | None = None,
                      timeout: float = 5.0) -> list[str]:
    """A fake Asterisk: send `head`, answer each command with `respond` (None: close), return the
    commands received until the server closes."""
    respond = respond or asterisk()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    commands: list[str] = []
    try:
        writer.write(head)
        async with asyncio.timeout(timeout):
            while line := await reader.readline():
                command = line.decode().rstrip("\n")
                commands.append(command)
                answer = respond(command)
                if answer is None:
                    break
                writer.write(answer)
    finally:
        writer.close()
    return commands


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True when the server closes (EOF or reset) within `timeout`, having sent nothing."""
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(1 << 20) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


async def settled(server: FastAgiServer, timeout: float = 3.0) -> None:
    """Wait until no session is in progress."""
    async with asyncio.timeout(timeout):
        while server.stats.active:
            await asyncio.sleep(0.01)


@pytest.fixture
def signals() -> list[BotSignal]:
    return []


@pytest.fixture
async def server(signals: list[BotSignal]) -> AsyncIterator[FastAgiServer]:
    srv = FastAgiServer(port=0, on_signal=signals.append, clock=lambda: NOW,
                        header_timeout=0.3, command_timeout=0.3)
    await srv.start()
    yield srv
    await srv.stop()


# -- the good path ------------------------------------------------------------------------------


async def test_usage_signal_delivered(server: FastAgiServer, signals: list[BotSignal]) -> None:
    commands = await agi_session(
        server.port, env_bytes("botmeter/usage?module=asr&quantity=12&unit=seconds"))
    assert commands == ["GET VARIABLE CHANNEL(linkedid)", "SET VARIABLE BOTMETER_STATUS ok"]
    assert signals == [BotSignal(round(NOW, 3), LINKEDID, UNIQUEID, "usage",
                                 {"Module": "asr", "Quantity": "12", "Unit": "seconds"},
                                 via="fastagi")]
    await settled(server)
    assert server.counters() == {"sessions": 1, "signals": 1, "refused": 0, "errors": 0,
                                 "invalid": 0, "active": 0}


@pytest.mark.parametrize(("script", "signal", "fields"), [
    ("botmeter/start", "start", {}),
    ("botmeter/end", "end", {}),
    ("BotMeter/END/", "end", {}),
    ("botmeter/outcome?outcome=transferred&target=" + quote("sales queue, 2nd") +
     "&reason=" + quote("asked for a human (twice)"),
     "outcome", {"Outcome": "transferred", "Target": "sales queue, 2nd",
                 "Reason": "asked for a human (twice)"}),
    ("botmeter/usage?MODULE=tts&Quantity=250.5&UNIT=characters&colour=blue",
     "usage", {"Module": "tts", "Quantity": "250.5", "Unit": "characters"}),
])
async def test_each_signal(server: FastAgiServer, signals: list[BotSignal], script: str,
                           signal: str, fields: dict[str, str]) -> None:
    await agi_session(server.port, env_bytes(script))
    assert [(s.signal, dict(s.fields)) for s in signals] == [(signal, fields)]


async def test_fields_from_agi_args(server: FastAgiServer, signals: list[BotSignal]) -> None:
    """`AGI(agi://host/botmeter/usage,module=nlu,quantity=1)` works too."""
    head = env_bytes("botmeter/usage?unit=requests",
                     extra={"agi_arg_1": "module=nlu", "agi_arg_2": "quantity=1", "agi_arg_3": "x"})
    await agi_session(server.port, head)
    assert dict(signals[0].fields) == {"Module": "nlu", "Quantity": "1", "Unit": "requests"}


async def test_route_from_agi_request(server: FastAgiServer, signals: list[BotSignal]) -> None:
    await agi_session(server.port, env_bytes("botmeter/start", network_script=False))
    assert [s.signal for s in signals] == ["start"]


async def test_linkedid_not_set_falls_back_to_uniqueid(server: FastAgiServer,
                                                       signals: list[BotSignal]) -> None:
    def respond(command: str) -> bytes:
        return b"200 result=0\n"

    await agi_session(server.port, env_bytes("botmeter/start"), respond)
    assert (signals[0].linkedid, signals[0].uniqueid) == (UNIQUEID, UNIQUEID)


async def test_async_on_signal(signals: list[BotSignal]) -> None:
    async def deliver(sig: BotSignal) -> None:
        await asyncio.sleep(0)
        signals.append(sig)

    async with FastAgiServer(port=0, on_signal=deliver) as srv:
        await agi_session(srv.port, env_bytes("botmeter/start"))
    assert len(signals) == 1


async def test_async_on_signal_failure_and_stop_while_pending() -> None:
    async def broken(sig: BotSignal) -> None:
        raise RuntimeError("store down")

    async with FastAgiServer(port=0, on_signal=broken) as srv:
        await agi_session(srv.port, env_bytes("botmeter/start"))
        await settled(srv)
        assert (srv.stats.signals, srv.stats.errors) == (0, 1)

    never = asyncio.Event()

    async def stuck(sig: BotSignal) -> None:
        await never.wait()

    srv = FastAgiServer(port=0, on_signal=stuck)
    await srv.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(env_bytes("botmeter/start") + b"HANGUP\n" * 5000)
    assert await reader.readline() == b"GET VARIABLE CHANNEL(linkedid)\n"
    writer.write(b"200 result=1 (1.1)\n")
    await asyncio.sleep(0.05)
    assert srv.stats.active == 1
    async with asyncio.timeout(2):
        await srv.stop()
    assert await closed_by_server(reader)
    writer.close()
    assert srv.counters() == {"sessions": 1, "signals": 0, "refused": 0, "errors": 1,
                              "invalid": 0, "active": 0}


async def test_crlf_and_latin1_environment(server: FastAgiServer, signals: list[BotSignal]) -> None:
    """A caller name in Latin-1 (not UTF-8) must not cost the signal."""
    head = env_bytes("botmeter/end", extra={"agi_calleridname": "Jos\xe9"}).replace(b"\n", b"\r\n")
    head = head.replace("Jos\xe9".encode(), b"Jos\xe9")
    await agi_session(server.port, head)
    assert [s.signal for s in signals] == ["end"]


@pytest.mark.parametrize("crlf", [False, True])
async def test_environment_in_small_pieces(server: FastAgiServer, signals: list[BotSignal],
                                           crlf: bool) -> None:
    """The blank line may straddle TCP segments."""
    head = env_bytes("botmeter/start")
    if crlf:
        head = head.replace(b"\n", b"\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for i in range(0, len(head), 3):
        writer.write(head[i:i + 3])
        await writer.drain()
        await asyncio.sleep(0.0005)
    assert await reader.readline() == b"GET VARIABLE CHANNEL(linkedid)\n"
    writer.write(b"200 result=1 (1795706738.4)\n")
    assert await reader.readline() == b"SET VARIABLE BOTMETER_STATUS ok\n"
    writer.write(b"200 result=1\n")
    assert await reader.read() == b""
    writer.close()
    assert [s.linkedid for s in signals] == [LINKEDID]


# -- Asterisk's awkward replies -------------------------------------------------------------------


async def test_hangup_lines_before_reply(server: FastAgiServer, signals: list[BotSignal]) -> None:
    def respond(command: str) -> bytes:
        if command.startswith("GET VARIABLE"):
            return b"HANGUP\nHANGUP\n100 result=0 Trying...\n200 result=1 (1795706738.4)\n"
        return b"HANGUP\n200 result=1\n"

    commands = await agi_session(server.port, env_bytes("botmeter/end"), respond)
    assert commands == ["GET VARIABLE CHANNEL(linkedid)", "SET VARIABLE BOTMETER_STATUS ok"]
    assert [s.linkedid for s in signals] == [LINKEDID]


async def test_dead_channel_511(server: FastAgiServer, signals: list[BotSignal]) -> None:
    def respond(command: str) -> bytes:
        return b"511 Command Not Permitted on a dead channel or intercept routine\n"

    commands = await agi_session(server.port, env_bytes("botmeter/end"), respond)
    assert commands == ["GET VARIABLE CHANNEL(linkedid)", "SET VARIABLE BOTMETER_STATUS ok"]
    assert [s.linkedid for s in signals] == [UNIQUEID]
    await settled(server)
    assert server.stats.signals == 1


async def test_multiline_520_usage_reply(server: FastAgiServer, signals: list[BotSignal]) -> None:
    usage = (b"520-Invalid command syntax.  Proper usage follows:\n"
             b"Usage: GET VARIABLE <variablename>\n"
             b" Returns 0 if <variablename> is not set.\n"
             b"520 End of proper usage.\n")

    def respond(command: str) -> bytes:
        return usage if command.startswith("GET") else b"200 result=1\n"

    commands = await agi_session(server.port, env_bytes("botmeter/start"), respond)
    assert commands == ["GET VARIABLE CHANNEL(linkedid)", "SET VARIABLE BOTMETER_STATUS ok"]
    assert signals[0].linkedid == UNIQUEID


async def test_peer_closes_after_environment(server: FastAgiServer,
                                             signals: list[BotSignal]) -> None:
    """The environment is a complete request: the signal counts, with the uniqueid as linkedid."""
    await agi_session(server.port, env_bytes("botmeter/start"), lambda command: None)
    await settled(server)
    assert [s.linkedid for s in signals] == [UNIQUEID]
    assert server.stats.signals == 1


async def test_peer_never_answers(server: FastAgiServer, signals: list[BotSignal]) -> None:
    """No answer to GET VARIABLE: command_timeout, then the signal goes with the uniqueid."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(env_bytes("botmeter/start"))
    start = time.monotonic()
    assert await reader.readline() == b"GET VARIABLE CHANNEL(linkedid)\n"
    assert await reader.readline() == b"SET VARIABLE BOTMETER_STATUS ok\n"
    assert await reader.read() == b""
    assert time.monotonic() - start < 2.0
    writer.close()
    assert [s.linkedid for s in signals] == [UNIQUEID]


async def test_endless_hangup_lines_are_bounded(server: FastAgiServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(env_bytes("botmeter/start") + b"HANGUP\n" * 300)
    async with asyncio.timeout(3):
        rest = await reader.read()
    # 100 lines without a reply: the signal goes with the uniqueid; the next 100 end the session
    assert rest == b"GET VARIABLE CHANNEL(linkedid)\nSET VARIABLE BOTMETER_STATUS ok\n"
    writer.close()
    await settled(server)


async def test_on_signal_failure_is_contained(signals: list[BotSignal]) -> None:
    def broken(sig: BotSignal) -> None:
        raise RuntimeError("store down")

    async with FastAgiServer(port=0, on_signal=broken) as srv:
        await agi_session(srv.port, env_bytes("botmeter/start"))
        await settled(srv)
        assert (srv.stats.signals, srv.stats.errors) == (0, 1)


@pytest.mark.parametrize("step", ["receive_data", "timed_out", "receive_eof"])
async def test_a_bug_in_the_session_ends_that_session_only(server: FastAgiServer,
                                                           signals: list[BotSignal],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           step: str) -> None:
    def broken(*args: object) -> list[object]:
        raise RuntimeError("bug")

    monkeypatch.setattr(AgiSession, step, broken)
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        if step == "receive_eof":
            writer.write_eof()
        elif step == "receive_data":
            writer.write(env_bytes("botmeter/start"))
        assert await closed_by_server(reader)  # timed_out: after header_timeout (0.3 s)
        writer.close()
        await settled(server)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["fastagi session failed"]
    assert server.counters() == {"sessions": 1, "signals": 0, "refused": 0, "errors": 1,
                                 "invalid": 0, "active": 0}
    monkeypatch.undo()
    await agi_session(server.port, env_bytes("botmeter/start"))
    assert [s.signal for s in signals] == ["start"]


# -- bad requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "reason"), [
    ("other/usage?module=asr&quantity=1", "unknown route"),
    ("botmeter", "unknown route"),
    ("botmeter/usage/extra", "unknown route"),
    ("botmeter/fly", "unknown signal 'fly'"),
    ("botmeter/usage?module=asr&quantity=-1&unit=seconds", "must be a number >= 0"),
    ("botmeter/usage?module=asr&quantity=twelve", "is not a decimal number"),
    ("botmeter/usage?module=asr", "is not a decimal number"),
    ("botmeter/usage?quantity=3", "usage signal without Module"),
    ("botmeter/usage?module=asr&qty=3", "(ignored: qty)"),
    ("botmeter/outcome?outcome=maybe", "Outcome 'maybe' is not one of"),
    ("botmeter/outcome", "Outcome '' is not one of"),
    ("botmeter/start?" + "&".join(f"k{i}=v" for i in range(40)), "more than 32 fields"),
])
async def test_bad_request_refused_with_reason(server: FastAgiServer, signals: list[BotSignal],
                                               script: str, reason: str) -> None:
    commands = await agi_session(server.port, env_bytes(script))
    assert len(commands) == 2
    assert commands[0].startswith('VERBOSE "botmeter: ') and commands[0].endswith('" 1')
    assert reason in commands[0]
    assert commands[1] == "SET VARIABLE BOTMETER_STATUS error"
    assert signals == []
    await settled(server)
    assert server.counters() == {"sessions": 1, "signals": 0, "refused": 0, "errors": 1,
                                 "invalid": 1, "active": 0}


async def test_refusals_are_logged_with_reason(server: FastAgiServer) -> None:
    with capture_logs() as logs:
        await agi_session(server.port, env_bytes("botmeter/usage?module=asr&quantity=-2"))
        async with FastAgiServer(port=0, allow=["127.0.0.2"]) as strict:
            reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
            assert await closed_by_server(reader)
            writer.close()
        await settled(server)
    refused = [e for e in logs if e["event"] == "fastagi bad signal refused"]
    assert len(refused) == 1 and "Quantity '-2' must be a number >= 0" in refused[0]["reason"]
    assert refused[0]["uniqueid"] == UNIQUEID and refused[0]["log_level"] == "warning"
    assert any(e["event"] == "fastagi peer refused: not in allow" and e["peer"] == "127.0.0.1"
               for e in logs)


async def test_no_environment_route(server: FastAgiServer, signals: list[BotSignal]) -> None:
    commands = await agi_session(server.port, b"agi_network: yes\n\n")
    assert commands == ['VERBOSE "botmeter: no agi_network_script in the AGI environment" 1',
                        "SET VARIABLE BOTMETER_STATUS error"]
    assert signals == []


async def test_non_utf8_garbage(server: FastAgiServer, signals: list[BotSignal]) -> None:
    commands = await agi_session(server.port, b"\xff\xfe\x00garbage\x80\x81: \xc3\x28\n"
                                              b"agi_network_script: \xffbotmeter/\xfe\n\n")
    assert "unknown route" in commands[0]
    assert signals == []
    await settled(server)
    assert server.stats.invalid == 1


# -- hostile peers --------------------------------------------------------------------------------


async def test_connect_and_close_at_once(server: FastAgiServer, signals: list[BotSignal]) -> None:
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()
    await asyncio.sleep(0.05)
    await settled(server)
    assert server.counters() == {"sessions": 20, "signals": 0, "refused": 0, "errors": 20,
                                 "invalid": 0, "active": 0}
    await agi_session(server.port, env_bytes("botmeter/start"))
    assert len(signals) == 1


async def test_half_environment_then_close(server: FastAgiServer, signals: list[BotSignal]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(env_bytes("botmeter/start")[:60])
    writer.write_eof()
    assert await closed_by_server(reader)
    writer.close()
    await settled(server)
    assert (server.stats.errors, signals) == (1, [])


async def test_silent_peer_dropped_after_header_timeout(server: FastAgiServer) -> None:
    start = time.monotonic()  # before connecting: the server's clock starts at its accept
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await closed_by_server(reader, timeout=3.0)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 1.5  # header_timeout is 0.3 s
    writer.close()
    await settled(server)
    assert server.stats.errors == 1


async def test_slow_drip_peer_dropped(server: FastAgiServer) -> None:
    """header_timeout bounds the whole environment, not each line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def drip() -> None:
        with contextlib.suppress(OSError):
            for _ in range(40):
                writer.write(b"agi_x: y\n")
                await asyncio.sleep(0.05)

    dripping = asyncio.create_task(drip())
    start = time.monotonic()
    assert await closed_by_server(reader, timeout=3.0)
    assert time.monotonic() - start < 1.0
    dripping.cancel()
    writer.close()


@pytest.mark.parametrize("payload", [
    b"agi_network_script: " + b"x" * (1 << 20),  # 1 MB line, no newline
    b"agi_x: yyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n" * 32768,  # 1 MB of lines, no blank line
])
async def test_huge_environment_dropped(server: FastAgiServer, signals: list[BotSignal],
                                        payload: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(payload)
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(0.5):
            await writer.drain()  # the server reads max_header_bytes at most, then closes
    assert await closed_by_server(reader)
    writer.close()
    await settled(server)
    assert (server.stats.errors, server.stats.invalid, signals) == (1, 0, [])


async def test_peer_outside_allow_refused(signals: list[BotSignal]) -> None:
    async with FastAgiServer(host="127.0.0.1", port=0, allow=["127.0.0.2"],
                             on_signal=signals.append) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(env_bytes("botmeter/start"))
        assert await closed_by_server(reader)
        writer.close()
        assert srv.counters() == {"sessions": 0, "signals": 0, "refused": 1, "errors": 0,
                                  "invalid": 0, "active": 0}
    assert signals == []


async def test_allow_cidr(signals: list[BotSignal]) -> None:
    async with FastAgiServer(port=0, allow=["10.0.0.0/8", "127.0.0.0/8"],
                             on_signal=signals.append) as srv:
        await agi_session(srv.port, env_bytes("botmeter/start"))
    assert len(signals) == 1


def test_allow_checks() -> None:
    srv = FastAgiServer(allow=["10.0.0.0/8", "192.0.2.7", "::1"])
    assert srv.allowed("10.20.30.40")
    assert srv.allowed("192.0.2.7")
    assert not srv.allowed("192.0.2.8")
    assert srv.allowed("::1")
    assert srv.allowed("::ffff:10.1.2.3")
    assert not srv.allowed("not-an-ip")
    with pytest.raises(ValueError):
        FastAgiServer(allow=["localhost"])
    with pytest.raises(ValueError):  # as the config: a block is written without host bits
        FastAgiServer(allow=["10.1.2.3/8"])


async def test_the_server_takes_the_networks_the_config_parsed(write_config,
                                                               signals: list[BotSignal]) -> None:
    path = write_config(extra="")
    text = path.read_text()
    assert 'listen = "127.0.0.1:0"' in text
    path.write_text(text.replace('listen = "127.0.0.1:0"',
                                 'listen = "127.0.0.1:0"\nallow = [" 127.0.0.0/8 ", "192.0.2.7", '
                                 '"2001:db8::/32"]'))
    allow = load_config(path).agi.allow
    assert allow == [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32"),
                     ipaddress.ip_network("2001:db8::/32")]
    async with FastAgiServer(port=0, allow=allow, on_signal=signals.append) as srv:
        assert srv.allow == tuple(allow)
        await agi_session(srv.port, env_bytes("botmeter/start"))
    assert [s.signal for s in signals] == ["start"]


@pytest.mark.parametrize(("allow", "reason"), [
    ('["10.0.0.300"]', "'10.0.0.300' is not an IP address or network (CIDR)"),
    ('["127.0.0.1", "localhost"]', "'localhost' is not an IP address or network (CIDR)"),
    ('["10.1.2.3/8"]', "'10.1.2.3/8' has host bits set: write '10.0.0.0/8'"),
    ('["10.0.0.0/33"]', "'10.0.0.0/33' is not an IP address or network (CIDR)"),
    ("[167772160]", "must be a list of IP addresses or CIDR blocks"),
    ('"127.0.0.1"', "must be a list of IP addresses or CIDR blocks"),
])
def test_a_bad_allow_entry_is_a_config_error(write_config, allow: str, reason: str) -> None:
    path = write_config()
    path.write_text(path.read_text().replace('listen = "127.0.0.1:0"',
                                             f'listen = "127.0.0.1:0"\nallow = {allow}'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.path, info.value.key) == (str(path), "agi.allow")
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(f"{path}: agi.allow: {reason}")
    assert "\n" not in str(info.value)


async def test_max_sessions(signals: list[BotSignal]) -> None:
    async with FastAgiServer(port=0, max_sessions=3, header_timeout=5,
                             on_signal=signals.append) as srv:
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(3)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await closed_by_server(reader)
        writer.close()
        assert (srv.stats.active, srv.stats.refused) == (3, 1)
        for _, w in idle:
            w.close()
        await settled(srv)
        await agi_session(srv.port, env_bytes("botmeter/start"))
        assert srv.counters() == {"sessions": 4, "signals": 1, "refused": 1, "errors": 3,
                                  "invalid": 0, "active": 0}


async def test_thousand_sessions_at_once(server: FastAgiServer, signals: list[BotSignal]) -> None:
    """1,000 concurrent peers, a third of them rude; then a polite one is still served."""

    async def rude_close() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()

    async def rude_garbage() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\xff\x00junk\n\n")
        await reader.read()
        writer.close()

    jobs = []
    for i in range(1000):
        if i % 6 == 0:
            jobs.append(rude_close())
        elif i % 6 == 1:
            jobs.append(rude_garbage())
        else:
            jobs.append(agi_session(server.port, env_bytes(
                f"botmeter/usage?module=asr&quantity={i}", uniqueid=f"1795706738.{i}")))
    await asyncio.gather(*jobs)
    await asyncio.sleep(0.05)
    await settled(server)
    good = sum(1 for i in range(1000) if i % 6 > 1)
    assert len(signals) == good
    assert sorted(int(s.fields["Quantity"]) for s in signals) == [i for i in range(1000) if i % 6 > 1]
    assert server.counters() == {"sessions": 1000, "signals": good, "refused": 0,
                                 "errors": 1000 - good, "invalid": 167, "active": 0}
    await agi_session(server.port, env_bytes("botmeter/end"))
    assert signals[-1].signal == "end"


async def test_idle_connections_cost_no_cpu() -> None:
    async with FastAgiServer(port=0, header_timeout=30) as srv:
        conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(100)]
        await asyncio.sleep(0.1)
        assert srv.stats.active == 100
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        print(f"\n100 idle connections: {cpu * 1000:.1f} ms CPU over {wall:.2f} s")
        assert cpu < 0.2
        for _, writer in conns:
            writer.close()


async def test_stop_ends_sessions_in_progress() -> None:
    srv = FastAgiServer(port=0, header_timeout=30)
    await srv.start()
    port = srv.port
    assert port != 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    async with asyncio.timeout(2):
        await srv.stop()
    assert await closed_by_server(reader)
    writer.close()
    assert srv.stats.active == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await srv.stop()  # twice is fine


# -- parsing helpers ------------------------------------------------------------------------------


def test_parse_reply() -> None:
    assert parse_reply("200 result=1 (1795706738.4)") == Reply(200, "1", "1795706738.4")
    assert parse_reply("200 result=1 (a (b) c)") == Reply(200, "1", "a (b) c")
    assert parse_reply("200 result=0") == Reply(200, "0", None)
    assert parse_reply("511 Command Not Permitted on a dead channel") == Reply(
        511, "", "Command Not Permitted on a dead channel")
    assert parse_reply("garbage") == Reply(0, "", "garbage")


def test_parse_request_errors() -> None:
    with pytest.raises(SignalError, match="no agi_network_script"):
        parse_request({"agi_request": "botmeter-agi"})
    assert parse_request({"agi_network_script": "botmeter/usage?module=a%20b&quantity=1+2"}) == (
        "usage", {"Module": "a b", "Quantity": "1+2"}, [])  # + is a plus sign, as in a URI
    # arguments as botmeter-agi reads them (key: value too); the rest is ignored, not fatal
    assert parse_request({"agi_network_script": "botmeter/usage?module=x&quantity=1",
                          "agi_arg_2": "unit: s", "agi_arg_1": "module=asr", "agi_arg_3": "x",
                          "agi_arg_4": " "}) == (
        "usage", {"Module": "asr", "Quantity": "1", "Unit": "s"}, ["x"])
    with pytest.raises(SignalError, match="more than 32 fields"):
        parse_request({"agi_network_script": "botmeter/start",
                       **{f"agi_arg_{i}": f"k{i}=v" for i in range(1, 34)}})
