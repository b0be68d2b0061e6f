"""The rating semantics written as plainly as possible in Decimal: the yardstick that the
integer engine is tested against. Slow; not for production use."""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_CEILING, Decimal, localcontext
from fractions import Fraction

from botmeter.rating.plan import Charge, PlanVersion
from botmeter.tracking.record import CallRecord, seconds_between

ZERO = Decimal(0)


def reference_quantity(call: CallRecord, charge: Charge) -> Decimal:
    """Semantics 1: the call's metered quantity in the metric's own unit."""
    if call.outcome not in charge.outcomes:
        return ZERO
    if charge.metric == "calls":
        return Decimal(1)
    if charge.module is not None:
        used = call.modules.get(charge.module)
        return used.quantity if used is not None else ZERO
    if charge.metric == "bot_seconds":
        raw = call.bot_seconds
    else:
        raw = (seconds_between(call.bot_answered_at, call.ended_at)
               if call.bot_answered_at is not None else None)
    seconds = Decimal(str(raw)) if raw is not None else ZERO
    if seconds <= 0 or seconds < charge.min_seconds:
        return ZERO
    if seconds <= charge.first_block:
        return Decimal(charge.first_block)
    blocks = ((seconds - charge.first_block) / charge.block).to_integral_value(ROUND_CEILING)
    return charge.first_block + blocks * charge.block


def reference_cost(charge: Charge, billed: Fraction) -> Fraction:
    """Semantics 2: the model's exact cost of `billed` priced units (after the allowance)."""
    if charge.model == "per_unit":
        assert charge.price is not None
        return billed * Fraction(charge.price)
    if charge.model == "package":
        assert charge.price is not None and charge.package_size is not None
        return math.ceil(billed / Fraction(charge.package_size)) * Fraction(charge.price)
    if charge.model == "volume":
        for tier in charge.tiers:
            if tier.up_to is None or billed <= tier.up_to:
                return billed * Fraction(tier.price)
    cost, low = Fraction(0), Fraction(0)
    for tier in charge.tiers:
        high = billed if tier.up_to is None else min(billed, Fraction(tier.up_to))
        if high > low:
            cost += (high - low) * Fraction(tier.price)
        if tier.up_to is not None:
            low = Fraction(tier.up_to)
    return cost


def round_half_up(value: Fraction, step: Decimal) -> Decimal:
    """An exact non-negative amount rounded half-up to a multiple of `step`."""
    return math.floor(value / Fraction(step) + Fraction(1, 2)) * step


def reference_amounts(calls: Iterable[CallRecord], version: PlanVersion,
                      ) -> dict[str, list[Decimal]]:
    """Semantics 2-3 for one period's calls: each call's marginal amount per charge."""
    ordered = sorted(calls, key=lambda c: (c.ended_at, c.call_id))
    amounts: dict[str, list[Decimal]] = {c.call_id: [] for c in ordered}
    with localcontext() as ctx:
        ctx.prec = 100
        for charge in version.charges:
            total, previous = Fraction(0), ZERO
            for call in ordered:  # exact arithmetic: a Decimal context would round 29/60
                total += Fraction(reference_quantity(call, charge))
                billed = max(Fraction(0), total / Fraction(charge.unit) - Fraction(charge.included))
                rounded = round_half_up(reference_cost(charge, billed), version.precision)
                amounts[call.call_id].append(rounded - previous)
                previous = rounded
    return amounts
