"""Sending the outbox to the vendor (the imperative shell around `outbox`): batches signed
and posted with httpx, the vendor's answer recorded per revision.

| answer | what happens |
| --- | --- |
| any 2xx, 409 | delivered |
| 408, 425, 429, 5xx, timeout, connection error | retried later: the whole uplink backs off (exponential with jitter, capped at `max_backoff`; `Retry-After` honoured) |
| 400, 413, 422 for a batch of several | split in halves, each sent again at once, down to the summary the vendor refuses |
| other 4xx (and 3xx) | parked: kept, shown by `sync status`, sent again on `sync retry --parked` |
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from ..backoff import backoff_delay
from ..tracking.record import iso_utc
from . import outbox
from .http import Poster, PostFailed
from .outbox import DELIVERED, PARKED, PENDING, Claimed
from .settings import UplinkSettings
from .signing import batch_key, signature
from .summary import canonical, delta

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429})
SPLIT_STATUSES = frozenset({400, 413, 422})
#: the first delay after a failure; it doubles up to max_backoff
MIN_BACKOFF = 2.0
#: a Retry-After longer than this is taken as this
MAX_RETRY_AFTER = 86400.0
#: a lease outlives the request's timeout by this much
LEASE_MARGIN = 30.0
#: how much of the vendor's refusal is kept as the reason
REASON_CHARS = 300

JSON_TYPE = "application/json"
CLOUDEVENTS_TYPE = "application/cloudevents-batch+json"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the vendor's answer means: `delivered`, `pending` (retry) or `parked`."""

    state: str
    status: int | None
    reason: str | None = None
    retry_after: float | None = None


@dataclass
class Report:
    """What one delivery run did."""

    delivered: int = 0
    parked: int = 0
    requests: int = 0
    failed: Answer | None = None  # the answer that stopped it (the vendor unavailable)
    waiting_until: float | None = None  # backing off until then: nothing was sent
    summaries: list[int] = field(default_factory=list)


def classify(status: int, headers: httpx.Headers, body: str, now: float) -> Answer:
    """The vendor's HTTP answer as an outcome (the reason is redacted by the caller)."""
    if 200 <= status < 300 or status == 409:
        return Answer(DELIVERED, status)
    reason = f"HTTP {status}" + (f": {body}" if body.strip() else "")
    if status in RETRY_STATUSES or status >= 500 or status < 200:
        return Answer(PENDING, status, reason, retry_after(headers.get("retry-after"), now))
    if 300 <= status < 400:
        reason += f" (redirect to {headers.get('location', '?')}: check [uplink] url)"
    return Answer(PARKED, status, reason)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent or
    not understood."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value[:12]), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when - now), MAX_RETRY_AFTER)


def clean(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """Text from outside (the vendor's answer, an error) as it may be stored, logged and shown:
    every secret replaced (also as JSON would escape it), control characters and escape codes
    replaced, one line, at most REASON_CHARS, cut only after the secrets are gone."""
    if text is None:
        return None
    for secret in secrets:
        for form in {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}:
            if form:
                text = text.replace(form, "[redacted]")
    text = "".join(c if c.isprintable() else " " for c in text)
    line = " ".join(text.split())
    return line if len(line) <= REASON_CHARS else line[:REASON_CHARS] + "..."


class Sender:
    """Delivers due revisions from one database connection.

    `client` is an httpx.Client (tests may pass one bound to a local receiver); `clock` gives
    the wall time (backoff and leases), `rand` the jitter.
    """

    def __init__(self, settings: UplinkSettings, conn: Any, poster: Poster, *,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.conn = conn
        self.poster = poster
        self.clock = clock
        self.rand = rand
        self.owner = outbox.lease_owner()

    # -- the backoff gate, shared by every sender of this database ---------------------------

    def waiting_until(self) -> float | None:
        """While backing off after a failure: until when (None: send now). A backoff set at a
        time still to come was set by a clock that has since moved back: it is over."""
        until = outbox.get_state(self.conn, "retry_at")
        since = outbox.get_state(self.conn, "retry_set_at")
        now = self.clock()
        if not isinstance(until, int | float) or until <= now:
            return None
        if not isinstance(since, int | float) or since > now:
            return None
        return float(until)

    def deliver(self, *, force: bool = False, max_requests: int | None = None) -> Report:
        """Send what is due, batch after batch, until nothing is left or the vendor is
        unavailable. `force` ignores the backoff (an operator's `sync now`)."""
        report = Report()
        if not force and (until := self.waiting_until()) is not None:
            report.waiting_until = until
            return report
        lease = self.settings.timeout + LEASE_MARGIN
        while max_requests is None or report.requests < max_requests:
            claimed = outbox.claim(self.conn, self.owner, self.clock(),
                                   self.settings.batch_size, lease)
            if not claimed:
                break
            if not self._send(claimed, report):
                break
        return report

    def _send(self, claimed: Sequence[Claimed], report: Report) -> bool:
        """Post the batch (per agent id); False when the vendor is unavailable."""
        groups: dict[str, list[Claimed]] = {}
        for row in claimed:
            groups.setdefault(row.agent_id, []).append(row)
        pending = [list(rows) for rows in groups.values()]
        while pending:
            rows = pending.pop(0)
            answer = self._post(rows, report)
            if answer.state == PARKED and answer.status in SPLIT_STATUSES and len(rows) > 1:
                half = len(rows) // 2  # still leased to us: sent again at once, in halves
                pending[:0] = [rows[:half], rows[half:]]
                continue
            self._record(rows, answer, report)
            if answer.state == PENDING:
                rest = [r.id for group in pending for r in group]
                outbox.finish(self.conn, rest, PENDING, None, None, self.clock())
                return False
        return True

    def _post(self, rows: Sequence[Claimed], report: Report) -> Answer:
        body, elements = self.request_body(rows)
        outbox.record_sent(self.conn, elements)
        headers = request_headers(self.settings, body, [r.key for r in rows], self.clock())
        report.requests += 1
        try:
            answered = self.poster.post(self.settings.endpoint, body, headers)
        except PostFailed as exc:
            return Answer(PENDING, None, str(exc))
        return classify(answered.status, answered.headers, answered.text, self.clock())

    def request_body(self, rows: Sequence[Claimed]) -> tuple[bytes, dict[int, bytes]]:
        """The request body for these revisions, and each one's element as sent."""
        if self.settings.format == "cloudevents":
            events = [cloudevent(row) for row in rows]
            return canonical(events), {r.id: canonical(e) for r, e in zip(rows, events, strict=True)}
        body = {"agent_id": rows[0].agent_id, "summaries": [r.summary for r in rows]}
        return canonical(body), {r.id: canonical(r.summary) for r in rows}

    def _record(self, rows: Sequence[Claimed], answer: Answer, report: Report) -> None:
        now = self.clock()
        ids = [r.id for r in rows]
        reason = self._redact(answer.reason)
        outbox.finish(self.conn, ids, answer.state, answer.status, reason, now)
        if answer.state == DELIVERED:
            report.delivered += len(rows)
            report.summaries.extend(ids)
            with outbox.write_transaction(self.conn):
                outbox.set_state(self.conn, "failures", 0)
                outbox.set_state(self.conn, "retry_at", None)
                outbox.set_state(self.conn, "last_success", {
                    "at": iso_utc(now), "status": answer.status, "summaries": len(rows)})
            log.info("uplink summaries delivered", summaries=len(rows), status=answer.status)
        elif answer.state == PARKED:
            report.parked += len(rows)
            self._note_error(now, answer.status, reason)
            log.warning("uplink summaries parked: the vendor refused them", summaries=len(rows),
                        status=answer.status, reason=reason,
                        hint="fix the cause, then: botmeter sync retry --parked")
        else:
            report.failed = replace(answer, reason=reason)
            with outbox.write_transaction(self.conn):
                failures = _count(outbox.get_state(self.conn, "failures", 0)) + 1
                delay = backoff_delay(failures - 1, MIN_BACKOFF,
                                      max(MIN_BACKOFF, self.settings.max_backoff), self.rand)
                if answer.retry_after is not None:
                    delay = max(delay, answer.retry_after)
                outbox.set_state(self.conn, "failures", failures)
                outbox.set_state(self.conn, "retry_at", now + delay)
                outbox.set_state(self.conn, "retry_set_at", now)
            self._note_error(now, answer.status, reason)
            log.warning("uplink delivery failed; retrying later", status=answer.status,
                        error=reason, retry_in=round(delay, 1), failures=failures)

    def _note_error(self, now: float, status: int | None, reason: str | None) -> None:
        with outbox.write_transaction(self.conn):
            outbox.set_state(self.conn, "last_error", {"at": iso_utc(now), "status": status,
                                                       "error": reason})

    def _redact(self, text: str | None) -> str | None:
        """The text with every secret replaced (a vendor may echo what it was sent)."""
        return clean(text, self.settings.secrets())


def request_headers(settings: UplinkSettings, body: bytes, keys: Sequence[str],
                    now: float) -> dict[str, str]:
    """A request's headers: its type, the bearer token, the batch's idempotency key and the
    HMAC signature of `body` at `now`."""
    stamp = int(now)
    return {
        "Content-Type": CLOUDEVENTS_TYPE if settings.format == "cloudevents" else JSON_TYPE,
        "Authorization": f"Bearer {settings.token}",
        "Idempotency-Key": batch_key(keys),
        "X-Botmeter-Timestamp": str(stamp),
        "X-Botmeter-Signature": signature(settings.key, stamp, body),
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and 0 <= value < 1000 else 0


def cloudevent(row: Claimed) -> dict[str, Any]:
    """A revision as a CloudEvent 1.0: the complete summary plus its `delta` since the
    revision delivered before it."""
    return {
        "specversion": "1.0",
        "id": row.key,
        "source": f"botmeter/{row.agent_id}",
        "type": "botmeter.usage.summary",
        "subject": row.plan_id,
        "time": row.bucket_start,
        "datacontenttype": JSON_TYPE,
        "data": {**row.summary, "delta": delta(row.summary, row.previous)},
    }


