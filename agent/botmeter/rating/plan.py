"""A plan version as immutable typed objects (what one plan file says)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

Metric = str  # "bot_seconds" | "call_seconds" | "calls" | "module:<name>"
Model = Literal["per_unit", "graduated", "volume", "package"]
TIME_METRICS = ("bot_seconds", "call_seconds")
MODELS: tuple[Model, ...] = ("per_unit", "graduated", "volume", "package")
DEFAULT_OUTCOMES = ("handled", "transferred", "failed")


@dataclass(frozen=True, slots=True)
class Tier:
    """Prices the priced units up to `up_to` (inclusive; None = no bound)."""

    up_to: Decimal | None
    price: Decimal


@dataclass(frozen=True, slots=True)
class Charge:
    """One usage charge: how a call's quantity is metered and how a period prices it."""

    name: str
    metric: Metric
    outcomes: tuple[str, ...] = DEFAULT_OUTCOMES
    min_seconds: int = 0
    first_block: int = 0
    block: int = 1
    unit: Decimal = Decimal(1)
    included: Decimal = Decimal(0)
    model: Model = "per_unit"
    price: Decimal | None = None
    package_size: Decimal | None = None
    tiers: tuple[Tier, ...] = ()

    @property
    def is_time(self) -> bool:
        return self.metric in TIME_METRICS

    @property
    def module(self) -> str | None:
        """The module name of a `module:<name>` metric."""
        return self.metric[7:] if self.metric.startswith("module:") else None


@dataclass(frozen=True, slots=True)
class Fee:
    """Fixed money: each period, or once in the period holding `on`."""

    name: str
    amount: Decimal
    every: Literal["period", "once"] = "period"
    on: date | None = None


#: csat_min_responses when a plan does not say: the clause is judged on any response
DEFAULT_CSAT_MIN_RESPONSES = 1


@dataclass(frozen=True, slots=True)
class Sla:
    """The guarantee sold as an add-on: its fee, and one or two clauses.

    The answer-rate clause (answer_rate, max_ring_seconds, credit_percent,
    ignore_abandoned_under) is present when `answer_rate` is not None; the satisfaction
    clause (min_csat, csat_min_responses, csat_credit_percent) when `min_csat` is not None.
    The loader refuses a table with neither, or with a clause's keys half given.
    """

    fee: Decimal
    answer_rate: Decimal | None = None
    max_ring_seconds: Decimal | None = None
    credit_percent: Decimal | None = None
    ignore_abandoned_under: Decimal = Decimal(0)
    min_csat: Decimal | None = None  # mean score on the 5-point scale
    csat_min_responses: int = DEFAULT_CSAT_MIN_RESPONSES
    csat_credit_percent: Decimal | None = None

    @property
    def has_answer_rate(self) -> bool:
        return self.answer_rate is not None

    @property
    def has_csat(self) -> bool:
        return self.min_csat is not None


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """One plan file: one version of one plan."""

    plan_id: str
    name: str
    currency: str
    minor_unit: int
    timezone: ZoneInfo
    effective_from: date | None = None
    precision: Decimal = Decimal("0.0001")
    charges: tuple[Charge, ...] = ()
    fees: tuple[Fee, ...] = ()
    sla: Sla | None = None
    source: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        """`plan-id` or `plan-id@2026-11-15` when the version has an effective date."""
        if self.effective_from is None:
            return self.plan_id
        return f"{self.plan_id}@{self.effective_from.isoformat()}"
