"""What the running agent tells systemd (`Type=notify`): READY=1 once it records (database
open, FastAGI bound, AMI logged in), a STATUS= line as things change, WATCHDOG=1 from the
event loop while it is healthy, STOPPING=1 at stop.

Health is what a restart would mend: the AMI client's task has not ended (connected, or
reconnecting on its backoff: Asterisk being down is no reason to restart) and the writer's
thread is alive and not stuck in one attempt to store. Database trouble (locked, disk full,
the file deleted) is not: a restart would not mend it and would lose the calls waiting in
memory, so the writer retries, the status line says so, and the pings go on. The pings come from a task on the
event loop, so a blocked loop stops them too, and systemd restarts the agent
(`WatchdogSec=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from .sdnotify import Notifier, watchdog_interval
from .storage.trouble import Trouble

if TYPE_CHECKING:
    from .service import AgentService

log = structlog.get_logger(__name__)

#: seconds between status checks when systemd asks for no watchdog, or a slow one
STATUS_SECONDS = 5.0
#: one attempt to store a batch taking this long is a stuck writer (SQLite gives up waiting
#: for a lock after 5 s; a disk full or a locked database is retried, and is not stuck)
WRITER_STUCK_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class AgentState:
    """The agent as the supervisor sees it at one moment."""

    ami: str  # host:port
    ami_connected: bool
    ami_running: bool  # the AMI client's task has not ended
    ami_error: str | None  # why the last attempt failed, or the session ended
    calls_in_progress: int
    writer_running: bool
    writer_busy_seconds: float | None  # how long the store attempt under way has taken
    #: database trouble (locked, disk full...: not a problem for the watchdog), in words
    storing: str | None = None


def problems(state: AgentState) -> list[str]:
    """What a restart would mend (empty: healthy)."""
    found = []
    if not state.ami_running:
        found.append("the AMI client has stopped")
    if not state.writer_running:
        found.append("the writer's thread has ended")
    elif (state.writer_busy_seconds is not None
          and state.writer_busy_seconds > WRITER_STUCK_SECONDS):
        found.append(f"storing calls stuck for {state.writer_busy_seconds:.0f} s")
    return found


def status_line(state: AgentState) -> str:
    """One line for `systemctl status`: AMI's state and the calls in progress."""
    calls = state.calls_in_progress
    in_progress = f"{calls} call{'' if calls == 1 else 's'} in progress"
    if state.ami_connected:
        line = f"attached to {state.ami}, {in_progress}"
    elif state.ami_error:
        line = f"AMI down at {state.ami} ({state.ami_error}), reconnecting; {in_progress}"
    else:
        line = f"connecting to AMI at {state.ami}; {in_progress}"
    if state.storing is not None:
        line = f"{line}; {state.storing}"
    found = problems(state)
    return f"unhealthy: {'; '.join(found)} (watchdog pings stopped); {line}" if found else line


def agent_state(service: AgentService, ami_task: asyncio.Task[None]) -> AgentState:
    """Read the running agent's parts (on its event loop)."""
    settings = service.client.settings
    writer = service.writer
    started = writer.attempt_started
    return AgentState(
        ami=f"{settings.host}:{settings.port}",
        ami_connected=service.client.connected.is_set(),
        ami_running=not ami_task.done(),
        ami_error=service.client.last_error,
        calls_in_progress=service.recorder.tracker.active_calls,
        writer_running=service.writer.running,
        writer_busy_seconds=None if started is None else time.monotonic() - started,
        storing=storing_trouble(writer.trouble.current, writer.queued(),
                                service.client.reading_paused),
    )


def storing_trouble(trouble: Trouble | None, waiting: int, paused: bool) -> str | None:
    """Database trouble for the status line: `storing calls failing (locked) for 42 s, 310
    calls waiting, AMI reading paused`; None while storing works."""
    if trouble is None:
        return None
    line = (f"storing calls failing ({trouble.kind}) for {trouble.seconds(time.monotonic()):.0f}"
            f" s, {waiting} call{'' if waiting == 1 else 's'} waiting")
    return f"{line}, AMI reading paused" if paused else line


class Supervisor:
    """Keeps systemd informed; does nothing outside systemd (no $NOTIFY_SOCKET)."""

    def __init__(self, notifier: Notifier, state: Callable[[], AgentState],
                 ready: asyncio.Event, *, watchdog: float | None = None,
                 status_every: float = STATUS_SECONDS) -> None:
        self.notifier = notifier
        self._state = state
        self._ready = ready
        self.watchdog = watchdog
        self.tick = min(watchdog, status_every) if watchdog else status_every
        self._task: asyncio.Task[None] | None = None
        self._status = ""
        self._unhealthy: list[str] = []
        self.checks = 0  # the agent's state looked at
        self.pings = 0  # ... and found healthy: WATCHDOG=1 sent

    @classmethod
    def for_service(cls, service: AgentService, ami_task: asyncio.Task[None]) -> Supervisor:
        """Systemd's socket and watchdog from the environment; `service`'s state."""
        return cls(Notifier.from_environment(), lambda: agent_state(service, ami_task),
                   service.client.connected,
                   watchdog=watchdog_interval(os.environ, os.getpid()))

    def start(self) -> None:
        """Start reporting (a task on the running loop)."""
        if self.notifier.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="systemd-notify")

    def stop(self) -> None:
        """STOPPING=1, and no more pings (the stop itself is not watched)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self.notifier.send(STOPPING="1", STATUS="stopping: storing the finished calls")
        self.notifier.close()

    async def _run(self) -> None:
        while not self._ready.is_set():  # not READY yet: the status only
            self._report(ping=False)
            await self._wait(self._ready)
        self._report(ping=self.watchdog is not None, READY="1")
        while True:
            await asyncio.sleep(self.tick)
            self._report(ping=self.watchdog is not None)

    async def _wait(self, event: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.tick)

    def _report(self, *, ping: bool, **fields: str) -> None:
        """Send what changed: the status when it differs, a ping when healthy."""
        state = self._state()
        self.checks += 1
        found = problems(state)
        if found and found != self._unhealthy:
            log.error("unhealthy: watchdog pings stopped" if self.watchdog else "unhealthy",
                      problems=found)
        elif self._unhealthy and not found:
            log.info("healthy again")
        self._unhealthy = found
        status = status_line(state)
        if status != self._status:
            fields["STATUS"] = self._status = status
        if ping and not found:
            fields["WATCHDOG"] = "1"
            self.pings += 1
        self.notifier.send(**fields)
