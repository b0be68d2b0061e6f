"""Unbounded input from the peer over a real socket: memory stays bounded, every good call is
stored, and what was thrown away is logged once (rate-limited), naming how much."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from structlog.testing import capture_logs

from botmeter.config import Config
from botmeter.demo import demo_config
from botmeter.pbx.ami_client import AmiClient, AmiSettings
from botmeter.pbx.ami_frames import MAX_BANNER_BYTES, MAX_FRAME_BYTES, DiscardReport, FrameParser
from botmeter.service import AgentService
from botmeter.storage.store import CallStore

from .conftest import LAB_CAPTURE
from .fake_ami import start_fake_ami
from .helpers import eventually

MB = 1024 * 1024


def rss_mb() -> float:
    """This process's resident memory, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _lab_events() -> bytes:
    raw = LAB_CAPTURE.read_bytes()
    return raw[raw.index(b"Event: "):]


def _with_limits(config: Config, **calls: object) -> Config:
    return config.model_copy(update={"calls": config.calls.model_copy(update=calls)})


async def _record(tmp_path: Path, flood: Callable[[asyncio.StreamWriter], Awaitable[None]],
                  *, expected_calls: int = 13, **calls: object) -> tuple[AgentService, list, float]:
    """Run the agent against a fake AMI that plays `flood`, then the 13 lab calls; return the
    service once they are stored, the logs, and the RSS growth (MiB) from attach to the end."""

    async def play(writer: asyncio.StreamWriter) -> None:
        await flood(writer)
        writer.write(_lab_events())
        await writer.drain()

    server, port, _ = await start_fake_ami(after_snapshot=play)
    db = tmp_path / "calls.db"
    service = AgentService(_with_limits(demo_config(port, "s", db), **calls), store_path=db)
    # the fake AMI answers a ping only after the whole flood, which a loaded host may take
    # longer than demo_config's 2 s to parse: a ping timeout would reconnect and replay it
    service.client.settings = replace(service.client.settings, ping_timeout=60.0)
    with capture_logs() as logs:
        running = asyncio.create_task(service.run())
        await asyncio.wait_for(service.client.connected.wait(), 5)
        before = rss_mb()
        await eventually(lambda: service.writer.saved >= expected_calls, timeout=60)
        grown = rss_mb() - before
        service.stop()
        await running
    server.close()
    assert len(CallStore(db).calls()) == expected_calls
    return service, logs, grown


def _repeat(frames: Callable[[int], bytes], count: int, batch: int = 2000):
    """A flood of `count` frames written in batches (the peer's own memory stays small)."""

    async def flood(writer: asyncio.StreamWriter) -> None:
        for first in range(0, count, batch):
            writer.write(b"".join(frames(i) for i in range(first, min(count, first + batch))))
            await writer.drain()

    return flood


# -- the banner ------------------------------------------------------------------------------


def test_a_banner_without_newline_is_cut_at_a_few_kib() -> None:
    parser = FrameParser()
    list(parser.feed(b"Asterisk Call Manager/"))
    peak = 0
    for _ in range(2000):  # 8 MB, never a newline
        list(parser.feed(b"9" * 4096))
        peak = max(peak, len(parser._buf))
    assert peak <= MAX_BANNER_BYTES + 4096
    assert parser.banner == "" and parser.stats.oversized_frames == 1
    assert parser.stats.discarded_bytes > 2000 * 4096 - MAX_BANNER_BYTES
    frames = list(parser.feed(b"\r\n\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n"))
    assert frames == [b"Event: Hangup\r\nUniqueid: 1.1"]


async def test_an_endless_banner_over_the_socket_keeps_memory_bounded() -> None:
    sent = [0]

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"7" * 65536
        writer.write(b"Asterisk Call Manager/")
        try:
            while True:
                writer.write(chunk)
                await writer.drain()
                sent[0] += len(chunk)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = AmiSettings("127.0.0.1", port, "u", "s", ping_timeout=0.5, reconnect_min=5.0,
                           reconnect_max=5.0)
    client = AmiClient(settings, lambda event: None)
    before = rss_mb()
    with capture_logs() as logs:
        running = asyncio.create_task(client.run())
        await eventually(lambda: client.failures >= 1, timeout=10)  # login timed out
        await client.stop()
        await running
    server.close()
    assert sent[0] > 50 * MB  # the peer really sent a lot (360 MB in 10 s before the cap)
    assert rss_mb() - before < 30
    [discarded] = [e for e in logs if e["event"] == "ami input discarded"]
    assert discarded["oversized_frames"] == 1 and discarded["discarded_bytes"] > 40 * MB
    assert discarded["sample"].startswith("Asterisk Call Manager/777")


# -- oversized frames, garbage and bad lines on the live connection ----------------------------


async def test_huge_line_garbage_and_bad_lines_are_logged_rate_limited(tmp_path: Path) -> None:
    async def rubbish(writer: asyncio.StreamWriter) -> None:
        writer.write(b"Event: Newexten\r\nX-Huge: " + b"A" * (10 * MB) + b"\r\n\r\n")
        writer.write(os.urandom(2 * MB).replace(b"\r\n\r\n", b"----") + b"\r\n\r\n")
        for i in range(1000):  # a burst of bad lines inside events tracking reads
            writer.write(f"Event: Newexten\r\nUniqueid: 5.{i}\r\nno colon here {i}\r\n\r\n".encode())
        await writer.drain()

    _, logs, _ = await _record(tmp_path, rubbish)
    lines = [e for e in logs if e["event"] == "ami input discarded"]
    assert 1 <= len(lines) <= 3  # at once, then at most one a minute, and one at disconnect
    assert sum(e["oversized_frames"] for e in lines) == 2
    assert sum(e["bad_lines"] for e in lines) == 1000
    assert sum(e["discarded_bytes"] for e in lines) >= 12 * MB
    assert lines[0]["sample"].startswith("Event: Newexten\\r\\nX-Huge: AAA")
    assert lines[0]["max_frame_bytes"] == MAX_FRAME_BYTES


def test_discard_report_waits_for_the_end_of_an_oversized_frame_and_rate_limits() -> None:
    parser, report = FrameParser(), DiscardReport(interval=60)
    list(parser.feed(b"Event: X\r\nY: " + b"z" * MAX_FRAME_BYTES))
    assert report.due(parser, 0.0) is None  # still in the frame: wait for all its bytes
    list(parser.feed(b"z" * MB + b"\r\n\r\n"))
    first = report.due(parser, 1.0)
    assert first is not None and first["oversized_frames"] == 1
    assert first["discarded_bytes"] == MAX_FRAME_BYTES + MB + 17
    parser.note_bad("no colon")
    assert report.due(parser, 30.0) is None  # within the minute
    assert report.due(parser, 61.0) == {"bad_lines": 1, "oversized_frames": 0, "junk_frames": 0,
                                        "discarded_bytes": 0, "sample": "no colon"}
    list(parser.feed(b"q" * (2 * MAX_FRAME_BYTES)))  # an endless frame: reported after a minute
    assert report.due(parser, 200.0) is None and report.due(parser, 261.0) is not None
    list(parser.feed(b"q" * 1000))
    assert report.due(parser, 262.0) is None
    assert report.due(parser, 263.0, final=True)["discarded_bytes"] == 1000  # at disconnect
    assert report.due(parser, 264.0, final=True) is None


# -- signals for a call never seen ---------------------------------------------------------------


async def test_a_signal_flood_for_an_unseen_call_is_capped(tmp_path: Path) -> None:
    frame = (b"Event: UserEvent\r\nUniqueid: 4242.1\r\nLinkedid: 4242.1\r\nUserEvent: BotMeter\r\n"
             b"Signal: usage\r\nModule: asr\r\nQuantity: 1\r\n\r\n")
    service, logs, grown = await _record(tmp_path, _repeat(lambda i: frame, 200_000))
    tracker = service.recorder.tracker
    # 100 held, the rest dropped; at the stop the 100 still held are dropped too, and said so
    assert tracker.pending_signals == 0 and tracker.dropped_signals == 200_000
    assert grown < 30, f"RSS grew {grown:.0f} MiB"
    dropped = [e for e in logs if e["event"].startswith("bot signal dropped")]
    assert [e["linkedid"] for e in dropped] == ["4242.1", "4242.1"]
    assert "more than 100 signals" in dropped[0]["event"]
    assert dropped[1]["event"].endswith("input ended before their call was seen")
    assert dropped[1]["signals"] >= 100


# -- calls in progress ---------------------------------------------------------------------------


async def test_calls_in_progress_are_capped(tmp_path: Path) -> None:
    def newchannel(i: int) -> bytes:
        return (f"Event: Newchannel\r\nChannel: Local/flood-{i:08x};1\r\nContext: elsewhere\r\n"
                f"Exten: s\r\nUniqueid: 77{i}.1\r\nLinkedid: 77{i}.1\r\n\r\n").encode()

    service, logs, grown = await _record(tmp_path, _repeat(newchannel, 200_000),
                                         max_in_progress=1000)
    tracker = service.recorder.tracker
    assert tracker.active_calls <= 1000 and tracker.evicted_calls >= 199_000
    assert grown < 40, f"RSS grew {grown:.0f} MiB"
    closed = [e for e in logs if e["event"].startswith("call closed")]
    assert "more than 1000 calls in progress" in closed[0]["event"]
    # logged once; at the stop, one line counts the rest
    assert [e["event"].endswith("(more of the same)") for e in closed] == [False, True]
    assert closed[1]["not_logged"] == tracker.evicted_calls - 1
