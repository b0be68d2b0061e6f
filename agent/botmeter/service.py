"""The running agent: AMI in, call tracking, records (rated as they are stored) to SQLite,
and (with `[uplink]`) usage summaries to the vendor on a thread of their own."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from .backpressure import BackPressure
from .bot.fastagi import FastAgiServer
from .config import Config
from .health.endpoint import HealthEndpoint
from .health.snapshot import AgentProbe
from .health.verdict import Limits
from .pbx.ami_client import AmiClient, AmiSettings
from .plans import active_series, load_plan_book
from .rating.periods import period_of
from .recorder import Recorder
from .recovery.checkpoint import Unstored
from .recovery.gate import EventGate
from .recovery.heal import Healer
from .recovery.keeper import CheckpointKeeper
from .recovery.sources import recovery_feeds
from .reload import Reloader
from .reports.budget import BudgetWatch
from .rerating import RerateWorker
from .runtime import loop_name
from .storage.rated_saver import RatedSaver
from .storage.retention import RetentionWorker, retention_policy
from .storage.spill import spill_path
from .storage.store import CallStore
from .storage.writer import RecordWriter
from .supervision import Supervisor
from .tracking.record import CallRecord
from .uplink.agent import UplinkWorker
from .uplink.settings import uplink_settings

log = structlog.get_logger(__name__)

#: seconds a stop may take to store (or spill) every finished call and finish re-rating: with
#: the process's own exit, a SIGTERM ends within 5 s (below the unit's TimeoutStopSec)
STOP_TIMEOUT = 4.0
#: a period that begins this long after the agent started holds no call stored before: it is
#: opened empty rather than re-rated (the margin covers a PBX clock ahead of the agent's)
FRESH_PERIOD_MARGIN = 3600.0


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
    """Attach to Asterisk and record until `stop()`.

    With plans configured, the writer rates each call in the transaction that stores it
    (`saver`); the periods it cannot rate call by call are re-rated by `rerater`, a thread
    of its own. At start the current period is re-rated there, so that its calls are rated
    as they are stored from then on. `store_factory` opens the database (for tests).
    """

    def __init__(self, config: Config, *, store_path: Path | None = None,
                 clock: Callable[[], float] = time.time,
                 on_saved: Callable[[list[CallRecord]], None] | None = None,
                 stop_timeout: float = STOP_TIMEOUT,
                 store_factory: Callable[[], CallStore] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.stop_timeout = stop_timeout
        path = self.store_path = store_path or config.store_path()
        factory = self.store_factory = store_factory or (
            lambda: CallStore(path, group=config.store.group))
        book = load_plan_book(config)
        series = None if book is None else active_series(config, book)
        uplink = uplink_settings(config, book)
        self.uplink = UplinkWorker(uplink, factory, clock=clock) if uplink else None
        self.saver: RatedSaver | None = None
        self.rerater: RerateWorker | None = None
        if series is not None:
            self.saver = RatedSaver(series, on_late=self._late,
                                    fresh_after=clock() + FRESH_PERIOD_MARGIN)
            self.rerater = RerateWorker(factory, self.saver)
        #: with [budget]: the month's cost to date checked every 5 minutes on its own thread
        self.budget: BudgetWatch | None = None
        if series is not None and config.budget is not None:
            self.budget = BudgetWatch(factory, series, config.budget.amount, clock=clock)
        #: with [store] keep_months: old calls purged daily on a thread of its own
        policy = retention_policy(config, series)
        self.retention = RetentionWorker(factory, policy, clock=clock) if policy else None
        #: finished calls not stored yet: the recovery checkpoint stays before their start
        self.unstored = Unstored()
        self._on_saved = on_saved
        self.writer = RecordWriter(factory, saver=self.saver, on_saved=self._saved,
                                   spill=spill_path(path),
                                   on_rejected=lambda record: self.unstored.done((record,)))
        self.recorder = Recorder(config.tracking_rules(), self._submit,
                                 max_in_progress=config.calls.max_in_progress)
        #: live events enter tracking here; held while a gap is healed from CEL or CDRs
        self.gate = EventGate(self.recorder.handle)
        cel, cdr = recovery_feeds(config)
        self.healer = Healer(self.recorder, self.gate, factory, cel=cel, cdr=cdr, clock=clock,
                             backlog=self.writer.queued)
        self.checkpoints = CheckpointKeeper(self.recorder.tracker, self.unstored, self.gate,
                                            factory, pinned=lambda: self.healer.unhealed)
        self.client = AmiClient(ami_settings(config), self.gate.ami, clock=clock,
                                hooks=self.healer)
        #: finished calls to the writer; AMI paused while [store] max_queued of them wait
        self.pressure = BackPressure(self.writer, [self.client], config.store.max_queued)
        agi = config.agi
        self.fastagi = FastAgiServer(
            host=agi.host, port=agi.port, allow=agi.allow, on_signal=self.gate.signal,
            clock=clock) if agi.enabled else None
        self.health = HealthEndpoint(config.http.listen, AgentProbe(
            self.client, self.recorder, self.writer, self.fastagi, path,
            uplink_on=lambda: self.uplink is not None),
            Limits(max_queue=config.store.max_queued)) if config.http.enabled else None
        self._stop = asyncio.Event()
        self.reloader = Reloader(self)

    def _submit(self, record: CallRecord) -> None:
        self.unstored.add(record)
        self.pressure.submit(record)

    def _saved(self, records: list[CallRecord]) -> None:
        self.unstored.done(records)
        if self._on_saved is not None:
            self._on_saved(records)

    def _late(self, period: str) -> None:
        if self.rerater is not None:
            self.rerater.submit(period)

    async def run(self) -> None:
        try:
            self._start_storage()
        except BaseException as exc:
            await asyncio.to_thread(self._close_storage)
            if isinstance(exc, sqlite3.Error | OSError):
                raise ServiceError(f"[store] path {self.store_path}: {exc}") from exc
            raise
        if self.fastagi is not None:
            try:
                await self.fastagi.start()
            except OSError as exc:
                await asyncio.to_thread(self._close_storage)
                raise ServiceError(f"[agi] listen {self.config.agi.listen}: {exc.strerror or exc}") from exc
        if self.health is not None:
            try:
                await self.health.start()
            except OSError as exc:
                if self.fastagi is not None:
                    await self.fastagi.stop()
                await asyncio.to_thread(self._close_storage)
                raise ServiceError(f"[http] listen {self.health.listen}: {exc.strerror or exc}") from exc
        log.info("botmeter started", agent=self.config.agent.id, store=str(self.store_path),
                 fastagi=self.config.agi.listen if self.fastagi else None, loop=loop_name())
        if self.uplink is not None:
            self.uplink.start()
        if self.budget is not None:
            self.budget.start()
        if self.retention is not None:
            self.retention.start()
        client = asyncio.create_task(self.client.run(), name="ami")
        sweeper = asyncio.create_task(self._sweep(), name="sweeper")
        keeper = asyncio.create_task(self.checkpoints.run(), name="checkpoint")
        self.supervisor = Supervisor.for_service(self, client)  # systemd: READY=1, watchdog
        self.supervisor.start()
        try:
            await self._stop.wait()
        finally:
            self.supervisor.stop()
            self.pressure.close()
            deadline = time.monotonic() + self.stop_timeout  # the one deadline of the stop
            await self._stop_sources(deadline, client, sweeper, keeper)
            self.recorder.tracker.end_of_input()
            checkpoint = self.checkpoints.value()
            await asyncio.to_thread(self._close_storage, deadline, checkpoint)
            log.info("botmeter stopped", recorded=self.recorder.records,
                     in_progress=self.recorder.tracker.active_calls,
                     rejected=self.writer.rejected, spilled=self.writer.spilled,
                     lost=self.writer.lost, bad_values=self.client.bad_values.total,
                     evicted=self.recorder.tracker.evicted_calls,
                     signals_dropped=self.recorder.tracker.dropped_signals)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def reload(self) -> None:
        """SIGHUP: read the configuration and plan files again, keeping the calls in progress
        (`botmeter.reload`). Call on the event loop."""
        self.reloader.request()

    def _start_storage(self) -> None:
        """Open the database in the writer's (and re-rater's) thread; the re-rater opens the
        current period, whose calls are rated as they are stored from then on."""
        self.writer.start()
        if self.rerater is not None and self.saver is not None:
            self.rerater.start()
            self.saver.request_rerate(period_of(self.clock(), self.saver.series.timezone))

    async def _stop_sources(self, deadline: float, *tasks: asyncio.Task[None]) -> None:
        """No more events: AMI and FastAGI closed, the tasks ended (by `deadline` at most)."""

        async def stop_all() -> None:
            await self.client.stop()
            if self.fastagi is not None:
                await self.fastagi.stop()
            if self.health is not None:
                await self.health.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            await asyncio.wait_for(stop_all(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            for task in tasks:  # no call may reach the writer once it closes
                task.cancel()
            log.warning("sources not closed by the stop deadline; storing calls anyway")

    def _close_storage(self, deadline: float | None = None,
                       checkpoint: float | None = None) -> None:
        """Store every finished call (spill what cannot be stored by `deadline`, a
        `time.monotonic()`), then let re-rating finish by the same deadline (a re-rate still
        running then is abandoned: the calls are stored, their period is re-rated later)."""
        if deadline is None:
            deadline = time.monotonic() + self.stop_timeout
        for job in (self.budget, self.retention):
            if job is not None:
                job.stop(timeout=0)  # a check or purge in progress ends at its next step
        self.writer.close(deadline)
        if checkpoint is not None:  # taken before the writer closed: before every call not stored
            self.checkpoints.write(checkpoint, min(1.0, max(0.0, deadline - time.monotonic())),
                                   last=True)
        self.checkpoints.close(max(0.0, deadline - time.monotonic()))
        if self.rerater is not None:
            self.rerater.close(deadline)
        left = max(0.0, min(1.0, deadline - time.monotonic()))
        if self.uplink is not None and not self.uplink.stop(timeout=left):
            log.info("uplink request still out at stop: it is sent again at the next start")

    async def _sweep(self) -> None:
        while True:  # the idle timeout as configured now (a reload may change it)
            await asyncio.sleep(min(60.0, self.config.calls.idle_timeout_seconds / 4))
            self.recorder.expire(self.clock(), self.config.calls.idle_timeout_seconds)

