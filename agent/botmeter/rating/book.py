"""Plan versions by plan id: which version is in force for a call."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from math import inf
from pathlib import Path
from zoneinfo import ZoneInfo

from ..tracking.record import CallRecord
from .errors import NoStatement, PlanError
from .loader import load_plan
from .periods import local_midnight, parse_period, period_of_date
from .plan import PlanVersion


class PlanSeries:
    """All versions of one plan, oldest first (Semantics 6).

    The version in force for a call is the latest one whose effective_from is on or before
    the call's offered_at date in the plan's time zone. A version without effective_from has
    been in force since the beginning of time; otherwise the plan starts on its first
    version's effective_from: a call offered before that is not rated, and a period that ends
    before it has no statement. `warnings` says which once fees no period can bill.
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
        #: the first day of the plan (None: in force since the beginning of time)
        self.start: date | None = first.effective_from
        #: UTC epoch of each version's first moment (-inf for a version without effective_from)
        self.starts: tuple[float, ...] = tuple(
            -inf if v.effective_from is None else local_midnight(v.effective_from, self.timezone)
            for v in ordered)
        #: problems that do not stop the plan from loading: once fees that no period can bill
        self.warnings: tuple[str, ...] = tuple(self._unbillable_fees())

    @property
    def latest(self) -> PlanVersion:
        return self.versions[-1]

    def version_index(self, offered_at: float) -> int | None:
        """Index in `versions` of the version in force for a call offered at this UTC epoch
        time; None before the plan starts."""
        index = bisect_right(self.starts, offered_at) - 1
        return index if index >= 0 else None

    def version_on(self, day: date) -> PlanVersion | None:
        """The version in force on a local calendar day; None before the plan starts."""
        chosen = None
        for version in self.versions:
            if version.effective_from is None or version.effective_from <= day:
                chosen = version
        return chosen

    def fee_version(self, period: str) -> PlanVersion:
        """The version whose period fees and SLA apply: the one in force on the period's 1st,
        or the first version in the month the plan starts. NoStatement for a period that ends
        before the plan starts."""
        year, month = parse_period(period)
        version = self.version_on(date(year, month, 1))
        if version is not None:
            return version
        assert self.start is not None  # only a dated first version leaves a day uncovered
        if period_of_date(self.start) == period:
            return self.versions[0]
        raise NoStatement(self.versions[0].source, "plan.effective_from",
                          f"plan {self.plan_id!r} has no version in force in {period}: it "
                          f"starts on {self.start.isoformat()}, and a period before a plan "
                          "starts has no statement (fees included)")

    def not_rated(self, call: CallRecord) -> str | None:
        """Why a call is not rated under this plan (offered before it starts), else None."""
        if self.version_index(call.offered_at) is not None:
            return None
        offered = datetime.fromtimestamp(call.offered_at, self.timezone).date().isoformat()
        assert self.start is not None
        return (f"call {call.call_id} was offered on {offered}, before plan {self.plan_id!r} "
                f"starts ({self.start.isoformat()}): not rated")

    def _unbillable_fees(self) -> Iterator[str]:
        """A once fee is billed when the version in force on its `on` day lists it: name those
        that no period can bill, as `<file>: fee[n]: <why>`."""
        for version in self.versions:
            for n, fee in enumerate(version.fees, 1):
                if fee.every != "once" or fee.on is None:
                    continue
                governing = self.version_on(fee.on)
                if governing is not None and fee in governing.fees:
                    continue
                if governing is None:
                    why = (f"no version of plan {self.plan_id!r} is in force on that day (the "
                           f"plan starts on {_day(self.start)})")
                else:
                    why = (f"that day falls under version {governing.label} ({governing.source}), "
                           "which does not list it")
                yield (f"{version.source}: fee[{n}]: once fee {fee.name!r} due "
                       f"{fee.on.isoformat()} is never billed: {why}")


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

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every plan's load-time warnings (once fees that no period can bill), to be logged
        by whoever loaded the book."""
        return tuple(w for series in self for w in series.warnings)


def _day(day: date | None) -> str:
    return day.isoformat() if day is not None else "(none)"
