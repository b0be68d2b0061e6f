"""Hostile AMI input over a real socket: the agent survives and no call loses its record (on
asyncio's loop and on uvloop)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from botmeter.demo import demo_config
from botmeter.service import AgentService
from botmeter.storage.store import CallStore

from .conftest import LAB_CAPTURE
from .fake_ami import start_fake_ami
from .helpers import eventually

pytestmark = pytest.mark.both_loops


def _lab_events() -> bytes:
    raw = LAB_CAPTURE.read_bytes()
    return raw[raw.index(b"Event: "):]


def _poisoned_stream() -> bytes:
    """The 13 lab calls with garbage between their frames."""
    rng = random.Random(5)
    frames = _lab_events().split(b"\r\n\r\n")
    junk = [
        b"this line has no colon\r\nneither: does\r\nthis one",
        os.urandom(2048).replace(b"\r\n\r\n", b"--"),
        b"Event: Newexten\r\nX-Huge: " + b"A" * (1024 * 1024),  # a 1 MB line, then a frame end
        b"Event: TotallyUnknown\r\nUniqueid: 9.9\r\nLinkedid: 9.9",
        b"Event: Hangup\r\nUniqueid: 424242.1\r\nLinkedid: 424242.1\r\nCause: 16",  # never seen
        b"Event: Newexten\r\nUniqueid: 1795706734.0\r\nContext: voicebot",  # missing Linkedid
        "Event: NewCallerid\r\nUniqueid: 77.1\r\nLinkedid: 77.1\r\nCallerIDName: 半个字".encode()[:-2],
    ]
    out = []
    for i, frame in enumerate(frames):
        out.append(frame)
        if i % 50 == 0:
            out.append(rng.choice(junk))
    return b"\r\n\r\n".join(out)


def _odd_sized_writes(payload: bytes):  # type: ignore[no-untyped-def]
    async def stream(writer: asyncio.StreamWriter) -> None:
        rng = random.Random(9)
        i = 0
        while i < len(payload):  # frames and UTF-8 characters split anywhere
            n = rng.randint(1, 9000)
            writer.write(payload[i:i + n])
            i += n
            if rng.random() < 0.05:
                await writer.drain()
        await writer.drain()

    return stream


async def test_garbage_between_real_calls_costs_no_call_its_record(tmp_path, lab_expected):
    server, port, _ = await start_fake_ami(after_snapshot=_odd_sized_writes(_poisoned_stream()))
    db = tmp_path / "hostile.db"
    service = AgentService(demo_config(port, "any", db), store_path=db)
    running = asyncio.create_task(service.run())
    try:
        await eventually(lambda: service.writer.saved >= 13, timeout=20)
    finally:
        service.stop()
        await running
        server.close()
    records = CallStore(db).calls()
    assert sorted(r.caller_number for r in records) == sorted(e["caller_number"] for e in lab_expected)
    outcomes = {r.caller_number: r.outcome for r in records}
    assert outcomes == {e["caller_number"]: e["outcome"] for e in lab_expected}
    assert service.client.sessions == 1  # no reconnect was needed: nothing broke the session
