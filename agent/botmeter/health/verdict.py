"""Whether the agent is healthy, and if not why: a pure decision on a Snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .snapshot import Snapshot

#: calls waiting for the writer beyond which it is falling behind
MAX_QUEUE = 10_000
#: seconds one batch may take to store (retries included) before the writer counts as stuck
MAX_BUSY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_queue: int = MAX_QUEUE
    max_busy_seconds: float = MAX_BUSY_SECONDS


DEFAULT_LIMITS = Limits()


def problems(snap: Snapshot, limits: Limits = DEFAULT_LIMITS) -> dict[str, str]:
    """What is wrong, by component (`ami`, `database`, `writer`); empty when healthy."""
    found: dict[str, str] = {}
    if not snap.ami_connected:
        found["ami"] = f"not connected to Asterisk at {snap.ami_target} (the log says why)"
    if snap.writer_failing is not None:
        found["database"] = f"storing calls fails, retrying: {snap.writer_failing}"
    elif snap.disk.writable is not None:
        found["database"] = snap.disk.writable
    if not snap.writer_alive:
        found["writer"] = "the writer thread has stopped: calls are not being stored"
    elif snap.writer_queue > limits.max_queue:
        found["writer"] = (f"{snap.writer_queue} calls wait to be stored (more than "
                           f"{limits.max_queue}): the writer is falling behind")
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
