"""Replaying the real Asterisk 20 capture yields exactly the expected records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from botmeter.cli import main

from .conftest import LAB_CAPTURE


def _replay(config: Path) -> list[dict]:
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "replay", str(LAB_CAPTURE)])
    assert result.exit_code == 0, result.output
    assert "calls_recorded=13" in result.output
    listed = runner.invoke(main, ["--config", str(config), "calls", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    return json.loads(listed.output)


def _check(record: dict, expected: dict) -> None:
    who = expected["caller_number"]
    assert record["outcome"] == expected["outcome"], who
    for key, tolerance in (("bot_seconds", 0.35), ("human_seconds", 0.6)):
        if expected[key] is None:
            assert record[key] is None, (who, key)
        else:
            assert record[key] == pytest.approx(expected[key], abs=tolerance), (who, key)
    assert record["transfer_answered"] == expected["transfer_answered"], who
    assert {m: u["quantity"] for m, u in record["modules"].items()} == expected["modules"], who
    if expected["caller_name"] is not None:
        assert record["caller_name"] == expected["caller_name"], who


def test_replay_of_lab_capture_matches_every_expected_record(write_config, lab_expected):
    records = _replay(write_config())
    assert len(records) == len(lab_expected) == 13
    by_number = {r["caller_number"]: r for r in records}
    assert set(by_number) == {e["caller_number"] for e in lab_expected}
    for expected in lab_expected:
        _check(by_number[expected["caller_number"]], expected)


def test_replay_twice_keeps_one_row_per_call(write_config):
    config = write_config()
    _replay(config)
    records = _replay(config)
    assert len(records) == 13
    assert len({r["call_id"] for r in records}) == 13


def test_replay_split_at_every_byte_gives_the_same_records(tmp_path, lab_expected):
    """UTF-8 names survive any TCP read boundary: feed the capture in 1..7 byte chunks."""
    from botmeter.pbx.stream import decode_capture
    from botmeter.tracking.rules import TrackingRules
    from botmeter.tracking.tracker import CallTracker

    data = LAB_CAPTURE.read_bytes()
    rules = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"])
    whole = CallTracker(rules)
    reference = [r for ev in decode_capture([data]) for r in whole.feed(ev)]
    sizes = [1, 2, 3, 5, 7]
    chunks, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        chunks.append(data[i:i + n])
        i, k = i + n, k + 1
    split = CallTracker(rules)
    records = [r for ev in decode_capture(chunks) for r in split.feed(ev)]
    assert records == reference
    names = {r.caller_number: r.caller_name for r in records}
    for expected in lab_expected:
        if expected["caller_name"] is not None:
            assert names[expected["caller_number"]] == expected["caller_name"]


def test_record_json_has_every_spec_field(write_config):
    record = _replay(write_config())[0]
    assert list(record) == [
        "call_id", "linkedid", "caller_number", "caller_name", "dialed_number", "offered_at",
        "bot_answered_at", "bot_ended_at", "transferred_at", "human_answered_at", "ended_at",
        "ring_seconds", "bot_seconds", "human_seconds", "total_seconds", "outcome",
        "transfer_target", "transfer_answered", "hangup_cause", "modules", "plan_id", "cost",
        "currency", "csat", "bot_session_id", "source", "joined_late",
    ]
    assert record["offered_at"].endswith("Z") and len(record["offered_at"]) == 24
    assert record["source"] == "ami"


def test_replay_from_stdin_and_csv_output(write_config, lab_expected):
    import csv
    import io

    config = write_config()
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "replay", "-"],
                           input=LAB_CAPTURE.read_bytes())
    assert result.exit_code == 0 and "calls_recorded=13" in result.output
    listed = runner.invoke(main, ["--config", str(config), "calls", "--format", "csv",
                                  "--outcome", "failed", "--outcome", "abandoned"])
    rows = list(csv.DictReader(io.StringIO(listed.output)))
    expected = {e["caller_number"] for e in lab_expected if e["outcome"] in ("failed", "abandoned")}
    assert {r["caller_number"] for r in rows} == expected
    assert all(json.loads(r["modules"]) == {} for r in rows)
    table = runner.invoke(main, ["--config", str(config), "calls", "--since", "2026-11-26T15:25:50Z"])
    assert table.exit_code == 0 and "13900010012" in table.output and "13900010000" not in table.output


ARI_CAPTURE = LAB_CAPTURE.parent / "lab-ari-basic.ami"
ARI_EXPECTED = LAB_CAPTURE.parent / "lab-ari-basic.expected.json"
ARI_BOT = {
    "applications": 'applications = ["Stasis:asterisk-ai-voice-agent"]',
    "channels": 'channels = ["UnicastRTP/*", "AudioSocket/*"]',
    "both": 'applications = ["Stasis:asterisk-ai-voice-agent"]\n'
            'channels = ["UnicastRTP/*", "AudioSocket/*"]',
}


@pytest.mark.parametrize("style", sorted(ARI_BOT))
def test_replay_of_the_ari_capture_matches_every_expected_record(write_config, style):
    """`botmeter replay` of a real ARI voice bot's calls (every flow, both media kinds) gives
    the expected records whichever way [bot] names the bot."""
    config = write_config()
    text = config.read_text(encoding="utf-8")
    assert 'contexts = ["voicebot"]' in text
    config.write_text(text.replace('contexts = ["voicebot"]', ARI_BOT[style]), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "replay", str(ARI_CAPTURE)])
    assert result.exit_code == 0 and "calls_recorded=14" in result.output, result.output
    listed = runner.invoke(main, ["--config", str(config), "calls", "--format", "json"])
    records = {r["caller_number"]: r for r in json.loads(listed.output)}
    expected = json.loads(ARI_EXPECTED.read_text(encoding="utf-8"))
    assert len(records) == len(expected) == 14
    for want in expected:
        _check(records[want["caller_number"]], want)


def test_a_capture_saved_with_lf_line_ends_replays_the_same(tmp_path: Path, write_config) -> None:
    from .conftest import LAB_CAPTURE as crlf

    lf = tmp_path / "lab-lf.ami"
    lf.write_bytes(crlf.read_bytes().replace(b"\r\n", b"\n"))
    assert b"\r" not in lf.read_bytes()
    runner = CliRunner()
    records = []
    for capture, name in ((crlf, "crlf.db"), (lf, "lf.db")):
        db = tmp_path / name
        done = runner.invoke(main, ["--config", str(write_config()), "replay", str(capture),
                                    "--db", str(db)])
        assert done.exit_code == 0, done.output
        assert "calls_recorded=13" in done.output
        listed = runner.invoke(main, ["--config", str(write_config()), "calls", "--db", str(db),
                                      "--format", "json"])
        records.append(json.loads(listed.output))
    assert records[0] == records[1]
