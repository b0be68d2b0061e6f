"""One FastAGI session as a pure state machine, in the style of h11: bytes in, events out.

No sockets, no asyncio, no clock. The transport (`fastagi`) feeds the session what the peer
sent (`receive_data`, `receive_eof`), says when the peer took too long (`timed_out`) and how
handing the signal on went (`signal_handled`), passing the time where a signal may come out;
each call returns the events to act on, in order:

- `SendCommand`: write these bytes (one AGI command), then wait for its reply;
- `DeliverSignal`: hand the `BotSignal` on, then call `signal_handled`;
- `RequestRefused`: the request is bad, the peer is told why (log it; it also comes when the
  channel has no id at all);
- `LinkedidMissing`: no linkedid from the peer, the signal goes with the uniqueid (log it);
- `SessionEnd`: close the connection; nothing more comes out of the session.

The exchange: the AGI environment (up to the blank line, at most `max_env_bytes`); a good
request is answered `GET VARIABLE CHANNEL(linkedid)`, then the signal is delivered (with the
channel's `agi_uniqueid` when the linkedid cannot be had: not set, `511`, `520`, EOF, timeout)
and `SET VARIABLE BOTMETER_STATUS ok` sent; a bad one gets `VERBOSE "botmeter: <reason>"`, then
`SET VARIABLE BOTMETER_STATUS error`. Replies are read with `protocol.ReplyLines` (as the AGI
script reads them). The same bytes in any split give the same events.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from botmeter.pbx.events import BotSignal
from botmeter.tracking.signals import SignalError, parse_signal

from .protocol import (
    MAX_COMMAND,
    MAX_REPLY_LINES,
    ReplyLines,
    ReplyTooLong,
    agi_quote,
    signal_fields,
)

ROUTE = "botmeter"
#: bytes of AGI environment accepted (and longest reply line)
MAX_ENV_BYTES = 16384

GET_LINKEDID = b"GET VARIABLE CHANNEL(linkedid)\n"
STATUS_OK = b"SET VARIABLE BOTMETER_STATUS ok\n"
STATUS_ERROR = b"SET VARIABLE BOTMETER_STATUS error\n"


class Phase(enum.Enum):
    ENV = "env"  # reading the AGI environment
    LINKEDID = "linkedid"  # GET VARIABLE CHANNEL(linkedid) sent
    DELIVERING = "delivering"  # the signal is being handed on (see signal_handled)
    STATUS = "status"  # SET VARIABLE BOTMETER_STATUS ok sent
    VERBOSE = "verbose"  # bad request: VERBOSE with the reason sent
    ERROR_STATUS = "error_status"  # bad request: SET VARIABLE BOTMETER_STATUS error sent
    END = "end"


# the phases as module globals: an Enum member lookup (Phase.END) costs ~100 ns on 3.11
_ENV = Phase.ENV
_LINKEDID = Phase.LINKEDID
_DELIVERING = Phase.DELIVERING
_STATUS = Phase.STATUS
_VERBOSE = Phase.VERBOSE
_ERROR_STATUS = Phase.ERROR_STATUS
_END = Phase.END

#: phases waiting for a reply to a command (a tuple: `in` tests identity first, no Enum hash)
_AWAITING = (_LINKEDID, _STATUS, _VERBOSE, _ERROR_STATUS)


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Write `data` (one AGI command line, newline included), then wait for the reply."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DeliverSignal:
    """Hand `signal` on, then call `AgiSession.signal_handled`."""

    signal: BotSignal


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """The request cannot be a signal: `reason` says why."""

    reason: str
    uniqueid: str
    script: str


@dataclass(frozen=True, slots=True)
class LinkedidMissing:
    """The peer gave no linkedid (`reason` says how): the channel's uniqueid stands in."""

    reason: str


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """Close the connection. `reason` is set when the peer was dropped before its request was
    complete (oversized, too slow, closed), with `level` the log level that deserves."""

    delivered: bool
    reason: str = ""
    level: str = "debug"


Event = SendCommand | DeliverSignal | RequestRefused | LinkedidMissing | SessionEnd

# events are immutable: the common ones are made once
_SEND_GET_LINKEDID = SendCommand(GET_LINKEDID)
_SEND_STATUS_OK = SendCommand(STATUS_OK)
_SEND_STATUS_ERROR = SendCommand(STATUS_ERROR)
_ENDS = {True: SessionEnd(True), False: SessionEnd(False)}


def env_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line ending the AGI environment (LF or CRLF); -1 if none yet.
    Looks from `start` on (earlier bytes were searched already)."""
    if start == 0 and buf[:1] == b"\n":
        return 1
    if start == 0 and buf[:2] == b"\r\n":
        return 2
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\n\r\n", start)
    if lf < 0:
        return crlf + 3 if crlf >= 0 else -1
    if crlf < 0 or lf < crlf:
        return lf + 2
    return crlf + 3


def parse_env(block: bytes | bytearray) -> dict[str, str]:
    """`agi_key: value` lines (undecodable bytes replaced; lines without `:` skipped)."""
    env: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            env[key.strip()] = value.strip()
    return env


def parse_request(env: Mapping[str, str]) -> tuple[str, dict[str, str], list[str]]:
    """(signal, fields, ignored keys) from an AGI environment; SignalError for a bad route.

    The route is `botmeter/<signal>` (from `agi_network_script`, else `agi_request`); fields come
    from its query string, then from `agi_arg_N` arguments `key=value` (`protocol.signal_fields`,
    as the AGI script reads its arguments; an argument that is not key=value is ignored).
    """
    script = env.get("agi_network_script", "")
    if not script:
        request = env.get("agi_request", "")
        if "://" not in request:
            raise SignalError("no agi_network_script in the AGI environment")
        parts = urlsplit(request)
        script = parts.path + (f"?{parts.query}" if parts.query else "")
    path, _, query = script.partition("?")
    steps = [s for s in path.split("/") if s]
    if len(steps) != 2 or steps[0].lower() != ROUTE:
        raise SignalError(f"unknown route {path[:80]!r} (expected {ROUTE}/<signal>)")
    args = sorted((k for k in env if k.startswith("agi_arg_")), key=_arg_number)
    fields, ignored, not_pairs = signal_fields(query, [env[key] for key in args])
    ignored += [arg.strip()[:40] for arg in not_pairs if arg.strip()]
    return steps[1][:64], fields, ignored


def _arg_number(key: str) -> int:
    tail = key.removeprefix("agi_arg_")
    return int(tail) if tail.isdigit() else 1 << 30


def _script(env: Mapping[str, str]) -> str:
    return env.get("agi_network_script", env.get("agi_request", ""))[:200]


class AgiSession:
    """The server side of one FastAGI connection (see the module's docstring)."""

    __slots__ = ("phase", "max_env_bytes", "delivered", "eof", "env", "uniqueid", "signal",
                 "fields", "_buf", "_scanned", "_skipping", "_reply")

    def __init__(self, max_env_bytes: int = MAX_ENV_BYTES,
                 max_reply_lines: int = MAX_REPLY_LINES) -> None:
        self.phase = _ENV
        self.max_env_bytes = max_env_bytes
        self.delivered = False  # the signal was handed on
        self.eof = False  # the peer has closed: nothing more is sent
        self.env: dict[str, str] = {}
        self.uniqueid = ""
        self.signal = ""
        self.fields: dict[str, str] = {}
        self._buf = bytearray()
        self._scanned = 0  # where to look for the environment's end next time
        self._skipping = False  # dropping the rest of an overlong line
        self._reply = ReplyLines(max_reply_lines)

    @property
    def done(self) -> bool:
        return self.phase is _END

    # -- inputs -------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Bytes from the peer; `now` stamps a signal delivered because of them."""
        events: list[Event] = []
        if self.phase is _END or self.eof:
            return events
        buf = self._buf
        buf += data
        if self.phase is _ENV:
            limit = self.max_env_bytes
            end = env_end(buf, self._scanned)
            if end < 0 or end > limit:
                if len(buf) > limit:
                    self._end(events, f"AGI environment over {limit} bytes", "warning")
                else:
                    self._scanned = max(0, len(buf) - 2)
                return events
            self.env = parse_env(buf[:end])
            del buf[:end]
            self._request(now, events)
            if not buf:
                return events
        self._lines(now, events)
        return events

    def receive_eof(self, now: float) -> list[Event]:
        """The peer closed (a partial line left is ignored)."""
        events: list[Event] = []
        if not self.eof and self.phase is not _END:
            self.eof = True
            self._fail("peer closed", "debug", now, events)
        return events

    def timed_out(self, now: float, after: float) -> list[Event]:
        """The peer sent nothing useful for `after` seconds (the transport keeps the time)."""
        events: list[Event] = []
        if self.phase is _ENV:
            self._fail(f"no AGI environment within {after}s", "info", now, events)
        elif self.phase in _AWAITING:
            self._fail(f"no reply within {after}s", "debug", now, events)
        return events

    def signal_handled(self, ok: bool) -> list[Event]:
        """After `DeliverSignal`: whether the signal was taken (then the peer is told `ok`)."""
        events: list[Event] = []
        if self.phase is not _DELIVERING:
            return events
        if not ok:
            self._end(events)
            return events
        self.delivered = True
        self._command(_SEND_STATUS_OK, _STATUS, 0.0, events)
        if self._buf:
            self._lines(0.0, events)  # what came meanwhile (no signal can come out of it)
        return events

    # -- the exchange -------------------------------------------------------------------

    def _request(self, now: float, events: list[Event]) -> None:
        """The environment is complete: check it, then ask for the linkedid."""
        env = self.env
        self.uniqueid = env.get("agi_uniqueid", "")[:64]
        ignored: list[str] = []
        try:
            signal, fields, ignored = parse_request(env)
            parse_signal(signal, fields)
        except SignalError as exc:
            reason = str(exc)
            if ignored:
                reason += f" (ignored: {', '.join(ignored[:5])})"
            events.append(RequestRefused(reason, self.uniqueid, _script(env)))
            verbose = f"VERBOSE {agi_quote('botmeter: ' + reason[:300])} 1"
            self._command(SendCommand(verbose.encode("utf-8")[:MAX_COMMAND] + b"\n"),
                          _VERBOSE, now, events)
            return
        self.signal, self.fields = signal.strip().lower(), fields
        self._command(_SEND_GET_LINKEDID, _LINKEDID, now, events)

    def _lines(self, now: float, events: list[Event]) -> None:
        """Read complete reply lines while a reply is awaited."""
        buf, limit = self._buf, self.max_env_bytes
        while self.phase in _AWAITING or (self.phase is _DELIVERING and self._skipping):
            nl = buf.find(b"\n")
            if self._skipping:  # the tail of an overlong line
                if nl < 0:
                    buf.clear()
                    return
                del buf[:nl + 1]
                self._skipping = False
                continue
            if nl < 0:
                if len(buf) > limit:
                    buf.clear()
                    self._skipping = True
                    self._fail(f"reply line over {limit} bytes", "warning", now, events)
                return
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            if nl > limit:
                self._fail(f"reply line over {limit} bytes", "warning", now, events)
                continue
            try:
                reply = self._reply.feed(line.decode("utf-8", "replace"))
            except ReplyTooLong as exc:
                self._fail(str(exc), "warning", now, events)
                continue
            if reply is None:
                continue
            phase = self.phase
            if phase is _LINKEDID:
                found = reply.code == 200 and reply.result == "1"
                self._deliver((reply.data or "").strip()[:64] if found else "", now, events)
            elif phase is _VERBOSE:
                self._command(_SEND_STATUS_ERROR, _ERROR_STATUS, now, events)
            else:  # STATUS, ERROR_STATUS
                self._end(events)
        if self.phase is _DELIVERING and len(buf) > limit:
            buf.clear()  # nothing is read while the signal is handed on: keep memory bounded
            self._skipping = True

    def _command(self, send: SendCommand, phase: Phase, now: float, events: list[Event]) -> None:
        """Send a command and wait for its reply in `phase` (unless the peer has closed)."""
        self.phase = phase
        self._reply.reset()
        if self.eof:
            self._fail("peer closed", "debug", now, events)
        else:
            events.append(send)

    def _fail(self, why: str, level: str, now: float, events: list[Event]) -> None:
        """No (more) answer from the peer: timeout, EOF, oversized or endless input."""
        phase = self.phase
        if phase is _LINKEDID:
            events.append(LinkedidMissing(why))
            self._deliver("", now, events)
        elif phase is _ENV:
            self._end(events, why, level)
        elif phase is not _DELIVERING and phase is not _END:
            self._end(events)  # the session ends when the signal is handed on

    def _deliver(self, linkedid: str, now: float, events: list[Event]) -> None:
        """The signal, addressed by linkedid (else the channel's uniqueid), stamped `now`."""
        linkedid = linkedid or self.uniqueid
        if not linkedid:
            events.append(RequestRefused("no agi_uniqueid and no linkedid", "",
                                         _script(self.env)))
            self._end(events)
            return
        self.phase = _DELIVERING
        events.append(DeliverSignal(BotSignal(round(now, 3), linkedid, self.uniqueid,
                                              self.signal, self.fields, via="fastagi")))

    def _end(self, events: list[Event], reason: str = "", level: str = "debug") -> None:
        self.phase = _END
        self._buf.clear()
        events.append(SessionEnd(self.delivered, reason, level) if reason else
                      _ENDS[self.delivered])
