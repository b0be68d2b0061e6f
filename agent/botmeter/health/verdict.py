"""Whether the agent is healthy, and if not why: a pure decision on a Snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backpressure import MAX_QUEUED, resume_below
from .snapshot import Snapshot

#: seconds one batch may take to store (retries included) before the writer counts as stuck
MAX_BUSY_SECONDS = 30.0
#: seconds storing may fail before the database counts as failing (a moment's lock does not)
FAILING_GRACE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_queue: int = MAX_QUEUED  # [store] max_queued: the bound of the writer's backlog
    max_busy_seconds: float = MAX_BUSY_SECONDS
    failing_grace_seconds: float = FAILING_GRACE_SECONDS


DEFAULT_LIMITS = Limits()
#: the parts /healthz judges, as its `reasons` keys
COMPONENTS = ("ami", "database", "writer")


def problems(snap: Snapshot, limits: Limits = DEFAULT_LIMITS) -> dict[str, str]:
    """What is wrong, by component (COMPONENTS); empty when healthy."""
    found: dict[str, str] = {}
    if not snap.ami_connected:
        found["ami"] = f"not connected to Asterisk at {snap.ami_target} (the log says why)"
    failing_for = snap.writer_failing_seconds
    if snap.writer_failing is not None and (failing_for is None
                                            or failing_for >= limits.failing_grace_seconds):
        since = "" if failing_for is None else f" for {failing_for:.0f} s"
        found["database"] = (f"storing calls has failed{since}, retrying: {snap.writer_failing}"
                             f" ({snap.writer_queue} calls waiting)")
    elif snap.disk.writable is not None:
        found["database"] = snap.disk.writable
    if not snap.writer_alive:
        found["writer"] = "the writer thread has stopped: calls are not being stored"
    elif snap.ami_reading_paused or snap.writer_queue >= limits.max_queue:
        found["writer"] = (f"{snap.writer_queue} calls wait to be stored (the bound is "
                           f"{limits.max_queue}): the writer is falling behind; AMI is not read "
                           f"until fewer than {resume_below(limits.max_queue)} wait")
    elif snap.writer_busy_seconds is not None and snap.writer_busy_seconds > limits.max_busy_seconds:
        found["writer"] = (f"one batch has been storing for {snap.writer_busy_seconds:.0f} s "
                           f"(more than {limits.max_busy_seconds:.0f}): no commit lately")
    return found


def health_document(snap: Snapshot, limits: Limits = DEFAULT_LIMITS) -> tuple[int, dict[str, Any]]:
    """The HTTP status (200 or 503) and the JSON document of /healthz."""
    found = problems(snap, limits)
    document: dict[str, Any] = {
        "status": "fail" if found else "ok",
        "ami": {"connected": snap.ami_connected, "target": snap.ami_target},
        "calls_in_progress": snap.calls_in_progress,
        "writer_queue": snap.writer_queue,
    }
    if found:
        document["reasons"] = found
    return (503 if found else 200), document
