"""Plan versions by plan id: which version is in force for a call."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from .errors import PlanError
from .loader import load_plan
from .periods import local_midnight, parse_period
from .plan import PlanVersion


class PlanSeries:
    """All versions of one plan, oldest first.

    The version in force for a call is the latest one whose effective_from is
    on or before the call's offered_at date in the plan's time zone. A call
    before every version is rated by the earliest version (rating never fails
    for lack of a version; a version without effective_from counts as the
    earliest possible).
    """

    def __init__(self, versions: Iterable[PlanVersion]) -> None:
        ordered = sorted(versions, key=lambda v: (v.effective_from is not None,
                                                  v.effective_from or date.min))
        if not ordered:
            raise ValueError("a plan series needs at least one version")
        first = ordered[0]
        for version, before in zip(ordered[1:], ordered, strict=False):
            if version.plan_id != first.plan_id:
                raise ValueError("versions of different plans in one series")
            if version.effective_from == before.effective_from:
                raise PlanError(version.source, "plan.effective_from",
                                f"plan {version.plan_id!r} already has a version with effective_from "
                                f"{_day(version.effective_from)} in {before.source}")
            for key, mine, theirs in (("plan.currency", version.currency, first.currency),
                                      ("plan.timezone", version.timezone.key, first.timezone.key)):
                if mine != theirs:
                    raise PlanError(version.source, key,
                                    f"{mine!r} differs from {theirs!r} in {first.source}; all "
                                    f"versions of plan {first.plan_id!r} must agree")
        self.versions: tuple[PlanVersion, ...] = tuple(ordered)
        self.plan_id = first.plan_id
        self.currency = first.currency
        self.timezone: ZoneInfo = first.timezone
        self._starts = [local_midnight(v.effective_from, self.timezone)
                        for v in ordered[1:] if v.effective_from is not None]

    @property
    def latest(self) -> PlanVersion:
        return self.versions[-1]

    def version_index(self, offered_at: float) -> int:
        """Index in `versions` of the version in force for a call offered at this epoch time."""
        return bisect_right(self._starts, offered_at)

    def version_for(self, offered_at: float) -> PlanVersion:
        """The version in force for a call offered at this UTC epoch time."""
        return self.versions[bisect_right(self._starts, offered_at)]

    def version_on(self, day: date) -> PlanVersion:
        """The version in force on a local calendar day."""
        chosen = self.versions[0]
        for version in self.versions:
            if version.effective_from is not None and version.effective_from <= day:
                chosen = version
        return chosen

    def fee_version(self, period: str) -> PlanVersion:
        """The version whose period fees and SLA apply: the one in force on the period's 1st."""
        year, month = parse_period(period)
        return self.version_on(date(year, month, 1))

    def now(self) -> PlanVersion:
        """The version in force today."""
        return self.version_on(datetime.now(self.timezone).date())


class UnknownPlan(LookupError):
    """No plan with this id in the book."""


class PlanBook:
    """Every plan in a directory of plan files (`*.toml`, one version per file)."""

    def __init__(self, versions: Iterable[PlanVersion] = ()) -> None:
        grouped: dict[str, list[PlanVersion]] = {}
        for version in versions:
            grouped.setdefault(version.plan_id, []).append(version)
        self._series = {plan_id: PlanSeries(group) for plan_id, group in sorted(grouped.items())}

    @classmethod
    def load(cls, directory: Path | str) -> PlanBook:
        """Load and validate every `*.toml` file of a directory (not recursive)."""
        folder = Path(directory)
        if not folder.is_dir():
            raise PlanError(folder, "(directory)", "not a directory")
        return cls(load_plan(path) for path in sorted(folder.glob("*.toml")))

    @property
    def plan_ids(self) -> tuple[str, ...]:
        return tuple(self._series)

    def __iter__(self) -> Iterator[PlanSeries]:
        return iter(self._series.values())

    def __contains__(self, plan_id: object) -> bool:
        return plan_id in self._series

    def series(self, plan_id: str) -> PlanSeries:
        try:
            return self._series[plan_id]
        except KeyError:
            known = ", ".join(self._series) or "none"
            raise UnknownPlan(f"no plan {plan_id!r} (plans: {known})") from None

    def version_for(self, plan_id: str, offered_at: float) -> PlanVersion:
        """The version of `plan_id` in force for a call offered at this UTC epoch time."""
        return self.series(plan_id).version_for(offered_at)


def _day(day: date | None) -> str:
    return day.isoformat() if day is not None else "(none)"
