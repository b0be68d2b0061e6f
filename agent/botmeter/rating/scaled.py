"""A charge compiled to integer arithmetic: quantities as scaled integers, costs as integers
of `precision` (e.g. 1 = 0.0001), exactly equal to the Decimal semantics.

A charge's metric is counted in integer *scaled units* of 10**-scale of the metric's own unit
(milliseconds for time metrics when scale = 3). `cost(b)` is the charge's cost of `b` billed
scaled units (after the allowance), rounded half-up to the plan's precision, as an integer
count of precision steps. `cost` also accepts a Fraction (used to scale volumes in compare).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import gcd, lcm

from .plan import Charge, PlanVersion

Cost = Callable[[int], int]
BASE_SCALE = {"bot_seconds": 3, "call_seconds": 3, "calls": 0}
MODULE_SCALE = 6


@dataclass(frozen=True, slots=True)
class ScaledCharge:
    """Integer constants of one charge."""

    charge: Charge
    scale: int          # quantities are integers of 10**-scale metric units
    included: int       # the allowance, in scaled units
    per_unit: Fraction  # scaled units per priced unit (unit * 10**scale)
    digits: int         # the plan's precision is 10**-digits
    cost: Cost
    min_ms: int = 0     # time metrics: thresholds in milliseconds ...
    first_ms: int = 0
    block_ms: int = 1
    ms_factor: int = 1  # ... and scaled units per millisecond

    def to_units(self, scaled: int | Fraction) -> Fraction:
        """Scaled metric units as priced units (exact)."""
        return Fraction(scaled) / self.per_unit

    def to_metric(self, scaled: int) -> Decimal:
        """Scaled metric units as a Decimal of the metric's own unit."""
        return Decimal(scaled).scaleb(-self.scale)


def places(value: Decimal) -> int:
    """Digits after the decimal point needed to write `value` exactly."""
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def scale_charge(charge: Charge, precision: Decimal) -> ScaledCharge:
    """Compile one charge of a plan with this money precision."""
    base = BASE_SCALE.get(charge.metric, MODULE_SCALE)
    needs = [charge.included * charge.unit]
    needs += [t.up_to * charge.unit for t in charge.tiers if t.up_to is not None]
    if charge.package_size is not None:
        needs.append(charge.package_size * charge.unit)
    scale = max([base, *(places(n) for n in needs)])
    digits = places(precision)
    per_unit = Fraction(charge.unit) * 10**scale
    cost = _cost(charge, per_unit, digits)
    extra = {}
    if charge.is_time:
        extra = {"min_ms": charge.min_seconds * 1000, "first_ms": charge.first_block * 1000,
                 "block_ms": charge.block * 1000, "ms_factor": 10 ** (scale - 3)}
    included = charge.included * charge.unit * 10**scale
    return ScaledCharge(charge, scale, int(included), per_unit, digits, cost, **extra)


def _rounder(denominator: int, digits: int) -> tuple[int, int, int]:
    """(m, h, d) with round_half_up(n / denominator, 10**-digits) == (n * m + h) // d steps,
    for any n >= 0: floor((2 * n * 10**digits + denominator) / (2 * denominator)), reduced."""
    m = 2 * 10**digits
    h = denominator
    g = gcd(m, h)
    return m // g, h // g, 2 * h // g


def _cost(charge: Charge, per_unit: Fraction, digits: int) -> Cost:
    if charge.model == "package":
        assert charge.price is not None and charge.package_size is not None
        size = Fraction(charge.package_size) * per_unit
        assert size.denominator == 1
        return _package_cost(int(size), Fraction(charge.price), digits)
    if charge.model == "per_unit":
        assert charge.price is not None
        rate = Fraction(charge.price) / per_unit
        m, h, d = _rounder(rate.denominator, digits)
        a = rate.numerator * m

        def per_unit_cost(b: int) -> int:
            return (b * a + h) // d

        return per_unit_cost
    return _tiered_cost(charge, per_unit, digits)


def _package_cost(size: int, price: Fraction, digits: int) -> Cost:
    m, h, d = _rounder(price.denominator, digits)
    a = price.numerator * m

    def package_cost(b: int) -> int:
        return (-(-b // size) * a + h) // d

    return package_cost


def _tiered_cost(charge: Charge, per_unit: Fraction, digits: int) -> Cost:
    rates = [Fraction(t.price) / per_unit for t in charge.tiers]
    common = lcm(*(r.denominator for r in rates))
    prices = [int(r * common) for r in rates]
    bounds = [int(Fraction(t.up_to) * per_unit) for t in charge.tiers if t.up_to is not None]
    m, h, d = _rounder(common, digits)
    if charge.model == "volume":
        scaled = [p * m for p in prices]

        def volume_cost(b: int) -> int:
            return (b * scaled[bisect_left(bounds, b)] + h) // d

        return volume_cost
    lows = [0, *bounds]
    below = [0]
    for i, bound in enumerate(bounds):
        below.append(below[-1] + (bound - lows[i]) * prices[i])

    def graduated_cost(b: int) -> int:
        t = bisect_left(bounds, b)
        return ((below[t] + (b - lows[t]) * prices[t]) * m + h) // d

    return graduated_cost


def scale_plan(version: PlanVersion) -> tuple[ScaledCharge, ...]:
    """Every charge of a plan version, compiled."""
    return tuple(scale_charge(c, version.precision) for c in version.charges)
