"""The FastAGI server at a low file limit (a child process with a small RLIMIT_NOFILE): sessions
are capped below the limit, refusals are logged a few times (not once per connection), running
out of descriptors neither spins nor kills it, and it serves again after the flood."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from botmeter.bot.fastagi import FD_RESERVE, FastAgiServer

from .helpers import eventually
from .test_fastagi import agi_session, closed_by_server, env_bytes

ROOT = Path(__file__).parent.parent

#: the child: a FastAGI server at RLIMIT_NOFILE = argv[1] (hard limit argv[3]) on the loop
#: argv[2]; it answers the parent's commands on stdin with one JSON line each
CHILD = r"""
import asyncio, json, os, resource, sys, time

limit, loop_kind, hard = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

from botmeter.bot.fastagi import FastAgiServer
from botmeter.logs import setup_logging

setup_logging("info", json=True)


async def main():
    signals = []
    server = FastAgiServer(port=0, on_signal=signals.append, header_timeout=60)
    server.refusals.interval = 0.5
    await server.start()
    hog = []
    reply = lambda **kw: print(json.dumps(kw), flush=True)
    reply(port=server.port, max_sessions=server.max_sessions)
    while True:
        command = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if command == "hog":  # use up every descriptor left
            try:
                while True:
                    hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
        elif command == "free":
            for fd in hog:
                os.close(fd)
            hog.clear()
        if command in ("hog", "free", "stats"):
            reply(cpu=time.process_time(), got=len(signals), accept_errors=server.accept_errors,
                  **server.counters())
        else:
            await server.stop()
            return


if loop_kind == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


class Child:
    """The server process and its command line."""

    def __init__(self, limit: int, loop: str, hard: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(limit), loop, str(hard or limit)], cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, self.proc.stderr.read()  # type: ignore[union-attr]
        return json.loads(line)

    async def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return await asyncio.to_thread(self._read)

    def finish(self) -> list[dict]:
        """Stop the server; its log lines."""
        _, err = self.proc.communicate("stop\n", timeout=15)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err, err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


async def _idle_connections(port: int, count: int) -> list:
    return [await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            for _ in range(count)]


async def _served(port: int) -> bool:
    try:
        commands = await agi_session(port, env_bytes("botmeter/start"), timeout=2)
    except (OSError, TimeoutError):
        return False
    return commands == ["GET VARIABLE CHANNEL(linkedid)", "SET VARIABLE BOTMETER_STATUS ok"]


async def _serves_again(port: int) -> None:
    """A polite peer is served again (tried every 0.1 s for 10 s)."""
    served: list[bool] = []

    async def keep_trying() -> None:
        while not await _served(port):
            await asyncio.sleep(0.1)
        served.append(True)

    trying = asyncio.create_task(keep_trying())
    try:
        await eventually(lambda: served, timeout=10)
    finally:
        trying.cancel()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_sessions_are_capped_below_the_file_limit_and_refusals_logged_a_few_times(loop):
    running = asyncio.get_running_loop()
    started = running.time()  # the child's clock for its rate limit starts after this
    child = Child(300, loop)
    try:
        cap = child.hello["max_sessions"]
        assert cap == 300 - FD_RESERVE  # below the configured 2,000
        flood = await _idle_connections(child.hello["port"], 2 * cap)
        # asyncio pauses accepting for 1 s each time it runs out of descriptors in a burst (and
        # a loaded machine may see that more than once): the refused are closed, not at once
        closed = await asyncio.gather(*(closed_by_server(r, timeout=10) for r, _ in flood[cap:]))
        assert all(closed)
        stats = await child.ask("stats")
        assert (stats["active"], stats["refused"]) == (cap, cap)
        for _, writer in flood:
            writer.close()
        await _serves_again(child.hello["port"])  # once it noticed the closed sessions
        final = await child.ask("stats")
        assert final["got"] == 1
        # tries refused while the server had not yet noticed the closed sessions count too
        assert final["refused"] >= cap
    finally:
        logs = child.finish()
        flood_seconds = running.time() - started
    refused = [e for e in logs if e["event"].startswith("fastagi peer")]
    first_capped = next(e for e in refused if e["event"] == "fastagi peer refused: too many sessions")
    assert first_capped["max_sessions"] == cap
    # per reason, the first at once, then a count every 0.5 s at most: not one line per
    # connection (a refused connection accepted in a burst may also be "near the file
    # descriptor limit")
    for reason in {e["event"].split(": ", 1)[1] for e in refused}:
        lines = [e for e in refused if e["event"].endswith(reason)]
        assert len(lines) <= 3 + flood_seconds / 0.5, lines
    assert len(refused) < cap / 10, refused
    # every refusal told; asyncio may also run out of descriptors for a moment while it accepts a
    # burst faster than it closes the refused ones: those tries are told apart, and retried
    emfile = [e for e in refused if "out of file descriptors" in e["event"]]
    assert sum(e.get("count", 1) for e in emfile) == final["accept_errors"]
    assert sum(e.get("count", 1) for e in refused if e not in emfile) == final["refused"]
    assert any(e["event"] == "fastagi sessions capped by the file limit" for e in logs)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_out_of_descriptors_neither_spins_nor_dies(loop):
    child = Child(200, loop)
    port = child.hello["port"]
    try:
        before = await child.ask("hog")
        attempts = []
        for _ in range(50):  # the server cannot accept: connections wait, or libuv drops them
            with contextlib.suppress(OSError, TimeoutError):
                attempts.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1))
        await asyncio.sleep(1.0)  # a window to measure the server's CPU time in, not a wait
        during = await child.ask("free")
        assert during["cpu"] - before["cpu"] < 0.4  # no busy loop while out of descriptors
        for _, writer in attempts:
            writer.close()
        await _serves_again(port)
    finally:
        logs = child.finish()
    if loop == "asyncio":  # uvloop's libuv closes such connections itself, unseen by the server
        assert during["accept_errors"] >= 1
        emfile = [e for e in logs if "out of file descriptors" in e["event"]]
        assert 1 <= len(emfile) <= 8, emfile


async def test_the_soft_limit_is_raised_to_the_hard_one_at_start():
    child = Child(150, "uvloop", hard=1000)
    try:
        assert child.hello["max_sessions"] == 1000 - FD_RESERVE
        assert await _served(child.hello["port"])
    finally:
        logs = child.finish()
    [capped] = [e for e in logs if e["event"] == "fastagi sessions capped by the file limit"]
    assert (capped["nofile"], capped["max_sessions"], capped["configured"]) == (1000, 900, 2000)


async def test_a_connection_near_the_descriptor_limit_is_refused():
    with capture_logs() as logs:
        async with FastAgiServer(port=0) as server:
            server.fd_ceiling = 0  # as if every descriptor but the last few were in use
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await closed_by_server(reader)
            writer.close()
            assert server.stats.refused == 1 and server.stats.sessions == 0
    assert [e["event"] for e in logs if "refused" in e["event"]] == [
        "fastagi peer refused: near the file descriptor limit"]
