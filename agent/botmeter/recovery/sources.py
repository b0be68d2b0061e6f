"""The recovery sources `[recovery]` configures, as the healer reads them: the CEL file as
typed events, the CDR file as call records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..config import Config, recovery_sources
from ..pbx.events import PbxEvent
from ..tracking.record import CallRecord
from ..tracking.rules import TrackingRules
from .bad_rows import BadRows
from .cdr import CdrSource, open_cdr
from .cel import cel_events
from .cel_source import CelSource, open_cel
from .heal import CdrFeed, CelFeed


class CelFile:
    """`[recovery] cel_db`, opened for one healing."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.bad = BadRows()
        self._source: CelSource = open_cel(path, on_bad=self.bad)

    def latest_time(self) -> float | None:
        return self._source.latest_time()

    def events(self, since: float, until: float) -> Iterator[PbxEvent]:
        return cel_events(self._source.rows(since, until), self.bad)

    def close(self) -> None:
        self._source.close()


class CdrFile:
    """`[recovery] cdr_db` or `cdr_csv`, opened for one healing."""

    def __init__(self, path: Path, rules: TrackingRules) -> None:
        self.name = str(path)
        self.bad = BadRows()
        self._rules = rules
        self._source: CdrSource = open_cdr(path, on_bad=self.bad)

    def records(self, since: float, until: float) -> Iterator[CallRecord]:
        return self._source.records(since, until, self._rules)

    def close(self) -> None:
        self._source.close()


def recovery_feeds(config: Config) -> tuple[Callable[[], CelFeed] | None,
                                            Callable[[], CdrFeed] | None]:
    """Openers of the CEL and CDR sources (None: not configured). The CDR one only without
    CEL: CEL gives every call CDRs would, and more exactly."""
    sources = recovery_sources(config)
    cel, cdr = sources.cel, sources.cdr
    if cel is not None:
        return (lambda: CelFile(cel)), None
    if cdr is not None:
        rules = config.tracking_rules()
        return None, (lambda: CdrFile(cdr, rules))
    return None, None
