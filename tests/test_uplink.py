"""The uplink end to end over real HTTP on loopback: an agent's database and outbox (real
SQLite files), the reference receiver as the vendor, one simulated clock for both."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from botmeter.rating import rate_calls
from botmeter.storage.schema import SCHEMA_VERSION
from botmeter.uplink import outbox
from botmeter.uplink.agent import Uplink
from botmeter.uplink.buckets import iso_z
from botmeter.uplink.receiver import Receiver
from botmeter.uplink.signing import idempotency_key
from botmeter.uplink.status import sync_status

from .rating_support import make_call
from .uplink_support import (
    AGENT,
    HOUR,
    KEY,
    T0,
    TOKEN,
    Clock,
    Site,
    hourly_calls,
    open_site,
)


@pytest.fixture
def site(tmp_path: Path, receiver: Receiver, clock: Clock) -> Iterator[Site]:
    s = open_site(tmp_path / "agent", receiver, clock, plans=("per-minute", "bundle-5000"))
    yield s
    s.close()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _agent_dir(tmp_path: Path) -> None:
    _mkdir(tmp_path / "agent")


def after_close(hours: float) -> float:
    """The moment the bucket ending `hours` after T0 has closed (close delay 300 s)."""
    return T0 + hours * HOUR + 301


def rows(site: Site) -> list[dict]:
    cursor = site.store.db.conn.execute(
        "SELECT plan_id, bucket_start, revision, state, attempts FROM uplink_outbox "
        "ORDER BY plan_id, bucket_start, revision")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


# -- summaries: what they hold -------------------------------------------------------------------


def test_closed_buckets_are_summarised_per_plan_and_match_the_stored_calls(site: Site) -> None:
    calls = hourly_calls(3, 4)
    calls.append(make_call("x-abandoned", bot=None, outcome="abandoned",
                           end_ms=round((T0 + 2 * HOUR + 3500) * 1000)))
    site.save(calls)
    site.clock.now = after_close(2)  # hours 0 and 1 have closed, hour 2 has not
    report = site.uplink.tick()
    assert report.delivered == 4 and report.requests == 1
    current = site.receiver.current()
    assert sorted((k[1], k[2]) for k in current) == [
        (plan, iso_z(T0 + h * HOUR)) for plan in ("bundle-5000", "per-minute") for h in (0, 1)]

    site.clock.now = after_close(3)
    site.uplink.tick()
    current = site.receiver.current()
    assert len(current) == 6
    by_plan = {p: site.settings.plans[i] for i, p in enumerate(("per-minute", "bundle-5000"))}
    stored = site.store.calls()
    for (agent, plan, bucket), summary in current.items():
        assert agent == AGENT and summary["revision"] == 1
        start = T0 + HOUR * round((summary_start(bucket) - T0) / HOUR)
        mine = [c for c in stored if start <= c.ended_at < start + HOUR]
        # checked against the stored calls by an independent path: SQL over the calls table
        ids = [r[0] for r in site.store.db.conn.execute(
            "SELECT call_id FROM calls WHERE ended_at >= ? AND ended_at < ? ORDER BY call_id",
            (iso_ms(start), iso_ms(start + HOUR)))]
        assert summary["calls_sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
        assert summary["call_count"] == len(ids) == len(mine)
        charges = rate_calls(stored, by_plan[plan])
        assert Decimal(summary["amount"]) == sum(charges[c.call_id].amount for c in mine)
        assert summary["calls"] == {
            "offered": len(mine), "bot_answered": sum(c.bot_answered_at is not None for c in mine),
            **{o: sum(c.outcome == o for c in mine)
               for o in ("handled", "transferred", "abandoned", "failed")}}
        assert Decimal(str(summary["seconds"]["bot"])) == sum(
            Decimal(str(c.bot_seconds or 0)) for c in mine)
        assert summary["modules"]["asr"] == {
            "quantity": float(sum(c.modules["asr"].quantity for c in mine if c.modules)),
            "unit": "units"}
        assert summary["currency"] == "CNY"
    per_minute = current[AGENT, "per-minute", iso_z(T0)]
    # per-minute bills 61..64 s of bot time as 66, 66, 66, 66 s (60 + 6 s blocks): 0.12/min
    assert per_minute["seconds"]["billable"] == 264 and per_minute["amount"] == "0.5280"


def summary_start(bucket: str) -> float:
    from botmeter.uplink.buckets import parse_iso

    return parse_iso(bucket)


def iso_ms(epoch: float) -> str:
    from botmeter.tracking.record import iso_utc

    return iso_utc(epoch)


def test_the_amounts_equal_what_the_agent_stored_as_it_rated(tmp_path: Path, receiver: Receiver,
                                                             clock: Clock) -> None:
    """The agent's own writer rated the calls (one write each); the summaries' amounts are the
    sums of those stored costs, per hour, computed here in SQL."""
    from botmeter.rating import Rater

    site = open_site(tmp_path / "agent", receiver, clock)
    try:
        calls = sorted(hourly_calls(5, 7), key=lambda c: (c.ended_at, c.call_id))
        rater = Rater(site.settings.plans[0])
        from botmeter.rating.periods import period_of

        rater.rerate(period_of(calls[0].ended_at, site.settings.plans[0].timezone), [])
        site.store.save(calls, {c.call_id: rater.rate(c) for c in calls})
        clock.now = after_close(5)
        site.uplink.tick()
        sums = dict(site.store.db.conn.execute(
            "SELECT strftime('%Y-%m-%dT%H:00:00Z', ended_at), "
            "printf('%.4f', sum(CAST(cost AS REAL))) FROM calls GROUP BY 1"))
        got = {k[2]: v["amount"] for k, v in receiver.current().items()}
        assert got == sums and len(got) == 5
    finally:
        site.close()


def test_an_open_bucket_is_not_sent_and_an_empty_one_never(site: Site) -> None:
    site.save(hourly_calls(1, 3, start=T0 + 2 * HOUR))
    site.clock.now = T0 + 3 * HOUR + 299  # hour 2 ended 299 s ago: not closed yet
    assert site.uplink.tick().requests == 0
    site.clock.advance(2)
    assert site.uplink.tick().delivered == 2  # hour 2 for each plan; hours 0, 1 had no calls
    assert {k[2] for k in site.receiver.current()} == {iso_z(T0 + 2 * HOUR)}


def test_a_late_call_queues_revision_2_which_the_receiver_keeps(site: Site) -> None:
    site.save(hourly_calls(2, 3))
    site.clock.now = after_close(2)
    site.uplink.tick()
    first = site.receiver.current()[AGENT, "per-minute", iso_z(T0)]
    late = make_call("late-1", bot=100.0, end_ms=round((T0 + 1800) * 1000))
    site.save([late])
    site.clock.advance(60)
    report = site.uplink.tick()
    now = site.receiver.current()[AGENT, "per-minute", iso_z(T0)]
    assert now["revision"] == 2 and now["call_count"] == first["call_count"] + 1
    assert Decimal(now["amount"]) - Decimal(first["amount"]) == Decimal("0.2040")  # 100 s -> 102 s
    # per-minute has no allowance: hour 1 is unchanged and not sent again; the bundle's
    # allowance covers the call, its amounts stay 0 but its counts change: revision 2 too
    assert site.receiver.current()[AGENT, "per-minute", iso_z(T0 + HOUR)]["revision"] == 1
    assert report.delivered == 2
    assert Counter(site.receiver.effects().values()) == Counter({1: 6})


def test_a_late_call_that_moves_an_allowance_revises_every_later_bucket(
        tmp_path: Path, receiver: Receiver, clock: Clock) -> None:
    """With an allowance, an early late call changes the amounts of the calls after it."""
    plans = _mkdir(tmp_path / "agent" / "plans")
    (plans / "tight.toml").write_text("""
[plan]
id = "tight"
currency = "CNY"
timezone = "Asia/Shanghai"

[[charge]]
name = "Bot minutes"
metric = "bot_seconds"
unit = 60
included = 2
price = "1.00"
""", encoding="utf-8")
    site = open_site(tmp_path / "agent", receiver, clock, plans=("tight",))
    try:
        site.save(hourly_calls(3, 1, bot=60.0))  # one minute an hour: hours 0, 1 free, 2 paid
        clock.now = after_close(3)
        site.uplink.tick()
        assert [receiver.current()[AGENT, "tight", iso_z(T0 + h * HOUR)]["amount"]
                for h in range(3)] == ["0.0000", "0.0000", "1.0000"]
        site.save([make_call("late-0", bot=60.0, end_ms=round((T0 + 30) * 1000))])
        site.uplink.tick()
        assert [(s["revision"], s["amount"]) for s in
                (receiver.current()[AGENT, "tight", iso_z(T0 + h * HOUR)] for h in range(3))] == [
            (2, "0.0000"), (2, "1.0000"), (1, "1.0000")]
    finally:
        site.close()


# -- delivery: the vendor misbehaves -------------------------------------------------------------


def test_a_5xx_backs_off_then_delivers_once(site: Site) -> None:
    site.save(hourly_calls(1, 2))
    site.clock.now = after_close(1)
    site.receiver.misbehave("status", code=503)
    with capture_logs() as logs:
        failed = site.uplink.tick()
    assert failed.failed is not None and failed.failed.status == 503 and failed.delivered == 0
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "uplink delivery failed; retrying later"]
    until = site.uplink.sender.waiting_until()
    assert until is not None and 1.0 <= until - site.clock.now <= 2.0  # the first delay
    assert site.uplink.tick().requests == 0  # backing off: nothing sent
    site.clock.now = until + 0.01
    assert site.uplink.tick().delivered == 2
    assert site.receiver.statuses == [503, 200]
    assert sorted(site.receiver.effects().values()) == [1, 1]


def test_429_with_retry_after_is_honoured(site: Site) -> None:
    site.save(hourly_calls(1, 2))
    site.clock.now = after_close(1)
    site.receiver.misbehave("status", code=429, retry_after="120")
    site.uplink.tick()
    site.clock.advance(119)
    assert site.uplink.tick().requests == 0
    site.clock.advance(2)
    assert site.uplink.tick().delivered == 2
    assert site.receiver.statuses == [429, 200]


@pytest.mark.parametrize("kind", ["reset", "reset_after_commit"])
def test_a_connection_reset_mid_request_is_retried_without_a_double_effect(site: Site,
                                                                           kind: str) -> None:
    site.save(hourly_calls(2, 2))
    site.clock.now = after_close(2)
    site.receiver.misbehave(kind)
    report = site.uplink.tick()
    assert report.failed is not None and report.failed.status is None
    site.clock.advance(3)
    assert site.uplink.tick().delivered == 4
    effects = site.receiver.effects()
    assert len(effects) == 4 and set(effects.values()) == {1}
    assert site.receiver.statuses == [0, 200]


def test_a_timeout_then_a_slow_answer_still_delivers_once(site: Site) -> None:
    site.save(hourly_calls(1, 2))
    site.clock.now = after_close(1)
    site.receiver.misbehave("slow", seconds=3)  # beyond the agent's 2 s timeout
    report = site.uplink.tick()
    assert report.failed is not None and "timed out" in (report.failed.reason or "")
    site.receiver.misbehave("slow", seconds=1)  # slow, within the timeout
    site.clock.advance(3)
    assert site.uplink.tick().delivered == 2
    assert set(site.receiver.effects().values()) == {1} and len(site.receiver.effects()) == 2


def test_401_parks_and_a_parked_summary_waits_for_retry(site: Site) -> None:
    site.save(hourly_calls(1, 1))
    site.clock.now = after_close(1)
    site.receiver.token = "the-vendor-rotated-it"
    report = site.uplink.tick()
    assert report.parked == 2 and report.failed is None
    status = sync_status(site.store.db.conn, site.clock.now)
    assert [(p["plan_id"], p["status"]) for p in status["parked"]] == [
        ("bundle-5000", 401), ("per-minute", 401)]
    assert "HTTP 401" in status["parked"][0]["reason"]
    site.clock.advance(7200)
    assert site.uplink.tick().requests == 0  # parked: not retried by itself
    site.receiver.token = TOKEN
    assert outbox.requeue_parked(site.store.db.conn) == (2, 0)
    assert site.uplink.tick().delivered == 2


def test_a_batch_the_vendor_refuses_is_split_down_to_the_summary_it_refuses(site: Site) -> None:
    site.save(hourly_calls(4, 1))
    site.clock.now = after_close(4)
    site.uplink.refresh()
    conn = site.store.db.conn  # one summary the vendor cannot accept (its amount is no number)
    conn.execute("UPDATE uplink_outbox SET summary = json_set(summary, '$.amount', 'n/a') "
                 "WHERE plan_id = 'per-minute' AND bucket_start = ?", (iso_z(T0 + 2 * HOUR),))
    report = site.uplink.deliver()
    assert (report.delivered, report.parked) == (7, 1)
    assert site.receiver.statuses == [422, 200, 422, 422, 200, 422, 200]  # 8 = 4 + (2 + (1 + 1))
    [parked] = sync_status(conn, site.clock.now)["parked"]
    assert (parked["plan_id"], parked["bucket_start"], parked["status"]) == (
        "per-minute", iso_z(T0 + 2 * HOUR), 422)
    assert "amount" in parked["reason"]


def test_the_vendor_down_three_days_then_back_gets_every_bucket_once(
        tmp_path: Path, receiver: Receiver, clock: Clock) -> None:
    site = open_site(tmp_path / "agent", receiver, clock, plans=("per-minute", "bundle-5000"))
    receiver.down = True
    tick = 600.0
    try:
        for step in range(int(72 * HOUR / tick)):
            clock.now = T0 + step * tick
            if step % 6 == 0 and step > 0:  # an hour of calls, stored as the hour ends
                hour = step // 6 - 1
                site.save(hourly_calls(1, 3, start=T0 + hour * HOUR, prefix=f"h{hour}-"))
            if step % 144 == 77:  # the agent restarts now and then: the outbox is on disk
                site.close()
                site = open_site(tmp_path / "agent", receiver, clock,
                                 plans=("per-minute", "bundle-5000"))
            site.uplink.tick()
        down_requests = receiver.requests
        # backing off, capped at an hour: about one try an hour, not one per tick (432)
        assert 72 <= down_requests <= 160, down_requests  # 30 to 60 min apart, once capped
        assert receiver.effects() == {}
        receiver.down = False
        back = clock.now
        while sync_status(site.store.db.conn, clock.now)["pending"]:
            clock.advance(tick)
            site.uplink.tick()
            assert clock.now - back <= 3600 + tick  # within the capped backoff
        current = receiver.current()
        assert len(current) == 2 * 71  # hours 0..70 have closed; each plan
        assert all(s["revision"] == 1 for s in current.values())
        assert set(receiver.effects().values()) == {1}
        assert sum(s["call_count"] for k, s in current.items() if k[1] == "per-minute") == 71 * 3
    finally:
        site.close()


def test_concurrent_senders_send_each_revision_once(tmp_path: Path, receiver: Receiver,
                                                   clock: Clock) -> None:
    """Two senders on one database (as `sync now` beside `run`): leases keep them apart."""
    import threading

    first = open_site(tmp_path / "agent", receiver, clock, plans=("per-minute",),
                      extra="batch_size = 2")
    first.save(hourly_calls(10, 1))
    clock.now = after_close(10)
    first.uplink.refresh()
    second = Uplink(first.settings, type(first.store)(first.config.store_path()), clock=clock)
    receiver.misbehave("slow", times=10, seconds=0.2)
    reports = []
    threads = [threading.Thread(target=lambda u=u: reports.append(u.deliver(force=True)))
               for u in (first.uplink, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.delivered for r in reports) == 10
    assert receiver.requests == 5  # 10 revisions, 2 a batch, each batch sent by one of them
    assert set(receiver.effects().values()) == {1} and len(receiver.effects()) == 10
    second.close()
    second.store.close()
    first.close()


# -- CloudEvents ---------------------------------------------------------------------------------


def test_cloudevents_deltas_add_up_to_the_json_receivers_totals(tmp_path: Path,
                                                                clock: Clock) -> None:
    with Receiver(tmp_path / "json.db", TOKEN, KEY.encode(), clock=clock) as plain, \
            Receiver(tmp_path / "ce.db", TOKEN, KEY.encode(), clock=clock) as meter:
        sites = [open_site(_mkdir(tmp_path / "a"), plain, clock, plans=("per-minute", "bundle-5000")),
                 open_site(_mkdir(tmp_path / "b"), meter, clock, plans=("per-minute", "bundle-5000"),
                           fmt="cloudevents")]
        try:
            for site in sites:
                site.save(hourly_calls(3, 4))
            clock.now = after_close(3)
            for site in sites:
                site.uplink.tick()
            late = [make_call("late-a", bot=75.0, end_ms=round((T0 + 900) * 1000)),
                    make_call("late-b", bot=None, outcome="abandoned",
                              end_ms=round((T0 + HOUR + 900) * 1000))]
            meter.misbehave("reset_after_commit")  # a revision delivered twice in effect-free way
            for site in sites:
                site.save(late)
                site.uplink.tick()
            clock.advance(5)
            for site in sites:
                site.uplink.tick()
            assert any(s["revision"] == 2 for s in plain.current().values())
            for plan in ("per-minute", "bundle-5000"):
                kept = [s for k, s in plain.current().items() if k[1] == plan]
                summed = meter.totals()[AGENT, plan]
                assert summed["amount"] == sum(Decimal(s["amount"]) for s in kept)
                assert summed["call_count"] == sum(s["call_count"] for s in kept)
                for name in ("offered", "handled", "abandoned", "bot_answered"):
                    assert summed["calls"][name] == sum(s["calls"][name] for s in kept)
                assert Decimal(str(summed["seconds"]["bot"])) == sum(
                    Decimal(str(s["seconds"]["bot"])) for s in kept)
        finally:
            for site in sites:
                site.close()


# -- the outbox itself ---------------------------------------------------------------------------


def test_a_revision_never_sent_is_superseded_not_sent(site: Site) -> None:
    site.save(hourly_calls(1, 2))
    site.clock.now = after_close(1)
    site.uplink.refresh()
    site.save([make_call("late-x", bot=30.0, end_ms=round((T0 + 100) * 1000))])
    site.uplink.refresh()
    assert [(r["revision"], r["state"]) for r in rows(site) if r["plan_id"] == "per-minute"] == [
        (1, "superseded"), (2, "pending")]
    site.uplink.deliver()
    assert site.receiver.current()[AGENT, "per-minute", iso_z(T0)]["revision"] == 2
    assert len(site.receiver.effects()) == 2  # revision 2 of each plan only


def test_a_revision_sent_once_is_delivered_before_the_next(site: Site) -> None:
    site.save(hourly_calls(1, 2))
    site.clock.now = after_close(1)
    site.receiver.down = True
    site.uplink.tick()  # revision 1 went out once (503): it must arrive before revision 2
    site.save([make_call("late-y", bot=30.0, end_ms=round((T0 + 100) * 1000))])
    site.uplink.refresh()
    site.receiver.down = False
    site.clock.advance(10)
    site.uplink.deliver()
    site.uplink.deliver()
    deliveries = [d for d in site.receiver.deliveries() if d["plan_id"] == "per-minute"]
    assert [d["revision"] for d in deliveries] == [1, 2]


def test_the_idempotency_key_is_the_specs(site: Site) -> None:
    site.save(hourly_calls(1, 1))
    site.clock.now = after_close(1)
    site.uplink.tick()
    [delivery] = [d for d in site.receiver.deliveries() if d["plan_id"] == "per-minute"]
    text = f"{AGENT}|per-minute|{iso_z(T0)}|1"
    assert delivery["key"] == hashlib.sha256(text.encode()).hexdigest() == idempotency_key(
        AGENT, "per-minute", iso_z(T0), 1)


def test_an_older_database_gains_the_outbox(tmp_path: Path) -> None:
    from botmeter.storage.store import CallStore

    path = tmp_path / "v4.db"
    CallStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("DROP TABLE uplink_outbox; DROP TABLE uplink_state; PRAGMA user_version = 4;")
    conn.close()
    store = CallStore(path)
    assert store.schema_version == SCHEMA_VERSION == 11
    assert {"uplink_outbox", "uplink_state"} <= set(store.db.table_names())
    store.close()


def test_no_secret_in_logs_status_or_errors(site: Site, tmp_path: Path) -> None:
    site.save(hourly_calls(1, 1))
    site.clock.now = after_close(1)
    site.receiver.misbehave("status", code=400, body=f"bad request from {TOKEN} signed {KEY}")
    site.receiver.misbehave("status", code=503, body=f"echo: Bearer {TOKEN}")
    with capture_logs() as logs:
        site.uplink.tick()
        site.clock.advance(10)
        site.uplink.tick()
    status = sync_status(site.store.db.conn, site.clock.now)
    text = json.dumps(logs) + json.dumps(status) + repr(site.settings)
    text += json.dumps([list(r) for r in site.store.db.conn.execute("SELECT * FROM uplink_outbox")])
    assert "[redacted]" in text  # the vendor's echo was kept, without the secrets
    assert TOKEN not in text and KEY not in text


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    from .tls_support import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_site(tmp_path: Path, clock: Clock, pki, *, client_ca: bool, extra: str) -> tuple:
    from botmeter.uplink.receiver import server_tls

    receiver = Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode(), clock=clock,
                        tls=server_tls(pki.server_cert, pki.server_key,
                                       pki.ca if client_ca else None)).start()
    site = open_site(tmp_path / "agent", receiver, clock, extra=extra)
    site.save(hourly_calls(1, 2))
    clock.now = after_close(1)
    return receiver, site


@pytest.mark.parametrize(("ca", "delivered"), [("ca", True), ("other_ca", False), (None, False)])
def test_tls_is_verified_against_the_configured_ca(tmp_path: Path, clock: Clock, pki, ca,
                                                   delivered: bool) -> None:
    extra = f'ca_file = "{getattr(pki, ca)}"' if ca else ""
    receiver, site = _tls_site(tmp_path, clock, pki, client_ca=False, extra=extra)
    try:
        assert site.settings.url.startswith("https://127.0.0.1:")
        report = site.uplink.tick()
        if delivered:
            assert report.delivered == 1 and len(receiver.effects()) == 1
        else:  # an unknown CA: nothing sent, kept for later, the reason says why
            assert report.delivered == 0 and receiver.requests == 0
            assert "CERTIFICATE_VERIFY_FAILED" in (report.failed.reason or "")
            assert sync_status(site.store.db.conn, clock.now)["pending"] == 1
    finally:
        site.close()
        receiver.stop()


@pytest.mark.parametrize("with_cert", [True, False])
def test_a_client_certificate_when_the_vendor_wants_one(tmp_path: Path, clock: Clock, pki,
                                                        with_cert: bool) -> None:
    extra = f'ca_file = "{pki.ca}"\n'
    if with_cert:
        extra += f'client_cert = "{pki.client_cert}"\nclient_key = "{pki.client_key}"\n'
    receiver, site = _tls_site(tmp_path, clock, pki, client_ca=True, extra=extra)
    try:
        report = site.uplink.tick()
        assert (report.delivered == 1) is with_cert
        assert (len(receiver.effects()) == 1) is with_cert
    finally:
        site.close()
        receiver.stop()


# -- day buckets ---------------------------------------------------------------------------------


def test_day_buckets_follow_the_plans_time_zone(tmp_path: Path, receiver: Receiver,
                                                clock: Clock) -> None:
    site = open_site(tmp_path / "agent", receiver, clock, extra='bucket = "day"')
    try:
        # Asia/Shanghai midnight is 16:00 UTC: 15:59:59Z and 16:00:00Z are on different days
        before = make_call("before-midnight", bot=30.0, end_ms=round((T0 + 16 * HOUR - 1) * 1000))
        after = make_call("after-midnight", bot=30.0, end_ms=round((T0 + 16 * HOUR) * 1000))
        site.save([before, after])
        clock.now = T0 + 40 * HOUR + 301  # the local day 11-11 ended at 11-11T16:00Z
        site.uplink.tick()
        got = {k[2]: (s["bucket_end"], s["call_count"]) for k, s in receiver.current().items()}
        assert got == {"2026-11-09T16:00:00Z": ("2026-11-10T16:00:00Z", 1),
                       "2026-11-10T16:00:00Z": ("2026-11-11T16:00:00Z", 1)}
    finally:
        site.close()


def test_a_day_bucket_across_a_clock_change_is_25_hours() -> None:
    from zoneinfo import ZoneInfo

    from botmeter.uplink.buckets import bucket_end, bucket_start, buckets, iso_z

    new_york = ZoneInfo("America/New_York")
    fall = 1_793_505_600.0  # 2026-11-01T04:00:00Z: midnight in New York (EDT)
    assert bucket_start(fall + 20 * HOUR, "day", new_york) == fall
    assert bucket_end(fall, "day", new_york) - fall == 25 * HOUR  # back to EST that night
    assert [iso_z(a) for a, _ in buckets(fall, fall + 26 * HOUR, "day", new_york)] == [
        "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"]
    assert bucket_start(fall + 1800, "hour", new_york) == fall  # hours are UTC
