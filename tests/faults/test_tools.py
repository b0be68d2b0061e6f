"""The fault harness's own parts: the judge, the money reference and the cutting proxy."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from botmeter.rating import PlanBook
from botmeter.tracking.record import CallRecord, Csat, ModuleUsage

from ..helpers import eventually
from .judge import judge
from .money import statement_total, truth_record
from .proxy import CuttingProxy
from .site import PLANS_DIR

T0 = 1_795_000_000.0  # 2026-11-18, in a month both example plans rate


def line(call_id: str, outcome: str = "handled", bot: float | None = 10.0) -> dict:
    return {"call_id": call_id, "outcome": outcome, "bot_seconds": bot}


def test_the_judge_counts_missing_extra_and_wrong_calls() -> None:
    truth = [line("a"), line("b"), line("c", "transferred"), line("d", bot=20.0)]
    records = [line("a"), line("c", "abandoned"), line("d", bot=20.36), line("x"),
               {**line("e", bot=31.0), "source": "cdr"}]
    verdict = judge([*truth, line("e", bot=30.1)], records)
    assert verdict.missing == ("b",)
    assert verdict.extra == ("x",)
    assert verdict.wrong_outcome == ("c: recorded abandoned, truth transferred",)
    assert [p.split(":")[0] for p in verdict.bot_off] == ["d"]  # 0.36 s; CDR's e: within 1 s
    assert verdict.max_bot_delta == 0.9 and not verdict.ok
    assert verdict.scripted == 5 and verdict.recorded == 5


def test_the_judge_counts_a_call_recorded_twice() -> None:
    verdict = judge([line("a")], [line("a"), line("a")])
    assert verdict.duplicates == ("a",) and not verdict.ok
    assert judge([line("a", bot=None)], [line("a", bot=None)]).ok


def record(call_id: str, outcome: str, ring: float, bot: float | None,
           human: float | None, total: float) -> CallRecord:
    answered = None if bot is None else T0 + ring
    return CallRecord(
        call_id=call_id, linkedid=call_id, caller_number="139", caller_name="n",
        dialed_number="4000", offered_at=T0, bot_answered_at=answered,
        bot_ended_at=None if answered is None or bot is None else answered + bot,
        transferred_at=None if outcome != "transferred" or answered is None or bot is None
        else answered + bot,
        human_answered_at=None if human is None else T0 + total - human, ended_at=T0 + total,
        outcome=outcome, transfer_target=None, hangup_cause=16,  # type: ignore[arg-type]
        modules={"asr": ModuleUsage(Decimal("12.5"), "seconds")}, csat=Csat(4, 5))


def test_a_truth_line_rates_as_the_record_it_describes() -> None:
    calls = [record("h", "handled", 1.5, 61.2, None, 62.7),
             record("t", "transferred", 0.5, 20.0, 30.0, 56.5),
             record("a", "abandoned", 2.0, None, None, 2.0)]
    lines = []
    for call in calls:
        got = call.to_json()
        lines.append({**got, "modules": {"asr": {"quantity": 12.5, "unit": "seconds"}}})
    rebuilt = [truth_record(line) for line in lines]
    assert [(c.bot_seconds, c.ring_seconds, c.human_seconds, c.total_seconds) for c in rebuilt] \
        == [(c.bot_seconds, c.ring_seconds, c.human_seconds, c.total_seconds) for c in calls]
    book = PlanBook.load(PLANS_DIR)
    for plan in ("per-minute", "combined"):
        series = book.series(plan)
        assert statement_total(series, rebuilt) == statement_total(series, calls) > 0


async def test_the_proxy_forwards_and_cuts_both_ends() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = CuttingProxy(upstream.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        await eventually(lambda: proxy.open_links == 1)
        assert proxy.cut() == 1
        assert await reader.read(100) == b""  # the client's end is gone ...
        again_reader, again_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        again_writer.write(b"pong")  # ... and a new connection goes through
        assert await again_reader.readexactly(4) == b"pong"
        again_writer.close()
        writer.close()
    finally:
        await proxy.close()
        upstream.close()


async def test_the_proxy_closes_a_connection_the_upstream_refuses() -> None:
    with_nothing_behind = CuttingProxy(1)  # port 1: nobody listens
    await with_nothing_behind.start()
    try:
        reader, _ = await asyncio.open_connection("127.0.0.1", with_nothing_behind.port)
        assert await reader.read(100) == b""
        assert with_nothing_behind.connections == 0
    finally:
        await with_nothing_behind.close()
