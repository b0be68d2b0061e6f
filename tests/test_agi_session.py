"""The pure FastAGI session (bot/session.py): bytes in, events out, no sockets and no clock.

The same conversation fed in any split gives the same commands, signal and end; every kind of
reply Asterisk gives; every limit. The transport is tested over real sockets in test_fastagi.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botmeter.bot.protocol import (
    MAX_FIELDS,
    MAX_REPLY_LINES,
    Reply,
    ReplyLines,
    ReplyTooLong,
    parse_reply,
    signal_fields,
)
from botmeter.bot.session import (
    GET_LINKEDID,
    STATUS_ERROR,
    STATUS_OK,
    AgiSession,
    DeliverSignal,
    Event,
    LinkedidMissing,
    Phase,
    RequestRefused,
    SendCommand,
    SessionEnd,
    env_end,
    parse_env,
)
from botmeter.pbx.events import BotSignal
from botmeter.tracking.signals import SignalError

from .test_fastagi import LINKEDID, UNIQUEID, env_bytes

NOW = 1795706800.123456
USAGE = "botmeter/usage?module=asr&quantity=12&unit=seconds"
USAGE_FIELDS = {"Module": "asr", "Quantity": "12", "Unit": "seconds"}
LINKEDID_REPLY = f"200 result=1 ({LINKEDID})\n".encode()
USAGE_520 = (b"520-Invalid command syntax.  Proper usage follows:\n"
             b"Usage: GET VARIABLE <variablename>\n"
             b" Returns 0 if <variablename> is not set.\n"
             b"520 End of proper usage.\n")
VERBOSE_ROUTE = (b'VERBOSE "botmeter: unknown route \'/other/usage\' (expected botmeter/<signal>)" 1'
                 b"\n")


def usage_signal(linkedid: str = LINKEDID, ts: float = NOW) -> BotSignal:
    return BotSignal(round(ts, 3), linkedid, UNIQUEID, "usage", USAGE_FIELDS, via="fastagi")


@dataclass
class Outcome:
    """What a session did: commands sent, signals delivered, requests refused, how it ended."""

    commands: list[bytes] = field(default_factory=list)
    signals: list[BotSignal] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    end: SessionEnd | None = None


class Driver:
    """Feeds a session and collects its events. A delivered signal is acknowledged at once, or
    after `delay` more chunks (as an async on_signal would be), with `handled`."""

    def __init__(self, session: AgiSession | None = None, *, handled: bool = True,
                 delay: int = 0) -> None:
        self.session = session or AgiSession()
        self.out = Outcome()
        self.handled = handled
        self.delay = delay
        self.waiting: int | None = None  # chunks left before acknowledging a signal

    def take(self, events: list[Event]) -> None:
        for event in events:
            assert self.out.end is None, f"{event} after the end"
            if isinstance(event, SendCommand):
                self.out.commands.append(event.data)
            elif isinstance(event, DeliverSignal):
                self.out.signals.append(event.signal)
                self.waiting = self.delay
            elif isinstance(event, RequestRefused):
                self.out.refused.append(event.reason)
            elif isinstance(event, LinkedidMissing):
                self.out.missing.append(event.reason)
            elif isinstance(event, SessionEnd):
                self.out.end = event
        self._maybe_acknowledge()

    def _maybe_acknowledge(self) -> None:
        if self.waiting == 0:
            self.waiting = None
            self.take(self.session.signal_handled(self.handled))

    def feed(self, *chunks: bytes, now: float = NOW) -> Driver:
        for chunk in chunks:
            if self.waiting is not None:
                self.waiting -= 1
                self._maybe_acknowledge()
            self.take(self.session.receive_data(chunk, now))
        return self

    def flush(self) -> Driver:
        """Acknowledge a signal still waiting."""
        if self.waiting is not None:
            self.waiting = 0
            self._maybe_acknowledge()
        return self

    def eof(self, now: float = NOW) -> Driver:
        self.take(self.session.receive_eof(now))
        return self.flush()

    def timeout(self, now: float = NOW, after: float = 5.0) -> Driver:
        self.take(self.session.timed_out(now, after))
        return self


def run(*chunks: bytes, eof: bool = False) -> Outcome:
    driver = Driver().feed(*chunks)
    if eof:
        driver.eof()
    return driver.flush().out


# -- the exchanges: (peer's bytes, expected outcome) ----------------------------------------------

GOOD = env_bytes(USAGE) + LINKEDID_REPLY + b"200 result=1\n"
CONVERSATIONS: dict[str, tuple[bytes, Outcome]] = {
    "good": (GOOD, Outcome([GET_LINKEDID, STATUS_OK], [usage_signal()],
                           end=SessionEnd(True))),
    "crlf": (GOOD.replace(b"\n", b"\r\n"), Outcome([GET_LINKEDID, STATUS_OK], [usage_signal()],
                                                   end=SessionEnd(True))),
    "hangup lines and 100 Trying": (
        env_bytes(USAGE) + b"HANGUP\nHANGUP\n100 result=0 Trying...\n" + LINKEDID_REPLY
        + b"HANGUP\n200 result=1\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal()], end=SessionEnd(True))),
    "linkedid not set": (
        env_bytes(USAGE) + b"200 result=0\n200 result=1\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)], end=SessionEnd(True))),
    "dead channel 511": (
        env_bytes(USAGE) + b"511 Command Not Permitted on a dead channel or intercept routine\n"
        + b"511 Command Not Permitted on a dead channel or intercept routine\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)], end=SessionEnd(True))),
    "invalid command 510": (
        env_bytes(USAGE) + b"510 Invalid or unknown command\n200 result=1\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)], end=SessionEnd(True))),
    "multi-line 520": (
        env_bytes(USAGE) + USAGE_520 + b"200 result=1\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)], end=SessionEnd(True))),
    "520 line that looks like a reply inside the block": (
        env_bytes(USAGE) + b"520-Usage:\n200 result=1 (not.this)\n520 End\n200 result=1\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)], end=SessionEnd(True))),
    "garbage reply": (
        env_bytes(USAGE) + b"\xff\xfegarbage\n200 result=1\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)], end=SessionEnd(True))),
    "empty linkedid": (
        env_bytes(USAGE) + b"200 result=1 ()\n200 result=1\n",
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)], end=SessionEnd(True))),
    "peer closes after the environment": (
        env_bytes(USAGE),
        Outcome([GET_LINKEDID], [usage_signal(UNIQUEID)], missing=["peer closed"],
                end=SessionEnd(True))),
    "peer closes after the linkedid": (
        env_bytes(USAGE) + LINKEDID_REPLY,
        Outcome([GET_LINKEDID, STATUS_OK], [usage_signal()], end=SessionEnd(True))),
    "bad route": (
        env_bytes("other/usage?module=asr&quantity=1", network_script=False)
        + b"200 result=1\n200 result=1\n",
        Outcome([VERBOSE_ROUTE, STATUS_ERROR],
                refused=["unknown route '/other/usage' (expected botmeter/<signal>)"],
                end=SessionEnd(False))),
    "bad value, unknown key": (
        env_bytes("botmeter/usage?module=asr&qty=3") + b"200 result=1\n200 result=1\n",
        Outcome([b'VERBOSE "botmeter: usage signal: Quantity \'\' is not a decimal number (ASCII '
                 b'digits and one optional \'.\') (ignored: qty)" 1\n', STATUS_ERROR],
                refused=["usage signal: Quantity '' is not a decimal number (ASCII digits and "
                         "one optional '.') (ignored: qty)"],
                end=SessionEnd(False))),
    "environment cut short": (
        env_bytes(USAGE)[:60],
        Outcome(end=SessionEnd(False, "peer closed", "debug"))),
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_each_conversation_in_one_piece(name: str) -> None:
    data, expected = CONVERSATIONS[name]
    assert run(data, eof=True) == expected


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CONVERSATIONS)), data=st.data(),
       delay=st.integers(0, 4))
def test_any_split_gives_the_same_commands_and_signal(name: str, data: st.DataObject,
                                                      delay: int) -> None:
    """Bytes cut anywhere (one byte at a time included), the signal acknowledged at once or a
    few chunks later: the same commands, signal and end."""
    raw, expected = CONVERSATIONS[name]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=40), label="cuts"))
    bounds = [0, *cuts, len(raw)]
    chunks = [raw[a:b] for a, b in pairwise(bounds)]
    driver = Driver(delay=delay).feed(*chunks)
    assert driver.flush().eof().out == expected


def test_byte_by_byte() -> None:
    raw, expected = CONVERSATIONS["multi-line 520"]
    assert Driver().feed(*(raw[i:i + 1] for i in range(len(raw)))).eof().out == expected


# -- time is passed in ----------------------------------------------------------------------------


def test_the_signal_is_stamped_with_the_time_it_completed() -> None:
    driver = Driver().feed(env_bytes(USAGE), now=100.0).feed(LINKEDID_REPLY, now=101.23456)
    assert driver.out.signals == [usage_signal(ts=101.235)]


def test_a_timeout_stamps_the_signal_with_its_time() -> None:
    driver = Driver().feed(env_bytes(USAGE), now=100.0).timeout(now=105.0004)
    assert driver.out == Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID, 105.0)],
                                 missing=["no reply within 5.0s"])
    assert driver.session.phase is Phase.STATUS


# -- timeouts, EOF, on_signal's outcome -----------------------------------------------------------


def test_timeout_while_reading_the_environment() -> None:
    driver = Driver().feed(env_bytes(USAGE)[:30]).timeout(after=5.0)
    assert driver.out == Outcome(end=SessionEnd(False, "no AGI environment within 5.0s", "info"))


def test_timeout_waiting_for_the_status_reply_ends_the_session() -> None:
    driver = Driver().feed(env_bytes(USAGE) + LINKEDID_REPLY).timeout()
    assert driver.out == Outcome([GET_LINKEDID, STATUS_OK], [usage_signal()],
                                 end=SessionEnd(True))


def test_timeout_after_a_refusal_ends_without_status() -> None:
    driver = Driver().feed(env_bytes("botmeter/fly")).timeout()
    assert [c[:8] for c in driver.out.commands] == [b"VERBOSE "]
    assert driver.out.end == SessionEnd(False)


def test_peer_closes_while_the_signal_is_handed_on() -> None:
    driver = Driver(delay=10).feed(env_bytes(USAGE), LINKEDID_REPLY)
    assert driver.session.phase is Phase.DELIVERING
    driver.take(driver.session.receive_eof(NOW))
    assert driver.out.end is None  # the session lasts until on_signal is done
    driver.flush()
    assert driver.out == Outcome([GET_LINKEDID], [usage_signal()], end=SessionEnd(True))


def test_on_signal_failure_ends_the_session_unacknowledged() -> None:
    driver = Driver(handled=False).feed(GOOD)
    assert driver.out == Outcome([GET_LINKEDID], [usage_signal()], end=SessionEnd(False))
    assert not driver.session.delivered


def test_no_uniqueid_and_no_linkedid() -> None:
    head = env_bytes(USAGE).replace(f"agi_uniqueid: {UNIQUEID}\n".encode(), b"")
    driver = Driver().feed(head, b"200 result=0\n")
    assert driver.out == Outcome([GET_LINKEDID], refused=["no agi_uniqueid and no linkedid"],
                                 end=SessionEnd(False))


def test_nothing_comes_after_the_end() -> None:
    session = Driver().feed(GOOD).session
    assert session.done
    assert session.receive_data(GOOD, NOW) == []
    assert session.receive_eof(NOW) == []
    assert session.timed_out(NOW, 5.0) == []
    assert session.signal_handled(True) == []


def test_timeout_while_the_signal_is_handed_on_changes_nothing() -> None:
    driver = Driver(delay=10).feed(env_bytes(USAGE), LINKEDID_REPLY)
    assert driver.session.timed_out(NOW, 5.0) == []
    assert driver.flush().out.commands == [GET_LINKEDID, STATUS_OK]


# -- limits ---------------------------------------------------------------------------------------


def test_environment_at_the_byte_limit_is_read() -> None:
    head = env_bytes(USAGE)
    session = AgiSession(max_env_bytes=len(head))
    assert Driver(session).feed(head).out.commands == [GET_LINKEDID]


@pytest.mark.parametrize("pieces", [1, 7, 200])
def test_environment_over_the_byte_limit_is_dropped(pieces: int) -> None:
    head = env_bytes(USAGE)
    session = AgiSession(max_env_bytes=len(head) - 1)
    step = -(-len(head) // pieces)
    driver = Driver(session).feed(*(head[i:i + step] for i in range(0, len(head), step)))
    assert driver.out == Outcome(end=SessionEnd(False, f"AGI environment over {len(head) - 1} "
                                                       "bytes", "warning"))


def test_endless_environment_without_blank_line_is_dropped_at_the_limit() -> None:
    session = AgiSession(max_env_bytes=1000)
    driver = Driver(session)
    for _ in range(100):
        driver.feed(b"agi_x: yyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n")
        if driver.out.end is not None:
            break
    assert driver.out.end == SessionEnd(False, "AGI environment over 1000 bytes", "warning")
    assert len(session._buf) == 0


@pytest.mark.parametrize("split", [False, True])
def test_overlong_reply_line(split: bool) -> None:
    """A reply line over the limit counts as no reply; its tail is skipped, whatever the split."""
    session = AgiSession(max_env_bytes=1000)
    line = b"200 result=1 (" + b"9" * 2000 + b")\n"
    chunks = [line[:1200], line[1200:]] if split else [line]
    driver = Driver(session).feed(env_bytes(USAGE), *chunks, b"200 result=1\n")
    assert driver.out == Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)],
                                 missing=["reply line over 1000 bytes"], end=SessionEnd(True))


@pytest.mark.parametrize(("lines", "expected"), [
    (MAX_REPLY_LINES - 1, Outcome([GET_LINKEDID, STATUS_OK], [usage_signal()],
                                  end=SessionEnd(True))),
    (MAX_REPLY_LINES, Outcome([GET_LINKEDID, STATUS_OK], [usage_signal(UNIQUEID)],
                              missing=[f"no reply within {MAX_REPLY_LINES} lines"],
                              end=SessionEnd(True))),
])
def test_reply_lines_are_bounded(lines: int, expected: Outcome) -> None:
    """99 HANGUP lines then the reply: read. 100: no linkedid, and the reply line (the 101st)
    answers the status command. Each command gets its own 100 lines: the rest of the flood ends
    the session."""
    flood = b"HANGUP\n" * lines + LINKEDID_REPLY + b"HANGUP\n" * 300
    assert run(env_bytes(USAGE), flood) == expected


def test_data_while_the_signal_is_handed_on_is_bounded() -> None:
    session = AgiSession(max_env_bytes=1000)
    driver = Driver(session, delay=100).feed(env_bytes(USAGE), LINKEDID_REPLY)
    driver.feed(*[b"x" * 600] * 10)
    assert len(session._buf) <= 1000
    driver.feed(b"tail of junk\n200 result=1\n").flush()
    assert driver.out == Outcome([GET_LINKEDID, STATUS_OK], [usage_signal()],
                                 end=SessionEnd(True))


# -- building blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "reply"), [
    ("200 result=1 (1795706738.4)", Reply(200, "1", "1795706738.4")),
    ("200 result=1 (a (b) c)", Reply(200, "1", "a (b) c")),
    ("200 result=0", Reply(200, "0", None)),
    ("200 result=-1", Reply(200, "-1", None)),
    ("200 result=1 (hangup)", Reply(200, "1", "hangup")),
    ("510 Invalid or unknown command", Reply(510, "", "Invalid or unknown command")),
    ("511 Command Not Permitted on a dead channel", Reply(511, "", "Command Not Permitted on a "
                                                                   "dead channel")),
    ("520 Invalid command syntax.", Reply(520, "", "Invalid command syntax.")),
    ("garbage", Reply(0, "", "garbage")),
])
def test_parse_reply(line: str, reply: Reply) -> None:
    assert parse_reply(line) == reply


@pytest.mark.parametrize(("reply", "ok"), [
    (Reply(200, "0"), True), (Reply(200, "1", "x"), True), (Reply(200, "-1"), False),
    (Reply(200, "1", "hangup"), False), (Reply(511), False), (Reply(0, "", "junk"), False),
])
def test_reply_ok(reply: Reply, ok: bool) -> None:
    assert reply.ok is ok


def test_reply_lines() -> None:
    reader = ReplyLines(max_lines=6)
    assert [reader.feed(line) for line in ("HANGUP\n", "100 result=0 Trying...\n", "520-Usage:\n",
                                           "200 result=1 (inside)\n", "520 End\n")] == [
        None, None, None, None, Reply(520, "", "End")]
    reader.reset()
    assert reader.feed("200 result=1 (x)\r\n") == Reply(200, "1", "x")
    reader.reset()
    for _ in range(6):
        assert reader.feed("HANGUP") is None
    with pytest.raises(ReplyTooLong, match="no reply within 6 lines"):
        reader.feed("200 result=1")


@pytest.mark.parametrize(("buf", "end"), [
    (b"\n", 1), (b"\r\n", 2), (b"a: b\n\n", 6), (b"a: b\r\n\r\n", 8), (b"a: b\n", -1),
    (b"a: b\r\n\r", -1), (b"a: b\n\r\nrest", 7),
])
def test_env_end(buf: bytes, end: int) -> None:
    assert env_end(buf) == end


def test_parse_env() -> None:
    assert parse_env(b"agi_a: 1\nnot a pair\nagi_b:  two: x \n\xff: y\n\n") == {
        "agi_a": "1", "agi_b": "two: x", "\ufffd": "y"}


def test_signal_fields_shared_by_fastagi_and_the_script() -> None:
    assert signal_fields("module=a%20b&quantity=1+2&colour=red", ["Quantity=3", "unit: s", "x"]) == (
        {"Module": "a b", "Quantity": "3", "Unit": "s"}, ["colour"], ["x"])
    assert signal_fields(args=[f"k{i}=v" for i in range(MAX_FIELDS)])[1] == [
        f"k{i}" for i in range(MAX_FIELDS)]
    with pytest.raises(SignalError, match="more than 32 fields"):
        signal_fields(args=[f"k{i}=v" for i in range(MAX_FIELDS + 1)])
    with pytest.raises(SignalError, match="more than 32 fields"):
        signal_fields("&".join(f"k{i}=v" for i in range(20)), [f"k{i}=v" for i in range(13)])
