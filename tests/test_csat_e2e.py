"""The `csat` signal end to end: the simulated Asterisk plays calls whose bot or dialplan sends
ratings each of the three ways (UserEvent over AMI, FastAGI over a loopback socket to the
agent's server, the real `botmeter-agi` script as a subprocess relaying a UserEvent), and the
agent records them; then `botmeter calls` shows and filters them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from botmeter.cli import main
from botmeter.demo import mismatches, record_on
from botmeter.sim import ScriptedCall, SimulatedPBX
from botmeter.sim.scenarios import SignalVia
from botmeter.tracking.record import CallRecord, Csat

#: malformed ratings, each refused wherever it comes from (the earlier 3/10 stays)
BAD = (("0", ""), ("6", ""), ("four", ""), ("4.5", ""), ("+4", ""), ("４", ""), ("4", "11"))
BAD_REASONS = [
    "csat signal: Score '0' is outside 1..5 (Scale 5)",
    "csat signal: Score '6' is outside 1..5 (Scale 5)",
    "csat signal: Score 'four' is not a whole number (ASCII digits only)",
    "csat signal: Score '4.5' is not a whole number (ASCII digits only)",
    "csat signal: Score '+4' is not a whole number (ASCII digits only)",
    "csat signal: Score '４' is not a whole number (ASCII digits only)",
    "csat signal: Scale '11' is outside 2..10",
]


def scripted(via: SignalVia) -> list[ScriptedCall]:
    """Six calls, the same whichever way they signal: the rating each should end with is in
    `EXPECTED` (by caller number)."""
    def call(number: str, outcome: str, **kw: object) -> ScriptedCall:
        return ScriptedCall(number, "测试", outcome, 1.0, 3.0, signal_via=via,  # type: ignore[arg-type]
                            start_offset=float(number[-1]), **kw)  # type: ignore[arg-type]

    return [
        call("13800000001", "handled", csat=(("4", ""),)),  # the bot asks, 5-point scale
        call("13800000002", "handled", via="sip", csat=(("3", "10"), *BAD)),
        call("13800000003", "transferred", human_seconds=4.0, survey="after_human",
             csat=(("5", "5"), ("2", "5"))),  # Queue(support,c): last one wins
        call("13800000004", "transferred", human_seconds=4.0, handoff="dial", via="sip",
             survey="after_human", csat=(("8", "10"),)),  # Dial(...,g), 10-point scale
        call("13800000005", "handled", survey="caller_gone", csat=(("1", ""),)),
        call("13800000006", "handled"),  # no rating
    ]


EXPECTED = {"13800000001": Csat(4, 5), "13800000002": Csat(3, 10), "13800000003": Csat(2, 5),
            "13800000004": Csat(8, 10), "13800000005": Csat(1, 5), "13800000006": None}


async def _record(calls: list[ScriptedCall], db: Path) -> tuple[list[CallRecord], list[dict],
                                                                SimulatedPBX]:
    """`demo.record_scripted_calls`, keeping the agent's log and the PBX's counters."""
    secret = secrets.token_hex(8)
    with capture_logs() as logs:
        async with SimulatedPBX(speed=20, secret=secret) as pbx:
            records = await record_on(pbx, secret, calls, db, timeout=90, settle=10.0)
    return records, logs, pbx


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """The calls recorded once per style, with the agent's log and the PBX."""
    found = {}
    for via in ("userevent", "fastagi", "agi"):
        db = tmp_path_factory.mktemp(via) / "calls.db"
        calls = scripted(via)  # type: ignore[arg-type]
        handler = _Kept()
        sim_log = logging.getLogger("botmeter.sim")
        sim_log.addHandler(handler)
        previous = sim_log.level
        sim_log.setLevel(logging.DEBUG)
        try:
            records, logs, pbx = asyncio.run(_record(calls, db))
        finally:
            sim_log.removeHandler(handler)
            sim_log.setLevel(previous)
        found[via] = (calls, records, logs, pbx, handler.messages, db)
    return found


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("via", ["userevent", "fastagi", "agi"])
def test_each_way_lands_the_same_rating_on_the_record(recorded, via: str) -> None:
    calls, records, _, pbx, _, _ = recorded[via]
    by_number = {r.caller_number: r for r in records}
    assert {n: r.csat for n, r in by_number.items()} == EXPECTED
    for call in calls:  # and the rest of every record is as scripted (ratings never harm it)
        assert mismatches(call, by_number.get(call.caller_number)) == [], (via, call)
    if via != "userevent":
        # each rating, plus two usage signals per call and the two transfers' outcome
        assert pbx.agi_sessions == sum(len(c.csat) for c in calls) + 2 * len(calls) + 2


@pytest.mark.parametrize("via", ["userevent", "fastagi", "agi"])
def test_each_bad_rating_is_refused_with_one_log_line(recorded, via: str) -> None:
    _, records, logs, pbx, sim_messages, _ = recorded[via]
    ignored = [e for e in logs if e["event"] == "malformed bot signal ignored"]
    refused = [e for e in logs if e["event"] == "fastagi bad signal refused"]
    if via == "userevent":  # checked by the tracker
        assert [e["reason"] for e in ignored] == BAD_REASONS and refused == []
        sip_call = next(r for r in records if r.caller_number == "13800000002")
        assert {e["linkedid"] for e in ignored} == {sip_call.linkedid}
    elif via == "fastagi":  # checked by the FastAGI server before delivery
        assert [e["reason"] for e in refused] == BAD_REASONS and ignored == []
    else:  # checked by the script, which never runs the UserEvent
        assert ignored == [] and refused == [] and pbx.agi_failures == len(BAD)
        said = [m.removeprefix("sim AGI script stderr: botmeter-agi: ") for m in sim_messages
                if m.startswith("sim AGI script stderr: ")]
        assert said == BAD_REASONS
    assert not [e for e in logs if e["event"].startswith("bot signal")]  # none held or late


def test_the_three_ways_record_the_same_calls(recorded) -> None:
    def essence(via: str) -> dict:
        return {r.caller_number: (r.csat, r.outcome, r.modules, r.transfer_answered)
                for r in recorded[via][1]}

    assert essence("fastagi") == essence("userevent") == essence("agi")


def _listed(db: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["calls", "--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_calls_shows_the_rating_in_table_json_and_csv(recorded) -> None:
    db = recorded["userevent"][5]
    rows = {r["caller_number"]: r for r in json.loads(_listed(db, "--format", "json"))}
    assert {n: r["csat"] for n, r in rows.items()} == {
        n: None if c is None else {"score": c.score, "scale": c.scale}
        for n, c in EXPECTED.items()}
    table = _listed(db, "--format", "table")
    lines = {n: next(line for line in table.splitlines() if n in line) for n in EXPECTED}
    assert "│  4/5 │" in lines["13800000001"] and "│ 8/10 │" in lines["13800000004"]
    assert "│      │" in lines["13800000006"]
    cells = {r["caller_number"]: r["csat"]
             for r in csv.DictReader(io.StringIO(_listed(db, "--format", "csv")))}
    assert cells["13800000003"] == '{"score": 2, "scale": 5}' and cells["13800000006"] == ""
    assert {n: json.loads(c) if c else None for n, c in cells.items()} == {
        n: r["csat"] for n, r in rows.items()}


@pytest.mark.parametrize(("options", "numbers"), [
    # on the 5-point scale: 4/5 = 4, 3/10 = 1.89, 2/5 = 2, 8/10 = 4.11, 1/5 = 1
    (["--csat-min", "4"], ["01", "04"]),
    (["--csat-max", "4"], ["01", "02", "03", "05"]),
    (["--csat-min", "4", "--csat-max", "4"], ["01"]),
    (["--csat-min", "4.11"], ["04"]),
    (["--csat-min", "4.112"], []),
    (["--csat-max", "1"], ["05"]),
    (["--csat-min", "1", "--csat-max", "5"], ["01", "02", "03", "04", "05"]),  # rated only
])
def test_calls_filters_by_rating(recorded, options: list[str], numbers: list[str]) -> None:
    db = recorded["userevent"][5]
    rows = json.loads(_listed(db, "--format", "json", *options))
    assert sorted(r["caller_number"][-2:] for r in rows) == numbers
