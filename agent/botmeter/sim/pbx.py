"""A simulated Asterisk PBX speaking the AMI wire protocol over TCP.

It plays `ScriptedCall`s with the events of `botmeter.sim.events.call_events`
and sends them to every logged-in AMI client, stamped with *virtual* time:
`speed` virtual seconds pass per wall second, and `Timestamp` headers carry
`epoch + virtual seconds`, so recorded durations equal the scripted ones at
any speed.

Calls that signal by AGI (`ScriptedCall.signal_via` "fastagi" or "agi") make
the PBX act as Asterisk's res_agi: a FastAGI session to `agi_host:agi_port`,
or the classic AGI script `agi_command` run as a subprocess (see
`botmeter.sim.agi`). Like the AGI application blocks its channel, a session
blocks play(): nothing else is emitted until it ends, and the virtual clock
stands still at the step's scheduled time meanwhile (an AGI takes no virtual
time), so later events keep their scheduled stamps and `now()` during a
session is that step's time.

Like Asterisk, the PBX keeps its own records of the calls when asked: CEL into
a SQLite file (`cel_db`), CDRs into a SQLite file (`cdr_db`) and/or a Master.csv
(`cdr_csv`), derived from what it emits (`botmeter.sim.records`). `truth`
appends what a correct record of each call says as it ends (`botmeter.sim.truth`).
`restart()` restarts it as `core restart now` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import logging
import math
import secrets
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from botmeter.sim.agi import (
    FASTAGI_PORT,
    AgiFailure,
    AgiRequest,
    run_agi_script,
    run_fastagi,
)
from botmeter.sim.events import (
    DEFAULT_PRIVILEGE,
    FASTAGI_MARKER,
    PRIVILEGES,
    CallIds,
    SimEvent,
    call_events,
    ids_needed,
    is_marker,
)
from botmeter.sim.records import Commit, PbxRecords
from botmeter.sim.scenarios import ScriptedCall
from botmeter.sim.truth import TruthFile, replayed_truth, scripted_truth

log = logging.getLogger(__name__)

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
#: the classic AGI script `AGI(botmeter-agi,...)` runs
DEFAULT_AGI_COMMAND: tuple[str, ...] = (sys.executable, "-m", "botmeter.bot.agi_script")
AGI_TIMEOUT = 5.0  # seconds (wall) an AGI session may take before it is cut off
MAX_LINE = 64 * 1024  # longer request lines close the connection
MAX_HEADERS = 128  # more headers in one request close the connection
MAX_CLIENT_BUFFER = 8 * 1024 * 1024  # a client this far behind is disconnected
SNAPSHOT_KEYS = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
    "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context",
    "Exten", "Priority", "Uniqueid", "Linkedid",
)

Message = list[tuple[str, str]]
Reply = Callable[..., None]
#: manager.conf's `read`/`write` value giving every class
ALL_CLASSES = "all"
#: the write classes either of which lets a user send CoreShowChannels (Asterisk's manager.c)
CORESHOWCHANNELS_CLASSES = frozenset({"system", "reporting"})
#: the hangup cause of a channel Asterisk hangs up at shutdown (it sets none: CEL shows 0)
SHUTDOWN_CAUSE = 0


def classes(text: str) -> frozenset[str]:
    """A manager.conf class list (`call,agent`) or an event's `Privilege` as a set; `all` kept."""
    return frozenset(part.strip().lower() for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class ManagerUser:
    """One `[user]` of manager.conf: its secret and the classes it may read and write."""

    secret: str
    read: frozenset[str] = frozenset({ALL_CLASSES})
    write: frozenset[str] = frozenset({ALL_CLASSES})

    def may_read(self, privilege: str) -> bool:
        """Asterisk sends an event only to a session that may read every class it is in."""
        needed = classes(privilege) - {ALL_CLASSES}
        return ALL_CLASSES in self.read or needed <= self.read

    def may_write(self, allowed: frozenset[str]) -> bool:
        return ALL_CLASSES in self.write or bool(self.write & allowed)


class _ProtocolError(Exception):
    """The client broke the protocol badly enough to be disconnected."""


def frame(pairs: Sequence[tuple[str, str]]) -> bytes:
    """One AMI message: `Key: Value` lines and a blank line, UTF-8."""
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode("utf-8")


def _header(message: Message, name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in message if k.lower() == name), None)


@dataclass(slots=True, eq=False)
class _Client:
    """State of one AMI connection."""

    writer: asyncio.StreamWriter
    authenticated: bool = False
    events: bool = True
    challenge: str | None = None
    user: ManagerUser | None = None  # once logged in

    def send(self, data: bytes) -> None:
        transport = self.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_CLIENT_BUFFER:
            log.warning("sim AMI client too slow, disconnecting it")
            transport.abort()
            return
        transport.write(data)


@dataclass(slots=True)
class _LiveChannel:
    """What CoreShowChannels reports about a channel that is up."""

    created: float  # virtual unix time
    snapshot: list[tuple[str, str]] = field(default_factory=list)
    application: str = ""
    data: str = ""
    bridge: str = ""
    bridge_headers: list[tuple[str, str]] = field(default_factory=list)  # its BridgeEnter's


@dataclass(slots=True, eq=False)
class _Playing:
    """One call in progress: what play() scheduled, and what its truth needs."""

    call: ScriptedCall
    call_id: str  # its linkedid: the uniqueid of its first channel
    offered_at: float
    remaining: int  # its events not emitted yet
    group: set[_Playing]  # the calls in progress of the play() that placed it
    history: list[tuple[float, SimEvent]] | None  # what it emitted (kept for a truth file)
    started: bool = False  # its first events are out
    cut: bool = False  # a restart ended it


class SimulatedPBX:
    """An Asterisk-like AMI server that plays scripted voice-bot calls.

    agi_host/agi_port: the FastAGI server "fastagi" calls signal to (read at
    play(); a "fastagi" call with agi_port None is a ValueError there);
    agi_command: what runs for `AGI(botmeter-agi,...)`; agi_timeout: wall
    seconds one AGI session may take. Sessions that fail (cannot connect or
    start, time out, or end without BOTMETER_STATUS=ok) are logged and counted
    in `agi_failures`; they never stop play().
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, username: str = "botmeter",
                 secret: str = "botmeter-sim", speed: float = 1.0,
                 epoch: float | None = None, agi_host: str = "127.0.0.1",
                 agi_port: int | None = None,
                 agi_command: Sequence[str] = DEFAULT_AGI_COMMAND,
                 agi_timeout: float = AGI_TIMEOUT, read: str = ALL_CLASSES,
                 write: str = ALL_CLASSES, timestamp_events: bool = True,
                 cel_db: Path | None = None, cdr_db: Path | None = None,
                 cdr_csv: Path | None = None, records_commit: Commit = "step",
                 truth: Path | None = None) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        if not agi_command or isinstance(agi_command, str):
            raise ValueError("agi_command must be a non-empty sequence of strings")
        if not agi_timeout > 0:
            raise ValueError("agi_timeout must be > 0")
        self.host = host
        self.username = username
        self.secret = secret
        #: manager.conf's users; `username` is one of them (`add_user` adds more)
        self.users: dict[str, ManagerUser] = {}
        self.add_user(username, secret, read=read, write=write)
        #: manager.conf's `timestampevents`: events carry a `Timestamp` header
        self.timestamp_events = timestamp_events
        self.speed = float(speed)
        self.epoch = epoch  # virtual unix time at start(); time.time() if None
        self.login_failures = 0
        self.agi_host = agi_host
        self.agi_port = agi_port
        self.agi_command = tuple(agi_command)
        self.agi_timeout = float(agi_timeout)
        self.agi_sessions = 0  # AGI sessions run (FastAGI and script)
        self.agi_failures = 0  # ... of which failed
        self.agi_last_failure = ""  # why the last one failed
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._channels: dict[str, _LiveChannel] = {}
        self._wall0 = 0.0
        self._closed = False
        self._stopping = asyncio.Event()
        self._held: float | None = None  # the virtual clock stands here during an AGI session
        self._resumed = asyncio.Event()  # set while the clock runs
        self._resumed.set()
        self._agi_lock = asyncio.Lock()
        self._calls = 0
        self._uniqueids = 0
        self._locals = 0
        self._sips = 0
        self.cel_db, self.cdr_db, self.cdr_csv = cel_db, cdr_db, cdr_csv
        self.records_commit: Commit = records_commit
        self.truth_path = truth
        self.records: PbxRecords | None = None  # opened by start() when a file is asked for
        self._truth: TruthFile | None = None
        self._playing: dict[_Playing, None] = {}  # calls in progress, oldest first
        self._owner: dict[str, _Playing] = {}  # live channel uniqueid -> its call
        self._down = False  # restarting: the listener is closed, no call is placed
        self.restarts = 0
        self.calls_placed = 0  # calls whose first events are out
        #: calls never placed: due while the PBX was down, or cut by a restart before their
        #: first event
        self.calls_missed = 0

    def add_user(self, username: str, secret: str, *, read: str = ALL_CLASSES,
                 write: str = ALL_CLASSES) -> None:
        """A manager user, as a `[username]` section of manager.conf would define it."""
        self.users[username] = ManagerUser(secret, classes(read), classes(write))

    # ---- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Listen; `port` is the bound port afterwards."""
        if self._server is not None:
            raise RuntimeError("already started")
        try:
            if self.cel_db or self.cdr_db or self.cdr_csv:
                self.records = PbxRecords(cel_db=self.cel_db, cdr_db=self.cdr_db,
                                          cdr_csv=self.cdr_csv, commit=self.records_commit)
            if self.truth_path is not None:
                self._truth = TruthFile(self.truth_path)
            self._server = await self._listen(self._requested_port)
        except BaseException:
            self._close_files()
            raise
        self._port = self._server.sockets[0].getsockname()[1]
        self._wall0 = asyncio.get_running_loop().time()
        if self.epoch is None:
            self.epoch = time.time()
        log.info("simulated PBX listening on %s:%s (speed %g)", self.host, self._port, self.speed)

    async def stop(self) -> None:
        """Send `Event: Shutdown` to the clients, close them and the server."""
        if self._port is None or self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._resumed.set()  # wake play() loops waiting for an AGI session to end
        await self._shut_down(restart=False)
        self._close_files()

    def _close_files(self) -> None:
        if self.records is not None:
            self.records.close()
        if self._truth is not None:
            self._truth.close()

    async def _listen(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve, self.host, port, limit=MAX_LINE)

    async def _shut_down(self, *, restart: bool) -> None:
        """`Event: Shutdown` to the clients that may read it; close them and the listener."""
        shutdown = frame([("Event", "Shutdown"), ("Privilege", "system,all"),
                          *self._stamp(self.now()), ("Shutdown", "Cleanly"),
                          ("Restart", "True" if restart else "False")])
        clients = list(self._clients)
        self._clients.clear()
        for client in clients:
            if client.authenticated and client.user and client.user.may_read("system,all"):
                client.send(shutdown)
            client.writer.close()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._handlers:
            _, pending = await asyncio.wait(self._handlers, timeout=1.0)
            if pending:  # clients that do not read: cut them off
                for client in clients:
                    client.writer.transport.abort()
                await asyncio.wait(pending, timeout=1.0)
        if server is not None:
            await server.wait_closed()

    async def restart(self, down_seconds: float = 0.0, *, hangups_on_ami: bool = False) -> None:
        """Restart like `core restart now`: every channel in progress is hung up (cause 0, as
        Asterisk sets none at shutdown; their CEL and CDRs are written and their calls end,
        cut), clients get `Event: Shutdown` (`Restart: True`) and are closed, connections are
        refused for `down_seconds` (wall time), then it listens again on the same port.

        By default the hangups never reach AMI (the agent sees Shutdown, then nothing: calls
        in progress must be closed from CEL); `hangups_on_ami` sends them first, as a real
        Asterisk does while it waits for its channels to die before the Shutdown event.
        Calls due while it is down (or cut before their first event) are not placed
        (`calls_missed`; `calls_placed` counts the others). Uniqueids restart their
        sequence at 0, with a later time before the dot, so none repeats; channel names
        restart their numbering too. A restart waits for an AGI session in progress to end.
        """
        if self._server is None or self._closed or self._down:
            raise RuntimeError("restart() needs a running PBX")
        if not 0 <= down_seconds < math.inf:
            raise ValueError("down_seconds must be >= 0")
        async with self._agi_lock:
            self._down = True
            stamp = self.now()
            if hangups_on_ami:
                self._hang_up_all(stamp)
            await self._shut_down(restart=True)
            if not hangups_on_ami:
                self._hang_up_all(stamp)
        self.restarts += 1
        log.info("simulated PBX restarting: down for %g s", down_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), down_seconds)
        self._new_ids(stamp)
        if not self._closed:
            self._server = await self._listen(self.port)
        self._down = False

    def _hang_up_all(self, stamp: float) -> None:
        """Hang up every live channel (out of its bridge first); end their calls, cut."""
        for uniqueid, live in list(self._channels.items()):
            playing = self._owner.get(uniqueid)
            if live.bridge:
                self._emit(stamp, SimEvent(0.0, "BridgeLeave", (*live.bridge_headers,
                                                                 *live.snapshot)), playing)
            self._emit(stamp, SimEvent(0.0, "Hangup", (*live.snapshot, (
                "Cause", str(SHUTDOWN_CAUSE)), ("Cause-txt", "Unknown"))), playing)
        if self.records is not None:
            self.records.flush()
        for playing in list(self._playing):
            playing.cut = True
            playing.group.discard(playing)
            if playing.started:
                self._ended(playing)
            else:
                self._playing.pop(playing)
                self.calls_missed += 1

    def _new_ids(self, stamp: float) -> None:
        """After a restart: sequences from 0, the clock at least a second past `stamp`."""
        ahead = math.floor(stamp) + 1 - self.now()
        if ahead > 0:
            self._wall0 -= ahead / self.speed
        self._uniqueids = self._locals = self._sips = 0

    async def __aenter__(self) -> SimulatedPBX:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("not started")
        return self._port

    @property
    def agi_url(self) -> str:
        """`agi://host:port` of the FastAGI server, as the dialplan names it."""
        host = f"[{self.agi_host}]" if ":" in self.agi_host else self.agi_host
        return f"agi://{host}:{self.agi_port if self.agi_port is not None else FASTAGI_PORT}"

    @property
    def down(self) -> bool:
        """Restarting: connections are refused and no call is placed."""
        return self._down

    @property
    def clients(self) -> int:
        """Currently logged-in clients."""
        return sum(1 for client in self._clients if client.authenticated)

    def now(self) -> float:
        """The current virtual unix time (it stands still during an AGI session)."""
        if self.epoch is None:
            raise RuntimeError("not started")
        if self._held is not None:
            return self._held
        elapsed = asyncio.get_running_loop().time() - self._wall0
        return self.epoch + elapsed * self.speed

    def drop_clients(self) -> None:
        """Abruptly close every AMI connection; calls go on, events meanwhile are lost."""
        for client in list(self._clients):
            client.writer.transport.abort()
        self._clients.clear()

    # ---- playing calls ------------------------------------------------------

    async def play(self, calls: Sequence[ScriptedCall], *, rate: float | None = None,
                   concurrency: int | None = None) -> None:
        """Run `calls`; return when all have ended.

        rate: new calls per virtual second (None: each call's `start_offset`);
        concurrency: at most this many calls in progress at once (later calls wait,
        and still start no faster than `rate`).
        ValueError if a call signals by "fastagi" and `agi_port` is None.
        """
        if self._port is None:
            raise RuntimeError("start() the PBX first")
        if self.agi_port is None and any(c.signal_via == "fastagi" for c in calls):
            raise ValueError("calls signal by FastAGI but the PBX has no agi_port")
        agi_url = self.agi_url
        if rate is not None and not rate > 0:
            raise ValueError("rate must be > 0")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        base = self.now()
        if rate is None:
            starts = [base + call.start_offset for call in calls]
        else:
            starts = [base + index / rate for index in range(len(calls))]
        waiting = deque(sorted(range(len(calls)), key=lambda index: (starts[index], index)))
        heap: list[tuple[float, int, SimEvent, _Playing]] = []
        order = itertools.count()
        active: set[_Playing] = set()
        current = base  # virtual time of the last step: keeps delayed starts deterministic
        gap = 0.0 if rate is None else 1.0 / rate
        last_start = -math.inf
        while not self._closed:
            while heap and heap[0][3].cut:  # what a restart cut short never happens
                heapq.heappop(heap)
            can_start = waiting and (concurrency is None or len(active) < concurrency)
            next_start = (max(starts[waiting[0]], current, last_start + gap)
                          if can_start else math.inf)
            next_event = heap[0][0] if heap else math.inf
            if next_start == next_event == math.inf:
                break
            current = min(next_start, next_event)
            await self._sleep_until(current)
            if next_start <= next_event:
                last_start = current
                call = calls[waiting.popleft()]
                if self._down:
                    self.calls_missed += 1
                    continue
                events = call_events(call, self._reserve_ids(call, current), agi_url=agi_url)
                playing = self._place(call, current, events, active)
                for event in events:
                    heapq.heappush(heap, (current + event.offset, next(order), event, playing))
                continue
            # emit every event due now (same virtual time) in one go
            while heap and heap[0][0] <= current and not self._closed:
                stamp, _, event, playing = heapq.heappop(heap)
                if playing.cut:
                    continue
                if is_marker(event):
                    await self._run_agi(stamp, event, playing)  # blocks like the AGI app
                else:
                    self._emit(stamp, event, playing)
                playing.remaining -= 1
                if playing.remaining == 0 and not playing.cut:
                    active.discard(playing)
                    self._ended(playing)
            if self.records is not None:
                self.records.flush(idle=False)
        if self.records is not None:
            self.records.flush()  # the last calls' last rows: nothing else is due to commit them

    def _place(self, call: ScriptedCall, start: float, events: list[SimEvent],
               group: set[_Playing]) -> _Playing:
        """A call starts: keep it among the calls in progress."""
        call_id = dict(events[0].headers).get("Linkedid", "") if events else ""
        playing = _Playing(call, call_id, start, len(events), group,
                           [] if self._truth is not None else None)
        group.add(playing)
        self._playing[playing] = None
        return playing

    def _ended(self, playing: _Playing) -> None:
        """A call is over: its truth line, if a truth file is kept."""
        self._playing.pop(playing, None)
        if self._truth is None:
            return
        if playing.cut:
            line = replayed_truth(playing.history or (), playing.call_id)
        else:
            line = scripted_truth(playing.call, playing.call_id, playing.offered_at)
        if line is not None:
            self._truth.write(line)

    def _reserve_ids(self, call: ScriptedCall, start: float) -> CallIds:
        uniqueids, locals_, sips = ids_needed(call)
        ids = CallIds(seq=self._calls, start=start, uniqueid_base=self._uniqueids,
                      local_base=self._locals, sip_base=self._sips, bridge_id=str(uuid.uuid4()))
        self._calls += 1
        self._uniqueids += uniqueids
        self._locals += locals_
        self._sips += sips
        return ids

    async def _sleep_until(self, virtual: float) -> None:
        assert self.epoch is not None
        loop = asyncio.get_running_loop()
        slept = False
        while not self._closed:
            if self._held is not None:  # another play() runs an AGI session: time stands
                await self._resumed.wait()
                slept = True
                continue
            delay = self._wall0 + (virtual - self.epoch) / self.speed - loop.time()
            if delay <= 0:
                break
            if self.records is not None:
                self.records.flush()  # all that is due is out: its rows too
            with contextlib.suppress(TimeoutError):  # wake early when the PBX stops
                await asyncio.wait_for(self._stopping.wait(), delay)
            slept = True
        if not slept:
            await asyncio.sleep(0)  # yield, so clients are served even when events are overdue

    # ---- AGI ----------------------------------------------------------------

    async def _run_agi(self, stamp: float, marker: SimEvent, playing: _Playing) -> None:
        """Run the AGI session of `marker` (scheduled at `stamp`) to its end.

        Its events are stamped `stamp`; the clock stands still meanwhile.
        """
        async with self._agi_lock:
            if self._closed:
                return
            request = AgiRequest.from_marker(marker)
            if playing.history is not None:
                playing.history.append((stamp, marker))

            def emit(name: str, headers: list[tuple[str, str]]) -> None:
                self._emit(stamp, SimEvent(marker.offset, name, tuple(headers)), playing)

            self._hold(stamp)
            self.agi_sessions += 1
            status = "SUCCESS"
            try:
                if request.kind == FASTAGI_MARKER:
                    session = run_fastagi(request, emit, self.agi_timeout)
                else:
                    session = run_agi_script(request, emit, self.agi_command, self.agi_timeout)
                await self._unless_stopped(session)
            except AgiFailure as exc:
                status = exc.agistatus
                self._agi_failed(request, str(exc))
            except Exception as exc:  # never let an AGI session break play()
                status = "FAILURE"
                log.exception("sim AGI session crashed")
                self._agi_failed(request, f"{type(exc).__name__}: {exc}")
            finally:
                self._resume(stamp)
            emit("VarSet", [*request.snapshot, ("Variable", "AGISTATUS"), ("Value", status)])

    async def _unless_stopped(self, session: Coroutine[Any, Any, object]) -> None:
        """Await `session`; cut it off (AgiFailure) if the PBX stops meanwhile."""
        task = asyncio.ensure_future(session)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            raise AgiFailure("the PBX stopped during the AGI session")
        task.result()

    def _agi_failed(self, request: AgiRequest, why: str) -> None:
        self.agi_failures += 1
        self.agi_last_failure = why
        log.warning("sim AGI failed on %s (linkedid %s, AGI(%s)): %s",
                    request.header("Channel"), request.header("Linkedid"),
                    request.app_data, why)

    def _hold(self, stamp: float) -> None:
        if self.records is not None:
            self.records.flush()
        self._held = stamp
        self._resumed.clear()

    def _resume(self, stamp: float) -> None:
        """The clock runs on from `stamp` (the wall time of the session is skipped)."""
        assert self.epoch is not None
        self._wall0 = asyncio.get_running_loop().time() - (stamp - self.epoch) / self.speed
        self._held = None
        self._resumed.set()

    def _emit(self, stamp: float, event: SimEvent, playing: _Playing | None = None) -> None:
        """One event happens: to the PBX's records, its call's history and (unless a
        marker) the AMI clients that may read it."""
        if self.records is not None:
            self.records.event(stamp, event.name, dict(event.headers))
        if playing is not None:
            if not playing.started:
                playing.started = True
                self.calls_placed += 1
            if playing.history is not None:
                playing.history.append((stamp, event))
        if is_marker(event):
            return
        self._track(stamp, event, playing)
        privilege = PRIVILEGES.get(event.name, DEFAULT_PRIVILEGE)
        receivers = [c for c in self._clients if c.authenticated and c.events
                     and c.user is not None and c.user.may_read(privilege)]
        if not receivers:
            return
        data = frame([
            ("Event", event.name),
            ("Privilege", privilege),
            *self._stamp(stamp),
            *event.headers,
        ])
        for client in receivers:
            client.send(data)

    def _stamp(self, stamp: float) -> list[tuple[str, str]]:
        """The `Timestamp` header, when timestampevents is on."""
        return [("Timestamp", f"{stamp:.6f}")] if self.timestamp_events else []

    def _track(self, stamp: float, event: SimEvent, playing: _Playing | None) -> None:
        """Keep the live-channel table (for CoreShowChannels and restarts) up to date."""
        headers = dict(event.headers)
        uniqueid = headers.get("Uniqueid")
        if uniqueid is None or "Channel" not in headers:
            return
        if event.name == "Hangup":
            self._channels.pop(uniqueid, None)
            self._owner.pop(uniqueid, None)
            return
        live = self._channels.get(uniqueid)
        if live is None:
            if event.name != "Newchannel":
                return
            live = self._channels[uniqueid] = _LiveChannel(created=stamp)
            if playing is not None:
                self._owner[uniqueid] = playing
        live.snapshot = [(key, headers[key]) for key in SNAPSHOT_KEYS]
        if event.name == "Newexten":
            live.application, live.data = headers["Application"], headers["AppData"]
        elif event.name == "BridgeEnter":
            live.bridge = headers["BridgeUniqueid"]
            live.bridge_headers = [(k, v) for k, v in event.headers if k.startswith("Bridge")]
        elif event.name == "BridgeLeave":
            live.bridge = ""

    # ---- AMI connections ----------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if self._closed:
                return
            self._clients.add(client)
            writer.write(BANNER)
            while True:
                message = await self._read_message(reader)
                if message is None or not self._handle(client, message):
                    break
                await writer.drain()
        except (ConnectionError, _ProtocolError, ValueError, asyncio.LimitOverrunError) as exc:
            log.debug("sim AMI client dropped: %r", exc)
        except Exception:  # never let one client take the simulator down
            log.exception("sim AMI client handler failed")
        finally:
            self._clients.discard(client)
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> Message | None:
        """Next request (headers up to a blank line); None at end of stream."""
        message: Message = []
        while True:
            line = await reader.readline()  # ValueError beyond MAX_LINE
            if not line:
                return None
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                if message:
                    return message
                continue
            key, colon, value = text.partition(":")
            if not colon:
                continue  # not a header: ignored, like Asterisk does
            if len(message) >= MAX_HEADERS:
                raise _ProtocolError("too many headers")
            message.append((key.strip(), value.strip()))

    def _handle(self, client: _Client, message: Message) -> bool:
        """Answer one request; False closes the connection."""
        action = (_header(message, "Action") or "").lower()
        action_id = _header(message, "ActionID")

        def reply(response: str, *pairs: tuple[str, str]) -> None:
            head = [("Response", response)]
            if action_id:
                head.append(("ActionID", action_id))
            client.send(frame([*head, *pairs]))

        if not action:
            reply("Error", ("Message", "Missing action in request"))
        elif action == "challenge":
            if (_header(message, "AuthType") or "").lower() != "md5":
                reply("Error", ("Message", "Must specify AuthType"))
            else:
                client.challenge = str(secrets.randbelow(10**9 - 10**8) + 10**8)
                reply("Success", ("Challenge", client.challenge))
        elif action == "login":
            if not self._authenticate(client, message):
                self.login_failures += 1
                reply("Error", ("Message", "Authentication failed"))
                return False
            client.authenticated = True
            client.user = self.users[_header(message, "Username") or ""]
            client.events = (_header(message, "Events") or "on").lower() != "off"
            reply("Success", ("Message", "Authentication accepted"))
        elif action == "logoff":
            reply("Goodbye", ("Message", "Thanks for all the fish."))
            return False
        elif not client.authenticated:
            reply("Error", ("Message", "Authentication Required"))
        elif action == "ping":
            reply("Success", ("Ping", "Pong"), ("Timestamp", f"{self.now():.6f}"))
        elif action == "events":
            mask = (_header(message, "EventMask") or "on").lower()
            client.events = mask != "off"
            reply("Success", ("Events", "On" if client.events else "Off"))
        elif action == "coreshowchannels":
            if client.user is None or not client.user.may_write(CORESHOWCHANNELS_CLASSES):
                reply("Error", ("Message", "Permission denied"))
            else:
                self._core_show_channels(client, action_id, reply)
        else:
            reply("Error", ("Message", "Invalid/unknown command"))
        return True

    def _authenticate(self, client: _Client, message: Message) -> bool:
        user = self.users.get(_header(message, "Username") or "")
        if user is None:
            return False
        if (_header(message, "AuthType") or "").lower() == "md5":
            key = _header(message, "Key") or ""
            if client.challenge is None:
                return False
            digest = hashlib.md5((client.challenge + user.secret).encode()).hexdigest()
            return hmac.compare_digest(key.lower(), digest)
        secret = _header(message, "Secret")
        return secret is not None and hmac.compare_digest(secret.encode(), user.secret.encode())

    def _core_show_channels(self, client: _Client, action_id: str | None,
                            reply: Reply) -> None:
        reply("Success", ("EventList", "start"), ("Message", "Channels will follow"))
        id_header = [("ActionID", action_id)] if action_id else []
        now = self.now()
        for live in list(self._channels.values()):
            seconds = max(0, int(now - live.created))
            duration = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
            client.send(frame([
                ("Event", "CoreShowChannel"), *id_header, *live.snapshot,
                ("Application", live.application), ("ApplicationData", live.data),
                ("Duration", duration), ("BridgeId", live.bridge),
            ]))
        client.send(frame([("Event", "CoreShowChannelsComplete"), *id_header,
                           ("EventList", "Complete"), ("ListItems", str(len(self._channels)))]))
