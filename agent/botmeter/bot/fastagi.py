"""FastAGI server for the bot's signals: the thin asyncio transport around `session.AgiSession`.

Dialplan: `AGI(agi://127.0.0.1:4573/botmeter/usage?module=asr&quantity=12&unit=seconds)`.
One session per signal: read the AGI environment, check the request, ask Asterisk for the
call's linkedid, hand a `BotSignal` to `on_signal`, set `BOTMETER_STATUS` and close. What to
send and when a signal is complete is the pure session's business (`session.py`); this module
moves bytes, keeps the clocks and limits, and logs.

Each connection is a small `asyncio.Protocol` (no task, no stream objects), so a session costs
little more than the TCP connection itself. Every session is bounded (environment bytes and
time, reply time, concurrent sessions) and ends quietly whatever the peer does; nothing here
raises into the event loop.

Sessions are also capped below the process's file limit (the soft RLIMIT_NOFILE, raised to
the hard limit at start, less FD_RESERVE for the database, AMI and logs), and a connection is
refused when its descriptor shows the process near that limit. Refusals are logged at once,
then as a count at most every REFUSAL_LOG_SECONDS; so are accept() failures for lack of
descriptors (asyncio's loop retries them a second later; uvloop's libuv closes such
connections itself).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

import structlog

from botmeter.pbx.events import BotSignal
from botmeter.runtime import bound_port, raise_fd_limit

from .protocol import MAX_FIELDS, MAX_REPLY_LINES, Reply, parse_reply
from .session import (
    MAX_ENV_BYTES,
    ROUTE,
    AgiSession,
    DeliverSignal,
    Event,
    LinkedidMissing,
    Phase,
    RequestRefused,
    SendCommand,
    SessionEnd,
    parse_request,
)

__all__ = ["CLOSE_TIMEOUT", "FD_RESERVE", "MAX_FIELDS", "MAX_REPLY_LINES", "REFUSAL_LOG_SECONDS",
           "ROUTE", "FastAgiServer", "FastAgiStats", "Network", "RefusalLog", "Reply",
           "parse_networks", "parse_reply", "parse_request"]

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT = 1.0
#: file descriptors left for everything but sessions (database, AMI, logs, listening socket)
FD_RESERVE = 100
#: after a refusal is logged, more of the same reason are counted and logged this often
REFUSAL_LOG_SECONDS = 10.0

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


def parse_networks(allow: Iterable[Network | str] | str) -> tuple[Network, ...]:
    """`allow` as networks: parsed ones (from the config) as they are; strings (an IP address,
    meaning a /32 or /128, or a CIDR block without host bits) parsed as the config parses
    them; ValueError for a bad entry."""
    if isinstance(allow, str):
        allow = (allow,)
    return tuple(entry if isinstance(entry, Network) else ipaddress.ip_network(entry.strip())
                 for entry in allow)


class _Connection(asyncio.Protocol):
    """One FastAGI connection: socket events into the session, its events onto the socket, one
    timer."""

    def __init__(self, server: FastAgiServer, loop: asyncio.AbstractEventLoop) -> None:
        self.srv = server
        self.loop = loop
        self.session: AgiSession | None = None  # None: refused
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.finished = False
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.pending: asyncio.Future[Any] | None = None

    # -- socket events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
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
            self.finished = True
            stats.refused += 1
            srv.refusals.refused(reason, self.peer)
            self.transport.abort()
            return
        self.session = AgiSession(srv.max_header_bytes)
        stats.sessions += 1
        stats.active += 1
        srv._live.add(self)
        self._arm(srv.header_timeout)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or self.finished:
            return
        try:
            self._act(session.receive_data(data, self.srv.clock()))
        except Exception:  # a bug here must not leak the session
            log.exception("fastagi session failed", peer=self.peer)
            self._finish()

    def eof_received(self) -> bool:
        self._closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()

    def _closed(self) -> None:
        session = self.session
        if session is not None and not self.finished:
            self._safely(session.receive_eof, self.srv.clock())

    def _timed_out(self) -> None:
        self.timer = None
        left = self.deadline - self.loop.time()
        if left > 0:  # the deadline moved on: sleep again
            self.timer = self.loop.call_at(self.deadline, self._timed_out)
            return
        session = self.session
        if session is None or self.finished:
            return
        srv = self.srv
        after = srv.header_timeout if session.phase is Phase.ENV else srv.command_timeout
        self._safely(session.timed_out, srv.clock(), after)

    # -- the session's events ---------------------------------------------------------

    def _safely(self, step: Callable[..., list[Event]], *args: Any) -> None:
        """Act on what `step(*args)` returns; a bug there ends the session, never the loop."""
        try:
            self._act(step(*args))
        except Exception:
            log.exception("fastagi session failed", peer=self.peer)
            self._finish()

    def _act(self, events: list[Event]) -> None:
        for event in events:
            if self.finished:
                return
            if isinstance(event, SendCommand):
                self._send(event.data)
            elif isinstance(event, DeliverSignal):
                self._deliver(event.signal)
            elif isinstance(event, SessionEnd):
                if event.reason:
                    getattr(log, event.level)("fastagi peer dropped", peer=self.peer,
                                              reason=event.reason)
                self._finish()
            elif isinstance(event, RequestRefused):
                self.srv.stats.invalid += 1
                log.warning("fastagi bad signal refused", peer=self.peer, reason=event.reason,
                            uniqueid=event.uniqueid, script=event.script)
            elif isinstance(event, LinkedidMissing):
                log.debug("fastagi no linkedid from peer", peer=self.peer, reason=event.reason)

    def _send(self, data: bytes) -> None:
        """Write one AGI command and wait (command_timeout) for its reply."""
        transport = self.transport
        if transport is None or transport.is_closing():  # gone, connection_lost not yet run
            assert self.session is not None
            self._act(self.session.receive_eof(self.srv.clock()))
            return
        transport.write(data)
        self._arm(self.srv.command_timeout)

    def _deliver(self, sig: BotSignal) -> None:
        """Hand the signal to on_signal; tell the session how that went."""
        session = self.session
        assert session is not None
        try:
            result = self.srv.on_signal(sig)
        except Exception:
            log.exception("fastagi on_signal failed", linkedid=sig.linkedid, signal=sig.signal)
            self._act(session.signal_handled(False))
            return
        if inspect.isawaitable(result):
            self._disarm()
            self.pending = asyncio.ensure_future(result)
            self.pending.add_done_callback(self._callback_done)
            return
        self._act(session.signal_handled(True))

    def _callback_done(self, future: asyncio.Future[Any]) -> None:
        self.pending = None
        session = self.session
        if session is None or self.finished:
            return
        ok = not future.cancelled() and future.exception() is None
        if not ok:
            log.error("fastagi on_signal failed", signal=session.signal,
                      error=repr(None if future.cancelled() else future.exception()))
        self._safely(session.signal_handled, ok)

    # -- plumbing ---------------------------------------------------------------------

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
        if self.finished:
            return
        self.finished = True
        self._disarm()
        srv = self.srv
        srv._live.discard(self)
        srv.stats.active -= 1
        if self.session is not None and self.session.delivered:
            srv.stats.signals += 1
        else:
            srv.stats.errors += 1
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
        allow: Iterable[Network | str] | str = ("127.0.0.1", "::1"),
        on_signal: OnSignal | None = None,
        clock: Callable[[], float] = time.time,
        header_timeout: float = 5.0,
        command_timeout: float = 5.0,
        max_header_bytes: int = MAX_ENV_BYTES,
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
        self._live: set[_Connection] = set()
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
            lambda: _Connection(self, loop), self.host, self._port,
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
        return bound_port(self._server, self._port)

    def counters(self) -> dict[str, int]:
        """The counters as a dict (for logs and tests)."""
        return asdict(self.stats)

    def set_allow(self, allow: Iterable[Network | str] | str) -> None:
        """Allow these peers from the next connection on (a reload)."""
        self.allow = parse_networks(allow)
        self._allowed_cache.clear()

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
