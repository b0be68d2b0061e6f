"""The running agent: AMI in, call tracking, records to SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from .bot.fastagi import FastAgiServer
from .config import Config
from .metering import rating_worker_for
from .pbx.ami_client import AmiClient, AmiSettings
from .recorder import Recorder
from .runtime import loop_name
from .storage.spill import spill_path
from .storage.store import CallStore
from .storage.writer import RecordWriter
from .tracking.record import CallRecord

log = structlog.get_logger(__name__)

#: seconds a stop may take to store (or spill) every finished call and rate them; below the
#: systemd unit's TimeoutStopSec (30)
STOP_TIMEOUT = 20.0


class ServiceError(Exception):
    """The agent cannot start: the message says what and where."""


def ami_settings(config: Config) -> AmiSettings:
    ami = config.ami
    return AmiSettings(
        host=ami.host, port=ami.port, username=ami.username, secret=ami.read_secret(config.base_dir),
        tls=ami.tls, auth=ami.auth, ping_interval=ami.ping_interval, ping_timeout=ami.ping_timeout,
        reconnect_min=ami.reconnect_min, reconnect_max=ami.reconnect_max,
    )


class AgentService:
    """Attach to Asterisk and record until `stop()`."""

    def __init__(self, config: Config, *, store_path: Path | None = None,
                 clock: Callable[[], float] = time.time,
                 on_saved: Callable[[list[CallRecord]], None] | None = None,
                 stop_timeout: float = STOP_TIMEOUT) -> None:
        self.config = config
        self.clock = clock
        self.stop_timeout = stop_timeout
        path = self.store_path = store_path or config.store_path()
        self.rating = rating_worker_for(config, lambda: CallStore(path))
        self._on_saved = on_saved
        self.writer = RecordWriter(lambda: CallStore(path), on_error=self._write_failed,
                                   on_saved=self._saved, spill=spill_path(path))
        self.recorder = Recorder(config.tracking_rules(), self.writer.submit,
                                 max_in_progress=config.calls.max_in_progress)
        self.client = AmiClient(ami_settings(config), self.recorder.handle, clock=clock)
        agi = config.agi
        self.fastagi = FastAgiServer(
            host=agi.host, port=agi.port, allow=agi.allow, on_signal=self.recorder.handle,
            clock=clock) if agi.enabled else None
        self._stop = asyncio.Event()

    def _saved(self, batch: list[CallRecord]) -> None:
        """Calls are on disk: tell whoever asked, and queue them for rating."""
        if self._on_saved is not None:
            self._on_saved(batch)
        if self.rating is not None:
            self.rating.submit(batch)

    @staticmethod
    def _write_failed(exc: Exception, count: int) -> None:
        log.error("storing calls failed; retrying", error=str(exc), calls=count)

    async def run(self) -> None:
        try:
            self.writer.start()
        except (sqlite3.Error, OSError) as exc:
            raise ServiceError(f"[store] path {self.store_path}: {exc}") from exc
        if self.rating is not None:
            self.rating.start()
        if self.fastagi is not None:
            try:
                await self.fastagi.start()
            except OSError as exc:
                await asyncio.to_thread(self._close_storage)
                raise ServiceError(f"[agi] listen {self.config.agi.listen}: {exc.strerror or exc}") from exc
        log.info("botmeter started", agent=self.config.agent.id, store=str(self.store_path),
                 fastagi=self.config.agi.listen if self.fastagi else None, loop=loop_name())
        client = asyncio.create_task(self.client.run(), name="ami")
        sweeper = asyncio.create_task(self._sweep(), name="sweeper")
        try:
            await self._stop.wait()
        finally:
            deadline = time.monotonic() + self.stop_timeout
            await self.client.stop()
            if self.fastagi is not None:
                await self.fastagi.stop()
            for task in (client, sweeper):
                task.cancel()
            await asyncio.gather(client, sweeper, return_exceptions=True)
            await asyncio.to_thread(self._close_storage, deadline)
            log.info("botmeter stopped", recorded=self.recorder.records,
                     in_progress=self.recorder.tracker.active_calls,
                     rejected=self.writer.rejected, spilled=self.writer.spilled,
                     lost=self.writer.lost, bad_values=self.client.bad_values.total)

    def stop(self) -> None:
        self._stop.set()

    def _close_storage(self, deadline: float | None = None) -> None:
        """Store every finished call (spill what cannot be stored by `deadline`, a
        `time.monotonic()`), then rate what was stored in the time left."""
        if deadline is None:
            deadline = time.monotonic() + self.stop_timeout
        self.writer.close(deadline)
        if self.rating is not None and not self.rating.close(max(0.0, deadline - time.monotonic())):
            log.warning("rating unfinished at stop: some stored calls are unrated until their "
                        "period is re-rated (the next call in it, or botmeter rerate)")

    async def _sweep(self) -> None:
        idle = self.config.calls.idle_timeout_seconds
        while True:
            await asyncio.sleep(min(60.0, idle / 4))
            self.recorder.expire(self.clock(), idle)

