"""The plans a command rates or bills with, resolved from the configuration.

Pure rating lives in `botmeter.rating`; this reads the `[plans]` section: which directory
holds the plan files and which plan is in force.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from .config import Config, ConfigError
from .rating import PlanBook, PlanSeries, load_plan
from .rating.periods import period_bounds

log = structlog.get_logger(__name__)


def _warn(book: PlanBook) -> PlanBook:
    """Log what the plan files say that can never take effect (a once fee no period bills)."""
    for line in book.warnings:
        log.warning("plan fee never billed", detail=line)
    return book


def load_plan_book(config: Config) -> PlanBook | None:
    """The configured plan files (None without a [plans] section); PlanError for a bad file."""
    directory = config.plans_dir()
    if directory is None:
        return None
    if not directory.is_dir():
        raise ConfigError(config.source_path, "plans.dir", f"{directory} is not a directory")
    return _warn(PlanBook.load(directory))


def active_series(config: Config, book: PlanBook | None, plan_id: str | None = None) -> PlanSeries:
    """The plan to rate or bill with: `plan_id`, else the configured active one."""
    if book is None or config.plans is None:
        raise ConfigError(config.source_path, "plans", "no [plans] section: nothing to rate with")
    wanted = plan_id or config.plans.active
    if wanted not in book:
        have = ", ".join(book.plan_ids) or "none"
        key = "plans.active" if plan_id is None else "--plan"
        raise ConfigError(config.source_path, key,
                          f"no plan {wanted!r} in {config.plans_dir()} (have: {have})")
    return book.series(wanted)


def rating_series(config: Config) -> PlanSeries | None:
    """The plan calls are rated under as they are stored (None without [plans]);
    PlanError/ConfigError if a file or the active plan is bad."""
    book = load_plan_book(config)
    return None if book is None else active_series(config, book)


def comparison_plans(config: Config, paths: Iterable[Path]) -> tuple[list[PlanSeries], str | None]:
    """The plans to compare: each file's plan, plus the active plan when one is configured."""
    book = _warn(PlanBook([load_plan(p) for p in paths]))
    series = list(book)
    active = config.plans.active if config.plans else None
    if active is not None and active not in book:
        configured = load_plan_book(config)
        if configured is not None and active in configured:
            series.append(configured.series(active))
        else:
            active = None
    return series, active


def period_span(period: str, plans: Iterable[PlanSeries]) -> tuple[float, float]:
    """[start, end) as UTC epochs covering `period` in every one of these plans' time zones:
    the stored calls to read for comparing them."""
    bounds = [period_bounds(period, s.timezone) for s in plans]
    return min(b[0] for b in bounds), max(b[1] for b in bounds)
