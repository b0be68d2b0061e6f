"""CEL as a source: rows to the tracker's typed events, the lab's CEL alone giving the records of
its AMI capture, and Asterisk's CEL files (SQLite and CSV) read by column name."""

from __future__ import annotations

import csv
import math
import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from botmeter.pbx.events import (
    BotSignal,
    BridgeEntered,
    BridgeLeft,
    CallerIdChanged,
    ChannelCreated,
    ChannelHungUp,
    DestAnswered,
    DialplanStep,
    DialStarted,
    QueueJoined,
    TransferStarted,
)
from botmeter.recovery.cel import CelRow, CelTranslator, cel_events
from botmeter.recovery.cel_source import MASTER_CSV_COLUMNS, CelFormatError, open_cel
from botmeter.recovery.rebuild import rebuild
from botmeter.recovery.tables import SourceUnavailable

from .recovery_support import (
    LAB_CEL_CSV,
    LAB_RULES,
    ami_records,
    lab_expected,
    lab_master_db,
    read_csv,
    write_table,
)

T = 1795781734.802754
CALLER = "SIP/trunk-00000001"


def row(eventtype: str, **fields: object) -> CelRow:
    values: dict[str, object] = {"ts": T, "eventtype": eventtype, "uniqueid": "100.1",
                                 "linkedid": "100.1", "channel": CALLER, "where": "row 1"}
    values.update(fields)
    return CelRow(**values)  # type: ignore[arg-type]


def translated(*rows: CelRow) -> tuple[list[object], list[tuple[str, str]]]:
    bad: list[tuple[str, str]] = []
    translator = CelTranslator(lambda where, reason: bad.append((where, reason)))
    return [ev for r in rows for ev in translator.feed(r)], bad


# -- one row type at a time --------------------------------------------------------------------


def test_chan_start_is_a_new_channel_with_its_caller_id() -> None:
    events, bad = translated(row("CHAN_START", context="from-pstn", exten="4400",
                                 cid_num="13900000001", cid_name="<unknown>"))
    assert events == [ChannelCreated(round(T, 3), "100.1", "100.1", CALLER, "from-pstn", "4400",
                                     "13900000001", "")]
    assert bad == []


def test_a_changed_caller_id_comes_before_the_rows_event() -> None:
    events, _ = translated(
        row("CHAN_START"),  # a Local channel: no caller id yet
        row("ANSWER", appname="AppDial2", cid_num="139", cid_name="王五"),
        row("APP_START", appname="Wait", appdata="1", cid_num="139", cid_name="王五"),
    )
    assert [type(e) for e in events] == [ChannelCreated, CallerIdChanged, DestAnswered,
                                         DialplanStep]
    assert events[1] == CallerIdChanged(round(T, 3), "100.1", "100.1", "139", "王五")


def test_app_start_is_a_dialplan_step_and_queue_a_queue_join() -> None:
    events, _ = translated(row("APP_START", context="from-pstn", exten="4000", appname="Queue",
                               appdata="support,,,,30"))
    assert events == [
        DialplanStep(round(T, 3), "100.1", "100.1", CALLER, "from-pstn", "4000", "Queue",
                     "support,,,,30"),
        QueueJoined(round(T, 3), "100.1", "100.1", "support"),
    ]


def test_a_leg_started_by_dial_is_a_dial_start_until_the_dial_ends() -> None:
    leg = "Local/agent1@human-agents-00000024"
    events, _ = translated(
        row("APP_START", appname="Dial", appdata="Local/agent1@human-agents/n,20"),
        row("CHAN_START", uniqueid="100.2", channel=leg + ";1"),
        row("CHAN_START", uniqueid="100.3", channel=leg + ";2"),  # the Local channel's far end
        row("APP_END", appname="Dial", appdata="Local/agent1@human-agents/n,20"),
        row("CHAN_START", uniqueid="100.4", channel="PJSIP/other-00000002"),
    )
    dials = [e for e in events if isinstance(e, DialStarted)]
    assert dials == [DialStarted(round(T, 3), "100.1", "100.1", leg + ";1", "100.2")]


def test_a_botmeter_user_event_is_a_signal_read_as_over_ami() -> None:
    events, _ = translated(row("APP_START", appname="UserEvent",
                               appdata="BotMeter,Signal: usage,Module: asr,Quantity: 12,"
                                       "Unit: seconds"))
    signal = events[-1]
    assert signal == BotSignal(round(T, 3), "100.1", "100.1", "usage",
                               {"Module": "asr", "Quantity": "12", "Unit": "seconds"}, via="cel")


def test_user_event_arguments_split_as_asterisk_splits_them() -> None:
    events, _ = translated(row("APP_START", appname="UserEvent",
                               appdata='BotMeter,Signal: outcome,Outcome: failed,'
                                       'Reason: "nlu, timeout",Target: a\\,b (x,y)'))
    assert events[-1].fields == {"Outcome": "failed", "Reason": "nlu, timeout",  # type: ignore[attr-defined]
                                 "Target": "a,b (x,y)"}


def test_other_user_events_and_applications_are_no_signal() -> None:
    events, _ = translated(row("APP_START", appname="UserEvent", appdata="Other,Signal: usage"),
                           row("APP_START", appname="AGI", appdata="botmeter-agi,usage,module=asr"),
                           row("APP_START", appname="AGI", appdata="agi://10.0.0.5/bot"))
    assert not any(isinstance(e, BotSignal) for e in events)


def test_consecutive_user_events_the_app_end_carries_the_last_one() -> None:
    """CEL compares only application names: UserEvent(asr) then UserEvent(nlu) is one
    APP_START with asr's data and one APP_END with nlu's."""
    asr = "BotMeter,Signal: usage,Module: asr,Quantity: 2,Unit: seconds"
    nlu = "BotMeter,Signal: usage,Module: nlu,Quantity: 2,Unit: requests"
    events, _ = translated(row("APP_START", appname="UserEvent", appdata=asr),
                           row("APP_END", appname="UserEvent", appdata=nlu),
                           row("APP_START", appname="UserEvent", appdata=asr),
                           row("APP_END", appname="UserEvent", appdata=asr))
    modules = [e.fields["Module"] for e in events if isinstance(e, BotSignal)]
    assert modules == ["asr", "nlu", "asr"]


def test_fastagi_requests_in_cel_are_signals() -> None:
    events, bad = translated(
        row("APP_START", appname="AGI",
            appdata="agi://127.0.0.1:4573/botmeter/usage?module=asr&quantity=12,unit=seconds"),
        row("APP_END", appname="AGI",
            appdata="agi://127.0.0.1:4573/botmeter/outcome?outcome=transferred&target=sales"),
        row("APP_START", appname="AGI", appdata="agi://127.0.0.1:4573/botmeter/a/b"),
    )
    signals = [e for e in events if isinstance(e, BotSignal)]
    assert [(s.signal, dict(s.fields), s.via) for s in signals] == [
        ("usage", {"Module": "asr", "Quantity": "12", "Unit": "seconds"}, "cel"),
        ("outcome", {"Outcome": "transferred", "Target": "sales"}, "cel")]
    assert len(bad) == 1 and "FastAGI signal not understood" in bad[0][1]


@pytest.mark.parametrize("eventtype", ["BotMeter", "USER_DEFINED"])
def test_celgenuserevent_botmeter_is_a_signal(eventtype: str) -> None:
    """`${eventtype}` is the user event's name; a mapping of `${eventenum}` says USER_DEFINED."""
    events, _ = translated(row(eventtype, userdeftype="BotMeter",
                               eventextra='{"extra":"Signal: csat,Score: 4,Scale: 5"}'))
    assert events == [BotSignal(round(T, 3), "100.1", "100.1", "csat",
                                {"Score": "4", "Scale": "5"}, via="cel")]


def test_the_answer_of_a_dialled_leg_or_queue_member_is_the_persons() -> None:
    events, _ = translated(row("ANSWER", appname="AppQueue", channel="Local/desk1@h-0f;1"),
                           row("ANSWER", appname="Answer", uniqueid="100.2"))
    assert events == [DestAnswered(round(T, 3), "100.1", "Local/desk1@h-0f;1")]


def test_bridges_hangups_and_transfers_read_eventextra() -> None:
    events, bad = translated(
        row("BRIDGE_ENTER", eventextra='{"bridge_id":"b-1","bridge_technology":"simple_bridge"}'),
        row("BRIDGE_EXIT", eventextra='{"bridge_id":"b-1","bridge_technology":"simple_bridge"}'),
        row("BLINDTRANSFER", eventextra='{"extension":"2000","context":"internal",'
                                        '"bridge_id":"b-1"}'),
        row("ATTENDEDTRANSFER", eventextra='{"bridge1_id":"b-1","channel2_name":"PJSIP/x-1",'
                                           '"transfer_target_channel_name":"PJSIP/y-2"}'),
        row("HANGUP", eventextra='{"hangupcause":41,"hangupsource":"","dialstatus":""}'),
    )
    ts = round(T, 3)
    assert events == [BridgeEntered(ts, "100.1", "100.1", CALLER, "b-1"),
                      BridgeLeft(ts, "100.1", "100.1", CALLER, "b-1"),
                      TransferStarted(ts, "100.1", "100.1", "2000"),
                      TransferStarted(ts, "100.1", "100.1", "PJSIP/y-2"),
                      ChannelHungUp(ts, "100.1", "100.1", CALLER, 41)]
    assert bad == []


def test_bad_values_are_reported_and_skipped_never_raised() -> None:
    events, bad = translated(
        row("BRIDGE_ENTER", eventextra="{not json", where="row 7"),
        row("HANGUP", eventextra='{"hangupcause": 99999}', where="row 8"),
        row("HANGUP", uniqueid="100.2", eventextra="[1]", where="row 9"),
        row("APP_START", ts=math.nan, appname="Wait", where="row 10"),
        row("APP_START", ts=1e20, appname="Wait", where="row 11"),
        row("APP_START", uniqueid="", appname="Wait", where="row 12"),
        row("BotMeter", userdeftype="BotMeter", eventextra='{"other": 1}', where="row 13"),
        row("LINKEDID_END"), row("CHAN_END"), row("SOMETHING_NEW"),
    )
    # the hangups still end their channels: the cause is what is unknown
    assert events == [ChannelHungUp(round(T, 3), "100.1", "100.1", CALLER, None),
                      ChannelHungUp(round(T, 3), "100.2", "100.1", CALLER, None)]
    assert [where for where, _ in bad] == [f"row {n}" for n in range(7, 14)]
    assert "eventextra is not a JSON object" in bad[0][1]
    assert "hangupcause 99999" in bad[1][1]
    assert "2000..2100" in bad[3][1] and "2000..2100" in bad[4][1]
    assert "uniqueid" in bad[5][1]


def test_memory_is_bounded_by_channels_remembered() -> None:
    translator = CelTranslator(max_channels=100)
    for n in range(1000):
        translator.feed(row("APP_START", uniqueid=f"1.{n}", appname="Dial", linkedid=f"1.{n}",
                            cid_num=str(n)))
    assert len(translator._channels) == 100 and len(translator._dialling) == 100


# -- the lab's CEL alone gives its AMI capture's records ----------------------------------------


def _lab_rows() -> list[CelRow]:
    with open_cel(LAB_CEL_CSV) as source:
        return list(source.rows(0.0))


def test_lab_cel_alone_gives_the_18_expected_records_with_the_ami_call_ids() -> None:
    records, tracker = rebuild(cel_events(_lab_rows()), LAB_RULES, source="cel")
    assert tracker.active_calls == 0 and tracker.dropped_signals == 0
    ami = ami_records()
    assert len(records) == 18 and {r.call_id for r in records} == set(ami)
    by_number = {r.caller_number: r for r in records}
    for expected in lab_expected():
        record = by_number[expected["caller_number"]]
        who = expected["caller_number"]
        assert record.source == "cel"
        assert record.call_id == record.linkedid == ami[record.call_id].call_id
        assert record.caller_number == ami[record.call_id].caller_number == who
        assert record.outcome == expected["outcome"], who
        assert record.transfer_answered == expected["transfer_answered"], who
        for key, tolerance in (("bot_seconds", 0.35), ("human_seconds", 0.6)):
            value = getattr(record, key)
            if expected[key] is None:
                assert value is None, (who, key)
            else:
                assert value == pytest.approx(expected[key], abs=tolerance), (who, key)
        assert {m: int(u.quantity) for m, u in record.modules.items()} == expected["modules"]
        # the SIP test client sends ASCII names only: 王五 arrived as "??"
        name = expected["caller_name"] if expected["via"] == "local" or expected[
            "caller_name"].isascii() else "??"
        assert record.caller_name == name, who


def test_lab_cel_records_match_the_ami_records_moment_by_moment() -> None:
    records, _ = rebuild(cel_events(_lab_rows()), LAB_RULES, source="cel")
    ami = ami_records()
    for record in records:
        other = ami[record.call_id]
        for moment in ("offered_at", "bot_answered_at", "bot_ended_at", "transferred_at",
                       "human_answered_at", "ended_at"):
            mine, theirs = getattr(record, moment), getattr(other, moment)
            assert (mine is None) == (theirs is None), (record.caller_number, moment)
            if mine is not None:
                assert mine == pytest.approx(theirs, abs=0.05), (record.caller_number, moment)
        assert (record.transfer_target, record.hangup_cause) == (other.transfer_target,
                                                                 other.hangup_cause)


# -- the files -----------------------------------------------------------------------------------


def test_sqlite_and_csv_files_give_the_same_rows(tmp_path: Path) -> None:
    db = lab_master_db(tmp_path)
    with open_cel(db) as sqlite_source, open_cel(LAB_CEL_CSV) as csv_source:
        assert (sqlite_source.kind, csv_source.kind) == ("sqlite", "csv")
        from_db, from_csv = list(sqlite_source.rows(0.0)), list(csv_source.rows(0.0))
    strip = [r.__class__(**{**_fields(r), "where": ""}) for r in from_db]
    assert strip == [r.__class__(**{**_fields(r), "where": ""}) for r in from_csv]
    assert len(from_db) == 712 and from_db[0].where == f"{db} row 1"


def _fields(r: CelRow) -> dict[str, object]:
    return {name: getattr(r, name) for name in CelRow.__dataclass_fields__}


def test_a_headerless_master_csv_in_the_sample_mapping_reads_the_same(tmp_path: Path) -> None:
    header, rows = read_csv(LAB_CEL_CSV)
    index = {name: i for i, name in enumerate(header)}
    master = tmp_path / "Master.csv"
    with master.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, quoting=csv.QUOTE_ALL)
        for values in rows:
            writer.writerow([values[index[c]] if c in index else "" for c in MASTER_CSV_COLUMNS])
    with open_cel(master) as source:
        records, _ = rebuild(cel_events(source.rows(0.0)), LAB_RULES, source="cel")
    with open_cel(LAB_CEL_CSV) as source:
        reference, _ = rebuild(cel_events(source.rows(0.0)), LAB_RULES, source="cel")
    assert records == reference and len(records) == 18


@pytest.mark.parametrize("kind", ["sqlite", "csv"])
def test_a_missing_required_column_names_the_file_and_the_column(tmp_path: Path,
                                                                 kind: str) -> None:
    header, rows = read_csv(LAB_CEL_CSV)
    keep = [i for i, name in enumerate(header) if name != "linkedid"]
    header = [header[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    if kind == "sqlite":
        path = write_table(tmp_path / "master.db", "cel", header, rows)
    else:
        path = tmp_path / "cel.csv"
        with path.open("w", encoding="utf-8", newline="") as file:
            csv.writer(file).writerows([header, *rows])
    with pytest.raises(CelFormatError) as failure:
        open_cel(path)
    assert str(path) in str(failure.value) and "'linkedid'" in str(failure.value)


def test_files_that_are_not_cel_say_why(tmp_path: Path) -> None:
    db = lab_master_db(tmp_path)
    with pytest.raises(CelFormatError, match=r"has no table 'calls' \(its tables: cdr, cel\)"):
        open_cel(db, table="calls")
    other = tmp_path / "notes.csv"
    other.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    with pytest.raises(CelFormatError, match="no header line, and 3 fields"):
        open_cel(other)
    with pytest.raises(SourceUnavailable, match="no such file"):
        open_cel(tmp_path / "missing.db")


def test_files_asterisk_has_written_nothing_into_yet_have_no_rows(tmp_path: Path) -> None:
    empty_csv = tmp_path / "Master.csv"
    empty_csv.write_bytes(b"")
    header, _ = read_csv(LAB_CEL_CSV)
    empty_db = write_table(tmp_path / "master.db", "cel", header, [])
    for path in (empty_csv, empty_db):
        with open_cel(path) as source:
            assert list(source.rows(0.0)) == [] and source.latest_time() is None


def _with_times(tmp_path: Path, render) -> Path:  # type: ignore[no-untyped-def]
    header, rows = read_csv(LAB_CEL_CSV)
    at = header.index("eventtime")
    for values in rows:
        values[at] = render(float(values[at]))
    return write_table(tmp_path / "text.db", "cel", header, rows)


def test_text_eventtimes_as_dateformat_writes_them(tmp_path: Path) -> None:
    """`dateformat = %F %T` (whole seconds) in the PBX's local time, or with an offset."""
    shanghai = timezone(timedelta(hours=8))
    local = _with_times(tmp_path, lambda t: datetime.fromtimestamp(t, shanghai).strftime(
        "%Y-%m-%d %H:%M:%S.%f"))
    with open_cel(local, tz=shanghai) as source, open_cel(LAB_CEL_CSV) as epoch:
        assert [r.ts for r in source.rows(0.0)] == pytest.approx([r.ts for r in epoch.rows(0.0)],
                                                                  abs=1e-6)
    offset = tmp_path / "offset"
    offset.mkdir()
    whole = _with_times(offset, lambda t: datetime.fromtimestamp(t, UTC).strftime(
        "%Y-%m-%d %H:%M:%S+00:00"))
    with open_cel(whole) as source:
        rows = list(source.rows(0.0))
    assert len(rows) == 712 and all(r.ts == int(r.ts) for r in rows)


def test_rows_whose_time_cannot_be_read_are_reported_and_skipped(tmp_path: Path) -> None:
    header, rows = read_csv(LAB_CEL_CSV)
    at = header.index("eventtime")
    rows[3][at], rows[9][at], rows[20][at] = "", "yesterday", "nan"
    db = write_table(tmp_path / "master.db", "cel", header, rows)
    bad: list[tuple[str, str]] = []
    with open_cel(db, on_bad=lambda where, why: bad.append((where, why))) as source:
        read = list(source.rows(0.0))
    assert len(read) == 709 and source.bad_rows == 3
    assert [w for w, _ in bad] == [f"{db} row 4", f"{db} row 10", f"{db} row 21"]
    assert all(why.startswith("eventtime: ") for _, why in bad)


def test_since_and_until_bound_the_rows(tmp_path: Path) -> None:
    db = lab_master_db(tmp_path)
    with open_cel(db) as source:
        every = list(source.rows(0.0))
        since, until = every[100].ts, every[400].ts
        window = list(source.rows(since, until))
        assert source.latest_time() == every[-1].ts
    assert window == [r for r in every if since <= r.ts < until]
    assert window[0].ts == since and window[-1].ts < until


def _many_rows(path: Path, count: int, start: float) -> Path:
    """`count` CEL rows a second apart, some with times that cannot be read."""
    header = ["eventtype", "eventtime", "uniqueid", "linkedid", "channame"]
    rows = ([n + 1, "HANGUP", "" if n % 997 == 5 else f"{start + n:.6f}", f"1.{n}", f"1.{n}",
             "SIP/x"] for n in range(count))
    return write_table(path, "cel", header, rows)


def test_a_window_of_a_large_file_is_found_by_binary_search(tmp_path: Path) -> None:
    db = _many_rows(tmp_path / "big.db", 200_000, 1_800_000_000.0)
    with open_cel(db) as source:
        table = source._table
        read: list[int] = []
        all_rows = table.rows

        def counted(after: int = 0):  # type: ignore[no-untyped-def]
            for position, values in all_rows(after):  # type: ignore[call-arg]
                read.append(position)
                yield position, values

        table.rows = counted  # type: ignore[method-assign,assignment]
        rows = list(source.rows(1_800_150_000.0, 1_800_150_100.0))
    assert [r.uniqueid for r in rows] == [f"1.{n}" for n in range(150_000, 150_100)]
    # entered a minute before the window, left a minute after it: not a scan from the start
    assert read[0] == 150_000 - 60 + 1 and len(read) <= 100 + 2 * 60 + 1


def test_reading_never_writes_and_waits_out_asterisks_writer(tmp_path: Path) -> None:
    """Read-only: nothing created beside the file, the file unchanged; a write transaction of
    Asterisk's in progress is waited for (busy timeout), its rows then read."""
    db = lab_master_db(tmp_path)
    db.chmod(0o444)
    before = (sorted(os.listdir(tmp_path)), db.read_bytes())
    with open_cel(db) as source:
        assert len(list(source.rows(0.0))) == 712
    assert (sorted(os.listdir(tmp_path)), db.read_bytes()) == before
    db.chmod(0o644)
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("INSERT INTO cel (eventtype, eventtime, uniqueid, linkedid, channame) "
                   "VALUES ('HANGUP', '1795781799.0', '9.9', '9.9', 'SIP/late')")
    committed = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    committed.start()
    try:
        with open_cel(db) as source:
            rows = list(source.rows(0.0))
    finally:
        committed.join()
        writer.close()
    assert len(rows) == 713 and rows[-1].channel == "SIP/late"
