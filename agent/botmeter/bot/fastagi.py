"""FastAGI server for the bot's signals.

Dialplan: `AGI(agi://127.0.0.1:4573/botmeter/usage?module=asr&quantity=12&unit=seconds)`.
One session per signal: read the AGI environment, check the request, ask Asterisk for the
call's linkedid, hand a `BotSignal` to `on_signal`, set `BOTMETER_STATUS` and close.

Each session is a small `asyncio.Protocol` state machine (no task, no stream objects), so a
session costs little more than the TCP connection itself. Every session is bounded (header
bytes and time, command reply time, concurrent sessions) and ends quietly whatever the peer
does; nothing here raises into the event loop.

Sessions are also capped below the process's file limit (the soft RLIMIT_NOFILE, raised to
the hard limit at start, less FD_RESERVE for the database, AMI and logs), and a connection is
refused when its descriptor shows the process near that limit. Refusals are logged at once,
then as a count at most every REFUSAL_LOG_SECONDS; so are accept() failures for lack of
descriptors (asyncio's loop retries them a second later; uvloop's libuv closes such
connections itself).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import inspect
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import structlog

from botmeter.pbx.events import BotSignal
from botmeter.runtime import raise_fd_limit
from botmeter.tracking.signals import SignalError, parse_signal

from .protocol import MAX_COMMAND, agi_quote, canonical_fields

log = structlog.get_logger(__name__)

ROUTE = "botmeter"
MAX_FIELDS = 32  # query parameters + agi_arg_N accepted per request
MAX_REPLY_LINES = 100  # lines read for one command reply (HANGUP, 100 Trying, 520 usage text)
CLOSE_TIMEOUT = 1.0
#: file descriptors left for everything but sessions (database, AMI, logs, listening socket)
FD_RESERVE = 100
#: after a refusal is logged, more of the same reason are counted and logged this often
REFUSAL_LOG_SECONDS = 10.0

_RESULT = re.compile(r"result=(-?\d*)(?:\s+\((.*)\))?")

OnSignal = Callable[[BotSignal], Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class FastAgiStats:
    """Counters. Once sessions are over: sessions == signals + errors (invalid is part of errors)."""

    sessions: int = 0  # connections accepted and served
    signals: int = 0  # signals delivered to on_signal
    refused: int = 0  # connections closed at once: peer not allowed, or too many sessions
    errors: int = 0  # sessions that ended without delivering a signal
    invalid: int = 0  # ... of which: bad route or bad values (the peer was told why)
    active: int = 0  # sessions in progress


@dataclass(frozen=True, slots=True)
class Reply:
    """One AGI command reply: code (200, 510, 511, 520; 0 if unreadable), result and its data."""

    code: int
    result: str = ""
    data: str | None = None


def parse_networks(allow: Iterable[str]) -> tuple[Network, ...]:
    """`allow` entries (IPs or CIDR blocks) as networks; ValueError for a bad entry."""
    if isinstance(allow, str):
        allow = (allow,)
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in allow)


def parse_request(env: Mapping[str, str]) -> tuple[str, dict[str, str], list[str]]:
    """(signal, fields, ignored keys) from an AGI environment; SignalError for a bad route.

    The route is `botmeter/<signal>` (from `agi_network_script`, else `agi_request`); fields come
    from its query string, then from `agi_arg_N` arguments of the form `key=value`.
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
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise SignalError(f"more than {MAX_FIELDS} fields") from None
    args = sorted((k for k in env if k.startswith("agi_arg_")), key=_arg_number)
    for key in args[:MAX_FIELDS]:
        name, sep, value = env[key].partition("=")
        if sep:
            pairs.append((name, value))
    if len(pairs) > MAX_FIELDS:
        raise SignalError(f"more than {MAX_FIELDS} fields")
    fields, ignored = canonical_fields(pairs)
    return steps[1][:64], fields, ignored


def _arg_number(key: str) -> int:
    tail = key.removeprefix("agi_arg_")
    return int(tail) if tail.isdigit() else 1 << 30


def parse_reply(line: str) -> Reply:
    """A single-line reply such as `200 result=1 (1795706738.4)`."""
    code = line[:3]
    if not code.isdigit():
        return Reply(0, "", line[:200])
    match = _RESULT.search(line, 3)
    if match is None:
        return Reply(int(code), "", line[4:204])
    return Reply(int(code), match.group(1), match.group(2))



class _State(enum.Enum):
    REFUSED = "refused"  # closed at once, never a session
    ENV = "env"  # reading the AGI environment
    LINKEDID = "linkedid"  # GET VARIABLE CHANNEL(linkedid) sent
    CALLBACK = "callback"  # waiting for an async on_signal
    STATUS = "status"  # SET VARIABLE BOTMETER_STATUS ok sent
    VERBOSE = "verbose"  # bad request: VERBOSE with the reason sent
    ERROR_STATUS = "error_status"  # bad request: SET VARIABLE BOTMETER_STATUS error sent
    DONE = "done"


class _Session(asyncio.Protocol):
    """One FastAGI connection, driven by socket events and a single timer."""

    def __init__(self, server: FastAgiServer, loop: asyncio.AbstractEventLoop) -> None:
        self.srv = server
        self.loop = loop
        self.state = _State.ENV
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buf = bytearray()
        self.env: dict[str, str] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.scanned = 0  # where to look for the environment's end next time
        self.reply_lines = 0
        self.in_usage = False
        self.connected = False
        self.delivered = False
        self.signal = ""
        self.fields: dict[str, str] = {}
        self.uniqueid = ""
        self.pending: asyncio.Future[Any] | None = None

    # -- socket events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.connected = True
        srv, stats = self.srv, self.srv.stats
        self.peer = _peer_host(transport.get_extra_info("peername"))
        reason = ""
        if not srv.allowed(self.peer):
            reason = "not in allow"
        elif stats.active >= srv.max_sessions:
            reason = "too many sessions"
        elif _fileno(transport) >= srv.fd_ceiling:
            reason = "near the file descriptor limit"
        if reason:
            self.state = _State.REFUSED
            stats.refused += 1
            srv.refusals.refused(reason, self.peer)
            transport.abort()
            return
        stats.sessions += 1
        stats.active += 1
        srv._live.add(self)
        self._arm(srv.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state in (_State.REFUSED, _State.DONE):
            return
        try:
            self._received(data)
        except Exception:  # a bug here must not leak the session
            log.exception("fastagi session failed", peer=self.peer)
            self._finish()

    def _received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        limit = self.srv.max_header_bytes
        if self.state is _State.ENV:
            end = _env_end(buf, self.scanned)
            if end < 0 or end > limit:
                self.scanned = max(0, len(buf) - 2)
                if len(buf) > limit:
                    self._fail(f"AGI environment over {limit} bytes", "warning")
                return
            self._env(buf[:end])
            del buf[:end]
            self._request()
        while self.state not in (_State.REFUSED, _State.DONE, _State.CALLBACK):
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            self._reply_line(line)
        if len(buf) > limit:
            if self.state is _State.CALLBACK:
                buf.clear()  # nothing is read while on_signal runs: keep memory bounded
            elif self.state is not _State.DONE:
                self._fail(f"reply line over {limit} bytes", "warning")

    def eof_received(self) -> bool:
        self._fail("peer closed", "debug")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        if self.state not in (_State.REFUSED, _State.DONE):
            self._fail("peer closed", "debug")

    def _timed_out(self) -> None:
        self.timer = None
        left = self.deadline - self.loop.time()
        if left > 0:  # the deadline moved on: sleep again
            self.timer = self.loop.call_later(left, self._timed_out)
            return
        if self.state is _State.ENV:
            self._fail(f"no AGI environment within {self.srv.header_timeout}s", "info")
        else:
            self._fail(f"no reply within {self.srv.command_timeout}s", "debug")

    # -- protocol ---------------------------------------------------------------------

    def _env(self, block: bytearray) -> None:
        """Parse `agi_key: value` lines (the block ends with the blank line)."""
        env = self.env
        for line in block.decode("utf-8", "replace").split("\n"):
            key, sep, value = line.partition(":")
            if sep:
                env[key.strip()] = value.strip()

    def _request(self) -> None:
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
            self.srv.stats.invalid += 1
            log.warning("fastagi bad signal refused", peer=self.peer, reason=reason,
                        uniqueid=self.uniqueid,
                        script=env.get("agi_network_script", env.get("agi_request", ""))[:200])
            self._send(f"VERBOSE {agi_quote('botmeter: ' + reason[:300])} 1", _State.VERBOSE)
            return
        self.signal, self.fields = signal.strip().lower(), fields
        self._send("GET VARIABLE CHANNEL(linkedid)", _State.LINKEDID)

    def _reply_line(self, line: bytes) -> None:
        """One line while a reply is awaited: skip `HANGUP` and `100 Trying`; read a `520-`
        usage block through its closing `520 ` line."""
        self.reply_lines += 1
        if self.reply_lines > MAX_REPLY_LINES:
            self._fail(f"no reply within {MAX_REPLY_LINES} lines", "warning")
            return
        text = line.decode("utf-8", "replace").strip()
        if self.in_usage:
            if text.startswith("520 "):
                self.in_usage = False
                self._reply(Reply(520, "", text[4:204]))
            return
        if not text or text == "HANGUP" or text.startswith("100 "):
            return
        if text.startswith("520-"):
            self.in_usage = True
            return
        self._reply(parse_reply(text))

    def _reply(self, reply: Reply) -> None:
        state = self.state
        if state is _State.LINKEDID:
            found = reply.code == 200 and reply.result == "1"
            self._deliver((reply.data or "").strip()[:64] if found else "")
        elif state is _State.VERBOSE:
            self._send("SET VARIABLE BOTMETER_STATUS error", _State.ERROR_STATUS)
        else:  # STATUS, ERROR_STATUS
            self._finish()

    def _fail(self, why: str, level: str) -> None:
        """No (more) answer from the peer: timeout, EOF, oversized or endless input."""
        state = self.state
        if state is _State.LINKEDID:
            log.debug("fastagi no linkedid from peer", peer=self.peer, reason=why)
            self._deliver("")
        elif state is _State.CALLBACK:
            pass  # the session ends when on_signal does
        elif state in (_State.REFUSED, _State.DONE):
            return
        else:
            if state is _State.ENV:
                getattr(log, level)("fastagi peer dropped", peer=self.peer, reason=why)
            self._finish()

    def _deliver(self, linkedid: str) -> None:
        """Hand the signal to on_signal (linkedid falls back to the channel's uniqueid)."""
        linkedid = linkedid or self.uniqueid
        if not linkedid:
            self.srv.stats.invalid += 1
            log.warning("fastagi bad signal refused", peer=self.peer,
                        reason="no agi_uniqueid and no linkedid")
            self._finish()
            return
        srv = self.srv
        sig = BotSignal(round(srv.clock(), 3), linkedid, self.uniqueid, self.signal, self.fields,
                        via="fastagi")
        try:
            result = srv.on_signal(sig)
        except Exception:
            log.exception("fastagi on_signal failed", linkedid=linkedid, signal=self.signal)
            self._finish()
            return
        if inspect.isawaitable(result):
            self._disarm()
            self.state = _State.CALLBACK
            self.pending = asyncio.ensure_future(result)
            self.pending.add_done_callback(self._callback_done)
            return
        self._delivered()

    def _callback_done(self, future: asyncio.Future[Any]) -> None:
        self.pending = None
        if self.state is not _State.CALLBACK:
            return
        if future.cancelled() or future.exception() is not None:
            log.error("fastagi on_signal failed", signal=self.signal,
                      error=repr(None if future.cancelled() else future.exception()))
            self._finish()
            return
        self._delivered()

    def _delivered(self) -> None:
        self.delivered = True
        if self.connected and self.transport is not None and not self.transport.is_closing():
            self._send("SET VARIABLE BOTMETER_STATUS ok", _State.STATUS)
        else:
            self._finish()

    # -- plumbing ---------------------------------------------------------------------

    def _send(self, command: str, state: _State) -> None:
        """Write one AGI command and wait (command_timeout) for its reply in `state`."""
        self.state = state
        self.reply_lines = 0
        self.in_usage = False
        transport = self.transport
        if not self.connected or transport is None or transport.is_closing():
            self._fail("peer closed", "debug")
            return
        transport.write(command.encode("utf-8")[:MAX_COMMAND] + b"\n")
        self._arm(self.srv.command_timeout)

    def _arm(self, seconds: float) -> None:
        """Time out in `seconds`. One timer per session: it is only moved earlier, and re-armed
        when it fires before the deadline."""
        self.deadline = self.loop.time() + seconds
        timer = self.timer
        if timer is not None and timer.when() <= self.deadline:
            return
        if timer is not None:
            timer.cancel()
        self.timer = self.loop.call_at(self.deadline, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _finish(self) -> None:
        """End the session: count it, close the connection (abort if it cannot drain)."""
        if self.state in (_State.DONE, _State.REFUSED):
            return
        self.state = _State.DONE
        self._disarm()
        srv = self.srv
        srv._live.discard(self)
        srv.stats.active -= 1
        if self.delivered:
            srv.stats.signals += 1
        else:
            srv.stats.errors += 1
        self.buf.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size():
                self.loop.call_later(CLOSE_TIMEOUT, transport.abort)
            transport.close()

    def abort(self) -> None:
        """Server stopping: end now."""
        if self.pending is not None:
            self.pending.cancel()
        self._finish()
        if self.transport is not None:
            self.transport.abort()


def _env_end(buf: bytearray, start: int = 0) -> int:
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


def _fileno(transport: asyncio.BaseTransport) -> int:
    """The connection's descriptor (-1 if unknown). Linux gives the lowest free number, so
    descriptor N means at least N are open."""
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (OSError, ValueError):
        return -1


class RefusalLog:
    """Refused connections, per reason: the first logged at once, the next ones counted and
    logged as one line at most every `interval` seconds (so a flood is a few lines, not one
    per connection)."""

    def __init__(self, interval: float = REFUSAL_LOG_SECONDS, **context: object) -> None:
        self.interval = interval
        self.context = context
        self._quiet: dict[str, asyncio.TimerHandle] = {}  # reason -> end of its quiet period
        self._counts: dict[str, list[Any]] = {}  # reason -> [count, last peer]

    def refused(self, reason: str, peer: str) -> None:
        if reason in self._quiet:
            entry = self._counts.setdefault(reason, [0, ""])
            entry[0] += 1
            entry[1] = peer
            return
        log.warning(f"fastagi peer refused: {reason}", peer=peer, **self.context)
        self._quiet[reason] = asyncio.get_running_loop().call_later(
            self.interval, self._period_over, reason)

    def _period_over(self, reason: str) -> None:
        del self._quiet[reason]
        if self._flush(reason):  # still refusing: stay quiet for another period
            self._quiet[reason] = asyncio.get_running_loop().call_later(
                self.interval, self._period_over, reason)

    def _flush(self, reason: str) -> bool:
        entry = self._counts.pop(reason, None)
        if entry is None:
            return False
        log.warning(f"fastagi peers refused: {reason}", count=entry[0], last_peer=entry[1],
                    seconds=self.interval, **self.context)
        return True

    def close(self) -> None:
        """Log what is still counted; stop the timers."""
        for reason, timer in list(self._quiet.items()):
            timer.cancel()
            self._flush(reason)
        self._quiet.clear()


def _peer_host(peername: object) -> str:
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername)


class FastAgiServer:
    """Asyncio FastAGI server turning `botmeter/<signal>` requests into `BotSignal`s.

    `on_signal` may be a plain function or return an awaitable (awaited before the session ends).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4573,
        allow: Iterable[str] = ("127.0.0.1", "::1"),
        on_signal: OnSignal | None = None,
        clock: Callable[[], float] = time.time,
        header_timeout: float = 5.0,
        command_timeout: float = 5.0,
        max_header_bytes: int = 16384,
        max_sessions: int = 2000,
    ) -> None:
        self.host = host
        self._port = port
        self.allow = parse_networks(allow)
        self.on_signal: OnSignal = on_signal or (lambda sig: None)
        self.clock = clock
        self.header_timeout = header_timeout
        self.command_timeout = command_timeout
        self.max_header_bytes = max_header_bytes
        self.max_sessions = self.configured_max_sessions = max_sessions
        self.fd_ceiling = 1 << 30  # descriptor numbers from here on are refused (see start)
        self.stats = FastAgiStats()
        self.refusals = RefusalLog(max_sessions=max_sessions)
        self.accept_errors = 0  # accept() failures for lack of descriptors (asyncio's loop)
        self._server: asyncio.base_events.Server | None = None
        self._live: set[_Session] = set()
        self._allowed_cache: dict[str, bool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting sessions (port 0 picks a free port, see `port`)."""
        if self._server is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._limit_to_descriptors(raise_fd_limit())
        self._server = await loop.create_server(
            lambda: _Session(self, loop), self.host, self._port,
            backlog=max(128, min(self.max_sessions, 4096)),
        )
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        log.info("fastagi listening", host=self.host, port=self.port,
                 allow=[str(n) for n in self.allow], max_sessions=self.max_sessions)

    def _limit_to_descriptors(self, soft_limit: int) -> None:
        """Keep sessions within what the process can open (less FD_RESERVE for the rest)."""
        self.fd_ceiling = max(soft_limit - FD_RESERVE // 2, 1)
        self.max_sessions = max(1, min(self.configured_max_sessions, soft_limit - FD_RESERVE))
        self.refusals.context["max_sessions"] = self.max_sessions
        if self.max_sessions < self.configured_max_sessions:
            log.warning("fastagi sessions capped by the file limit", max_sessions=self.max_sessions,
                        configured=self.configured_max_sessions, nofile=soft_limit,
                        hint="raise LimitNOFILE (systemd) or ulimit -n")

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """accept() out of descriptors on our socket: a rate-limited line, not a traceback per
        try (asyncio's loop retries a second later); anything else goes where it went before."""
        exc = context.get("exception")
        sock = context.get("socket")
        ours = self._server is not None and sock is not None and any(
            s.fileno() == sock.fileno() for s in self._server.sockets)
        if ours and isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            self.accept_errors += 1
            self.refusals.refused("out of file descriptors (accept retried in 1 s)", "")
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def stop(self) -> None:
        """Stop accepting, end the sessions in progress, release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._live):
            session.abort()
        await server.wait_closed()
        if self._loop is not None and self._loop.get_exception_handler() == self._loop_exception:
            self._loop.set_exception_handler(self._previous_handler)
        self.refusals.close()
        log.info("fastagi stopped", **self.counters())

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (the configured one until started)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    def counters(self) -> dict[str, int]:
        """The counters as a dict (for logs and tests)."""
        return asdict(self.stats)

    def allowed(self, host: str) -> bool:
        """Whether a peer address is in `allow` (IPv4-mapped IPv6 addresses count as IPv4)."""
        known = self._allowed_cache.get(host)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        verdict = any(ip in net or (mapped is not None and mapped in net) for net in self.allow)
        if len(self._allowed_cache) >= 1024:
            self._allowed_cache.clear()
        self._allowed_cache[host] = verdict
        return verdict
