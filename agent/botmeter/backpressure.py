"""Back-pressure from the writer to the event sources: a bound on the calls waiting in memory.

While the database refuses writes, finished calls wait in the writer's queue. From
`[store] max_queued` calls on, the sources are paused (the AMI client stops reading its
socket, so Asterisk's events wait in the kernel's buffers and then in Asterisk's own) until
the backlog is down to half the bound. Nothing already queued is dropped; a read under way
when the bound is reached is finished, so the queue may pass it by the calls of one read.
FastAGI keeps answering: its signals are bounded by the tracker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from .tracking.record import CallRecord

log = structlog.get_logger(__name__)

#: the default bound on calls waiting to be stored: about 1 KiB of memory each (measured on
#: the simulator's mixed calls, modules and satisfaction included), so about 20 MiB
MAX_QUEUED = 20_000
#: seconds between looks at the backlog while the sources are paused
POLL_SECONDS = 0.05


class Pausable(Protocol):
    """An event source that can stop reading for a while."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Backlog(Protocol):
    """The writer, as back-pressure sees it."""

    def submit(self, record: CallRecord) -> None: ...

    def queued(self) -> int: ...


def resume_below(bound: int) -> int:
    """The low-water mark: paused sources resume once fewer calls than this wait."""
    return max(1, bound // 2)


def should_pause(paused: bool, waiting: int, bound: int) -> bool:
    """Whether the sources should be paused now: from `bound` waiting calls on, and while
    paused until fewer than `resume_below(bound)` wait."""
    return waiting >= resume_below(bound) if paused else waiting >= bound


class BackPressure:
    """Submits calls to `writer`, pausing `sources` while its backlog is at the bound.

    Call `submit` and `close` on the event loop; the backlog is watched from a task on it
    while the sources are paused.
    """

    def __init__(self, writer: Backlog, sources: Sequence[Pausable], bound: int = MAX_QUEUED,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.writer = writer
        self.sources = list(sources)
        self.bound = bound
        self._clock = clock
        self.paused_since: float | None = None
        self.pauses = 0
        self._watch: asyncio.Task[None] | None = None

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def submit(self, record: CallRecord) -> None:
        """Queue a finished call; pause the sources once the backlog reaches the bound."""
        self.writer.submit(record)
        if self.paused_since is None and should_pause(False, self.writer.queued(), self.bound):
            self._pause()

    def close(self) -> None:
        """Stop watching (at the agent's stop; the sources are being closed anyway)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _pause(self) -> None:
        self.paused_since = self._clock()
        self.pauses += 1
        log.warning("calls waiting to be stored reached [store] max_queued: AMI reading paused",
                    calls_waiting=self.writer.queued(), max_queued=self.bound,
                    resume_below=resume_below(self.bound))
        for source in self.sources:
            source.pause_reading()
        self._watch = asyncio.get_running_loop().create_task(self._resume_when_drained(),
                                                             name="back-pressure")

    async def _resume_when_drained(self) -> None:
        while should_pause(True, self.writer.queued(), self.bound):
            await asyncio.sleep(POLL_SECONDS)
        self._resume()

    def _resume(self) -> None:
        since, self.paused_since, self._watch = self.paused_since, None, None
        log.info("calls waiting to be stored below the low-water mark: AMI reading resumed",
                 calls_waiting=self.writer.queued(),
                 paused_seconds=round(self._clock() - (since or self._clock()), 1))
        for source in self.sources:
            source.resume_reading()
