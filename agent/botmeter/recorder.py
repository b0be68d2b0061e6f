"""Tracking plus a sink for finished calls: the same for live runs and replays."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from .pbx.events import PbxEvent
from .tracking.record import CallRecord
from .tracking.rules import TrackingRules
from .tracking.tracker import MAX_IN_PROGRESS, CallTracker

log = structlog.get_logger(__name__)


def _problem(message: str, context: dict[str, object]) -> None:
    log.warning(message, **context)


class Recorder:
    """Feeds events to a CallTracker and each finished call to `sink`; counts both."""

    def __init__(self, rules: TrackingRules, sink: Callable[[CallRecord], None], *,
                 source: str = "ami", max_in_progress: int = MAX_IN_PROGRESS) -> None:
        self.tracker = CallTracker(rules, on_problem=_problem, source=source,
                                   max_in_progress=max_in_progress)
        self._sink = sink
        self.events = 0
        self.records = 0

    def handle(self, event: PbxEvent) -> None:
        """One event in; the calls it finishes out to the sink."""
        self.events += 1
        for record in self.tracker.feed(event):
            self.deliver(record)

    def expire(self, now: float, idle_seconds: float) -> None:
        """Close the calls that saw no event for `idle_seconds` (at their last event)."""
        for record in self.tracker.expire(now, idle_seconds):
            self.deliver(record)

    def deliver(self, record: CallRecord) -> None:
        """A finished call out to the sink (also one rebuilt from Asterisk's records)."""
        self.records += 1
        self._sink(record)
