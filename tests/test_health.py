"""/healthz and /metrics of a live agent (real sockets to the simulated PBX, a real SQLite file,
a real HTTP client), and the HTTP server under hostile input."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from botmeter.config import Config, HttpSection
from botmeter.demo import demo_config
from botmeter.health.verdict import problems
from botmeter.service import AgentService, ServiceError
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall, mixed_calls

from .helpers import eventually

pytestmark = pytest.mark.both_loops

SECRET = "health-secret"


def with_http(config: Config, listen: str = "127.0.0.1:0") -> Config:
    return config.model_copy(update={"http": HttpSection(listen=listen)})


@asynccontextmanager
async def live_agent(pbx: SimulatedPBX, db: Path) -> AsyncIterator[tuple[AgentService, str]]:
    """An agent attached to `pbx`, its health endpoint on an ephemeral port: (agent, base URL)."""
    service = AgentService(with_http(demo_config(pbx.port, SECRET, db)), store_path=db,
                           clock=pbx.now)
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.client.connected.wait(), 10)
        assert service.health is not None and service.fastagi is not None
        pbx.agi_port = service.fastagi.port
        yield service, f"http://127.0.0.1:{service.health.port}"
    finally:
        service.stop()
        await running


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_healthz_and_metrics_report_the_calls_played_then_503_naming_ami(tmp_path):
    calls = mixed_calls(16, seed=5)
    db = tmp_path / "h.db"
    pbx = SimulatedPBX(speed=40, secret=SECRET)
    await pbx.start()
    try:
        async with live_agent(pbx, db) as (service, url), httpx.AsyncClient(base_url=url) as http:
            ok = await http.get("/healthz")
            assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
            assert ok.json()["ami"]["connected"] is True
            await pbx.play(calls, concurrency=8)
            await eventually(lambda: service.writer.saved == len(calls), timeout=10)
            page = await http.get("/metrics")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
            got = samples(page.text)
            outcomes = Counter(call.outcome for call in calls)
            for outcome in ("handled", "transferred", "abandoned", "failed"):
                assert got[("botmeter_calls_recorded_total", (("outcome", outcome),))] == \
                    outcomes[outcome], outcome
            assert got[("botmeter_ami_connected", ())] == 1
            assert got[("botmeter_healthy", ())] == 1
            assert got[("botmeter_calls_in_progress", ())] == 0
            assert got[("botmeter_ami_events_total", (("type", "Hangup"),))] >= len(calls)
            assert got[("botmeter_ami_events_total", (("type", "UserEvent"),))] > 0
            assert got[("botmeter_ami_sessions_total", ())] == 1
            assert got[("botmeter_ami_reconnects_total", ())] == 0
            assert got[("botmeter_writer_commit_seconds_count", ())] >= 1
            assert got[("botmeter_writer_queue_depth", ())] == 0
            assert got[("botmeter_database_size_bytes", ())] > 0
            assert 0 <= got[("botmeter_ami_seconds_since_last_event", ())] < 60
            assert ("botmeter_fastagi_sessions_total", ()) in got
            assert got[("botmeter_calls_not_stored_total", (("reason", "lost"),))] == 0

            await pbx.stop()  # Asterisk goes away: the agent is no longer healthy
            await eventually(lambda: not service.client.connected.is_set())
            down = await http.get("/healthz")
            assert down.status_code == 503
            assert down.json()["status"] == "fail"
            assert "Asterisk" in down.json()["reasons"]["ami"]
            assert f"127.0.0.1:{pbx.port}" in down.json()["reasons"]["ami"]
            gone = samples((await http.get("/metrics")).text)
            assert gone[("botmeter_ami_connected", ())] == 0
            assert gone[("botmeter_healthy", ())] == 0
            assert gone[("botmeter_ami_reconnects_total", ())] >= 1
    finally:
        await pbx.stop()


async def test_healthz_names_the_database_while_storing_calls_fails(tmp_path):
    db = tmp_path / "locked.db"
    async with SimulatedPBX(speed=40, secret=SECRET) as pbx, live_agent(pbx, db) as (service, url):
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            await pbx.play([ScriptedCall("13900000001", "", "handled", 1.0, 2.0)])
            await eventually(lambda: service.writer.failing is not None, timeout=15)
            probe = service.health.probe  # failing for a few seconds fails the health
            await eventually(lambda: "database" in problems(probe.counters()), timeout=15)
            async with httpx.AsyncClient(base_url=url) as http:
                answer = await http.get("/healthz")
            assert answer.status_code == 503
            assert "locked" in answer.json()["reasons"]["database"]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await eventually(lambda: service.writer.saved == 1, timeout=15)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def test_hostile_http_input_never_hurts_the_agent(tmp_path):
    db = tmp_path / "hostile.db"
    async with SimulatedPBX(speed=40, secret=SECRET) as pbx, live_agent(pbx, db) as (service, url):
        assert service.health is not None
        server = service.health.http
        server.head_timeout = 0.5
        port = service.health.port
        garbage = await raw_exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")
        huge = await raw_exchange(port, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000)
        assert huge.startswith(b"HTTP/1.1 431 ")
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"GET /heal")  # ... and nothing more: a slowloris
        slow = await asyncio.wait_for(slow_reader.read(), 5)
        slow_writer.close()
        assert slow.startswith(b"HTTP/1.1 408 ")
        assert (await raw_exchange(port, b"GET /healthz HTTP/2.0\r\n\r\n")).startswith(
            b"HTTP/1.1 505 ")
        assert (await raw_exchange(port, b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n")).startswith(
            b"HTTP/1.1 400 ")
        head = await raw_exchange(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        # more idle connections than the server keeps: the surplus is closed at once
        idle = [await asyncio.open_connection("127.0.0.1", port)
                for _ in range(server.max_connections + 5)]
        await eventually(lambda: server.refused >= 5)
        for _, writer in idle:
            writer.close()
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/nope")).status_code == 404
            post = await http.post("/metrics", content=b"x" * 100)
            assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
            await eventually(lambda: server.active == 0)
            assert (await http.get("/healthz")).status_code == 200
        await pbx.play([ScriptedCall("13900000002", "", "handled", 1.0, 2.0)])
        await eventually(lambda: service.writer.saved == 1)  # still recording calls


async def test_an_http_address_in_use_stops_the_start_naming_it(tmp_path):
    db = tmp_path / "busy.db"
    async with SimulatedPBX(speed=40, secret=SECRET) as pbx:
        holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = holder.sockets[0].getsockname()[1]
        try:
            config = with_http(demo_config(pbx.port, SECRET, db), f"127.0.0.1:{port}")
            service = AgentService(config, store_path=db)
            with pytest.raises(ServiceError, match=rf"\[http\] listen 127.0.0.1:{port}: "):
                await service.run()
            assert service.fastagi is not None and service.fastagi._server is None
        finally:
            holder.close()


def test_http_listen_defaults_to_loopback_9464_and_empty_disables(write_config):
    from botmeter.config import load_config

    assert HttpSection().listen == "127.0.0.1:9464" and HttpSection().enabled
    assert not HttpSection(listen="").enabled
    path = write_config()
    path.write_text(path.read_text().replace("listen = '127.0.0.1:0'", 'listen = "nowhere"'))
    with pytest.raises(Exception, match=r"http.listen: .*is not host:port"):
        load_config(path)


async def test_metrics_show_the_uplink_backlog_and_its_last_success(tmp_path):
    import time

    from botmeter.config import load_config
    from botmeter.storage.store import CallStore
    from botmeter.uplink.receiver import Receiver

    from .uplink_support import KEY, TOKEN, hourly_calls, write_agent_config

    def outbox(state: str) -> int:
        with sqlite3.connect(tmp_path / "calls.db") as conn:
            return int(conn.execute("SELECT count(*) FROM uplink_outbox WHERE state = ?",
                                    (state,)).fetchone()[0])

    def succeeded() -> bool:
        with sqlite3.connect(tmp_path / "calls.db") as conn:
            return conn.execute("SELECT 1 FROM uplink_state WHERE name = 'last_success'"
                                ).fetchone() is not None

    def uplink_samples(text: str) -> dict[str, float]:
        return {name: value for (name, _), value in samples(text).items()
                if name.startswith("botmeter_uplink_")}

    start = (int(time.time()) // 3600 - 6) * 3600.0  # closed hours of calls, due at once
    with Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode()) as receiver:
        receiver.down = True
        path = write_agent_config(tmp_path, receiver.url, extra="interval_seconds = 1")
        store = CallStore(tmp_path / "calls.db")
        store.save(hourly_calls(3, 2, start=start))
        store.close()
        async with SimulatedPBX(speed=40, secret=SECRET) as pbx:
            path.write_text(path.read_text().replace(
                'secret = "unused"', f'secret = "{SECRET}"\nport = {pbx.port}')
                + "\n[agi]\nenabled = false\n")
            service = AgentService(load_config(path))
            running = asyncio.create_task(service.run())
            try:
                await asyncio.wait_for(service.client.connected.wait(), 10)
                assert service.health is not None
                url = f"http://127.0.0.1:{service.health.port}"
                async with httpx.AsyncClient(base_url=url) as http:
                    await eventually(lambda: receiver.requests >= 1 and outbox("pending") == 3,
                                     timeout=15)  # the vendor is down: three summaries wait
                    down = uplink_samples((await http.get("/metrics")).text)
                    assert down["botmeter_uplink_backlog"] == 3
                    assert down["botmeter_uplink_parked"] == 0
                    assert "botmeter_uplink_last_success_timestamp_seconds" not in down
                    receiver.down = False
                    await eventually(lambda: outbox("delivered") == 3 and succeeded(), timeout=20)
                    up = uplink_samples((await http.get("/metrics")).text)
                    assert up["botmeter_uplink_backlog"] == 0
                    assert abs(up["botmeter_uplink_last_success_timestamp_seconds"]
                               - time.time()) < 600
            finally:
                service.stop()
                await running
