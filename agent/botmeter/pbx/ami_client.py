"""Stay attached to Asterisk's AMI: login, watch, reconnect forever."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from ..backoff import Backoff
from .ami_protocol import BotmeterAmiProtocol
from .events import PbxEvent, SnapshotStarted
from .stream import BadValues
from .traffic import AmiTraffic, discarded

log = structlog.get_logger(__name__)

#: a session must stay attached this long for the reconnect backoff to start over; a peer
#: that accepts the login and hangs up at once gets ever longer delays, not a storm
STABLE_SESSION_SECONDS = 30.0


class AmiLoginError(Exception):
    """Asterisk refused the login."""


#: the action asking for an MD5 challenge (`auth = "md5"`)
CHALLENGE = {"Action": "Challenge", "AuthType": "MD5"}


@dataclass(frozen=True, slots=True)
class AmiSettings:
    host: str
    port: int
    username: str
    secret: str
    tls: bool = False
    auth: str = "md5"  # "md5" (challenge) or "plain"
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0
    stable_after: float = STABLE_SESSION_SECONDS


def login_action(settings: AmiSettings, challenge: str | None) -> dict[str, str]:
    """The Login action, events on: with the MD5 key of `challenge` (`auth = "md5"`), else the
    secret in plain."""
    login = {"Action": "Login", "Username": settings.username, "Events": "on"}
    if challenge is not None:
        key = hashlib.md5((challenge + settings.secret).encode()).hexdigest()
        login.update(AuthType="MD5", Key=key)
    else:
        login["Secret"] = settings.secret
    return login


class AttachHooks(Protocol):
    """What heals a gap at each attach (`botmeter.recovery.heal.Healer`)."""

    def hold(self) -> None:
        """Connected, not logged in yet: hold the events to come."""

    async def attached(self) -> None:
        """Logged in: heal the gap, then let the held events through."""

    def release(self) -> None:
        """The session ended before it was healed: let the held events through."""

    def detached(self) -> None:
        """A session ended (or could not open): what comes meanwhile (the bot's FastAGI
        signals) is for the next attach's heal to sort."""


class AmiClient:
    """Feeds typed events to `on_event`; never gives up on Asterisk until `stop()`.

    With `hooks`, each session's events are held from connect until `hooks.attached()` has
    healed the gap since the last one."""

    def __init__(self, settings: AmiSettings, on_event: Callable[[PbxEvent], None], *,
                 clock: Callable[[], float] = time.time,
                 hooks: AttachHooks | None = None) -> None:
        self.settings = settings
        self._on_event = on_event
        self._hooks = hooks
        self._clock = clock
        self._stopping = asyncio.Event()
        self._protocol: BotmeterAmiProtocol | None = None
        self.connected = asyncio.Event()
        #: why the last attempt failed or the session ended (None while attached)
        self.last_error: str | None = None
        self.sessions = 0
        self.failures = 0
        self.bad_values = BadValues()  # over all sessions
        self.traffic = AmiTraffic()  # over all sessions
        self.reconnects = 0
        #: back-pressure: the socket is not read, nor a new session opened, while True
        self.reading_paused = False
        self._flowing = asyncio.Event()
        self._flowing.set()

    def pause_reading(self) -> None:
        """Stop reading Asterisk's events (the writer's backlog is at its bound): the socket
        is left unread, no ping is sent, and no new session starts until `resume_reading()`.
        Asterisk may drop a session left unread this long (its `writetimeout`): that is
        noticed once reading resumes, and the client reconnects."""
        if self.reading_paused:
            return
        self.reading_paused = True
        self._flowing.clear()
        if self.connected.is_set():
            self._set_reading(False)

    def resume_reading(self) -> None:
        """Read again (the events Asterisk sent meanwhile come first)."""
        if not self.reading_paused:
            return
        self.reading_paused = False
        self._flowing.set()
        self._set_reading(True)

    def _set_reading(self, on: bool) -> None:
        transport = None if self._protocol is None else self._protocol.transport
        if transport is None or transport.is_closing():
            return
        if on and not transport.is_reading():
            transport.resume_reading()
        elif not on and transport.is_reading():
            transport.pause_reading()

    async def _until_flowing(self) -> None:
        """While reading is paused, wait (or for the stop) before opening a session."""
        if self._flowing.is_set():
            return
        log.info("ami session waits until reading resumes (calls waiting to be stored)",
                 host=self.settings.host, port=self.settings.port)
        stopping = asyncio.ensure_future(self._stopping.wait())
        flowing = asyncio.ensure_future(self._flowing.wait())
        try:
            await asyncio.wait({stopping, flowing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            flowing.cancel()

    async def run(self) -> None:
        s = self.settings
        backoff = Backoff(s.reconnect_min, s.reconnect_max, stable_after=s.stable_after)
        while not self._stopping.is_set():
            await self._until_flowing()
            if self._stopping.is_set():
                break
            try:
                await self._session(backoff)
            except AmiLoginError as exc:
                self.failures += 1
                self.last_error = f"login refused: {exc}"
                log.error("ami login refused", host=self.settings.host, port=self.settings.port,
                          username=self.settings.username, reason=str(exc),
                          hint="check [ami] username/secret and manager.conf")
            except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                log.warning("ami connection failed", host=self.settings.host,
                            port=self.settings.port, error=self.last_error)
            finally:
                self.connected.clear()
                if self._protocol is not None:
                    self._protocol.close()
                    self.traffic.session_ended(self._protocol.parser.stats)
                    self._protocol = None
                if self._hooks is not None and not self._stopping.is_set():
                    self._hooks.detached()
            attached = backoff.down()  # the schedule starts over only after a stable session
            if self._stopping.is_set():
                break
            delay = backoff.next_delay()
            self.reconnects += 1
            log.info("ami reconnecting", in_seconds=round(delay, 2), attempt=backoff.attempt,
                     attached_seconds=None if attached is None else round(attached, 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def discarded_frames(self) -> int:
        """Bad header lines, oversized and junk frames over all sessions, this one included."""
        current = self._protocol
        return self.traffic.discarded_frames + (discarded(current.parser.stats) if current else 0)

    async def stop(self) -> None:
        self._stopping.set()
        if self._protocol is not None:
            self._protocol.close()

    async def _session(self, backoff: Backoff) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if s.tls else None
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: BotmeterAmiProtocol(self._on_event, self._clock, self.bad_values,
                                            self.traffic),
                s.host, s.port, ssl=context),
            s.connect_timeout,
        )
        self._protocol = protocol
        hooks = self._hooks
        if hooks is not None:
            hooks.hold()
        try:
            await self._login(protocol)
            backoff.up()
            self.sessions += 1
            log.info("ami attached", host=s.host, port=s.port, banner=protocol.parser.banner)
            if hooks is not None:
                await hooks.attached()
        finally:
            if hooks is not None:
                hooks.release()
        self._on_event(SnapshotStarted(round(self._clock(), 3)))
        await self._action(protocol, {"Action": "CoreShowChannels"})
        self.last_error = None
        self.connected.set()
        if self.reading_paused:  # paused while logging in
            self._set_reading(False)
        await self._watch(protocol)

    async def _action(self, protocol: BotmeterAmiProtocol, action: dict[str, str]):
        if protocol.lost.done():  # lost while the session logged in or healed: no reply will come
            raise ConnectionError(f"AMI {protocol.lost.result()}")
        reply = await asyncio.wait_for(protocol.send(action), self.settings.ping_timeout * 2)
        return reply[0] if isinstance(reply, list) else reply

    async def _login(self, protocol: BotmeterAmiProtocol) -> None:
        s = self.settings
        challenge = None
        if s.auth == "md5":
            answer = await self._action(protocol, CHALLENGE)
            if not answer.success or not answer.get("Challenge"):
                raise AmiLoginError(f"MD5 challenge refused: {answer.get('Message') or answer}")
            challenge = answer["Challenge"]
        reply = await self._action(protocol, login_action(s, challenge))
        if not reply.success:
            raise AmiLoginError(reply.get("Message") or "login failed")

    async def _watch(self, protocol: BotmeterAmiProtocol) -> None:
        """Ping until the connection is lost, Asterisk shuts down, or pings go unanswered."""
        s = self.settings
        while not protocol.lost.done() and not self._stopping.is_set():
            done, _ = await asyncio.wait({protocol.lost}, timeout=s.ping_interval)
            if done or self._stopping.is_set():
                break
            if self.reading_paused:  # no answer could be read: ping once reading resumes
                continue
            try:
                await asyncio.wait_for(protocol.send({"Action": "Ping"}), s.ping_timeout)
            except (TimeoutError, ConnectionError):
                log.warning("ami ping unanswered: connection is dead", timeout=s.ping_timeout)
                self.last_error = "ping unanswered"
                return
        if protocol.lost.done():
            self.last_error = f"detached: {protocol.lost.result()}"
            log.warning("ami detached", reason=protocol.lost.result())
