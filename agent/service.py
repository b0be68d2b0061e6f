"""The running agent: AMI in, call tracking, records to SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from .bot.fastagi import FastAgiServer
from .config import Config
from .metering import rating_worker_for
from .pbx.ami_client import AmiClient, AmiSettings
from .pbx.events import PbxEvent
from .pbx.stream import AmiEventDecoder
from .runtime import loop_name
from .storage.store import CallStore
from .storage.writer import RecordWriter
from .tracking.record import CallRecord
from .tracking.rules import TrackingRules
from .tracking.tracker import MAX_IN_PROGRESS, CallTracker

log = structlog.get_logger("botmeter")


class ServiceError(Exception):
    """The agent cannot start: the message says what and where."""


def _problem(message: str, context: dict[str, object]) -> None:
    log.warning(message, **context)


class Recorder:
    """Tracking plus a sink for finished calls; the same for live runs and replays."""

    def __init__(self, rules: TrackingRules, sink: Callable[[CallRecord], None], *,
                 source: str = "ami", max_in_progress: int = MAX_IN_PROGRESS) -> None:
        self.tracker = CallTracker(rules, on_problem=_problem, source=source,
                                   max_in_progress=max_in_progress)
        self._sink = sink
        self.events = 0
        self.records = 0

    def handle(self, event: PbxEvent) -> None:
        self.events += 1
        for record in self.tracker.feed(event):
            self.records += 1
            self._sink(record)

    def expire(self, now: float, idle_seconds: float) -> None:
        for record in self.tracker.expire(now, idle_seconds):
            self.records += 1
            self._sink(record)


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
                 on_saved: Callable[[list[CallRecord]], None] | None = None) -> None:
        self.config = config
        self.clock = clock
        path = self.store_path = store_path or config.store_path()
        self.rating = rating_worker_for(config, lambda: CallStore(path))
        self._on_saved = on_saved
        self.writer = RecordWriter(lambda: CallStore(path), on_error=self._write_failed,
                                   on_saved=self._saved)
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
        self.writer.start()
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
            await self.client.stop()
            if self.fastagi is not None:
                await self.fastagi.stop()
            for task in (client, sweeper):
                task.cancel()
            await asyncio.gather(client, sweeper, return_exceptions=True)
            await asyncio.to_thread(self._close_storage)
            log.info("botmeter stopped", recorded=self.recorder.records,
                     in_progress=self.recorder.tracker.active_calls)

    def stop(self) -> None:
        self._stop.set()

    def _close_storage(self) -> None:
        """Store every finished call, then rate what was stored."""
        self.writer.close()
        if self.rating is not None:
            self.rating.close()

    async def _sweep(self) -> None:
        idle = self.config.calls.idle_timeout_seconds
        while True:
            await asyncio.sleep(min(60.0, idle / 4))
            self.recorder.expire(self.clock(), idle)


def replay(chunks: Iterable[bytes], rules: TrackingRules, store: CallStore, *,
           batch: int = 500, save: Callable[[CallStore, list[CallRecord]], None] | None = None,
           ) -> dict[str, int]:
    """Feed a raw AMI capture through tracking into the store; times come from its Timestamp headers."""
    pending: list[CallRecord] = []
    store_batch = save or (lambda target, records: target.save(records))

    def sink(record: CallRecord) -> None:
        pending.append(record)
        if len(pending) >= batch:
            store_batch(store, pending)
            pending.clear()

    recorder = Recorder(rules, sink, source="ami")
    decoder = AmiEventDecoder()
    now = time.time()
    for chunk in chunks:
        for event in decoder.feed(chunk, now):
            recorder.handle(event)
    store_batch(store, pending)
    stats = decoder.parser.stats
    return {
        "events": recorder.events,
        "skipped_events": decoder.skipped,
        "calls_recorded": recorder.records,
        "calls_unfinished": recorder.tracker.active_calls,
        "bad_lines": stats.bad_lines,
        "oversized_frames": stats.oversized_frames,
    }
