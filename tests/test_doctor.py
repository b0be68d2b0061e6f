"""`botmeter doctor` and `check-config` against the simulated PBX (real AMI over loopback, a
real SQLite file, a reference uplink receiver, the CLI as a subprocess)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from botmeter.config import load_config
from botmeter.doctor.findings import FAIL, OK, WARN, Finding, exit_code
from botmeter.doctor.run import doctor, offline
from botmeter.service import AgentService
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall

from .helpers import eventually
from .recovery_support import lab_master_db

SECRET = "doctor-s3cret"
#: what README's manager.conf example grants botmeter
READ, WRITE = "call,agent,user,dialplan", "reporting"
#: one call of each kind the read classes need: signals by UserEvent (user), a handoff to the
#: queue (agent), dialplan and channel events; short, so a PBX at real speed plays them at once
CALLS = [ScriptedCall("13800000001", "", "transferred", ring_seconds=0.1, bot_seconds=0.2,
                      human_seconds=0.3, handoff="queue", via="sip"),
         ScriptedCall("13800000002", "", "handled", ring_seconds=0.1, bot_seconds=0.2)]


def write_doctor_config(folder: Path, ami_port: int, *, extra: str = "",
                        agi: str = "127.0.0.1:0", http: str = "127.0.0.1:0") -> Path:
    secret = folder / "ami.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    path = folder / "botmeter.toml"
    path.write_text(f"""
[agent]
id = "doctor-test"

[ami]
port = {ami_port}
username = "botmeter"
secret_file = "ami.secret"

[calls]
inbound_contexts = ["from-pstn"]

[bot]
contexts = ["voicebot"]

[agi]
listen = "{agi}"

[http]
listen = "{http}"

[store]
path = "calls.db"
{extra}""")
    path.chmod(0o600)
    return path


async def run_doctor(config: Path, pbx: SimulatedPBX | None = None, *, watch: float = 3.0,
                     calls: Sequence[ScriptedCall] = CALLS) -> list[Finding]:
    """The doctor's findings (on a thread: it runs its own event loop), calls played meanwhile."""
    found: list[Finding] = []
    checking = asyncio.create_task(asyncio.to_thread(doctor, str(config), found.append,
                                                     watch=watch))
    if pbx is not None and calls:
        await eventually(lambda: pbx.clients >= 1 or checking.done(), timeout=10)
        if not checking.done():
            await pbx.play(calls)
    await checking
    return found


def by_check(found: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in found}


def a_pbx(**options: object) -> SimulatedPBX:
    """At real speed: Asterisk's clock is this host's (no skew)."""
    return SimulatedPBX(speed=1.0, secret=SECRET, **{"read": READ, "write": WRITE, **options})


async def test_good_credentials_give_all_ok_and_exit_0_from_the_cli(tmp_path):
    async with a_pbx() as pbx:
        config = write_doctor_config(
            tmp_path, pbx.port, extra=f'[recovery]\ncel_db = "{lab_master_db(tmp_path)}"\n')
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "botmeter.cli", "--config", str(config), "doctor", "--watch",
            "5", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        await eventually(lambda: pbx.clients >= 1, timeout=15)
        await pbx.play(CALLS)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    lines = out.decode().splitlines()
    assert proc.returncode == 0, out.decode()
    assert lines and all(line.startswith("OK  ") for line in lines), out.decode()
    checks = [line.split(":", 1)[0].split(None, 1)[1] for line in lines]
    for check in ("config", "secret ami.secret_file", "plans", "database", "fastagi port",
                  "http port", "ami reachable", "ami login", "ami write", "clock skew",
                  "ami read call", "ami read agent", "ami read user", "ami read dialplan",
                  "timestampevents", "recovery"):
        assert check in checks, (check, lines)


async def test_a_wrong_secret_fails_the_login_line(tmp_path):
    async with a_pbx() as pbx:
        pbx.add_user("botmeter", "another-secret", read=READ, write=WRITE)
        found = await run_doctor(write_doctor_config(tmp_path, pbx.port), pbx, calls=())
    login = by_check(found)["ami login"]
    assert login.status == FAIL and "Authentication failed" in login.detail
    assert "manager.conf" in login.fix and "manager reload" in login.fix
    assert SECRET not in login.line() and "another-secret" not in login.line()
    assert "ami write" not in by_check(found)  # nothing after a refused login
    assert exit_code(found) == 1


@pytest.mark.parametrize("missing", ["user", "agent", "dialplan", "call"])
async def test_a_user_missing_a_read_class_gets_a_fail_line_naming_it(tmp_path, missing):
    read = ",".join(c for c in READ.split(",") if c != missing)
    async with a_pbx(read=read) as pbx:
        found = await run_doctor(write_doctor_config(tmp_path, pbx.port), pbx)
    checks = by_check(found)
    line = checks[f"ami read {missing}"]
    assert line.status == FAIL, line
    assert f"may not read class {missing}" in line.detail
    assert "read = call,agent,user,dialplan" in line.fix
    for other in set(READ.split(",")) - {missing}:
        assert checks[f"ami read {other}"].status == OK, found
    assert exit_code(found) == 1


async def test_timestampevents_off_is_a_warning_and_exit_0(tmp_path):
    async with a_pbx(timestamp_events=False) as pbx:
        found = await run_doctor(write_doctor_config(tmp_path, pbx.port), pbx)
    line = by_check(found)["timestampevents"]
    assert line.status == WARN and "without a Timestamp" in line.detail
    assert "timestampevents = yes" in line.fix
    assert by_check(found)["clock skew"].status == OK  # Ping carries Asterisk's time anyway
    assert exit_code(found) == 0


async def test_no_write_class_for_coreshowchannels_fails_with_permission_denied(tmp_path):
    async with a_pbx(write="call") as pbx:
        found = await run_doctor(write_doctor_config(tmp_path, pbx.port), pbx, calls=())
    line = by_check(found)["ami write"]
    assert line.status == FAIL and "Permission denied" in line.detail
    assert "write = reporting" in line.fix
    # no calls during the watch: read classes are only not confirmed
    assert by_check(found)["ami read user"].status == WARN


async def test_a_clock_skew_against_asterisk_is_reported(tmp_path):
    import time

    async with a_pbx(epoch=time.time() + 120) as pbx:
        found = await run_doctor(write_doctor_config(tmp_path, pbx.port), pbx, calls=(),
                                 watch=0)
    line = by_check(found)["clock skew"]
    assert line.status == FAIL and "ahead of this host's" in line.detail


async def test_an_unreachable_ami_fails_the_reachable_line(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    found = await run_doctor(write_doctor_config(tmp_path, port))
    line = by_check(found)["ami reachable"]
    assert line.status == FAIL and f"127.0.0.1:{port}" in line.detail
    assert "[ami] host and port" in line.fix


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_ports_held_by_the_running_agent_are_ok_by_another_program_fail(tmp_path):
    agi, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    async with a_pbx() as pbx:
        config = write_doctor_config(tmp_path, pbx.port, agi=agi, http=http)
        service = AgentService(load_config(config))
        running = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.client.connected.wait(), 10)
            found = by_check(await run_doctor(config, pbx, calls=(), watch=0))
        finally:
            service.stop()
            await running
        assert found["fastagi port"].status == OK and "running agent" in found["fastagi port"].detail
        assert found["http port"].status == OK
        assert found["database"].status == OK  # writable while the agent writes
        with socket.socket() as other:
            other.bind(("127.0.0.1", int(agi.rsplit(":", 1)[1])))
            other.listen()
            found = by_check(await run_doctor(config, pbx, calls=(), watch=0))
    assert found["fastagi port"].status == FAIL and "another program" in found["fastagi port"].detail
    assert "ss -ltnp" in found["fastagi port"].fix


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "botmeter.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_check_config_is_offline_and_refuses_a_readable_secret_file(tmp_path):
    config = write_doctor_config(tmp_path, 1)  # port 1: nothing is asked over the network
    good = run_cli("--config", str(config), "check-config")
    assert good.returncode == 0, good.stdout + good.stderr
    # no [recovery]: the site runs on AMI alone, a warning (calls in a gap are lost)
    assert [line.split()[0] for line in good.stdout.splitlines()] == ["OK"] * 4 + ["WARN"]
    assert "recovery: AMI only" in good.stdout
    (tmp_path / "ami.secret").chmod(0o644)
    bad = run_cli("--config", str(config), "check-config")
    assert bad.returncode == 1
    line = next(x for x in bad.stdout.splitlines() if "ami.secret_file" in x)
    assert line.startswith("FAIL") and f"chmod 600 {tmp_path / 'ami.secret'}" in line


def test_check_config_names_a_bad_config_and_stops(tmp_path):
    config = write_doctor_config(tmp_path, 1, extra="[ami2]\nx = 1\n")
    result = run_cli("--config", str(config), "check-config")
    assert result.returncode == 1 and result.stderr == ""
    assert result.stdout.splitlines() == [
        f"FAIL  config: {config}: ami2: unknown key (mistyped?) -> fix: correct the file "
        "(config/botmeter.toml is the commented example)"]


def test_a_secret_in_a_readable_config_fails_and_in_a_private_one_warns(tmp_path):
    config = write_doctor_config(tmp_path, 1)
    config.write_text(config.read_text().replace('secret_file = "ami.secret"',
                                                 f'secret = "{SECRET}"'))
    config.chmod(0o644)
    found: list[Finding] = []
    offline(str(config), found.append)
    line = by_check(found)["secret ami.secret"]
    assert line.status == FAIL and "group or others" in line.detail and SECRET not in line.line()
    config.chmod(0o600)
    found.clear()
    offline(str(config), found.append)
    assert by_check(found)["secret ami.secret"].status == WARN


def test_the_database_line_says_writable_and_its_schema_or_what_is_wrong(tmp_path):
    from botmeter.storage.schema import SCHEMA_VERSION
    from botmeter.storage.store import CallStore

    config = write_doctor_config(tmp_path, 1)
    db = tmp_path / "calls.db"

    def database() -> Finding:
        found: list[Finding] = []
        offline(str(config), found.append)
        return by_check(found)["database"]

    assert database().status == OK and "does not exist yet" in database().detail
    CallStore(db).close()
    line = database()
    assert line.status == OK and f"schema version {SCHEMA_VERSION}" in line.detail
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert database().status == FAIL and "newer than this botmeter" in database().detail
    for file in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        file.unlink(missing_ok=True)
    db.write_bytes(b"not a database at all" * 100)
    assert database().status == FAIL and "not a botmeter database" in database().detail


def test_the_uplink_line_says_whether_the_vendor_takes_the_token(tmp_path):
    from botmeter.doctor.uplink import check_uplink
    from botmeter.uplink.receiver import Receiver
    from botmeter.uplink.settings import UplinkSettings

    token, key = "doctor-token-1234", b"doctor-key-5678"
    with Receiver(tmp_path / "vendor.db", token, key) as receiver:
        good = UplinkSettings(agent_id="a", url=receiver.url, token=token, key=key, plans=())
        accepted = check_uplink(good)
        refused = check_uplink(UplinkSettings(agent_id="a", url=receiver.url, token="wrong",
                                              key=key, plans=()))
        assert receiver.current() == {}  # the probe stored nothing
    assert accepted.status == OK and "token and signature accepted" in accepted.detail
    assert refused.status == FAIL and "HTTP 401" in refused.detail and "wrong" not in refused.line()
    gone = check_uplink(UplinkSettings(agent_id="a", url=f"http://127.0.0.1:{free_port()}",
                                       token=token, key=key, plans=()))
    assert gone.status == FAIL and "unreachable" in gone.detail
