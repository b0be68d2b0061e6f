"""Replaying real Asterisk captures of ARI voice bots (Asterisk 20) and of a PJSIP line
(Asterisk 22): every call comes out as its expected record, whichever way `[bot]` describes
the bot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from botmeter.pbx.stream import decode_capture
from botmeter.tracking.record import CallRecord
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker

from .conftest import FIXTURES

ARI_CAPTURE = FIXTURES / "lab-ari-basic.ami"
ARI_EXPECTED = FIXTURES / "lab-ari-basic.expected.json"
LAB22_CAPTURE = FIXTURES / "lab22-basic.ami"
LAB22_EXPECTED = FIXTURES / "lab22-basic.expected.json"

APP = ["Stasis:asterisk-ai-voice-agent"]
MEDIA = ["UnicastRTP/*", "AudioSocket/*"]
STYLES = {
    "applications": {"bot_applications": APP},
    "channels": {"bot_channels": MEDIA},
    "both": {"bot_applications": APP, "bot_channels": MEDIA},
}


def _replay(capture: Path, **bot: list[str]) -> list[CallRecord]:
    rules = TrackingRules.build(inbound_contexts=["from-pstn"], **bot)  # type: ignore[arg-type]
    tracker = CallTracker(rules)
    return [r for ev in decode_capture([capture.read_bytes()]) for r in tracker.feed(ev)]


def _check(record: CallRecord, expected: dict) -> None:
    who = (expected["caller_number"], expected["scenario"])
    assert record.outcome == expected["outcome"], who
    for key, tolerance in (("bot_seconds", 0.35), ("human_seconds", 0.6)):
        got = getattr(record, key)
        if expected[key] is None:
            assert got is None, (who, key)
        else:
            assert got == pytest.approx(expected[key], abs=tolerance), (who, key, got)
    assert record.transfer_answered == expected["transfer_answered"], who
    assert {m: float(u.quantity) for m, u in record.modules.items()} == expected["modules"], who
    if expected.get("caller_name") is not None and expected.get("via") != "sip":
        # (SIP test clients' names went through PJSIP's escaping: not what the capture checks)
        assert record.caller_name == expected["caller_name"], who


def _check_all(records: list[CallRecord], expected: list[dict]) -> dict[str, CallRecord]:
    by_number = {r.caller_number: r for r in records}
    assert len(records) == len(by_number) == len(expected)
    assert set(by_number) == {e["caller_number"] for e in expected}
    for exp in expected:
        _check(by_number[exp["caller_number"]], exp)
    return {str(k): v for k, v in by_number.items()}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_ari_capture_gives_every_expected_record_under_each_bot_style(style):
    expected = json.loads(ARI_EXPECTED.read_text(encoding="utf-8"))
    assert len(expected) == 14
    assert {e["flow"] for e in expected} >= {"hangup", "transfer_queue", "transfer_exten", "warm"}
    assert {e["media"] for e in expected} == {"rtp", "audiosocket"}
    records = _check_all(_replay(ARI_CAPTURE, **STYLES[style]), expected)
    for exp in expected:
        record = records[exp["caller_number"]]
        if exp["outcome"] == "transferred":
            # the bot's time ends where the handoff starts, and the person answers after it
            assert record.bot_ended_at == record.transferred_at, exp["scenario"]
            assert record.transfer_target, exp["scenario"]
        if exp["flow"] == "transfer_queue":
            assert record.transfer_target == "support"


def test_the_three_bot_styles_give_the_same_outcomes_and_moments_within_a_media_step():
    runs = [{r.call_id: r for r in _replay(ARI_CAPTURE, **bot)} for bot in STYLES.values()]
    assert runs[0].keys() == runs[1].keys() == runs[2].keys()
    for call_id, first in runs[0].items():
        for other in runs[1:]:
            r = other[call_id]
            assert (r.outcome, r.transfer_answered, r.transfer_target) == (
                first.outcome, first.transfer_answered, first.transfer_target)
            assert r.bot_seconds == pytest.approx(first.bot_seconds, abs=0.05)


def test_warm_transfer_starts_at_the_hold_and_the_human_answers_at_their_leg_answer():
    expected = json.loads(ARI_EXPECTED.read_text(encoding="utf-8"))
    warm = {e["caller_number"] for e in expected if e["flow"] == "warm"}
    assert warm
    for record in _replay(ARI_CAPTURE, bot_applications=APP):
        if record.caller_number in warm:
            assert record.outcome == "transferred" and record.transfer_answered
            assert record.transfer_target == "Local/warm1@human-agents"
            assert record.human_answered_at is not None and record.transferred_at is not None
            assert record.human_answered_at - record.transferred_at == pytest.approx(2.0, abs=0.1)


def test_asterisk22_pjsip_capture_stays_right():
    expected = json.loads(LAB22_EXPECTED.read_text(encoding="utf-8"))
    _check_all(_replay(LAB22_CAPTURE, bot_contexts=["voicebot"]), expected)  # type: ignore[arg-type]
