"""The SLA measures: did the bot answer enough offered calls quickly enough, and were the
callers satisfied enough?"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from math import ceil, floor

from ..tracking.record import CSAT_SCALE, CallRecord, Csat
from .errors import RatingError
from .plan import Sla


@dataclass(frozen=True, slots=True)
class SlaMeasure:
    """Counted = offered calls minus callers who gave up sooner than ignore_abandoned_under."""

    offered: int
    counted: int
    answered: int  # counted calls the bot answered within max_ring_seconds
    met: bool
    max_ring_seconds: Decimal | None = None  # the clause's threshold, for showing

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
    """Measure the answer-rate clause over a period's calls; met when the rate >= answer_rate
    (and when no call was counted).

    Ring times are whole milliseconds (as in the record), compared with exact thresholds.
    """
    if sla.answer_rate is None or sla.max_ring_seconds is None:
        raise ValueError("this SLA has no answer-rate clause")
    fast_ms, ignore_ms = ring_thresholds(sla)
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
    return sla_measure(sla, offered, counted, answered)


def ring_thresholds(sla: Sla) -> tuple[int, int]:
    """(fast_ms, ignore_ms): a counted call is answered in time when the bot answered it and
    its ring time in whole milliseconds is <= fast_ms; an abandoned call is not counted when
    its ring time is < ignore_ms."""
    assert sla.max_ring_seconds is not None
    return floor(sla.max_ring_seconds * 1000), ceil(sla.ignore_abandoned_under * 1000)


def sla_measure(sla: Sla, offered: int, counted: int, answered: int) -> SlaMeasure:
    """The answer-rate clause's measure from its counts (as `measure_sla` counts them)."""
    if sla.answer_rate is None or sla.max_ring_seconds is None:
        raise ValueError("this SLA has no answer-rate clause")
    met = counted == 0 or Decimal(answered) >= sla.answer_rate * counted
    return SlaMeasure(offered, counted, answered, met, sla.max_ring_seconds)


@dataclass(frozen=True, slots=True)
class CsatMeasure:
    """The satisfaction clause: the responses (calls with a csat rating) and their scores."""

    responses: int
    total: Fraction  # the sum of the responses' scores on the 5-point scale, exact
    min_responses: int  # the plan's csat_min_responses
    met: bool | None  # None: not judged (fewer responses than min_responses)

    @property
    def mean(self) -> Fraction | None:
        """The exact mean score on the 5-point scale (None without responses)."""
        return self.total / self.responses if self.responses else None

    def shown(self) -> str:
        """The mean truncated to 2 places (so 4.199 shows 4.19, never 4.20 < 4.2)."""
        mean = self.mean
        if mean is None:
            return "n/a"
        return str((Decimal(mean.numerator) / Decimal(mean.denominator)).quantize(
            Decimal("0.01"), rounding=ROUND_DOWN))


def score_on_five(call: CallRecord, csat: Csat) -> Fraction:
    """A score mapped linearly onto 1..5: 1 + (score - 1) * 4 / (scale - 1), as an exact
    fraction (Csat.on_five() without its Decimal rounding). RatingError for a rating that
    is not a score in 1..scale with scale 2..10."""
    if not (2 <= csat.scale <= 10 and 1 <= csat.score <= csat.scale):
        raise RatingError(f"call {call.call_id}: csat {csat.score} of {csat.scale} is not a "
                          "score from 1 to a scale of 2 to 10")
    return 1 + Fraction((csat.score - 1) * (CSAT_SCALE - 1), csat.scale - 1)


def measure_csat(sla: Sla, calls: Iterable[CallRecord]) -> CsatMeasure:
    """Measure the satisfaction clause over a period's calls: the mean of the rated calls'
    scores on the 5-point scale, exactly. Not judged (met None) with fewer than
    csat_min_responses responses; else met when the mean >= min_csat."""
    if sla.min_csat is None:
        raise ValueError("this SLA has no satisfaction clause")
    responses = 0
    total = Fraction(0)
    for call in calls:
        if call.csat is not None:
            responses += 1
            total += score_on_five(call, call.csat)
    return csat_measure(sla, responses, total)


def csat_measure(sla: Sla, responses: int, total: Fraction) -> CsatMeasure:
    """The satisfaction clause's measure from the responses and their total score on the
    5-point scale (as `measure_csat` sums them)."""
    if sla.min_csat is None:
        raise ValueError("this SLA has no satisfaction clause")
    met = None
    if responses and responses >= sla.csat_min_responses:
        met = total >= Fraction(sla.min_csat) * responses
    return CsatMeasure(responses, total, sla.csat_min_responses, met)
