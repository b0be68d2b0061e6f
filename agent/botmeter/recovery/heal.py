"""Healing a gap: what the agent missed while it was down or detached, from Asterisk's own
records.

When AMI attaches (at start, after a crash, after a reconnect) the live events are held
(`EventGate`), and the calls that began since the stored checkpoint (less a margin) are
rebuilt from CEL by the same tracker, the one that handles AMI: the calls in progress it
held are dropped and fed again from their first CEL row, so one that the bot answered
before the gap keeps its bot time; those that began and ended in the gap are recorded; a
call already stored is never stored again. Without CEL, the calls wholly in the gap come
from the CDRs. Then the held live events pass on, from the moment CEL was read up to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from ..pbx.events import PbxEvent
from ..recorder import Recorder
from ..storage.store import CallStore
from ..tracking.record import CallRecord, iso_utc
from .checkpoint import CheckpointUnusable, read_checkpoint, write_checkpoint
from .gate import EventGate

log = structlog.get_logger(__name__)

#: seconds before the checkpoint that healing starts reading at (clock rounding, a call's
#: first CEL row a little before its first AMI event)
MARGIN_SECONDS = 5.0
#: a gap longer than this is healed for its last part only (`botmeter backfill` does the rest)
MAX_GAP_SECONDS = 24 * 3600.0
#: how long to wait for Asterisk to have written its CEL rows up to the attach moment
SETTLE_SECONDS = 2.0
#: events fed to the tracker per turn of the event loop
CHUNK = 2000
#: rebuilt calls handed to the writer at a time; while its queue holds more than
#: `MAX_BACKLOG` calls, healing waits (a long gap never floods memory)
DELIVER_BATCH = 1000
MAX_BACKLOG = 5000


class CelFeed(Protocol):
    """Asterisk's CEL as typed events (`botmeter.recovery.sources`)."""

    name: str

    def latest_time(self) -> float | None: ...

    def events(self, since: float, until: float) -> Iterator[PbxEvent]: ...

    def close(self) -> None: ...


class CdrFeed(Protocol):
    """Asterisk's CDRs as call records (`botmeter.recovery.sources`)."""

    name: str

    def records(self, since: float, until: float) -> Iterator[CallRecord]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HealResult:
    source: str  # "cel", "cdr" or "" (nothing to heal from, or no checkpoint yet)
    since: float | None
    until: float
    recorded: int = 0  # calls stored from the gap
    already_stored: int = 0  # rebuilt, but stored before (e.g. just before a crash)
    resumed: int = 0  # calls in progress rebuilt from their start
    dropped_live: int = 0  # live events the healing already fed (older than `until`)


class Healer:
    """Heals the gap at each AMI attach. `cel` / `cdr` open the sources anew each time (None:
    not configured); `store_factory` opens the calls database (read the checkpoint, check
    which calls are stored) in a worker thread."""

    def __init__(self, recorder: Recorder, gate: EventGate,
                 store_factory: Callable[[], CallStore], *,
                 cel: Callable[[], CelFeed] | None = None,
                 cdr: Callable[[], CdrFeed] | None = None,
                 clock: Callable[[], float] = time.time,
                 settle_seconds: float = SETTLE_SECONDS,
                 backlog: Callable[[], int] = lambda: 0) -> None:
        self.recorder = recorder
        self.gate = gate
        self._store_factory = store_factory
        self._cel = cel
        self._cdr = cdr
        self._clock = clock
        self._settle = settle_seconds
        self._backlog = backlog
        self.last: HealResult | None = None
        self.heals = 0
        #: the last heal failed: the checkpoint must stay where it was (`CheckpointKeeper`),
        #: so that the next attach, or a restart, heals that gap again
        self.unhealed = False

    @property
    def mode(self) -> str:
        """"cel", "cdr" or "ami" (no recovery source: calls in a gap are lost)."""
        return "cel" if self._cel else "cdr" if self._cdr else "ami"

    # -- the AMI client's hooks --------------------------------------------------------

    def hold(self) -> None:
        """A session is being opened: hold live events until it is healed."""
        self.gate.hold()

    async def attached(self) -> None:
        """Logged in: heal the gap up to the first event Asterisk sent (on its own clock; at
        most `settle_seconds` are waited for one), then let the held events through."""
        if self._cel is None and self._cdr is None:
            self.gate.release()
            return
        deadline = time.monotonic() + self._settle
        while self.gate.first_ami_ts is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        until = self.gate.first_ami_ts
        try:
            result = await self._heal(until)
        except Exception as exc:  # never stops the session: the snapshot still picks calls up
            self.unhealed = True
            log.error("healing the gap failed; calls in it may be missing or joined late until "
                      "a later attach heals it (the checkpoint stays where it was)",
                      error=f"{type(exc).__name__}: {exc}")
            result = HealResult("", None, until or self._clock())
            self.gate.release()
        else:
            self.unhealed = False
            dropped = self.gate.release(result.until if result.source == "cel" else None)
            result = replace(result, dropped_live=dropped)
        self.recorder.tracker.source = "ami"
        self.last = result
        self.heals += 1

    def detached(self) -> None:
        """AMI is away: with CEL, hold what still comes (the bot's FastAGI signals) for the
        next attach, whose heal drops those CEL gives (they would count twice) and passes the
        rest. Without, they pass as they come: nothing else will tell the tracker of them."""
        if self._cel is not None:
            self.gate.hold()

    def release(self) -> None:
        """The session ended before it was healed: without CEL, let the held events through;
        with CEL they wait for the next attach's heal, as after any detach."""
        self.recorder.tracker.source = "ami"
        if self.gate.holding and self._cel is None:
            self.gate.release()

    # -- healing -----------------------------------------------------------------------

    async def _heal(self, first_ts: float | None) -> HealResult:
        """Heal up to `first_ts`, the first live event's time on Asterisk's clock (None: none
        came; then up to the newest CEL row, as nothing since reached AMI, else now)."""
        cel = await asyncio.to_thread(self._cel) if self._cel is not None else None
        try:
            return await self._heal_from(cel, first_ts)
        finally:
            if cel is not None:
                await asyncio.to_thread(cel.close)

    async def _heal_from(self, cel: CelFeed | None, first_ts: float | None) -> HealResult:
        if first_ts is not None:
            until = first_ts
        else:
            latest = await asyncio.to_thread(cel.latest_time) if cel is not None else None
            until = after_ms(latest) if latest is not None else self._clock()
        until = round(until, 6)
        checkpoint = await asyncio.to_thread(self._checkpoint, until)
        if checkpoint is None:
            log.info("no recovery checkpoint yet (first start): nothing to heal; gaps from now "
                     "on are")
            return HealResult("", None, until)
        since = checkpoint - MARGIN_SECONDS
        if until - since > MAX_GAP_SECONDS:
            log.warning("gap longer than healing covers: only its last part is healed; run "
                        "botmeter backfill for the rest", gap_from=iso_utc(since),
                        healed_from=iso_utc(until - MAX_GAP_SECONDS))
            since = until - MAX_GAP_SECONDS
        if since >= until:
            return HealResult("", since, until)
        if cel is not None:
            if first_ts is not None:
                await asyncio.to_thread(self._wait_for_rows, cel, until)
            result = await self._from_cel(cel, since, until)
        else:
            assert self._cdr is not None
            result = await self._from_cdr(self._cdr, since, until)
        log.info("gap healed", source=result.source, since=iso_utc(since), until=iso_utc(until),
                 recorded=result.recorded, already_stored=result.already_stored,
                 resumed=result.resumed)
        return result

    def _checkpoint(self, until: float) -> float | None:
        """The stored checkpoint; if there is none (a new database), `until` is stored as the
        first one, so that a crash before the agent writes its own is healed too. One that
        says nothing of where the gap began (no time, or one after `until` on Asterisk's
        clock: edited, damaged, or that clock went back) heals the longest gap healing
        covers, with a warning: calls already stored are not stored again."""
        store = self._store_factory()
        try:
            try:
                found = read_checkpoint(store.db.conn)
            except CheckpointUnusable as exc:
                return _longest_gap(until, str(exc))
            if found is None:
                write_checkpoint(store.db.conn, until)
            elif found - MARGIN_SECONDS > until:
                return _longest_gap(until, f"{iso_utc(found)} is after the attach moment "
                                           f"{iso_utc(until)} on Asterisk's clock")
            return found
        finally:
            store.close()

    async def _from_cel(self, feed: CelFeed, since: float, until: float) -> HealResult:
        tracker = self.recorder.tracker
        tracker.source = "cel"
        seen: set[str] = set()
        ended: set[str] = set()  # calls this tracker finished: their records are written
        resumed = recorded = already = 0
        finished: list[CallRecord] = []
        chunks = _chunks(feed.events(since, until), CHUNK)
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                for event in chunk:
                    if event.ts >= until:  # a row a little before the cut: AMI gives its event
                        continue
                    lid = getattr(event, "linkedid", "")
                    if lid and lid not in seen:
                        seen.add(lid)
                        resumed += tracker.forget((lid,))
                        if tracker.has_ended(lid):
                            ended.add(lid)
                    if lid not in ended:
                        finished.extend(tracker.feed(event))
                if len(finished) >= DELIVER_BATCH:
                    handed, stored = await self._deliver(finished)
                    recorded, already, finished = recorded + handed, already + stored, []
        except Exception:
            await self._deliver(finished)  # the calls rebuilt whole before the failure
            raise
        finally:
            tracker.source = "ami"
        handed, stored = await self._deliver(finished)
        return HealResult("cel", since, until, recorded + handed, already + stored, resumed)

    def _wait_for_rows(self, feed: CelFeed, until: float) -> None:
        """Asterisk writes CEL rows a moment after the fact: wait (a little) until it has
        written one from `until` on."""
        deadline = time.monotonic() + self._settle
        while time.monotonic() < deadline:
            latest = feed.latest_time()
            if latest is not None and latest >= until:
                return
            time.sleep(0.05)

    async def _from_cdr(self, opener: Callable[[], CdrFeed], since: float,
                        until: float) -> HealResult:
        def read() -> list[CallRecord]:
            source = opener()
            try:
                return list(source.records(since, until))
            finally:
                source.close()

        tracker = self.recorder.tracker  # calls it holds, or finished (handed to the writer)
        records = [r for r in await asyncio.to_thread(read)
                   if not (tracker.is_live(r.call_id) or tracker.has_ended(r.call_id))]
        recorded, stored = await self._deliver(records)
        return HealResult("cdr", since, until, recorded, stored)

    async def _deliver(self, records: list[CallRecord]) -> tuple[int, int]:
        """Hand the calls not stored yet to the writer; (handed, already stored)."""
        if not records:
            return 0, 0
        stored = await asyncio.to_thread(self._stored, [r.call_id for r in records])
        fresh = [r for r in records if r.call_id not in stored]
        for record in fresh:
            self.recorder.deliver(record)
        while self._backlog() > MAX_BACKLOG:
            await asyncio.sleep(0.05)
        return len(fresh), len(records) - len(fresh)

    def _stored(self, call_ids: list[str]) -> set[str]:
        store = self._store_factory()
        try:
            return store.stored_call_ids(call_ids)
        finally:
            store.close()


def _longest_gap(until: float, reason: str) -> float:
    """The checkpoint to heal from when the stored one is unusable: `MAX_GAP_SECONDS` before
    `until` (logged)."""
    since = until - MAX_GAP_SECONDS
    log.warning("recovery checkpoint unusable: healing the longest gap healing covers; run "
                "botmeter backfill for calls before it", reason=reason,
                healed_from=iso_utc(since))
    return since + MARGIN_SECONDS


def after_ms(ts: float) -> float:
    """The first millisecond after `ts`: events carry their time to the millisecond (AMI's
    `Timestamp` and CEL's `eventtime` both), so a cut there has every event of `ts` before it."""
    return round(round(ts, 3) + 0.001, 3)


def _chunks(events: Iterable[PbxEvent], size: int) -> Iterator[list[PbxEvent]]:
    chunk: list[PbxEvent] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
