"""What the vendor's copy of the summaries is keyed on: the agent id, the bucket kind and, for
day buckets, each plan's time zone. Changing one after summaries went out would make buckets
that overlap the ones the vendor holds (the same calls counted twice), so it is refused."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..config import ConfigError
from . import outbox
from .settings import UplinkSettings


def identity(settings: UplinkSettings) -> dict[str, Any]:
    return {"agent_id": settings.agent_id, "bucket": settings.bucket,
            "timezones": {s.plan_id: s.timezone.key for s in settings.plans}
            if settings.bucket == "day" else {}}


def check_identity(conn: sqlite3.Connection, settings: UplinkSettings, where: str) -> None:
    """ConfigError naming the key when the configuration changed what summaries the vendor
    may hold are keyed on."""
    stored = outbox.get_state(conn, "identity")
    if not isinstance(stored, dict) or not _anything_sent(conn):
        return
    now = identity(settings)
    hint = ("changing it would count calls twice at the vendor; put it back, or agree with the "
            "vendor and start a new outbox (docs/uplink.md#decisions)")
    if stored.get("agent_id") != now["agent_id"]:
        raise ConfigError(where, "agent.id", f"summaries were sent as agent "
                                             f"{stored.get('agent_id')!r}: {hint}")
    if stored.get("bucket") != now["bucket"]:
        raise ConfigError(where, "uplink.bucket", f"summaries were sent with bucket = "
                                                  f"{stored.get('bucket')!r}: {hint}")
    for plan, zone in now["timezones"].items():
        before = (stored.get("timezones") or {}).get(plan)
        if before is not None and before != zone:
            raise ConfigError(where, "plan.timezone", f"plan {plan!r}: its day buckets were sent "
                                                      f"in {before}, not {zone}: {hint}")


def record_identity(conn: sqlite3.Connection, settings: UplinkSettings) -> None:
    """Keep what the summaries are keyed on (inside the summariser's write transaction)."""
    stored = outbox.get_state(conn, "identity")
    now = identity(settings)
    if isinstance(stored, dict) and stored.get("agent_id") == now["agent_id"] and \
            stored.get("bucket") == now["bucket"]:
        now["timezones"] = {**(stored.get("timezones") or {}), **now["timezones"]}
    if stored != now:
        outbox.set_state(conn, "identity", now)


def _anything_sent(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM uplink_outbox WHERE attempts > 0)"
                        ).fetchone()[0] == 1
