"""The uplink as the agent runs it: summarise what changed, then deliver what is due, over
one database connection; in `botmeter run` on a thread of its own, so that syncing never
delays recording calls."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import structlog

from ..config import ConfigError
from ..storage.reopen import at_path
from ..storage.store import CallStore
from .delivery import Report, Sender
from .http import Poster
from .identity import check_identity, record_identity
from .outbox import write_transaction
from .settings import UplinkSettings
from .summarizer import refresh
from .summary import Summary

log = structlog.get_logger(__name__)


class Uplink:
    """Summaries from `store`'s calls into its outbox, and from there to the vendor."""

    def __init__(self, settings: UplinkSettings, store: CallStore, *,
                 where: str = "[uplink]", clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        check_identity(store.db.conn, settings, where)
        self.poster = Poster(settings)
        self.sender = Sender(settings, store.db.conn, self.poster, clock=clock, rand=rand)

    def refresh(self) -> list[Summary]:
        """Queue a revision for each closed bucket whose content changed."""
        s = self.settings
        queued = refresh(self.store, s.plans, s.agent_id, s.bucket, s.close_delay, self.clock())
        with write_transaction(self.store.db.conn) as conn:
            record_identity(conn, s)
        if queued:
            log.info("uplink summaries queued", summaries=len(queued),
                     revisions=sum(1 for q in queued if q["revision"] > 1))
        return queued

    def deliver(self, *, force: bool = False) -> Report:
        return self.sender.deliver(force=force)

    def tick(self, *, force: bool = False) -> Report:
        self.refresh()
        return self.deliver(force=force)

    def close(self) -> None:
        self.poster.close()


class UplinkWorker:
    """`botmeter run`'s uplink thread: a tick every `interval` seconds, or sooner when the
    backoff ends; errors are logged and the next tick tries again."""

    def __init__(self, settings: UplinkSettings, store_factory: Callable[[], CallStore], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store_factory = store_factory
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._next: UplinkSettings | None = None
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self.ticks = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to end; True when it did within `timeout` (a request still out is
        abandoned: its lease lapses with this process and the next start sends it again)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def reconfigure(self, settings: UplinkSettings) -> None:
        """Go on with these settings (a reload): from the next tick, which comes at once."""
        self._next = settings
        self._wake.set()

    def _run(self) -> None:
        uplink = self._open()
        if uplink is None:
            return
        try:
            while not self._stop.is_set():
                uplink = self._current(uplink)
                uplink = self._reconfigured(uplink, uplink.store)
                wait = self.settings.interval
                try:
                    report = uplink.tick()
                    self.ticks += 1
                    if report.waiting_until is not None:
                        wait = min(wait, max(0.5, report.waiting_until - self.clock()))
                    elif report.failed is not None:
                        until = uplink.sender.waiting_until()
                        wait = min(wait, max(0.5, (until or self.clock()) - self.clock()))
                except Exception as exc:
                    log.error("uplink tick failed; trying again", error=str(exc),
                              error_type=type(exc).__name__, retry_in=wait)
                self._wake.wait(wait)
                self._wake.clear()
        finally:
            uplink.close()
            uplink.store.close()

    def _open(self) -> Uplink | None:
        """The uplink on its own connection; while the database cannot be opened (the writer
        reports why) tried again every interval; None at the stop, or when the settings
        are refused (logged: the uplink stops, recording goes on)."""
        while not self._stop.is_set():
            try:
                store = self.store_factory()
            except Exception as exc:
                log.warning("uplink waits for the database", error=str(exc),
                            retry_in=self.settings.interval)
                self._wake.wait(self.settings.interval)
                self._wake.clear()
                continue
            try:
                return Uplink(self.settings, store, clock=self.clock)
            except ConfigError as exc:
                log.error("uplink stopped", error=str(exc))
                store.close()
                return None
        return None

    def _current(self, uplink: Uplink) -> Uplink:
        """`uplink`, or one on the database now at the path if its file was deleted or
        replaced (kept as it is if that cannot be opened now: the next tick tries again)."""
        if uplink.store.file_change() is None:
            return uplink
        try:
            store = at_path(uplink.store, self.store_factory)
            fresh = Uplink(self.settings, store, clock=self.clock)
        except Exception as exc:
            log.warning("uplink waits for the database", error=str(exc))
            return uplink
        uplink.close()
        return fresh

    def _reconfigured(self, uplink: Uplink, store: CallStore) -> Uplink:
        """The uplink with the settings `reconfigure` gave, if any (else as it was)."""
        settings, self._next = self._next, None
        if settings is None:
            return uplink
        try:
            fresh = Uplink(settings, store, clock=self.clock)
        except ConfigError as exc:  # checked by the reload already: the old settings stay
            log.error("uplink settings not changed", error=str(exc))
            return uplink
        uplink.close()
        self.settings = settings
        return fresh
