"""systemd's notify protocol: a real AF_UNIX datagram socket stands in for systemd's and hears
READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 from the agent attached to the simulated PBX, in
process and as a `botmeter run` subprocess; pings stop while the event loop is blocked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from botmeter.demo import demo_config
from botmeter.sdnotify import Notifier, notify_address, notify_message, watchdog_interval
from botmeter.service import AgentService
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall
from botmeter.supervision import WRITER_STUCK_SECONDS, AgentState, problems, status_line

from .helpers import eventually


class FakeSystemd:
    """systemd's end of $NOTIFY_SOCKET: a datagram socket bound to a path or abstract name."""

    def __init__(self, *, abstract: bool = False) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bm-"))  # short: socket paths are <= 107 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"botmeter-test-{uuid.uuid4().hex}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            self.address = str(self._dir / "notify")
            self.sock.bind(self.address)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def receive(self) -> list[dict[str, str]]:
        """The messages that arrived since the last call (each also kept in `messages`)."""
        new = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            new.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
        self.messages += new
        return new

    def seen(self, key: str, value: str | None = None) -> list[str]:
        """Values of `key` received so far (those equal to or containing `value`, if given)."""
        self.receive()
        return [m[key] for m in self.messages
                if key in m and (value is None or value in m[key])]

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


# -- the protocol ----------------------------------------------------------------------------

def test_the_socket_address_is_a_path_or_an_abstract_name() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@/org/freedesktop/systemd1/notify/42") == \
        b"\0/org/freedesktop/systemd1/notify/42"
    assert [notify_address(v) for v in (None, "", "vsock:2:1234", "relative")] == [None] * 4


def test_a_message_is_one_line_per_field() -> None:
    assert notify_message({"READY": "1", "STATUS": "two\nlines"}) == b"READY=1\nSTATUS=two lines"


@pytest.mark.parametrize(("environ", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4343"}, None),  # another process's
    ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "soon"}, None), ({}, None),
])
def test_the_watchdog_pings_at_half_its_timeout(environ: dict[str, str],
                                                interval: float | None) -> None:
    assert watchdog_interval(environ, 4242) == interval


@pytest.mark.parametrize("abstract", [False, True])
def test_the_notifier_reaches_path_and_abstract_sockets(abstract: bool) -> None:
    fake = FakeSystemd(abstract=abstract)
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": fake.address})
        assert notifier.send(READY="1", STATUS="attached")
        assert fake.receive() == [{"READY": "1", "STATUS": "attached"}]
        notifier.close()
    finally:
        fake.close()


def test_a_notifier_whose_socket_is_gone_says_so_once_and_goes_on(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "no-such-socket"))
    with structlog.testing.capture_logs() as logs:
        assert [notifier.send(WATCHDOG="1") for _ in range(3)] == [False] * 3
    assert [e["event"] for e in logs] == ["systemd notify failed"]
    assert not Notifier.from_environment({}).send(READY="1")  # outside systemd: nothing


# -- health and status -------------------------------------------------------------------------

HEALTHY = AgentState(ami="127.0.0.1:5038", ami_connected=True, ami_running=True, ami_error=None,
                     calls_in_progress=3, writer_running=True, writer_busy_seconds=None)


def test_status_lines_say_where_ami_is_and_how_many_calls_are_in_progress() -> None:
    from dataclasses import replace

    assert status_line(HEALTHY) == "attached to 127.0.0.1:5038, 3 calls in progress"
    down = replace(HEALTHY, ami_connected=False, ami_error="Connection refused",
                   calls_in_progress=1)
    assert status_line(down) == ("AMI down at 127.0.0.1:5038 (Connection refused), "
                                 "reconnecting; 1 call in progress")
    assert problems(down) == []  # Asterisk down: reconnecting is healthy
    first = replace(HEALTHY, ami_connected=False, calls_in_progress=0)
    assert status_line(first) == "connecting to AMI at 127.0.0.1:5038; 0 calls in progress"


def test_a_dead_ami_client_or_a_dead_or_stuck_writer_is_unhealthy() -> None:
    from dataclasses import replace

    assert problems(replace(HEALTHY, ami_running=False)) == ["the AMI client has stopped"]
    assert problems(replace(HEALTHY, writer_running=False)) == ["the writer's thread has ended"]
    stuck = replace(HEALTHY, writer_busy_seconds=WRITER_STUCK_SECONDS + 1)
    assert problems(stuck) == [f"storing calls stuck for {WRITER_STUCK_SECONDS + 1:.0f} s"]
    assert problems(replace(HEALTHY, writer_busy_seconds=WRITER_STUCK_SECONDS - 1)) == []
    assert status_line(stuck).startswith("unhealthy: storing calls stuck")


# -- the agent, in process -----------------------------------------------------------------------

@contextlib.asynccontextmanager
async def _agent_under_systemd(monkeypatch: pytest.MonkeyPatch, fake: FakeSystemd,
                               db: Path, *, watchdog_usec: int = 200_000,
                               secret: str = "s", pbx_secret: str = "s",
                               ) -> AsyncIterator[tuple[SimulatedPBX, AgentService]]:
    """The agent running in process with systemd's variables set, attached to the simulated
    PBX (whose secret may differ from the agent's); stopped at the end."""
    monkeypatch.setenv("NOTIFY_SOCKET", fake.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    async with SimulatedPBX(speed=20, secret=pbx_secret) as pbx:
        service = AgentService(demo_config(pbx.port, secret, db))
        running = asyncio.create_task(service.run())
        try:
            yield pbx, service
        finally:
            service.stop()
            await running


@pytest.mark.both_loops
async def test_ready_status_pings_and_stopping_from_the_running_agent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systemd: FakeSystemd) -> None:
    async with _agent_under_systemd(monkeypatch, systemd, tmp_path / "n.db") as (pbx, service):
        await eventually(lambda: systemd.seen("READY"))
        assert service.client.connected.is_set()  # READY only once AMI is logged in
        ready = next(m for m in systemd.messages if "READY" in m)
        assert ready["STATUS"] == f"attached to 127.0.0.1:{pbx.port}, 0 calls in progress"
        await eventually(lambda: len(systemd.seen("WATCHDOG")) >= 3)
        play = asyncio.create_task(pbx.play([ScriptedCall("13900000001", "", "handled", 1.0, 20.0)]))
        await eventually(lambda: systemd.seen("STATUS", ", 1 call in progress"))
        await pbx.stop()  # Asterisk goes away: said in the status, and still healthy
        await play
        await eventually(lambda: systemd.seen("STATUS", f"AMI down at 127.0.0.1:{pbx.port}"))
        systemd.receive()
        await eventually(lambda: any("WATCHDOG" in m for m in systemd.receive()))
    assert systemd.receive()[-1] == {"STOPPING": "1",
                                     "STATUS": "stopping: storing the finished calls"}
    assert [m for m in systemd.messages if "READY" in m] == [ready]


@pytest.mark.both_loops
async def test_watchdog_pings_stop_while_the_event_loop_is_blocked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systemd: FakeSystemd) -> None:
    async with _agent_under_systemd(monkeypatch, systemd, tmp_path / "b.db",
                                    watchdog_usec=100_000) as (_, service):  # pings every 0.05 s
        await eventually(lambda: len(systemd.seen("WATCHDOG")) >= 2)
        systemd.receive()
        time.sleep(0.5)  # the event loop blocked for ten ping intervals (on purpose)
        during = systemd.receive()
        pings = service.supervisor.pings
        await eventually(lambda: any("WATCHDOG" in m for m in systemd.receive()))  # resumed
    assert during == [] and service.supervisor.pings > pings


@pytest.mark.both_loops
async def test_an_agent_whose_writer_has_ended_stops_pinging_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systemd: FakeSystemd) -> None:
    async with _agent_under_systemd(monkeypatch, systemd, tmp_path / "w.db") as (_, service):
        await eventually(lambda: systemd.seen("WATCHDOG"))
        with structlog.testing.capture_logs() as logs:
            await asyncio.to_thread(service.writer.close)  # as if a bug had ended its thread
            await eventually(lambda: systemd.seen("STATUS", "unhealthy: the writer's thread"))
            after, checks, pings = len(systemd.messages), service.supervisor.checks, \
                service.supervisor.pings
            await eventually(lambda: service.supervisor.checks >= checks + 3)
        systemd.receive()
    assert service.supervisor.pings == pings
    assert not any("WATCHDOG" in m for m in systemd.messages[after:])
    assert [e["problems"] for e in logs if e["event"] == "unhealthy: watchdog pings stopped"] == [
        ["the writer's thread has ended"]]


@pytest.mark.both_loops
async def test_no_ready_while_asterisk_refuses_the_login(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systemd: FakeSystemd) -> None:
    async with _agent_under_systemd(monkeypatch, systemd, tmp_path / "l.db", secret="wrong",
                                    pbx_secret="right") as (pbx, _):
        await eventually(lambda: pbx.login_failures >= 3
                         and systemd.seen("STATUS", "(login refused: Authentication failed)"),
                         timeout=10)
    assert systemd.seen("READY") == [] and systemd.seen("WATCHDOG") == []
    assert systemd.seen("STOPPING") == ["1"]


# -- `botmeter run` as systemd starts it ---------------------------------------------------------

async def test_botmeter_run_under_systemd_notifies_and_logs_for_the_journal(
        tmp_path: Path, write_config) -> None:
    fake = FakeSystemd(abstract=True)
    journal = tmp_path / "journal"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secret = credentials / "ami.secret"
    secret.write_text("botmeter-sim\n")
    secret.chmod(0o600)
    async with SimulatedPBX(speed=50, secret="botmeter-sim") as pbx:
        config = write_config(port=pbx.port)
        config.write_text(config.read_text().replace('secret = "botmeter-sim"',
                                                     'secret_file = "/nonexistent/ami.secret"')
                          + '\n[log]\nlevel = "debug"\n', encoding="utf-8")
        with journal.open("w") as stream:
            info = os.fstat(stream.fileno())
            proc = subprocess.Popen(
                [sys.executable, "-m", "botmeter.cli", "--config", str(config), "run"],
                stdout=stream, stderr=stream, env={
                    **os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": fake.address,
                    "WATCHDOG_USEC": "400000", "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}",
                    "CREDENTIALS_DIRECTORY": str(credentials)})
            try:
                await eventually(lambda: fake.seen("READY"), timeout=15)
                await eventually(lambda: len(fake.seen("WATCHDOG")) >= 2)
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 15)
            finally:
                if proc.poll() is None:
                    proc.kill()
    lines = journal.read_text().splitlines()
    assert proc.returncode == 0, lines
    try:
        assert fake.seen("STATUS", f"attached to 127.0.0.1:{pbx.port}, 0 calls in progress")
        assert fake.seen("STOPPING") == ["1"]
    finally:
        fake.close()
    import json

    events = [(line[:3], json.loads(line[3:])) for line in lines]  # <N>{...}: journald's prefix
    assert ("<6>", "botmeter started") in [(p, e["event"]) for p, e in events]
    assert {p for p, e in events if e["level"] == "debug"} <= {"<7>"}
    assert "botmeter-sim" not in journal.read_text()  # the secret, read from the credential
