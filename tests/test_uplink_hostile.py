"""The uplink against what a hostile tester threw at it: vendors that answer 204, trickle or
flood their answers, echo secrets or escape codes; calls stored again elsewhere; a plan added
late; a configuration changed under summaries already sent; clocks that jump; a damaged
outbox. Each over real HTTP on loopback, with real SQLite files."""

from __future__ import annotations

import json
import socket
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from botmeter.uplink import outbox
from botmeter.uplink.buckets import iso_z
from botmeter.uplink.receiver import Receiver
from botmeter.uplink.status import sync_status

from .rating_support import make_call
from .test_uplink_cli import agent, botmeter
from .uplink_support import AGENT, HOUR, KEY, T0, TOKEN, Clock, Site, hourly_calls, open_site


def after_close(hours: float) -> float:
    return T0 + hours * HOUR + 301


def site_for(tmp_path: Path, receiver: Receiver, clock: Clock, **kw: object) -> Site:
    (tmp_path / "agent").mkdir(exist_ok=True)
    return open_site(tmp_path / "agent", receiver, clock, **kw)


# -- vendors that answer oddly -------------------------------------------------------------------


def test_any_2xx_is_delivered(tmp_path: Path, receiver: Receiver, clock: Clock) -> None:
    site = site_for(tmp_path, receiver, clock)
    try:
        site.save(hourly_calls(2, 1))
        clock.now = after_close(2)
        receiver.misbehave("status", code=204)  # a metering service's "No Content"
        assert site.uplink.tick().delivered == 2
        assert sync_status(site.store.db.conn, clock.now)["parked"] == []
    finally:
        site.close()


def test_a_revision_the_vendor_may_hold_is_never_skipped(tmp_path: Path, clock: Clock) -> None:
    """Revision 1 reaches the vendor's books, but its answer is lost and the retry is refused;
    a late call's revision 2 waits until revision 1 is delivered, so that a meter adding up the
    deltas still counts each call once."""
    with Receiver(tmp_path / "ce.db", TOKEN, KEY.encode(), clock=clock) as meter:
        site = site_for(tmp_path, meter, clock, fmt="cloudevents")
        try:
            site.save(hourly_calls(1, 3))
            clock.now = after_close(1)
            meter.misbehave("reset_after_commit")
            site.uplink.tick()  # committed at the vendor, answer lost
            meter.misbehave("status", code=403)
            clock.advance(5)
            assert site.uplink.tick().parked == 1  # the retry refused: parked, attempts 2
            site.save([make_call("late-1", bot=40.0, end_ms=round((T0 + 600) * 1000))])
            clock.advance(5)
            requests = meter.requests
            assert site.uplink.tick().requests == 0  # revision 2 waits behind revision 1
            assert meter.requests == requests
            assert outbox.requeue_parked(site.store.db.conn) == (1, 0)
            site.uplink.deliver(force=True)
            highest = json.loads(outbox.find(site.store.db.conn, "per-minute", iso_z(T0))["summary"])
            assert highest["revision"] == 2 and highest["call_count"] == 4
            totals = meter.totals()[AGENT, "per-minute"]
            assert totals["call_count"] == 4 == len(site.store.calls())
            assert totals["amount"] == Decimal(highest["amount"])
        finally:
            site.close()


class TrickleVendor:
    """A raw HTTP peer that reads a request, then answers as told: `trickle` sends its status
    line a byte every 0.3 s; `flood` sends 200 (or 503) and an endless chunked body."""

    def __init__(self, mode: str, status: int = 200) -> None:
        self.mode, self.status = mode, status
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.mode == "trickle":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                    if self.stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    self.sent += 1
                    time.sleep(0.3)
            else:
                conn.sendall(f"HTTP/1.1 {self.status} X\r\nTransfer-Encoding: chunked\r\n\r\n"
                             .encode())
                chunk = b"%x\r\n%s\r\n" % (65536, b"A" * 65536)
                while not self.stop.is_set():
                    conn.sendall(chunk)
                    self.sent += len(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_vendor_trickling_its_answer_is_cut_at_the_timeout(tmp_path: Path, clock: Clock,
                                                             receiver: Receiver) -> None:
    vendor = TrickleVendor("trickle")
    site = site_for(tmp_path, receiver, clock)
    try:
        site.save(hourly_calls(1, 1))
        clock.now = after_close(1)
        object.__setattr__(site.settings, "url", vendor.url)  # the same agent, another vendor
        started = time.monotonic()
        report = site.uplink.tick()
        took = time.monotonic() - started
        assert report.failed is not None and "timed out" in (report.failed.reason or "")
        assert took < 2 + 4  # timeout_seconds = 2 for the whole exchange (the trickle alone: 11 s)
        assert sync_status(site.store.db.conn, clock.now)["pending"] == 1
    finally:
        vendor.close()
        site.close()


@pytest.mark.parametrize(("status", "delivered"), [(200, True), (503, False)])
def test_an_endless_answer_is_read_no_further_than_a_few_kib(tmp_path: Path, clock: Clock,
                                                            receiver: Receiver, status: int,
                                                            delivered: bool) -> None:
    import resource

    vendor = TrickleVendor("flood", status)
    site = site_for(tmp_path, receiver, clock)
    try:
        site.save(hourly_calls(1, 1))
        clock.now = after_close(1)
        object.__setattr__(site.settings, "url", vendor.url)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = site.uplink.tick()
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert (report.delivered == 1) is delivered
        if not delivered:
            assert report.failed is not None and len(report.failed.reason or "") < 400
        assert grown_mb < 50
    finally:
        vendor.close()
        site.close()


def test_what_the_vendor_says_is_stored_without_secrets_or_escape_codes(
        tmp_path: Path, receiver: Receiver, clock: Clock) -> None:
    site = site_for(tmp_path, receiver, clock)
    try:
        site.save(hourly_calls(1, 1))
        clock.now = after_close(1)
        long_echo = "x" * 280 + f" Bearer {TOKEN} and the key {json.dumps(KEY)}"
        receiver.misbehave("status", code=418, body=long_echo + " \x1b[31mred\x07\x00")
        site.uplink.tick()
        [parked] = sync_status(site.store.db.conn, clock.now)["parked"]
        reason = parked["reason"]
        assert TOKEN[:8] not in reason and KEY[:8] not in reason
        assert "\x1b" not in reason and "\x00" not in reason and "\x07" not in reason
        assert len(reason) <= 303
    finally:
        site.close()


# -- calls stored again, plans added, configuration changed --------------------------------------


def test_a_call_stored_again_elsewhere_leaves_its_old_bucket(tmp_path: Path, receiver: Receiver,
                                                             clock: Clock) -> None:
    site = site_for(tmp_path, receiver, clock)
    try:
        calls = hourly_calls(3, 2)
        site.save(calls)
        clock.now = after_close(3)
        site.uplink.tick()
        moved = calls[0]._replace(ended_at=calls[0].ended_at + 2 * HOUR,
                                  bot_ended_at=calls[0].bot_ended_at + 2 * HOUR)
        site.save([moved])  # the same call, its end corrected into hour 2
        site.uplink.tick()
        current = {k[2]: s for k, s in receiver.current().items()}
        assert [current[iso_z(T0 + h * HOUR)]["call_count"] for h in range(3)] == [1, 2, 3]
        assert current[iso_z(T0)]["revision"] == 2
        assert sum(s["call_count"] for s in current.values()) == len(site.store.calls()) == 6
    finally:
        site.close()


def test_a_plan_added_later_is_summarised_from_the_first_call(tmp_path: Path,
                                                              receiver: Receiver,
                                                              clock: Clock) -> None:
    site = site_for(tmp_path, receiver, clock)
    site.save(hourly_calls(3, 2))
    clock.now = after_close(3)
    site.uplink.tick()
    site.close()
    site = site_for(tmp_path, receiver, clock, plans=("per-minute", "bundle-5000"))
    try:
        site.save(hourly_calls(1, 2, start=T0 + 3 * HOUR, prefix="later"))
        clock.now = after_close(4)
        site.uplink.tick()
        bundle = [s for k, s in receiver.current().items() if k[1] == "bundle-5000"]
        assert sum(s["call_count"] for s in bundle) == 8 and len(bundle) == 4
    finally:
        site.close()


@pytest.mark.parametrize(("edit", "key"), [
    (lambda t: t.replace("close_delay_seconds = 300", 'close_delay_seconds = 300\nbucket = "day"'),
     "uplink.bucket"),
    (lambda t: t.replace('id = "pbx-test-01"', 'id = "pbx-renamed"'), "agent.id"),
])
def test_a_change_that_would_count_calls_twice_is_refused(tmp_path: Path, edit, key: str) -> None:
    with Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode()) as receiver:
        config = agent(tmp_path, receiver)
        assert botmeter(config, "sync", "now").returncode == 0
        config.write_text(edit(config.read_text(encoding="utf-8")), encoding="utf-8")
        for args in (("sync", "now"), ("run",)):
            done = botmeter(config, *args, timeout=30)
            assert done.returncode == 2, done.stderr
            [line] = done.stderr.splitlines()
            assert f"configuration error: {config}: {key}: summaries were sent" in line
            assert "count calls twice" in line
        assert receiver.requests == 1


# -- clocks --------------------------------------------------------------------------------------


def test_a_clock_that_was_a_year_ahead_neither_stalls_nor_closes_buckets_early(
        tmp_path: Path, receiver: Receiver, clock: Clock) -> None:
    site = site_for(tmp_path, receiver, clock)
    try:
        clock.now = T0 + 365 * 86400  # the host's clock is a year ahead for a while
        receiver.down = True
        site.save(hourly_calls(1, 1, start=clock.now - 2 * HOUR, prefix="future"))
        receiver.clock = clock
        site.uplink.tick()
        assert site.uplink.sender.waiting_until() is not None
        clock.now = T0 + 1800  # corrected: half past the first hour
        receiver.down = False
        site.save([make_call("now-1", bot=30.0, end_ms=round((T0 + 1770) * 1000))])
        report = site.uplink.tick()
        assert report.delivered == 1  # the backoff set a year ahead is over
        assert {k[2] for k in receiver.current()} == {iso_z(T0 + 365 * 86400 - 2 * HOUR)}
        clock.now = after_close(1)  # the hour the call ended in closes only now
        assert site.uplink.tick().delivered == 1
        assert receiver.current()[AGENT, "per-minute", iso_z(T0)]["call_count"] == 1
    finally:
        site.close()


# -- a damaged outbox, hostile arguments and settings ---------------------------------------------


def test_a_damaged_outbox_row_is_set_aside_and_the_rest_delivered(tmp_path: Path,
                                                                  receiver: Receiver,
                                                                  clock: Clock) -> None:
    site = site_for(tmp_path, receiver, clock)
    try:
        site.save(hourly_calls(3, 1))
        clock.now = after_close(3)
        site.uplink.refresh()
        conn = site.store.db.conn
        conn.execute("UPDATE uplink_outbox SET summary = '{not json' WHERE bucket_start = ?",
                     (iso_z(T0 + HOUR),))
        conn.execute("UPDATE uplink_state SET value = 'garbage' WHERE name = 'closed_until'")
        report = site.uplink.tick()
        assert report.delivered == 2
        [parked] = sync_status(conn, clock.now)["parked"]
        assert parked["bucket_start"] == iso_z(T0 + HOUR) and "damaged" in parked["reason"]
    finally:
        site.close()


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda t: t.replace('url = "http://', 'url = "http://alice:S3cretPassw0rd@'),
     "holds a user name or password"),
    (lambda t: t.replace('url = "http://127.0.0.1', 'url = "https://a..b'),
     "is not a valid host name"),
    (lambda t: t.replace('format = "json"', 'format = "json"\nca_file = "uplink.key"'),
     "ca_file is for an https:// url"),
])
def test_hostile_urls_and_settings_are_one_line_without_secrets(tmp_path: Path, edit,
                                                               reason: str) -> None:
    with Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode()) as receiver:
        config = agent(tmp_path, receiver)
        config.write_text(edit(config.read_text(encoding="utf-8")), encoding="utf-8")
        done = botmeter(config, "sync", "now")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert reason in line and "S3cret" not in line


def test_a_token_that_cannot_be_a_header_is_refused(tmp_path: Path) -> None:
    from .uplink_support import secret_file

    with Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode()) as receiver:
        config = agent(tmp_path, receiver)
        secret_file(tmp_path / "uplink.token", "tök€n")
        done = botmeter(config, "sync", "now")
    assert done.returncode == 2
    assert "uplink.token_file: the token must be printable ASCII" in done.stderr


def test_sync_show_refuses_a_revision_out_of_range(tmp_path: Path) -> None:
    with Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode()) as receiver:
        config = agent(tmp_path, receiver)
        done = botmeter(config, "sync", "show", "--bucket", "2026-11-10T00:00:00Z", "--plan",
                        "per-minute", "--revision", "99999999999999999999")
    assert done.returncode == 2 and "internal error" not in done.stderr
