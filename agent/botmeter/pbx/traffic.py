"""What AMI sent over all sessions, for metrics and health: events by name, when the last one
came, frames the parser had to throw away. Plain counters, updated on the event loop."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .ami_frames import FrameStats

#: distinct event names counted by name; later new names are counted as OTHER (a PBX sending
#: made-up names must not grow the metrics without bound)
MAX_EVENT_NAMES = 200
OTHER = "other"


@dataclass(slots=True)
class AmiTraffic:
    """Counters over the agent's whole life, across reconnects."""

    clock: Callable[[], float] = time.monotonic
    events: Counter[str] = field(default_factory=Counter)
    last_event: float | None = None  # `clock()` when the last event arrived
    discarded_frames: int = 0  # of sessions that ended: bad lines, oversized and junk frames

    def saw(self, name: bytes) -> None:
        """One event frame named `name` arrived."""
        label = name[:64].decode("utf-8", "replace")
        if label not in self.events and len(self.events) >= MAX_EVENT_NAMES:
            label = OTHER
        self.events[label] += 1
        self.last_event = self.clock()

    def session_ended(self, stats: FrameStats) -> None:
        self.discarded_frames += discarded(stats)

    def seconds_since_event(self) -> float | None:
        return None if self.last_event is None else self.clock() - self.last_event


def discarded(stats: FrameStats) -> int:
    """Everything one parser threw away: bad header lines, oversized and junk frames."""
    return stats.bad_lines + stats.oversized_frames + stats.junk_frames
