"""The durable outbox in the local database: summary revisions waiting for the vendor, their
delivery state, and the uplink's bookkeeping (`uplink_state`).

States of a revision: `pending` (to send), `delivered` (the vendor answered 2xx or 409),
`parked` (the vendor refused it: kept, sent again only on `botmeter sync retry --parked`),
`superseded` (a newer revision of its bucket was queued before it was ever sent, or after the
vendor refused its one and only try: the vendor cannot hold it, and it is never sent).

Several processes may share the file (`botmeter run` and `botmeter sync now`): a sender claims
rows under the write lock and holds them by a lease (owner, until) while its request is out.

A revision the vendor may hold is never skipped: one that was sent and not refused at its
only try (a timeout, a reset or a 5xx may follow a commit at the vendor's end) is delivered,
or parked until `sync retry --parked` delivers it, before the next revision of its bucket is
sent. So revisions reach the vendor in order, and each one's CloudEvents `delta` is taken from
the revision delivered before it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..tracking.record import iso_utc
from .signing import idempotency_key
from .summary import Summary, digest

PENDING, DELIVERED, PARKED, SUPERSEDED = "pending", "delivered", "parked", "superseded"
STATES = (PENDING, DELIVERED, PARKED, SUPERSEDED)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A revision claimed for sending."""

    id: int
    agent_id: str
    plan_id: str
    bucket_start: str
    revision: int
    key: str
    summary: Summary
    previous: Summary | None  # the revision delivered before it, if any (for the delta)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the write lock from the start."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One consistent view of the database for several SELECTs (WAL: writers go on)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


# -- bookkeeping -----------------------------------------------------------------------------


def get_state(conn: sqlite3.Connection, name: str, default: Any = None) -> Any:
    """A bookkeeping value; `default` when it is missing or damaged (every value can be
    rebuilt: a lost watermark means summarising again, which queues only what changed)."""
    row = conn.execute("SELECT value FROM uplink_state WHERE name = ?", (name,)).fetchone()
    try:
        return default if row is None else json.loads(row[0])
    except (TypeError, ValueError):
        return default


def set_state(conn: sqlite3.Connection, name: str, value: Any) -> None:
    conn.execute("INSERT OR REPLACE INTO uplink_state (name, value) VALUES (?, ?)",
                 (name, json.dumps(value)))


# -- queueing revisions ----------------------------------------------------------------------

#: revisions the vendor cannot hold: never sent, or refused at their one and only try
_NOT_AT_THE_VENDOR = (f"((state = '{PENDING}' AND attempts = 0) OR "
                      f"(state = '{PARKED}' AND attempts = 1))")


def latest_digests(conn: sqlite3.Connection, plan_id: str) -> dict[str, tuple[int, str]]:
    """bucket_start -> (revision, digest) of each bucket's newest revision of this plan."""
    rows = conn.execute(
        "SELECT bucket_start, revision, digest FROM uplink_outbox o WHERE plan_id = ? AND "
        "revision = (SELECT max(revision) FROM uplink_outbox WHERE plan_id = o.plan_id AND "
        "bucket_start = o.bucket_start)", (plan_id,))
    return {bucket: (revision, text) for bucket, revision, text in rows}


def queue(conn: sqlite3.Connection, agent_id: str, summaries: Sequence[Summary],
          now: float) -> list[Summary]:
    """Queue each summary whose content differs from its bucket's newest revision, as the next
    revision; earlier revisions never sent, or parked, are superseded. Call inside a write
    transaction. Returns the revisions queued."""
    queued: list[Summary] = []
    known: dict[str, dict[str, tuple[int, str]]] = {}
    for summary in summaries:
        plan_id, bucket = summary["plan_id"], summary["bucket_start"]
        if plan_id not in known:
            known[plan_id] = latest_digests(conn, plan_id)
        revision, old = known[plan_id].get(bucket, (0, None))
        content = digest(summary)
        if content == old or (old is None and summary["call_count"] == 0):
            continue
        summary = {**summary, "revision": revision + 1}
        conn.execute(
            f"UPDATE uplink_outbox SET state = ? WHERE plan_id = ? AND bucket_start = ? AND "
            f"{_NOT_AT_THE_VENDOR}", (SUPERSEDED, plan_id, bucket))
        conn.execute(
            "INSERT INTO uplink_outbox (agent_id, plan_id, bucket_start, bucket_end, revision, "
            "summary, digest, key, state, created_at, attempts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (agent_id, plan_id, bucket, summary["bucket_end"], revision + 1,
             json.dumps(summary, ensure_ascii=False), content,
             idempotency_key(agent_id, plan_id, bucket, revision + 1), PENDING, iso_utc(now)))
        known[plan_id][bucket] = (revision + 1, content)
        queued.append(summary)
    return queued


# -- sending ---------------------------------------------------------------------------------


def lease_owner() -> str:
    """This process, as a lease owner: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: str | None) -> bool:
    """A lease held by a process of this host that no longer runs (killed mid-request)."""
    if not owner:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: it runs
        return False
    return False


def claim(conn: sqlite3.Connection, owner: str, now: float, limit: int,
          lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` pending revisions to send (oldest buckets first): the lowest pending
    revision of each bucket, not leased by a live sender. They are leased to `owner` until
    now + lease_seconds and their attempt counted."""
    with write_transaction(conn):
        rows = conn.execute(
            "SELECT id, agent_id, plan_id, bucket_start, revision, key, summary, lease_owner, "
            "lease_until FROM uplink_outbox o WHERE state = ? AND NOT EXISTS ("
            "  SELECT 1 FROM uplink_outbox p WHERE p.plan_id = o.plan_id AND "
            "  p.bucket_start = o.bucket_start AND p.state IN (?, ?) AND "
            "  p.revision < o.revision) "
            "ORDER BY bucket_start, plan_id", (PENDING, PENDING, PARKED))
        picked: list[Claimed] = []
        damaged: list[int] = []
        for row in rows:
            if len(picked) >= limit:
                break
            leased_by, until = row[7], row[8]
            if leased_by and until is not None and until > now and not _owner_gone(leased_by):
                continue
            try:
                summary = json.loads(row[6])
                previous = previous_delivered(conn, row[2], row[3], row[4])
                if not isinstance(summary, dict):
                    raise ValueError(row[6])
            except (TypeError, ValueError):
                damaged.append(row[0])
                continue
            picked.append(Claimed(row[0], row[1], row[2], row[3], row[4], row[5], summary,
                                  previous))
        conn.executemany(
            "UPDATE uplink_outbox SET state = ?, last_error = ? WHERE id = ?",
            [(PARKED, "damaged in the database (not JSON): not sent", i) for i in damaged])
        conn.executemany(
            "UPDATE uplink_outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1, "
            "last_attempt_at = ? WHERE id = ?",
            [(owner, now + lease_seconds, iso_utc(now), c.id) for c in picked])
    return picked


def previous_delivered(conn: sqlite3.Connection, plan_id: str, bucket: str,
                       revision: int) -> Summary | None:
    row = conn.execute(
        "SELECT summary FROM uplink_outbox WHERE plan_id = ? AND bucket_start = ? AND "
        "revision < ? AND state = ? ORDER BY revision DESC LIMIT 1",
        (plan_id, bucket, revision, DELIVERED)).fetchone()
    return None if row is None else json.loads(row[0])


def record_sent(conn: sqlite3.Connection, sent: dict[int, bytes]) -> None:
    """Keep each revision's element exactly as it went out (`botmeter sync show`)."""
    with write_transaction(conn):
        conn.executemany("UPDATE uplink_outbox SET sent = ? WHERE id = ?",
                         [(body.decode(), row_id) for row_id, body in sent.items()])


def finish(conn: sqlite3.Connection, ids: Sequence[int], state: str, status: int | None,
           error: str | None, now: float) -> None:
    """The vendor's answer for these revisions: `delivered`, `parked`, or `pending` (retry);
    their lease ends."""
    delivered_at = iso_utc(now) if state == DELIVERED else None
    with write_transaction(conn):
        conn.executemany(
            "UPDATE uplink_outbox SET state = CASE WHEN state = ? THEN ? ELSE state END, "
            "last_status = ?, last_error = ?, lease_owner = NULL, lease_until = NULL, "
            "delivered_at = coalesce(?, delivered_at) WHERE id = ?",
            [(PENDING, state, status, error, delivered_at, row_id) for row_id in ids])


def requeue_parked(conn: sqlite3.Connection) -> tuple[int, int]:
    """Parked revisions back to pending; one whose bucket has a newer revision and that the
    vendor cannot hold is superseded instead. Returns (requeued, superseded)."""
    with write_transaction(conn):
        superseded = conn.execute(
            f"UPDATE uplink_outbox SET state = ? WHERE state = ? AND {_NOT_AT_THE_VENDOR} AND "
            "EXISTS (SELECT 1 FROM uplink_outbox n WHERE n.plan_id = uplink_outbox.plan_id AND "
            "n.bucket_start = uplink_outbox.bucket_start AND n.revision > uplink_outbox.revision)",
            (SUPERSEDED, PARKED)).rowcount
        requeued = conn.execute(
            "UPDATE uplink_outbox SET state = ?, last_error = NULL WHERE state = ?",
            (PENDING, PARKED)).rowcount
    return requeued, superseded


# -- reading ---------------------------------------------------------------------------------


def find(conn: sqlite3.Connection, plan_id: str, bucket_start: str,
         revision: int | None = None) -> dict[str, Any] | None:
    """One revision's row (the newest when `revision` is None)."""
    sql = "SELECT * FROM uplink_outbox WHERE plan_id = ? AND bucket_start = ?"
    params: list[Any] = [plan_id, bucket_start]
    if revision is not None:
        sql += " AND revision = ?"
        params.append(revision)
    cursor = conn.execute(sql + " ORDER BY revision DESC LIMIT 1", params)
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))
