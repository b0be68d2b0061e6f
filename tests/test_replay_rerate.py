"""Replaying over stored calls re-rates each touched period once, not once per batch."""

from __future__ import annotations

from pathlib import Path

import structlog

from botmeter.rating import PlanBook
from botmeter.replay import replay
from botmeter.storage.store import CallStore
from botmeter.tracking.rules import TrackingRules

from .bench.capture import repeated_capture
from .conftest import LAB_CAPTURE

PLANS = Path(__file__).parent.parent / "config" / "plans"
RULES = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"])


def _first_half(capture: bytes) -> bytes:
    """The capture cut at the frame boundary nearest its middle (some calls end in it)."""
    cut = capture.index(b"\r\n\r\n", len(capture) // 2) + 4
    return capture[:cut]


def _rerates(logs: list[dict]) -> list[str]:
    return [e["period"] for e in logs if e["event"] == "period re-rated"]


def test_replay_over_a_half_stored_capture_rerates_each_period_once(tmp_path):
    """(Re-rating at every batch behind the stored calls, as before, did it 5 times here.)"""
    series = PlanBook.load(PLANS).series("combined")
    capture, _ = repeated_capture(13_000)  # the lab calls 7 times over: 91 calls
    store = CallStore(tmp_path / "half.db")
    half = replay([_first_half(capture)], RULES, store, series=series, batch=10)
    assert 30 < half["calls_recorded"] < 60

    with structlog.testing.capture_logs() as logs:  # 10 batches, half behind the stored calls
        stats = replay([capture], RULES, store, series=series, batch=10)
    assert stats["calls_recorded"] == 91 and stats["periods_rerated"] == 1
    assert _rerates(logs) == ["2026-11"]

    fresh = CallStore(tmp_path / "fresh.db")  # the same capture rated in one pass
    replay([capture], RULES, fresh, series=series, batch=1000)
    ids = [r.call_id for r in fresh.calls()]
    assert store.count() == fresh.count() == 91
    assert store.ratings(ids) == fresh.ratings(ids)
    assert all(r["cost"] is not None for r in store.ratings(ids).values())


def test_a_fresh_replay_rates_each_period_once_too(tmp_path):
    series = PlanBook.load(PLANS).series("combined")
    store = CallStore(tmp_path / "fresh.db")
    with structlog.testing.capture_logs() as logs:
        stats = replay([LAB_CAPTURE.read_bytes()], RULES, store, series=series,
                       batch=1)
    assert _rerates(logs) == ["2026-11"] and stats["periods_rerated"] == 1
