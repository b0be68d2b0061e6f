"""What `botmeter sync status` shows: the outbox's backlog and the last answers. Read only."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..tracking.record import iso_utc
from . import outbox
from .outbox import DELIVERED, PARKED, PENDING


def sync_status(conn: sqlite3.Connection, now: float) -> dict[str, Any]:
    """Backlog by plan, parked revisions with the vendor's answer, last success and error."""
    with outbox.read_snapshot(conn):
        plans: dict[str, dict[str, Any]] = {}
        for plan_id, state, count, oldest, newest in conn.execute(
                "SELECT plan_id, state, count(*), min(bucket_start), max(bucket_start) "
                "FROM uplink_outbox GROUP BY plan_id, state ORDER BY plan_id"):
            entry = plans.setdefault(plan_id, {"plan_id": plan_id, "pending": 0, "delivered": 0,
                                               "parked": 0, "superseded": 0,
                                               "oldest_unsent": None, "last_delivered": None})
            entry[state] = count
            if state == PENDING:
                entry["oldest_unsent"] = oldest
            if state == DELIVERED:
                entry["last_delivered"] = newest
        parked = [dict(zip(("plan_id", "bucket_start", "revision", "status", "reason",
                            "attempts", "last_attempt_at"), row, strict=True))
                  for row in conn.execute(
                      "SELECT plan_id, bucket_start, revision, last_status, last_error, "
                      "attempts, last_attempt_at FROM uplink_outbox WHERE state = ? "
                      "ORDER BY bucket_start, plan_id", (PARKED,))]
        in_flight = conn.execute(
            "SELECT count(*) FROM uplink_outbox WHERE state = ? AND lease_until > ?",
            (PENDING, now)).fetchone()[0]
        retry_at = outbox.get_state(conn, "retry_at")
        return {
            "plans": list(plans.values()),
            "pending": sum(p["pending"] for p in plans.values()),
            "in_flight": in_flight,
            "parked": parked,
            "last_success": outbox.get_state(conn, "last_success"),
            "last_error": outbox.get_state(conn, "last_error"),
            "failures": outbox.get_state(conn, "failures", 0),
            "retry_at": iso_utc(retry_at) if retry_at is not None and retry_at > now else None,
        }
