"""The reference receiver of the uplink, over real HTTP on loopback with a real SQLite file."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from botmeter.uplink.receiver import Receiver
from botmeter.uplink.signing import batch_key, calls_sha256, idempotency_key, signature

TOKEN = "test-token-0123456789"
SECRET = b"test-secret-abcdef"
AGENT = "pbx-sh-01"
PLAN = "bundle-2026"
HOUR = "2026-11-26T15:00:00Z"
NOW = 1_795_000_000.0


class Clock:
    """The receiver's clock, set by the test."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver(tmp_path: Path, clock: Clock) -> Iterator[Receiver]:
    with Receiver(tmp_path / "receiver.db", TOKEN, SECRET, clock=clock) as r:
        yield r


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def summary(revision: int = 1, *, plan_id: str = PLAN, bucket_start: str = HOUR,
            handled: int = 90, amount: str = "17.2800", **overrides: Any) -> dict[str, Any]:
    """A well-formed summary; `handled` calls are counted, `overrides` replace fields."""
    body: dict[str, Any] = {
        "plan_id": plan_id,
        "bucket_start": bucket_start,
        "bucket_end": bucket_start.replace("15:00", "16:00"),
        "revision": revision,
        "calls": {"offered": handled, "handled": handled},
        "seconds": {"bot": 8123.4, "billable": 8640},
        "modules": {"asr": {"quantity": 8100, "unit": "seconds"}},
        "amount": amount,
        "currency": "CNY",
        "call_count": handled,
        "calls_sha256": calls_sha256(f"call-{i}" for i in range(handled)),
    }
    body.update(overrides)
    return body


def key_of(s: dict[str, Any], agent_id: str = AGENT) -> str:
    return idempotency_key(agent_id, s["plan_id"], s["bucket_start"], s["revision"])


@dataclass
class Signed:
    """One request, built once so that it can be sent again byte for byte."""

    body: bytes
    headers: dict[str, str]


def signed(body: bytes, keys: list[str], *, content_type: str = "application/json",
           timestamp: float = NOW, secret: bytes = SECRET, token: str = TOKEN,
           idempotency: str | None = None) -> Signed:
    stamp = str(int(timestamp))
    return Signed(body, {
        "Content-Type": content_type,
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": batch_key(keys) if idempotency is None else idempotency,
        "X-Botmeter-Timestamp": stamp,
        "X-Botmeter-Signature": signature(secret, stamp, body),
    })


def json_request(summaries: list[dict[str, Any]], agent_id: str = AGENT,
                 **options: Any) -> Signed:
    body = json.dumps({"agent_id": agent_id, "summaries": summaries}).encode()
    return signed(body, [key_of(s, agent_id) for s in summaries], **options)


def event(s: dict[str, Any], delta: dict[str, Any], agent_id: str = AGENT) -> dict[str, Any]:
    return {"specversion": "1.0", "id": key_of(s, agent_id), "source": f"botmeter/{agent_id}",
            "type": "botmeter.usage.summary", "subject": s["plan_id"],
            "time": s["bucket_start"], "datacontenttype": "application/json",
            "data": dict(s, delta=delta)}


def delta_of(s: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """The change from summary `before` (None: nothing) to summary `s`."""
    def minus(name: str) -> Any:
        return before[name] if before else None

    old_calls = minus("calls") or {}
    old_seconds = minus("seconds") or {"bot": 0, "billable": 0}
    old_modules = minus("modules") or {}
    return {
        "calls": {k: v - old_calls.get(k, 0) for k, v in s["calls"].items()},
        "seconds": {k: round(s["seconds"][k] - old_seconds[k], 6) for k in ("bot", "billable")},
        "modules": {k: {"quantity": m["quantity"] - old_modules.get(k, {}).get("quantity", 0),
                        "unit": m["unit"]} for k, m in s["modules"].items()},
        "amount": str(Decimal(s["amount"]) - Decimal(before["amount"] if before else "0")),
        "call_count": s["call_count"] - (before["call_count"] if before else 0),
    }


def events_request(events: list[dict[str, Any]], **options: Any) -> Signed:
    body = json.dumps(events).encode()
    return signed(body, [e["id"] for e in events],
                  content_type="application/cloudevents-batch+json", **options)


def post(client: httpx.Client, receiver: Receiver, request: Signed,
         path: str = "/v1/usage/summaries") -> httpx.Response:
    return client.post(receiver.url + path, content=request.body, headers=request.headers)


# ------------------------------------------------------------------------------------------------
# accepted, duplicate, revisions


def test_an_accepted_batch_is_stored(receiver: Receiver, client: httpx.Client) -> None:
    first, second = summary(), summary(plan_id="other-plan", amount="3.5000")
    response = post(client, receiver, json_request([first, second]))
    assert response.status_code == 200
    assert response.json() == {"results": [{"key": key_of(first), "status": "accepted"},
                                           {"key": key_of(second), "status": "accepted"}]}
    assert receiver.effects() == {key_of(first): 1, key_of(second): 1}
    rows = receiver.deliveries()
    assert [row["key"] for row in rows] == [key_of(first), key_of(second)]
    assert rows[0]["agent_id"] == AGENT and rows[0]["plan_id"] == PLAN
    assert rows[0]["bucket_start"] == HOUR and rows[0]["revision"] == 1
    assert rows[0]["body"] == first and rows[0]["received_at"] == NOW
    assert receiver.current() == {(AGENT, PLAN, HOUR): first,
                                  (AGENT, "other-plan", HOUR): second}
    assert receiver.requests == 1 and receiver.statuses == [200]
    assert receiver.totals() == {}  # only CloudEvents are summed


def test_the_same_summary_twice_has_one_effect(receiver: Receiver, client: httpx.Client,
                                               clock: Clock) -> None:
    s = summary()
    assert post(client, receiver, json_request([s])).json()["results"][0]["status"] == "accepted"
    clock.now += 1  # a retry is signed again, with a new timestamp
    again = post(client, receiver, json_request([s], timestamp=clock.now))
    assert again.status_code == 200
    assert again.json() == {"results": [{"key": key_of(s), "status": "duplicate"}]}
    assert receiver.effects() == {key_of(s): 1}
    assert len(receiver.deliveries()) == 1


def test_a_lower_revision_after_a_higher_one_does_not_replace_it(
        receiver: Receiver, client: httpx.Client, clock: Clock) -> None:
    one, two = summary(1, handled=90), summary(2, handled=91, amount="17.4720")
    assert post(client, receiver, json_request([two])).json()["results"][0]["status"] == "accepted"
    clock.now += 1
    late = post(client, receiver, json_request([one], timestamp=clock.now))
    assert late.json() == {"results": [{"key": key_of(one), "status": "superseded"}]}
    assert receiver.current() == {(AGENT, PLAN, HOUR): two}
    assert receiver.effects() == {key_of(one): 1, key_of(two): 1}


def test_a_higher_revision_replaces_the_current_one(receiver: Receiver,
                                                    client: httpx.Client) -> None:
    one, two = summary(1), summary(2, handled=91)
    response = post(client, receiver, json_request([one, two]))
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"]
    assert receiver.current()[(AGENT, PLAN, HOUR)]["revision"] == 2


# ------------------------------------------------------------------------------------------------
# authentication, signature, replay


def test_a_tampered_body_is_refused(receiver: Receiver, client: httpx.Client) -> None:
    request = json_request([summary()])
    tampered = Signed(request.body.replace(b"17.2800", b"1.2800"), request.headers)
    response = post(client, receiver, tampered)
    assert response.status_code == 401
    assert "signature" in response.json()["error"]
    assert receiver.effects() == {}


def test_a_stale_timestamp_is_refused(receiver: Receiver, client: httpx.Client,
                                      clock: Clock) -> None:
    request = json_request([summary()])  # signed at NOW
    clock.now = NOW + 301
    response = post(client, receiver, request)
    assert response.status_code == 401
    assert "stale timestamp" in response.json()["error"]
    clock.now = NOW + 300
    assert post(client, receiver, request).status_code == 200


def test_a_wrong_token_is_refused_until_fixed(receiver: Receiver, client: httpx.Client) -> None:
    request = json_request([summary()], token="not-the-token")
    response = post(client, receiver, request)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in response.text
    no_header = Signed(request.body, {k: v for k, v in request.headers.items()
                                      if k != "Authorization"})
    assert post(client, receiver, no_header).status_code == 401
    assert receiver.effects() == {}
    receiver.token = "not-the-token"  # the token was fixed on the receiver's side
    assert post(client, receiver, request).status_code == 200


def test_a_wrong_secret_is_refused(receiver: Receiver, client: httpx.Client) -> None:
    request = json_request([summary()], secret=b"another secret")
    assert post(client, receiver, request).status_code == 401
    receiver.secret = b"another secret"
    assert post(client, receiver, request).status_code == 200


def test_a_replayed_request_is_refused_and_has_no_effect(receiver: Receiver,
                                                         client: httpx.Client) -> None:
    s = summary()
    request = json_request([s])
    assert post(client, receiver, request).status_code == 200
    replay = post(client, receiver, request)
    assert replay.status_code == 409
    assert replay.json() == {"error": "replayed request: already processed"}
    assert receiver.effects() == {key_of(s): 1}
    assert receiver.statuses == [200, 409]


def test_concurrent_copies_of_one_request_have_one_effect(receiver: Receiver) -> None:
    s = summary()
    request = json_request([s])

    def send(_: int) -> int:
        with httpx.Client(timeout=10) as c:
            return post(c, receiver, request).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(send, range(8)))
    assert codes == [200] + [409] * 7
    assert receiver.effects() == {key_of(s): 1} and receiver.requests == 8


def test_a_refused_request_is_not_remembered_as_processed(receiver: Receiver,
                                                          client: httpx.Client) -> None:
    request = json_request([summary()])
    receiver.misbehave("status", code=503)
    assert post(client, receiver, request).status_code == 503
    assert post(client, receiver, request).status_code == 200  # not a replay: not processed


# ------------------------------------------------------------------------------------------------
# malformed requests


@pytest.mark.parametrize(("field", "value"), [
    ("amount", 17.28),
    ("amount", "17,28"),
    ("revision", 0),
    ("revision", "1"),
    ("bucket_start", "2026-11-26T15:00:00+00:00"),
    ("currency", "yuan"),
    ("call_count", -1),
    ("calls_sha256", "abc"),
    ("calls", {"offered": 1.5}),
    ("seconds", {"bot": "many"}),
    ("modules", {"asr": {"quantity": 1}}),
    ("plan_id", None),
])
def test_a_malformed_summary_refuses_the_whole_request(receiver: Receiver, client: httpx.Client,
                                                       field: str, value: Any) -> None:
    good, bad = summary(plan_id="good"), summary(**{field: value})
    response = post(client, receiver, json_request([good, bad]))
    assert response.status_code == 422
    assert re.match(rf"summaries\[1\]\.{field}\b", response.json()["error"]), response.json()
    assert receiver.effects() == {} and receiver.current() == {}


def test_a_missing_field_is_named(receiver: Receiver, client: httpx.Client) -> None:
    s = summary()
    del s["calls_sha256"]
    body = json.dumps({"agent_id": AGENT, "summaries": [s]}).encode()
    response = post(client, receiver, signed(body, [key_of(s)]))
    assert response.status_code == 422
    assert response.json() == {"error": "summaries[0].calls_sha256: missing"}


def test_a_wrong_idempotency_key_header_is_refused(receiver: Receiver,
                                                   client: httpx.Client) -> None:
    first, second = summary(1), summary(2)
    reversed_order = json_request([first, second], idempotency=batch_key(
        [key_of(second), key_of(first)]))
    response = post(client, receiver, reversed_order)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]
    assert receiver.effects() == {}


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"\xff\xfe{}", "application/json", 400),
    (b"{not json", "application/json", 400),
    (b'{"agent_id": "a", "summaries": [], "x": NaN}', "application/json", 400),
    (b'{"agent_id": "a", "summaries": []}', "application/json", 422),
    (b"[]", "application/cloudevents-batch+json", 422),
    (b"{}", "text/plain", 415),
])
def test_bodies_that_are_not_batches(receiver: Receiver, client: httpx.Client, body: bytes,
                                     content_type: str, status: int) -> None:
    response = post(client, receiver, signed(body, ["x"], content_type=content_type))
    assert response.status_code == status
    assert response.json()["error"]


def test_wrong_path_and_method(receiver: Receiver, client: httpx.Client) -> None:
    request = json_request([summary()])
    assert post(client, receiver, request, path="/v1/usage/other").status_code == 404
    response = client.get(receiver.url + "/v1/usage/summaries")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert receiver.effects() == {}
    assert post(client, receiver, request).status_code == 200  # the connection still works


def test_a_body_over_64_mib_is_refused_unread(receiver: Receiver) -> None:
    head = (f"POST /v1/usage/summaries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024 + 1}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = sock.makefile("rb").readline()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert receiver.statuses == [413]


# ------------------------------------------------------------------------------------------------
# CloudEvents


def test_cloudevents_deltas_sum_to_the_highest_revision(receiver: Receiver,
                                                        client: httpx.Client,
                                                        clock: Clock) -> None:
    one = summary(1, handled=90, amount="17.2800")
    two = summary(2, handled=93, amount="17.8560", seconds={"bot": 8400.7, "billable": 8930},
                  modules={"asr": {"quantity": 8350, "unit": "seconds"}})
    first = post(client, receiver, events_request([event(one, delta_of(one))]))
    assert first.json() == {"results": [{"key": key_of(one), "status": "accepted"}]}
    clock.now += 1
    second = post(client, receiver, events_request([event(two, delta_of(two, one))],
                                                   timestamp=clock.now))
    assert second.json() == {"results": [{"key": key_of(two), "status": "accepted"}]}
    expected = {"calls": two["calls"], "seconds": two["seconds"], "modules": two["modules"],
                "amount": Decimal("17.8560"), "call_count": 93, "currency": "CNY"}
    assert receiver.totals() == {(AGENT, PLAN): expected}
    assert receiver.current() == {(AGENT, PLAN, HOUR): two}  # stored without its delta

    clock.now += 1  # a duplicate event, in a new request beside a new one, adds nothing more
    other = summary(1, plan_id="other", amount="1.0000", handled=2)
    third = post(client, receiver, events_request(
        [event(two, delta_of(two, one)), event(other, delta_of(other))], timestamp=clock.now))
    assert [r["status"] for r in third.json()["results"]] == ["duplicate", "accepted"]
    totals = receiver.totals()
    assert totals[(AGENT, PLAN)] == expected
    assert totals[(AGENT, "other")]["amount"] == Decimal("1.0000")
    assert receiver.effects() == {key_of(one): 1, key_of(two): 1, key_of(other): 1}
    assert receiver.deliveries()[1]["body"]["delta"] == delta_of(two, one)


def test_cloudevents_late_lower_revision_still_sums_right(receiver: Receiver,
                                                          client: httpx.Client) -> None:
    one, two = summary(1, handled=90), summary(2, handled=95, amount="18.2400")
    response = post(client, receiver, events_request(
        [event(two, delta_of(two, one)), event(one, delta_of(one))]))
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "superseded"]
    assert receiver.totals()[(AGENT, PLAN)]["call_count"] == 95
    assert receiver.totals()[(AGENT, PLAN)]["amount"] == Decimal("18.2400")


@pytest.mark.parametrize(("change", "named"), [
    (lambda e: e.update(id="0" * 64), r"events\[0\]\.id"),
    (lambda e: e.update(source="pbx-sh-01"), r"events\[0\]\.source"),
    (lambda e: e.update(specversion="0.3"), r"events\[0\]\.specversion"),
    (lambda e: e.update(type="other"), r"events\[0\]\.type"),
    (lambda e: e.update(subject="other"), r"events\[0\]\.subject"),
    (lambda e: e.update(time="2026-11-26T16:00:00Z"), r"events\[0\]\.time"),
    (lambda e: e["data"].pop("delta"), r"events\[0\]\.data\.delta"),
    (lambda e: e["data"]["delta"]["seconds"].pop("bot"), r"events\[0\]\.data\.delta\.seconds\.bot"),
    (lambda e: e["data"]["delta"].update(amount=1), r"events\[0\]\.data\.delta\.amount"),
    (lambda e: e["data"].update(amount="x"), r"events\[0\]\.data\.amount"),
])
def test_a_malformed_event_refuses_the_whole_request(receiver: Receiver, client: httpx.Client,
                                                     change: Any, named: str) -> None:
    good, bad = summary(plan_id="good"), summary()
    events = [event(good, delta_of(good)), event(bad, delta_of(bad))]
    change(events[1])
    body = json.dumps([events[1], events[0]]).encode()
    response = post(client, receiver, signed(
        body, [events[1]["id"], events[0]["id"]],
        content_type="application/cloudevents-batch+json"))
    assert response.status_code == 422
    assert re.match(named, response.json()["error"]), response.json()
    assert receiver.effects() == {} and receiver.totals() == {}


# ------------------------------------------------------------------------------------------------
# misbehaving on demand


def test_status_with_retry_after(receiver: Receiver, client: httpx.Client) -> None:
    receiver.misbehave("status", code=429, retry_after=7)
    receiver.misbehave("status", times=2, code=503)
    request = json_request([summary()])
    first = post(client, receiver, request)
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    second = post(client, receiver, request)
    assert second.status_code == 503 and "Retry-After" not in second.headers
    assert post(client, receiver, request).status_code == 503
    assert receiver.effects() == {}
    assert post(client, receiver, request).status_code == 200
    assert receiver.statuses == [429, 503, 503, 200] and receiver.requests == 4


def test_slow_then_processed(receiver: Receiver, client: httpx.Client) -> None:
    receiver.misbehave("slow", seconds=0.3)
    s = summary()
    started = time.monotonic()
    response = post(client, receiver, json_request([s]))
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert receiver.effects() == {key_of(s): 1}


def test_reset_stores_nothing(receiver: Receiver, client: httpx.Client) -> None:
    receiver.misbehave("reset")
    s = summary()
    request = json_request([s])
    with pytest.raises(httpx.ReadError):  # connection reset by peer, not a timeout
        post(client, receiver, request)
    assert receiver.effects() == {}
    assert receiver.statuses == [0] and receiver.requests == 1
    assert post(client, receiver, request).json()["results"][0]["status"] == "accepted"


def test_reset_after_commit_stores_the_effect(receiver: Receiver, client: httpx.Client,
                                              clock: Clock) -> None:
    receiver.misbehave("reset_after_commit")
    s = summary()
    request = json_request([s])
    with pytest.raises(httpx.ReadError):
        post(client, receiver, request)
    assert receiver.effects() == {key_of(s): 1}
    assert receiver.statuses == [0]
    clock.now += 5  # the agent retries, signed again: only duplicates
    retry = post(client, receiver, json_request([s], timestamp=clock.now))
    assert retry.json() == {"results": [{"key": key_of(s), "status": "duplicate"}]}
    assert post(client, receiver, request).status_code == 409  # the very same bytes: a replay
    assert receiver.effects() == {key_of(s): 1}


def test_down_answers_503_until_back(receiver: Receiver, client: httpx.Client) -> None:
    receiver.down = True
    request = json_request([summary()])
    assert post(client, receiver, request).status_code == 503
    assert post(client, receiver, request).status_code == 503
    assert receiver.effects() == {}
    receiver.down = False
    assert post(client, receiver, request).status_code == 200
    assert receiver.statuses == [503, 503, 200]


def test_misbehave_refuses_unknown_kinds_and_parameters(receiver: Receiver) -> None:
    with pytest.raises(ValueError, match="unknown misbehaviour"):
        receiver.misbehave("explode")
    with pytest.raises(ValueError, match="code"):
        receiver.misbehave("status")
    with pytest.raises(ValueError, match="unknown parameter"):
        receiver.misbehave("reset", seconds=1)


def test_the_database_outlives_the_receiver(tmp_path: Path, clock: Clock,
                                            client: httpx.Client) -> None:
    s = summary()
    with Receiver(tmp_path / "r.db", TOKEN, SECRET, clock=clock) as first:
        request = json_request([s])
        assert post(client, first, request).status_code == 200
    assert first.effects() == {key_of(s): 1}  # readable after stop
    with Receiver(tmp_path / "r.db", TOKEN, SECRET, clock=clock) as second:
        assert post(client, second, request).status_code == 409
        clock.now += 1
        again = post(client, second, json_request([s], timestamp=clock.now))
        assert again.json()["results"][0]["status"] == "duplicate"


# ------------------------------------------------------------------------------------------------
# the botmeter-receiver command


def _command() -> list[str]:
    script = Path(sys.executable).parent / "botmeter-receiver"
    return [str(script)] if script.exists() else [sys.executable, "-m",
                                                  "botmeter.uplink.receiver"]


def _secret_files(tmp_path: Path, mode: int = 0o600) -> tuple[Path, Path]:
    token_file, secret_file = tmp_path / "uplink.token", tmp_path / "uplink.key"
    token_file.write_text(TOKEN + "\n")
    secret_file.write_text(SECRET.decode() + "\n")
    token_file.chmod(0o600)
    secret_file.chmod(mode)
    return token_file, secret_file


def test_command_refuses_a_readable_secret_file(tmp_path: Path) -> None:
    token_file, secret_file = _secret_files(tmp_path, mode=0o644)
    done = subprocess.run(
        [*_command(), "--listen", "127.0.0.1:0", "--db", str(tmp_path / "r.db"),
         "--token-file", str(token_file), "--secret-file", str(secret_file)],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("botmeter-receiver: ") and "chmod 600" in lines[0]
    assert done.stdout == ""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no line on stdout within {timeout} s")
    return proc.stdout.readline()


def test_command_serves_until_sigterm(tmp_path: Path) -> None:
    token_file, secret_file = _secret_files(tmp_path)
    with subprocess.Popen(
            [*_command(), "--listen", "127.0.0.1:0", "--db", str(tmp_path / "r.db"),
             "--token-file", str(token_file), "--secret-file", str(secret_file),
             "--max-skew", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        try:
            line = _read_line(proc, 30)
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            assert match, line
            endpoint = match.group(0) + "/v1/usage/summaries"
            s = summary()
            request = json_request([s], timestamp=time.time())
            response = httpx.post(endpoint, content=request.body, headers=request.headers,
                                  timeout=10)
            assert response.json() == {"results": [{"key": key_of(s), "status": "accepted"}]}
            stale = json_request([s], timestamp=time.time() - 120)  # beyond --max-skew 60
            assert httpx.post(endpoint, content=stale.body, headers=stale.headers,
                              timeout=10).status_code == 401
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert proc.stderr is not None
            assert TOKEN not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
