"""The SLA measure: did the bot answer enough offered calls quickly enough?"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from math import ceil, floor

from ..tracking.record import CallRecord
from .plan import Sla


@dataclass(frozen=True, slots=True)
class SlaMeasure:
    """Counted = offered calls minus callers who gave up sooner than ignore_abandoned_under."""

    offered: int
    counted: int
    answered: int  # counted calls the bot answered within max_ring_seconds
    met: bool

    @property
    def answer_rate(self) -> Decimal | None:
        """The measured share (None without counted calls)."""
        return Decimal(self.answered) / Decimal(self.counted) if self.counted else None

    def percent(self) -> str:
        """The measured rate in percent, truncated to 2 places (so 97.999 shows 97.99)."""
        rate = self.answer_rate
        if rate is None:
            return "n/a"
        return str((rate * 100).quantize(Decimal("0.01"), rounding=ROUND_DOWN))


def measure_sla(sla: Sla, calls: Iterable[CallRecord]) -> SlaMeasure:
    """Measure the guarantee over a period's calls; met when the rate >= answer_rate.

    Ring times are whole milliseconds (as in the record), compared with exact thresholds.
    """
    fast_ms = floor(sla.max_ring_seconds * 1000)          # answered if ring_ms <= this
    ignore_ms = ceil(sla.ignore_abandoned_under * 1000)   # not counted if ring_ms < this
    offered = counted = answered = 0
    for call in calls:
        offered += 1
        answer = call.bot_answered_at
        end = answer if answer is not None else call.ended_at
        ring_ms = max(0, round((end - call.offered_at) * 1000.0))
        if ring_ms < ignore_ms and call.outcome == "abandoned":
            continue
        counted += 1
        if answer is not None and ring_ms <= fast_ms:
            answered += 1
    met = counted == 0 or Decimal(answered) >= sla.answer_rate * counted
    return SlaMeasure(offered, counted, answered, met)
