"""What the running agent's /healthz says about storing calls (database trouble)."""

from __future__ import annotations

from typing import Any

from .findings import Finding, fail, ok

FIX = ("free the disk, or end what holds the database's lock (fuser -v DB); the calls wait "
       "in memory meanwhile (docs/operations.md#database-trouble)")


def check_storing(health: dict[str, Any]) -> Finding:
    """FAIL while the running agent cannot store calls or has paused AMI for its backlog."""
    reasons = health.get("reasons") or {}
    for part in ("database", "writer"):
        if isinstance(reasons, dict) and reasons.get(part):
            return fail("agent storing", f"the running agent: {reasons[part]}", FIX)
    return ok("agent storing", f"the running agent stores calls "
                               f"({health.get('writer_queue', 0)} waiting)")
