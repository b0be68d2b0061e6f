"""Calls rebuilt from events (CEL's, or any other source's) by the one call tracker."""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from ..pbx.events import PbxEvent
from ..tracking.record import CallRecord
from ..tracking.rules import TrackingRules
from ..tracking.tracker import MAX_IN_PROGRESS, CallTracker, Problem

log = structlog.get_logger(__name__)

#: the longest call recovery looks for: rows this long before a window are read so that calls
#: offered in it are seen from their start, and this long after it so that they are seen end
MAX_CALL_SECONDS = 4 * 3600.0


def _logged(message: str, context: dict[str, object]) -> None:
    log.warning(message, **context)


def rebuild(events: Iterable[PbxEvent], rules: TrackingRules, *, source: str,
            on_problem: Problem | None = None,
            max_in_progress: int = MAX_IN_PROGRESS) -> tuple[list[CallRecord], CallTracker]:
    """Run `events` through a new tracker whose records say `source` ("cel", ...): the calls
    they finished, in the order they finished, and the tracker, which holds the calls still in
    progress (feed it on, or call `end_of_input`). Problems are logged unless `on_problem`."""
    tracker = CallTracker(rules, on_problem=on_problem or _logged, source=source,
                          max_in_progress=max_in_progress)
    records = [record for event in events for record in tracker.feed(event)]
    return records, tracker
