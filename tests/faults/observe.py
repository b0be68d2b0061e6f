"""What a run's files say while it runs: the truth file, the calls stored, and the vendor's
receiver against the calls database."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botmeter.rating import PlanBook
from botmeter.storage.store import CallStore
from botmeter.uplink.buckets import parse_iso

from .money import summaries, without_revision
from .site import AGENT_ID, PLANS, Site


def read_truth(site: Site) -> list[dict[str, Any]]:
    """The truth file's lines so far (one per call that has ended)."""
    if not site.truth.exists():
        return []
    return [json.loads(line) for line in site.truth.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def truth_ids(site: Site) -> set[str]:
    return {line["call_id"] for line in read_truth(site)}


def stored_ids(site: Site) -> set[str]:
    """The call ids in the calls table now (empty while it cannot be read)."""
    try:
        with closing(_read_only(site.db)) as conn:
            return {row[0] for row in conn.execute("SELECT call_id FROM calls")}
    except sqlite3.Error:
        return set()


@dataclass(frozen=True, slots=True)
class UplinkCheck:
    equal: bool
    detail: str


def uplink_check(site: Site) -> UplinkCheck:
    """Whether the receiver holds, for every plan and every hour that has ended on the site's
    clock, the summary the calls database makes of it (revision numbers aside), and no other."""
    store = CallStore(site.db)
    try:
        calls = store.calls()
    finally:
        store.close()
    book = PlanBook.load(site.root / "plans")
    now = time.time() - site.clock_behind
    want = {(plan, bucket): summary for plan in PLANS
            for bucket, summary in summaries(book.series(plan), calls).items()
            if parse_iso(summary["bucket_end"]) <= now}
    if not want:
        return UplinkCheck(False, "no hour with calls ended during the run: nothing to send")
    try:
        with closing(_read_only(site.receiver_db)) as conn:
            rows = conn.execute("SELECT plan_id, bucket_start, body FROM current "
                                "WHERE agent_id = ?", (AGENT_ID,)).fetchall()
    except sqlite3.Error as exc:
        return UplinkCheck(False, f"receiver database unreadable: {exc}")
    got = {(plan, bucket): without_revision(json.loads(body)) for plan, bucket, body in rows}
    got = {key: body for key, body in got.items() if body["call_count"] or key in want}
    if got == want:
        hours = sum(1 for plan, _ in want if plan == PLANS[0])
        counted = sum(s["call_count"] for (plan, _), s in want.items() if plan == PLANS[0])
        return UplinkCheck(True, f"{len(want)} summaries of {hours} ended hour(s), {counted} "
                                 "calls: the receiver's are the database's")
    differ = sorted(key for key in want.keys() | got.keys() if want.get(key) != got.get(key))
    counts = [(want.get(k, {}).get("call_count"), got.get(k, {}).get("call_count"))
              for k in differ]
    return UplinkCheck(False, f"{len(differ)} of {len(want)} summaries differ: {differ[:3]}; "
                              f"(database, receiver) calls: {counts[:3]}")


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=2)
