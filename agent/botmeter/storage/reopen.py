"""Keep a long-lived connection on the database at its path, even after the file changed.

The agent's threads (the writer, the re-rater, the uplink, the budget and retention jobs)
each hold a connection for as long as they run. Before each use they ask `at_path`, which
costs one stat: the same connection while the path leads to its file; once the file was
deleted or replaced, the old one released (`CallStore.release`) and the database at the path
opened, or created as at a first start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from .store import CallStore

log = structlog.get_logger(__name__)


def at_path(store: CallStore | None, factory: Callable[[], CallStore], *,
            calls_waiting: int | None = None) -> CallStore:
    """`store` while its path still leads to its file; else the database at the path (opened
    or created by `factory`, which may raise). A changed file is logged: as an error with
    `calls_waiting` (the writer's, whose calls it concerns), else as a note."""
    if store is None:
        return factory()
    moved = store.file_change()
    if moved is None:
        return store
    fields = {"db": str(store.path), "thread": threading.current_thread().name}
    if calls_waiting is None:
        log.info(f"database file {moved}; reopening at its path", **fields)
    else:
        log.error(f"database file {moved} under the agent; storing calls in a new one at its "
                  "path", calls_waiting=calls_waiting, **fields)
    store.release()
    fresh = factory()
    if calls_waiting is not None:
        log.warning("database opened anew at its path; calls are stored there", db=str(fresh.path))
    return fresh
