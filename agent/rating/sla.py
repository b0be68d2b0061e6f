"""The SLA measure: did the bot answer enough offered calls quickly enough?"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

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
    """Measure the guarantee over a period's calls; met when the rate >= answer_rate."""
    offered = counted = answered = 0
    for call in calls:
        offered += 1
        ring = Decimal(str(call.ring_seconds))
        if call.outcome == "abandoned" and ring < sla.ignore_abandoned_under:
            continue
        counted += 1
        if call.bot_answered_at is not None and ring <= sla.max_ring_seconds:
            answered += 1
    met = counted == 0 or Decimal(answered) >= sla.answer_rate * counted
    return SlaMeasure(offered, counted, answered, met)
