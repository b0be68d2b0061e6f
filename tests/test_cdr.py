"""The CDR fallback: the lab's 18 calls from their CDRs (SQLite table, Master.csv without
linkedid, CSV with a header), with the AMI records' call ids, and what a CDR cannot tell."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from botmeter.recovery.cdr import MASTER_CSV_LAYOUTS, CdrFormatError, open_cdr
from botmeter.recovery.cdr_call import CdrRow, cdr_record
from botmeter.tracking.record import CallRecord
from botmeter.tracking.rules import TrackingRules

from .recovery_support import (
    LAB_CDR_CSV,
    LAB_MASTER_CSV,
    LAB_RULES,
    ami_records,
    lab_expected,
    lab_master_db,
    read_csv,
    write_table,
)

#: originated Local channels are up before they run the dialplan: their CDR shows them
#: answered at once, so a caller who hung up while it rang looks answered by the bot
LOCAL_ABANDONED = {"13942420002", "13942420014"}


def _records(path: Path, since: float = 0.0, until: float | None = None) -> list[CallRecord]:
    with open_cdr(path) as source:
        return sorted(source.records(since, until, LAB_RULES), key=lambda r: r.call_id)


@pytest.fixture(scope="module")
def master_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab_master_db(tmp_path_factory.mktemp("cdr"))


def test_sqlite_master_csv_and_a_csv_with_a_header_give_the_same_calls(master_db: Path) -> None:
    from_db = _records(master_db)
    assert len(from_db) == 18
    assert _records(LAB_MASTER_CSV) == from_db  # no linkedid: grouped by channels
    assert _records(LAB_CDR_CSV) == from_db


def test_call_ids_are_the_linkedids_of_the_ami_records(master_db: Path) -> None:
    ami = ami_records()
    records = _records(master_db)
    assert {r.call_id for r in records} == set(ami)
    for record in records:
        assert record.linkedid == record.call_id
        assert record.caller_number == ami[record.call_id].caller_number
        assert record.caller_name == ami[record.call_id].caller_name.replace("\\?", "?")


def test_outcomes_are_right_where_a_cdr_can_tell(master_db: Path) -> None:
    expected = {e["caller_number"]: e for e in lab_expected()}
    wrong = set()
    for record in _records(master_db):
        want = expected[record.caller_number]
        assert record.source == "cdr"
        if record.outcome != want["outcome"]:
            wrong.add(record.caller_number)
            continue
        assert record.transfer_answered == want["transfer_answered"], record.caller_number
    assert wrong == LOCAL_ABANDONED
    assert {e["caller_number"] for e in expected.values() if e["outcome"] == "abandoned"
            } - LOCAL_ABANDONED == {"13942420007"}  # the SIP caller who hung up while ringing


def test_times_are_whole_seconds_within_a_second_of_the_ami_records(master_db: Path) -> None:
    """A CDR's times are whole seconds (truncated), so each duration is within a second of the
    true one where the CDR's moment is the same moment: the human's time, the ring of a SIP
    call. The bot's time starts at the caller channel's answer, which Asterisk's Answer()
    reaches 0.5 s before the dialplan goes on to the bot (and an originated Local channel is
    answered before it rings: a further second of ring)."""
    ami = ami_records()
    via = {e["caller_number"]: e["via"] for e in lab_expected()}
    for record in _records(master_db):
        other = ami[record.call_id]
        who = record.caller_number
        moments = (record.offered_at, record.bot_answered_at, record.ended_at)
        assert all(m is None or m == int(m) for m in moments), who
        assert record.total_seconds == pytest.approx(other.total_seconds, abs=1.0), who
        if record.outcome != other.outcome:
            continue
        if other.human_seconds is not None:
            assert record.human_seconds == pytest.approx(other.human_seconds, abs=1.0), who
        if other.bot_seconds is not None:
            before_bot = 0.5 + (1.0 if via[who] == "local" else 0.0)
            assert record.bot_seconds == pytest.approx(other.bot_seconds + before_bot,
                                                       abs=1.0), who
            if via[who] == "sip":
                assert record.ring_seconds == pytest.approx(other.ring_seconds - 0.5,
                                                            abs=1.0), who


def test_targets_and_causes_from_the_cdrs(master_db: Path) -> None:
    by_number = {r.caller_number: r for r in _records(master_db)}
    assert by_number["13942420006"].transfer_target == "support"
    assert by_number["13942420010"].transfer_target == "nobody"
    assert by_number["13942420016"].transfer_target == "Local/agent1@human-agents"
    assert by_number["13942420003"].hangup_cause == 41  # Hangup(41): failed
    assert by_number["13942420001"].hangup_cause == 16  # Hangup()
    assert by_number["13942420000"].hangup_cause is None  # the caller hung up: not in a CDR
    assert all(r.modules == {} and r.csat is None for r in by_number.values())


def test_since_and_until_select_calls_by_their_offer(master_db: Path) -> None:
    every = _records(master_db)
    offers = sorted(r.offered_at for r in every)
    since, until = offers[5], offers[12]
    window = _records(master_db, since, until)
    assert {r.call_id for r in window} == {r.call_id for r in every
                                           if since <= r.offered_at < until}
    assert 0 < len(window) < 18
    with open_cdr(master_db) as source:
        assert source.latest_time() == max(r.ended_at for r in every)


def test_a_master_csv_without_uniqueid_or_a_column_missing_is_refused(tmp_path: Path) -> None:
    header, rows = read_csv(LAB_CDR_CSV)
    keep = [i for i, name in enumerate(header) if name not in ("uniqueid", "linkedid")]
    db = write_table(tmp_path / "master.db", "cdr", [header[i] for i in keep],
                     [[r[i] for i in keep] for r in rows])
    with pytest.raises(CdrFormatError, match="no column 'linkedid' or 'uniqueid'"):
        open_cdr(db)
    short = tmp_path / "Master.csv"
    with LAB_MASTER_CSV.open(encoding="utf-8", newline="") as source, short.open(
            "w", encoding="utf-8", newline="") as target:
        csv.writer(target).writerows(r[:16] for r in csv.reader(source))
    with pytest.raises(CdrFormatError) as failure:
        open_cdr(short)
    assert str(short) in str(failure.value) and "16 fields" in str(failure.value)
    assert all(n != 16 for n in MASTER_CSV_LAYOUTS)
    no_end = tmp_path / "no-end.csv"
    no_end.write_text("start,channel,dcontext,dst,uniqueid\n", encoding="utf-8")
    with pytest.raises(CdrFormatError, match="no column 'end'"):
        open_cdr(no_end)


# -- one call's CDRs --------------------------------------------------------------------------

RULES = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"],
                            bot_channels=["PJSIP/voicebot-*"])
T0 = 1_800_000_000.0


def cdr(start: float, end: float, answer: float | None = None, **fields: object) -> CdrRow:
    values: dict[str, object] = {"channel": "PJSIP/trunk-00000001", "dcontext": "from-pstn",
                                 "dst": "4000", "uniqueid": "1.1", "linkedid": "1.1",
                                 "clid": '"Ann" <139>', "src": "139"}
    values.update(fields)
    return CdrRow(T0 + start, None if answer is None else T0 + answer, T0 + end,
                  **values)  # type: ignore[arg-type]


def test_unanswered_is_abandoned_and_a_hangup_cause_fails_the_call() -> None:
    abandoned = cdr_record([cdr(0, 8, lastapp="Wait", disposition="NO ANSWER")], RULES)
    failed = cdr_record([cdr(0, 9, 2, lastapp="Hangup", lastdata="41",
                             disposition="ANSWERED")], RULES)
    assert abandoned is not None and abandoned.outcome == "abandoned"
    assert abandoned.bot_seconds is None and abandoned.ring_seconds == 8
    assert failed is not None and (failed.outcome, failed.hangup_cause) == ("failed", 41)
    assert failed.bot_seconds == 7 and (failed.caller_number, failed.caller_name) == ("139", "Ann")


def test_a_queue_nobody_answers_is_a_transfer_not_answered() -> None:
    record = cdr_record([cdr(0, 40, 1, lastapp="Queue", lastdata="sales,,,,30",
                             disposition="NO ANSWER")], RULES)
    assert record is not None and record.outcome == "transferred"
    assert (record.transfer_target, record.transfer_answered) == ("sales", False)


def test_a_dial_to_the_bots_channel_is_the_bot_not_a_handoff() -> None:
    record = cdr_record([cdr(0, 30, 1, lastapp="Dial", lastdata="PJSIP/voicebot,30",
                             dstchannel="PJSIP/voicebot-0000002a", disposition="ANSWERED")],
                        RULES)
    assert record is not None and (record.outcome, record.bot_seconds) == ("handled", 29)


def test_cdrs_of_a_call_not_offered_give_no_record() -> None:
    assert cdr_record([cdr(0, 30, 1, dcontext="from-internal")], RULES) is None


def test_the_bots_media_and_local_channels_are_no_handoff() -> None:
    caller = cdr(0, 30, 1, channel="Local/s@caller-00000001;1", lastapp="Stasis",
                 lastdata="voicebot", disposition="ANSWERED")
    own_half = cdr(0, 30, 0, channel="Local/s@caller-00000001;2", dcontext="caller")
    media = cdr(2, 29, 2, channel="UnicastRTP/127.0.0.1:4000-0x7f", dcontext="default")
    bot = cdr(1, 29, 1, channel="PJSIP/voicebot-00000003", dcontext="default")
    record = cdr_record([caller, own_half, media, bot], RULES)
    assert record is not None and (record.outcome, record.bot_seconds) == ("handled", 29)
    person = cdr(20, 30, 22, channel="PJSIP/agent7-00000004", dcontext="from-internal")
    warm = cdr_record([caller, own_half, media, bot, person], RULES)
    assert warm is not None and (warm.outcome, warm.bot_seconds) == ("transferred", 19)
