"""`botmeter replay`: a raw AMI capture through tracking into the store, offline.

Times come from the capture's Timestamp headers; nothing sleeps between events. Calls are
stored in batches, rated where their period can be rated call by call; the periods that
cannot (not opened yet, calls out of order: a capture replayed over stored calls) are
stored unrated and re-rated from the store once each, at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from .backoff import Backoff
from .pbx.stream import AmiEventDecoder
from .rating import PlanSeries
from .recorder import Recorder
from .storage.offline_saver import OfflineSaver
from .storage.store import CallStore
from .storage.writer import load_spill
from .tracking.rules import TrackingRules
from .tracking.tracker import MAX_IN_PROGRESS

log = structlog.get_logger(__name__)


def with_crlf(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The capture as AMI sends it: a capture whose lines end in LF alone (saved by a tool that
    converted line endings) has them turned back into CRLF; one with CRLF is left as it is.
    Decided on the first chunk that holds a line end."""
    convert: bool | None = None
    for chunk in chunks:
        if convert is None and b"\n" in chunk:
            convert = b"\r\n" not in chunk
            if convert:
                log.debug("replay: the capture's lines end in LF alone; read as CRLF")
        yield chunk.replace(b"\n", b"\r\n") if convert else chunk


def replay(chunks: Iterable[bytes], rules: TrackingRules, store: CallStore, *,
           batch: int = 500, series: PlanSeries | None = None, spill: Path | None = None,
           attempts: int = 3, backoff: Backoff | None = None,
           max_in_progress: int = MAX_IN_PROGRESS) -> dict[str, int]:
    """Feed a raw AMI capture through tracking into the store; returns its counters.

    First stores the calls of the `spill` file, if any. Calls are rated under `series`
    (None: stored unrated). A record the store refuses is set aside in `rejected`; late
    periods are re-rated once, at the end. StoreUnavailable if the database refuses writes
    `attempts` times in a row (the calls stored so far stay stored).
    """
    saver = OfflineSaver(store, series, batch=batch, attempts=attempts, backoff=backoff)
    recovered = load_spill(store, spill, saver.store_batch) if spill is not None else 0
    recorder = Recorder(rules, saver.add, source="ami", max_in_progress=max_in_progress)
    decoder = AmiEventDecoder(capture=True)
    now = time.time()
    for chunk in with_crlf(chunks):
        for event in decoder.feed(chunk, now):
            recorder.handle(event)
    recorder.tracker.end_of_input()
    late = saver.finish()
    stats = decoder.parser.stats
    return {
        "events": recorder.events,
        "skipped_events": decoder.skipped,
        "calls_recorded": recorder.records,
        "calls_unfinished": recorder.tracker.active_calls,
        "calls_rejected": saver.rejected,
        "calls_from_spill": recovered,
        "periods_rerated": len(late),
        "bad_lines": stats.bad_lines,
        "bad_values": decoder.bad_values.total,
        "oversized_frames": stats.oversized_frames,
        "junk_frames": stats.junk_frames,
        "discarded_bytes": stats.discarded_bytes,
        "calls_evicted": recorder.tracker.evicted_calls,
        "signals_dropped": recorder.tracker.dropped_signals,
    }
