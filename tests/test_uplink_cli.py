"""`botmeter sync ...` and `botmeter run`'s uplink, as an operator runs them: real commands
in subprocesses, the reference receiver on loopback, real SQLite files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from botmeter.storage.store import CallStore
from botmeter.uplink.buckets import iso_z
from botmeter.uplink.receiver import Receiver

from .helpers import eventually_sync
from .uplink_support import KEY, TOKEN, hourly_calls, secret_file, write_agent_config

#: the start of a bucket that closed hours ago (the commands use the real clock)
START = (int(time.time()) // 3600 - 12) * 3600.0


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode()) as r:
        yield r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent(tmp_path: Path, receiver: Receiver, *, hours: int = 2, per_hour: int = 2,
          extra: str = "", **kw: object) -> Path:
    """An agent's config and database holding `hours` closed hours of calls."""
    extra = f"interval_seconds = 1\n{extra}"
    config = write_agent_config(tmp_path, receiver.url, extra=extra, **kw)  # type: ignore[arg-type]
    text = config.read_text(encoding="utf-8").replace(
        'secret = "unused"', f'secret = "unused"\nport = {free_port()}\nreconnect_max = 1.0')
    config.write_text(text + '\n[agi]\nenabled = false\n', encoding="utf-8")
    store = CallStore(tmp_path / "calls.db")
    store.save(hourly_calls(hours, per_hour, start=START))
    store.close()
    return config


def botmeter(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "botmeter.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout)


def outbox_states(tmp_path: Path) -> dict[str, int]:
    store = CallStore(tmp_path / "calls.db", create=False)
    try:
        return dict(store.db.conn.execute(
            "SELECT state, count(*) FROM uplink_outbox GROUP BY state"))
    finally:
        store.close()


def test_sync_now_delivers_and_status_and_show_tell_what_was_sent(tmp_path: Path,
                                                                 receiver: Receiver) -> None:
    config = agent(tmp_path, receiver)
    done = botmeter(config, "sync", "now")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "delivered 2 summaries in 1 requests"
    assert len(receiver.effects()) == 2

    status = json.loads(botmeter(config, "sync", "status", "--format", "json").stdout)
    [plan] = status["plans"]
    assert (plan["plan_id"], plan["delivered"], plan["pending"]) == ("per-minute", 2, 0)
    assert status["last_success"]["summaries"] == 2 and status["parked"] == []

    shown = botmeter(config, "sync", "show", "--bucket", iso_z(START), "--plan", "per-minute")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    [received] = [d for d in receiver.deliveries() if d["bucket_start"] == iso_z(START)]
    assert body["summaries"] == [received["body"]] and body["agent_id"] == "pbx-test-01"
    assert "delivered" in shown.stderr and received["key"] in shown.stderr

    again = botmeter(config, "sync", "now")  # nothing new: nothing sent
    assert again.stdout.strip() == "delivered 0 summaries in 0 requests"
    assert receiver.requests == 1


def test_401_parks_status_shows_it_and_retry_parked_sends_it_once_the_token_is_fixed(
        tmp_path: Path, receiver: Receiver) -> None:
    config = agent(tmp_path, receiver, hours=1, token="an-old-token-1234")
    refused = botmeter(config, "sync", "now")
    assert refused.returncode == 3 and "1 parked" in refused.stdout
    table = botmeter(config, "sync", "status")
    assert "parked: per-minute" in table.stdout and "HTTP 401" in table.stdout
    assert "sync retry --parked" in table.stdout
    status = json.loads(botmeter(config, "sync", "status", "--format", "json").stdout)
    assert [(p["status"], p["revision"]) for p in status["parked"]] == [(401, 1)]

    assert botmeter(config, "sync", "retry").stdout.strip() == \
        "delivered 0 summaries in 0 requests"  # without --parked: still parked
    secret_file(tmp_path / "uplink.token", TOKEN)  # the operator fixes the token
    retried = botmeter(config, "sync", "retry", "--parked")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.splitlines() == ["1 parked summaries queued again",
                                           "delivered 1 summaries in 1 requests"]
    assert list(receiver.effects().values()) == [1]
    assert receiver.statuses == [401, 200]
    outputs = refused.stdout + refused.stderr + table.stdout + retried.stdout + retried.stderr
    assert TOKEN not in outputs and KEY not in outputs and "an-old-token-1234" not in outputs


def test_sync_now_twice_at_once_sends_each_revision_once(tmp_path: Path,
                                                        receiver: Receiver) -> None:
    config = agent(tmp_path, receiver, hours=10, per_hour=1, extra="batch_size = 2")
    receiver.misbehave("slow", times=10, seconds=0.3)
    command = [sys.executable, "-m", "botmeter.cli", "--config", str(config), "sync", "now"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    delivered = sum(int(out.split()[1]) for out, _ in outs)
    assert delivered == 10
    assert receiver.requests == 5  # 10 revisions in batches of 2, each batch sent once
    assert len(receiver.effects()) == 10


def test_the_vendor_unreachable_exits_1_and_keeps_the_summaries(tmp_path: Path,
                                                               receiver: Receiver) -> None:
    config = agent(tmp_path, receiver)
    receiver.down = True
    failed = botmeter(config, "sync", "now")
    assert failed.returncode == 1
    [line] = [t for t in failed.stderr.splitlines() if t.startswith("botmeter:")]
    assert "Traceback" not in failed.stderr
    assert line.startswith("botmeter: sync: ") and "HTTP 503" in line and "retried" in line
    assert outbox_states(tmp_path) == {"pending": 2}
    status = botmeter(config, "sync", "status")
    assert "backing off after 1 failures" in status.stdout
    receiver.down = False
    assert botmeter(config, "sync", "now").returncode == 0  # by hand: no waiting out the backoff
    assert outbox_states(tmp_path) == {"delivered": 2}


def _run(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "--log-json", "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_run_killed_mid_request_delivers_after_restart_without_a_double_effect(
        tmp_path: Path, receiver: Receiver) -> None:
    config = agent(tmp_path, receiver, hours=3, per_hour=2)
    receiver.misbehave("slow", seconds=3)
    proc = _run(config)
    try:
        eventually_sync(lambda: receiver.requests == 1, timeout=20)
        proc.kill()  # SIGKILL while the request is out
        proc.wait(10)
        assert outbox_states(tmp_path) == {"pending": 3}
        eventually_sync(lambda: len(receiver.effects()) == 3, timeout=10)  # the vendor took it
        proc = _run(config)
        eventually_sync(lambda: outbox_states(tmp_path) == {"delivered": 3}, timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert receiver.requests == 2 and set(receiver.effects().values()) == {1}
    assert "Traceback" not in out
    assert TOKEN not in out and KEY not in out


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda t: t.replace('url = "http://127.0.0.1', 'url = "http://192.0.2.10'),
     "uplink.url: http:// only to this host"),
    (lambda t: t.replace('plans = ["per-minute"]', 'plans = ["nope"]'),
     "uplink.plans: no plan 'nope'"),
    (lambda t: t.replace('format = "json"', 'format = "xml"'), "uplink.format"),
    (lambda t: t.replace('token_file = "uplink.token"', 'token_file = "missing.token"'),
     "cannot read the secret file"),
    (lambda t: t.replace('url = "http://127.0.0.1', 'url = "https://127.0.0.1')
     .replace('format = "json"', 'format = "json"\nca_file = "uplink.key"'),
     "uplink.ca_file: cannot load the TLS files"),
    (lambda t: t.replace('format = "json"', 'format = "json"\nbatch_size = 0'),
     "uplink.batch_size"),
    (lambda t: t.replace('format = "json"', 'format = "json"\nclient_key = "k.pem"'),
     "client_key needs client_cert"),
])
def test_a_bad_uplink_config_is_one_line_and_exit_2(tmp_path: Path, receiver: Receiver,
                                                    edit, reason: str) -> None:
    config = agent(tmp_path, receiver)
    config.write_text(edit(config.read_text(encoding="utf-8")), encoding="utf-8")
    for args in (("sync", "now"), ("run",)):
        done = botmeter(config, *args, timeout=30)
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith("botmeter: configuration error: ") and reason in line, line


def test_a_token_file_others_can_read_is_refused(tmp_path: Path, receiver: Receiver) -> None:
    config = agent(tmp_path, receiver)
    (tmp_path / "uplink.token").chmod(0o644)
    done = botmeter(config, "sync", "now")
    assert done.returncode == 2
    assert "chmod 600" in done.stderr and TOKEN not in done.stderr


def test_the_token_from_a_systemd_credential(tmp_path: Path, receiver: Receiver) -> None:
    config = agent(tmp_path, receiver, hours=1)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('token_file = "uplink.token"\n', "").replace(
        'secret_file = "uplink.key"\n', ""), encoding="utf-8")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secret_file(credentials / "uplink.token", TOKEN)
    secret_file(credentials / "uplink.key", KEY)
    done = subprocess.run(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "sync", "now"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)})
    assert done.returncode == 0, done.stderr
    assert len(receiver.effects()) == 1


async def test_recording_goes_on_while_the_vendor_hangs_on_a_request(tmp_path: Path,
                                                                    receiver: Receiver) -> None:
    import asyncio

    from botmeter.sim.pbx import SimulatedPBX
    from botmeter.sim.scenarios import mixed_calls

    from .helpers import eventually

    config = agent(tmp_path, receiver, hours=2)
    receiver.misbehave("slow", seconds=8)  # the vendor takes its time over the first request
    async with SimulatedPBX(speed=50, secret="botmeter-sim") as pbx:
        text = config.read_text(encoding="utf-8")
        text = text.replace('secret = "unused"', 'secret = "botmeter-sim"')
        text = "\n".join(f"port = {pbx.port}" if line.startswith("port = ") else line
                         for line in text.splitlines())
        config.write_text(text, encoding="utf-8")
        proc = _run(config)
        try:
            await eventually(lambda: receiver.requests == 1 and pbx.clients == 1, timeout=20)
            await pbx.play(mixed_calls(6, seed=5), concurrency=6)
            await eventually(lambda: CallStore(tmp_path / "calls.db").count() == 4 + 6,
                             timeout=15)
            assert receiver.effects() == {}  # still hanging: recording did not wait for it
            await eventually(lambda: outbox_states(tmp_path) == {"delivered": 2}, timeout=20)
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
