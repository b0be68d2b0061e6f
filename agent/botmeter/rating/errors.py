"""The errors rating raises."""

from __future__ import annotations

from pathlib import Path


class PlanError(ValueError):
    """A plan file broke a rule: str is `<file>: <key>: <reason>`.

    Keys are dotted paths as written in the file; arrays of tables are counted
    from 1 (`charge[1]` is the first `[[charge]]`, `charge[2].tiers[3].price`).
    """

    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.path}: {key}: {reason}")


class NoStatement(PlanError):
    """A period that ends before the plan's first version: it has no statement at all (fees
    included). Names the plan's first file and its effective_from."""


class RatingError(ValueError):
    """A call could not be rated (e.g. duplicate call ids, an unrateable quantity)."""


class NotRated(RatingError):
    """A call offered before the plan starts (its first version's effective_from) is not
    rated under the plan: it has no amount. The message names the call."""


class RerateNeeded(Exception):
    """Incremental rating cannot continue: re-rate this period with all its calls.

    Raised when a call arrives out of (ended_at, call_id) order or when the
    period has not been opened yet (after a restart nobody knows what the
    period already used).
    """

    def __init__(self, period: str, reason: str) -> None:
        self.period = period
        self.reason = reason
        super().__init__(f"{period}: {reason}")
