"""The database as `botmeter run` finds it at start: usable, unusable, or unavailable for now.

What no retry mends (the path is a folder or cannot be made, the file is not a botmeter
database, is damaged or from a newer botmeter: `StoreError.permanent`) stops the agent with
one line, exit 1. Anything else (locked during the migration, disk full while creating it,
a folder the -wal file cannot be created in, a file not readable yet) does not: the agent
starts, reports failing health, and its writer keeps trying; calls wait in memory meanwhile
(`[store] max_queued`) and are stored once the database opens.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from .store import CallStore, StoreError
from .trouble import classify

log = structlog.get_logger(__name__)


def open_at_start(path: Path, group: str | None) -> CallStore | None:
    """The database at `path`, opened (created) for the checks made before the agent starts;
    None (logged) while it is unavailable for now. Raises the StoreError no retry mends."""
    try:
        return CallStore(path, group=group)
    except StoreError as exc:
        if exc.permanent:
            raise
        log.warning("database unavailable at start: recording starts anyway, calls are stored "
                    "once it opens", db=exc.path, trouble=classify(exc), error=exc.reason)
        return None
