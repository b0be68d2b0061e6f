"""The simulated PBX's own records (CEL, CDR, Master.csv), its restarts and its truth file.

The proof that the CEL and CDR models are Asterisk's: the real Asterisk 20 capture
`lab-cel.ami` goes through them and comes out as the CEL rows and CDRs that same Asterisk wrote
for the same calls (`lab-cel.cel.csv`, `lab-cel.cdr.csv`, `lab-cel.Master.csv`). Then the
simulator's own calls, derived the same way, have the shape of the lab's calls of each kind.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from botmeter.demo import demo_config
from botmeter.pbx.ami_frames import parse_frame
from botmeter.service import AgentService
from botmeter.sim import CallIds, ScriptedCall, SimulatedPBX, call_events, mixed_calls
from botmeter.sim.cdr import CDR_COLUMNS, CdrLog, CdrRow
from botmeter.sim.cel import CEL_COLUMNS, CelLog, CelRow
from botmeter.sim.channels import ChannelCache
from botmeter.sim.events import SimEvent, ids_needed, is_marker
from botmeter.sim.records import Commit, PbxRecords, SqliteTable
from botmeter.sim.scenarios import ari_calls
from botmeter.sim.truth import SIM_RULES, scripted_truth, typed_event
from botmeter.tracking.record import CallRecord
from botmeter.tracking.tracker import CallTracker

from .helpers import eventually
from .test_sim import logged_in

FIXTURES = Path(__file__).parent / "fixtures"
EPOCH = 1_800_000_000.0


def lab_events() -> Iterator[tuple[float, str, dict[str, str]]]:
    """(Timestamp, event name, headers) of every event of the real capture.

    One SIP caller's name is `??`: AMI shows it as `\\?\\?`, the snapshot (so CEL and CDR)
    holds it plain; it is read plain here."""
    for block in (FIXTURES / "lab-cel.ami").read_bytes().split(b"\r\n\r\n"):
        headers = parse_frame(block)
        if "Event" in headers:
            for key in [k for k in headers if k.endswith("CallerIDName")]:
                headers[key] = headers[key].replace("\\?", "?")
            yield float(headers.get("Timestamp", "0")), headers["Event"], headers


def derive(events: Iterator[tuple[float, str, dict[str, str]]]) -> tuple[list[CelRow],
                                                                          list[CdrRow]]:
    cache, cel, cdr = ChannelCache(), CelLog(), CdrLog()
    cel_rows: list[CelRow] = []
    cdr_rows: list[CdrRow] = []
    for stamp, name, headers in events:
        for message in cache.feed(stamp, name, headers):
            cel_rows.extend(cel.handle(message))
            cdr_rows.extend(cdr.handle(message))
    return cel_rows, cdr_rows


def fixture_rows(name: str) -> list[dict[str, str]]:
    with (FIXTURES / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def mapping_columns(conf: str) -> tuple[str, ...]:
    """The `columns =` of a cel/cdr_sqlite3_custom.conf."""
    text = (FIXTURES / conf).read_text(encoding="utf-8")
    line = re.search(r"^columns\s*=\s*(.+)$", text, re.MULTILINE)
    assert line is not None
    return tuple(c.strip() for c in line.group(1).split(","))


# ---- the models against the real Asterisk --------------------------------------------------


def test_the_tables_have_the_columns_of_the_shipped_mappings() -> None:
    assert mapping_columns("lab-cel_sqlite3_custom.conf") == CEL_COLUMNS
    assert mapping_columns("lab-cdr_sqlite3_custom.conf") == CDR_COLUMNS


def test_the_lab_capture_gives_the_cel_rows_the_lab_asterisk_wrote() -> None:
    got, _ = derive(lab_events())
    want = fixture_rows("lab-cel.cel.csv")
    assert len(got) == len(want) == 712
    # per channel, in order, every column (the interleaving of channels is the PBX's threads')
    columns = [c for c in CEL_COLUMNS if c != "eventtime"]
    ours: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    theirs: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for row in got:
        values = dict(zip(CEL_COLUMNS, row.values(), strict=True))
        ours[row.uniqueid].append(tuple(values[c] for c in columns))
    for want_row in want:
        theirs[want_row["uniqueid"]].append(tuple(want_row[c] for c in columns))
    assert ours == theirs
    # and at the times of the events behind them (the AMI event's and CEL's clocks differ by
    # the few milliseconds between two subscribers of the same message)
    ours_times: dict[str, list[float]] = defaultdict(list)
    for row in got:
        ours_times[row.uniqueid].append(row.eventtime)
    for want_row in want:
        assert abs(ours_times[want_row["uniqueid"]].pop(0) - float(want_row["eventtime"])) < 0.01


def test_the_lab_capture_gives_the_cdrs_the_lab_asterisk_wrote() -> None:
    _, got = derive(lab_events())
    want = fixture_rows("lab-cel.cdr.csv")
    assert len(got) == len(want) == 86
    for row, want_row in zip(got, want, strict=True):  # the same order too
        values = dict(zip(CDR_COLUMNS, (str(v) for v in row.values()), strict=True))
        assert values == {c: want_row[c] for c in CDR_COLUMNS}
    master = (FIXTURES / "lab-cel.Master.csv").read_text(encoding="utf-8")
    assert "".join(row.master_csv() for row in got) == master


# ---- the simulator's calls against the lab's calls of the same kind -------------------------


def channel_role(name: str, answered: set[str]) -> str:
    if name.startswith("SIP/") or (name.endswith(";1") and "@caller-sim-" in name):
        return "caller"
    if "@caller-sim-" in name:
        return "phone"
    leg = "answered" if name.split(";")[0] in answered else "other"
    return leg + name[-2:]


def shapes(rows: list[CelRow]) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Per channel role, the (eventtype, appname) sequences of its channels (LINKEDID_END
    aside: which channel ends a call last is a race in the real PBX)."""
    answered = {r.channame.split(";")[0] for r in rows if r.eventtype == "BRIDGE_ENTER"}
    by_channel: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        if row.eventtype != "LINKEDID_END":
            by_channel[row.channame].append((row.eventtype, row.appname))
    out: dict[str, set[tuple[tuple[str, str], ...]]] = defaultdict(set)
    for name, sequence in by_channel.items():
        out[channel_role(name, answered)].add(tuple(sequence))
    return dict(out)


@functools.cache
def lab_cel() -> tuple[CelRow, ...]:
    return tuple(derive(lab_events())[0])


def lab_call(caller_number: str) -> list[CelRow]:
    rows = lab_cel()
    linkedid = next(r.linkedid for r in rows if r.cidnum == caller_number)
    return [r for r in rows if r.linkedid == linkedid]


def sim_call(call: ScriptedCall) -> list[CelRow]:
    ids = CallIds(seq=0, start=EPOCH, uniqueid_base=0, local_base=0, sip_base=0,
                  bridge_id="b-0")
    events = ((EPOCH + e.offset, e.name, dict(e.headers))
              for e in call_events(call, ids) if not is_marker(e))
    rows, _ = derive(events)
    return rows


#: the lab's calls (by caller number, lab-cel.expected.json) and the scripted call of each kind
KINDS = {
    "handled": ("13942420001", ScriptedCall("139", "A", "handled", 1, 3)),
    "caller_drop": ("13942420000", ScriptedCall("139", "A", "handled", 1, 4.5,
                                                caller_hangs_up=True)),
    "quiet_handled": ("13942420011", ScriptedCall("139", "A", "handled", 1, 3, signals=False)),
    "sip_handled": ("13942420005", ScriptedCall("139", "A", "handled", 1, 5, via="sip")),
    "abandon_ring": ("13942420002", ScriptedCall("139", "A", "abandoned", 2)),
    "sip_cancel": ("13942420007", ScriptedCall("139", "A", "abandoned", 3, via="sip")),
    "bot_fail": ("13942420009", ScriptedCall("139", "A", "failed", 1, 2)),
    "quiet_fail": ("13942420004", ScriptedCall("139", "A", "failed", 1, 2, signals=False)),
    "sip_fail": ("13942420003", ScriptedCall("139", "A", "failed", 1, 5, via="sip")),
    "queue_answered": ("13942420012",
                       ScriptedCall("139", "A", "transferred", 1, 3, human_seconds=4)),
    "quiet_queue": ("13942420006", ScriptedCall("139", "A", "transferred", 1, 3,
                                                human_seconds=4, signals=False)),
    "sip_queue": ("13942420008", ScriptedCall("139", "A", "transferred", 1, 5,
                                              human_seconds=4, via="sip")),
    "dial_answered": ("13942420016", ScriptedCall("139", "A", "transferred", 1, 2,
                                                  human_seconds=3, handoff="dial")),
    "queue_timeout": ("13942420010", ScriptedCall("139", "A", "transferred", 1, 2)),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_simulated_call_has_the_cel_of_the_lab_call_of_its_kind(kind: str) -> None:
    number, scripted = KINDS[kind]
    lab, ours = shapes(lab_call(number)), shapes(sim_call(scripted))
    assert ours.keys() == lab.keys()
    for role in lab:
        if role == "other;2":
            # the lab's queue members answer at once (Answer() first, or Wait(60)); the
            # simulator's ring until the call is taken or given up: same start, same end
            assert {(s[0], s[-2:]) for s in ours[role]} == {(s[0], s[-2:]) for s in lab[role]}
        else:
            assert ours[role] == lab[role], role
    rows = sim_call(scripted)
    assert [r.eventtype for r in rows].count("LINKEDID_END") == 1
    assert rows[-1].eventtype == "LINKEDID_END" and rows[0].eventtype == "CHAN_START"


def test_consecutive_user_events_are_one_app_start_with_the_first_data_and_one_app_end() -> None:
    rows = sim_call(KINDS["handled"][1])
    user = [(r.eventtype, r.appdata) for r in rows if r.appname == "UserEvent"]
    assert user == [
        ("APP_START", "BotMeter,Signal: usage,Module: asr,Quantity: 3,Unit: seconds"),
        ("APP_END", "BotMeter,Signal: usage,Module: nlu,Quantity: 2,Unit: requests"),
    ]


# ---- the simulator writing its records ------------------------------------------------------


def table(path: Path, name: str) -> list[dict[str, object]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(f"SELECT * FROM {name} ORDER BY AcctId")]
    finally:
        db.close()


def truth_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {name: tmp_path / name for name in ("cel.db", "cdr.db", "Master.csv", "truth.jsonl")}


def recording_pbx(files: dict[str, Path], speed: float = 400) -> SimulatedPBX:
    return SimulatedPBX(speed=speed, epoch=EPOCH, cel_db=files["cel.db"],
                        cdr_db=files["cdr.db"], cdr_csv=files["Master.csv"],
                        truth=files["truth.jsonl"])


async def test_every_scripted_call_has_its_cel_cdrs_and_truth(files: dict[str, Path]) -> None:
    calls = mixed_calls(16) + ari_calls(8) + [
        ScriptedCall("13600000001", "Agi", "handled", 1, 3, signal_via="agi"),
        ScriptedCall("13600000002", "Agi", "transferred", 1, 2, human_seconds=3,
                     signal_via="agi"),
    ]
    async with recording_pbx(files) as pbx:
        await pbx.play(calls)
    truth = truth_lines(files["truth.jsonl"])
    assert len(truth) == len(calls) and not any(line["cut"] for line in truth)
    by_number = {line["caller_number"]: line for line in truth}
    for call in calls:  # what the script says, from the moment each call was offered
        line = by_number[call.caller_number]
        offered = parse_iso(str(line["offered_at"]))
        assert line == json.loads(json.dumps(scripted_truth(call, str(line["call_id"]),
                                                            offered)))
    cel = table(files["cel.db"], "cel")
    assert list(cel[0]) == ["AcctId", *CEL_COLUMNS]
    assert [row["AcctId"] for row in cel] == list(range(1, len(cel) + 1))
    assert all(re.fullmatch(r"\d{10}\.\d{6}", str(row["eventtime"])) for row in cel)
    ends = Counter(row["linkedid"] for row in cel if row["eventtype"] == "LINKEDID_END")
    starts = {row["linkedid"] for row in cel if row["eventtype"] == "CHAN_START"}
    assert set(ends) == starts and set(ends.values()) == {1}  # every call, ended once
    cdr = table(files["cdr.db"], "cdr")
    assert list(cdr[0]) == ["AcctId", *CDR_COLUMNS]
    for line in truth:
        call_id = line["call_id"]
        assert call_id in ends
        mine = [row for row in cdr if row["linkedid"] == call_id]
        assert mine and all(row["uniqueid"] for row in mine)
        caller = [row for row in mine if row["uniqueid"] == call_id]
        assert caller and caller[0]["calldate"] == line["offered_at"][:19].replace("T", " ")
    master = files["Master.csv"].read_text(encoding="utf-8").splitlines()
    assert len(master) == len(cdr)
    # a signal sent by the classic AGI script: CEL shows the AGI step and the UserEvent it ran
    agi_call = by_number["13600000001"]["call_id"]
    apps = [(r["eventtype"], r["appname"]) for r in cel
            if r["linkedid"] == agi_call and r["appname"] in ("AGI", "UserEvent")]
    assert apps.count(("APP_START", "AGI")) == 2 and ("APP_START", "UserEvent") in apps


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("commit", ["row", "step"])
def test_a_locked_cel_table_loses_rows_and_never_fails_the_pbx(tmp_path: Path,
                                                                commit: Commit) -> None:
    path = tmp_path / "cel.db"
    writer = SqliteTable(path, "cel", CEL_COLUMNS, commit, busy_timeout=0.05)
    reader = sqlite3.connect(path, isolation_level=None)
    row = ("CHAN_START", "1.000000", *[""] * (len(CEL_COLUMNS) - 2))
    reader.execute("BEGIN EXCLUSIVE")  # a reader holding the file past the busy timeout
    writer.write(row)
    writer.flush()
    assert writer.lost_rows == 1  # as with Asterisk, the row is lost (and logged)
    reader.execute("COMMIT")
    writer.write(row)
    writer.flush()
    assert reader.execute("SELECT count(*) FROM cel").fetchone() == (1,)
    assert writer.lost_rows == 1
    writer.close()
    reader.close()


# ---- restarts ----------------------------------------------------------------------------


async def test_a_restart_cuts_the_calls_in_progress_like_core_restart_now(
        files: dict[str, Path]) -> None:
    calls = mixed_calls(30)
    async with recording_pbx(files, speed=40) as pbx:
        ami = await logged_in(pbx)
        play = asyncio.create_task(pbx.play(calls))
        await eventually(lambda: len(pbx.records.live() if pbx.records else ()) >= 6, 10)
        before = {row["uniqueid"] for row in table(files["cel.db"], "cel")}
        restart = asyncio.create_task(pbx.restart(0.3))
        shutdown = await read_until(ami, "Shutdown")
        assert (shutdown["Shutdown"], shutdown["Restart"]) == ("Cleanly", "True")
        assert await ami.read() is None  # and the connection is closed
        await eventually(lambda: pbx.down)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", pbx.port)
        await restart
        again = await logged_in(pbx)  # listening again, on the same port
        await again.close()
        await play
        missed, placed = pbx.calls_missed, pbx.calls_placed
    cel = table(files["cel.db"], "cel")
    cut = [row for row in cel if row["eventtype"] == "HANGUP"
           and json.loads(str(row["eventextra"]))["hangupcause"] == 0
           and row["uniqueid"] in before]
    assert cut, "the channels up at the restart are hung up in CEL"
    truth = truth_lines(files["truth.jsonl"])
    assert len(truth) == placed == len(calls) - missed
    cut_calls = [line for line in truth if line["cut"]]
    assert cut_calls and all(line["hangup_cause"] == 0 for line in cut_calls)
    ends = Counter(row["linkedid"] for row in cel if row["eventtype"] == "LINKEDID_END")
    cdr_calls = {row["linkedid"] for row in table(files["cdr.db"], "cdr")}
    for line in cut_calls:
        assert ends[line["call_id"]] == 1 and line["call_id"] in cdr_calls
    uniqueids = [row["uniqueid"] for row in cel if row["eventtype"] == "CHAN_START"]
    assert len(uniqueids) == len(set(uniqueids)) > len(before)
    after = [u for u in uniqueids if u not in before]
    assert after and min(int(str(u).split(".")[1]) for u in after) == 0  # sequence from 0


async def read_until(ami: object, name: str) -> dict[str, str]:
    while True:
        message = await ami.read()  # type: ignore[attr-defined]
        assert message is not None, f"closed before {name}"
        if message.get("Event") == name:
            return message


async def test_a_restart_can_show_the_hangups_on_ami_first(files: dict[str, Path]) -> None:
    async with recording_pbx(files, speed=40) as pbx:
        ami = await logged_in(pbx)
        play = asyncio.create_task(pbx.play(mixed_calls(6)))
        await eventually(lambda: len(pbx.records.live() if pbx.records else ()) >= 2, 10)
        live = {s.uniqueid for s in pbx.records.live()} if pbx.records else set()
        restart = asyncio.create_task(pbx.restart(0.0, hangups_on_ami=True))
        seen: set[str] = set()
        while True:
            message = await ami.read()
            assert message is not None
            if message.get("Event") == "Hangup":
                seen.add(message["Uniqueid"])
            if message.get("Event") == "Shutdown":
                break
        assert live <= seen
        await restart
        await play


async def test_an_agent_that_sees_every_event_of_a_restart_records_the_truth(
        files: dict[str, Path]) -> None:
    """With the restart's hangups on AMI the agent misses nothing, so its records are the
    truth file, cut calls included: the truth of a cut call is what the tracker makes of it."""
    before, after = mixed_calls(12, seed=5), mixed_calls(12, seed=6)
    pbx = recording_pbx(files, speed=40)
    db = files["cel.db"].with_name("agent.db")
    saved: dict[str, CallRecord] = {}
    async with pbx:
        service = AgentService(demo_config(pbx.port, pbx.secret, db), store_path=db,
                               clock=pbx.now,
                               on_saved=lambda records: saved.update(
                                   (r.call_id, r) for r in records))
        running = asyncio.create_task(service.run())
        try:
            connected = service.client.connected
            await asyncio.wait_for(connected.wait(), 10)
            play = asyncio.create_task(pbx.play(before, rate=4))
            await eventually(lambda: pbx.calls_placed == len(before), 10)
            await pbx.restart(0.2, hangups_on_ami=True)
            await play
            await asyncio.wait_for(connected.wait(), 10)  # back before more calls come
            await pbx.play(after)
            truth = truth_lines(files["truth.jsonl"])
            await eventually(lambda: len(saved) >= len(truth), 20)
        finally:
            service.stop()
            await running
    assert any(line["cut"] for line in truth)
    assert len(truth) == pbx.calls_placed == len(before) + len(after)
    assert set(saved) == {line["call_id"] for line in truth}
    for line in truth:
        got = saved[str(line["call_id"])].to_json()
        for key in ("outcome", "transfer_answered", "hangup_cause", "dialed_number"):
            assert got[key] == line[key], (key, line)
        for key in ("ring_seconds", "bot_seconds", "human_seconds", "total_seconds"):
            want = line[key]
            assert (got[key] is None) == (want is None), (key, line)
            assert want is None or abs(got[key] - float(want)) < 0.01, (key, line)
        assert {m: float(u["quantity"]) for m, u in got["modules"].items()} == {
            m: float(u["quantity"]) for m, u in line["modules"].items()}


# ---- the recovery's CEL reader, when it is there ----------------------------------------------


def timeline(calls: list[ScriptedCall], gap: float = 2.0) -> list[tuple[float, SimEvent]]:
    """The events of `calls` started `gap` seconds apart, merged in time order (as play())."""
    merged: list[tuple[float, int, int, SimEvent]] = []
    bases = [0, 0, 0]
    for seq, call in enumerate(calls):
        ids = CallIds(seq=seq, start=EPOCH + seq * gap, uniqueid_base=bases[0],
                      local_base=bases[1], sip_base=bases[2], bridge_id=f"bridge-{seq}")
        bases = [b + n for b, n in zip(bases, ids_needed(call), strict=True)]
        events = call_events(call, ids, agi_url="agi://127.0.0.1:4573")
        merged.extend((ids.start + e.offset, seq, n, e) for n, e in enumerate(events))
    return [(stamp, event) for stamp, _, _, event in sorted(merged, key=lambda m: m[:3])]


def test_the_simulators_cel_alone_gives_the_records_of_its_ami(tmp_path: Path) -> None:
    cel_module = pytest.importorskip("botmeter.recovery.cel")
    source = pytest.importorskip("botmeter.recovery.cel_source")
    rebuild = pytest.importorskip("botmeter.recovery.rebuild").rebuild
    # a dialplan bot's calls; not a rating sent after the caller's hangup with no dialplan
    # step (AMI shows it late, CEL has no row for it), nor an ARI bot's (its user events and
    # hold music are not CEL events)
    calls = [call for call in mixed_calls(24) + mixed_calls(8, seed=3, signal_via="fastagi")
             if call.survey != "caller_gone"]
    calls.append(ScriptedCall("13600000003", "Drop", "handled", 1, 4, caller_hangs_up=True))
    events = timeline(calls)
    records = PbxRecords(cel_db=tmp_path / "cel.db")
    tracker = CallTracker(SIM_RULES)
    from_ami: dict[str, dict[str, object]] = {}
    for stamp, event in events:
        if not is_marker(event):
            records.event(stamp, event.name, dict(event.headers))
        typed = typed_event(stamp, event)
        for record in tracker.feed(typed) if typed is not None else ():
            from_ami[record.call_id] = record.to_json()
    records.close()
    with source.open_cel(tmp_path / "cel.db") as cel:
        rebuilt, _ = rebuild(cel_module.cel_events(cel.rows(0.0)), SIM_RULES, source="cel")
    from_cel = {record.call_id: record.to_json() for record in rebuilt}
    assert len(from_ami) == len(calls)
    assert from_cel.keys() == from_ami.keys()
    for call_id, want in from_ami.items():
        got = from_cel[call_id]
        assert got["source"] == "cel"
        assert {k: v for k, v in got.items() if k != "source"} == {
            k: v for k, v in want.items() if k != "source"}, call_id
