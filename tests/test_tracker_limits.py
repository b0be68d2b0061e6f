"""Call tracking keeps bounded memory whatever it is fed, and says what it threw away."""

from __future__ import annotations

from decimal import Decimal

from botmeter.pbx.events import BotSignal, ChannelCreated, ChannelHungUp, DialplanStep
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import (
    PENDING_SIGNAL_SECONDS,
    REPORTS_PER_SWEEP,
    CallTracker,
)

RULES = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"])


def _tracker(**limits: int) -> tuple[CallTracker, list[tuple[str, dict]]]:
    problems: list[tuple[str, dict]] = []
    return CallTracker(RULES, on_problem=lambda m, c: problems.append((m, c)), **limits), problems


def _usage(ts: float, lid: str, qty: str = "1") -> BotSignal:
    return BotSignal(ts, lid, "", "usage", {"Module": "asr", "Quantity": qty, "Unit": "seconds"})


def _offered(tracker: CallTracker, uid: str, ts: float) -> list:
    out = list(tracker.feed(ChannelCreated(ts, uid, uid, "PJSIP/t-1", "from-pstn", "4000", "139", "")))
    out += tracker.feed(DialplanStep(ts, uid, uid, "PJSIP/t-1", "from-pstn", "4000", "NoOp", ""))
    return out


def test_signals_for_an_unseen_call_are_capped_per_call_and_reported_once() -> None:
    tracker, problems = _tracker(pending_per_call=100)
    for i in range(10_000):
        tracker.feed(_usage(1000.0 + i / 1000, "7.1"))
    assert tracker.pending_signals == 100 and tracker.dropped_signals == 9_900
    assert [m for m, _ in problems] == [
        "bot signal dropped: more than 100 signals for a call not seen yet"]
    _offered(tracker, "7.1", 1011.0)  # the call appears: the first 100 are applied, and the loss said
    assert problems[1] == ("call is missing bot signals dropped while it was not seen yet",
                           {"call_id": "7.1", "linkedid": "7.1", "dropped": 9_900})
    assert problems[2][0].startswith("the bot signalled before any sign that it answered")
    [record] = tracker.feed(ChannelHungUp(1012.0, "7.1", "7.1", "PJSIP/t-1", 16))
    assert record.modules["asr"].quantity == Decimal(100)
    assert tracker.pending_signals == 0


def test_signals_in_all_are_capped_oldest_call_first() -> None:
    tracker, problems = _tracker(pending_per_call=10, pending_max=50)
    for n in range(20):
        for _ in range(10):
            tracker.feed(_usage(1000.0 + n, f"{n}.1"))
    assert tracker.pending_signals == 50 and tracker.dropped_signals == 150
    assert list(tracker._pending) == [f"{n}.1" for n in range(15, 20)]  # the newest survive
    assert problems[0] == ("bot signal dropped: more than 50 signals held for calls not seen yet",
                           {"linkedid": "0.1", "signals": 10})


def test_a_steady_stream_cannot_keep_held_signals_alive() -> None:
    """Expiry counts from the first signal held, by the events' own times (no clock in tracking)."""
    tracker, problems = _tracker()
    for t in range(0, 1000, 10):  # one signal every 10 s for 1,000 s, the call never seen
        tracker.feed(_usage(5000.0 + t, "9.1"))
        held = tracker._pending["9.1"]
        assert 5000.0 + t - held.first_ts <= PENDING_SIGNAL_SECONDS
    assert tracker.pending_signals <= PENDING_SIGNAL_SECONDS / 10 + 1
    assert problems[0][0] == "bot signal dropped: no call seen within 300s"
    tracker.expire(5000.0 + 990 + PENDING_SIGNAL_SECONDS + 1, 3600)
    assert tracker.pending_signals == 0


def test_calls_in_progress_are_capped_the_oldest_closed_at_its_last_event() -> None:
    tracker, problems = _tracker(max_in_progress=3)
    closed = []
    for n in range(10):
        closed += _offered(tracker, f"{n}.1", 100.0 + n)
    assert tracker.active_calls == 3 and tracker.evicted_calls == 7
    assert [(r.call_id, r.ended_at) for r in closed] == [(f"{n}.1", 100.0 + n) for n in range(7)]
    assert problems[0][0].startswith("call closed: more than 3 calls in progress")
    # late events for a closed call's channel are ignored: no second record, no new call
    assert tracker.feed(ChannelHungUp(200.0, "0.1", "0.1", "PJSIP/t-1", 16)) == ()
    assert tracker.active_calls == 3
    [last] = tracker.feed(ChannelHungUp(201.0, "9.1", "9.1", "PJSIP/t-1", 16))
    assert last.call_id == "9.1" and last.ended_at == 201.0


def test_floods_of_problems_are_logged_a_few_times_then_counted() -> None:
    tracker, problems = _tracker(max_in_progress=1)
    for n in range(1000):
        tracker.feed(ChannelCreated(100.0, f"{n}.1", f"{n}.1", "Local/x", "other", "s", "", ""))
        tracker.feed(_usage(100.0, f"{n}.1", qty="lots"))
    assert tracker.evicted_calls == 999
    evicted = [c for m, c in problems if m.startswith("call closed")]
    malformed = [c for m, c in problems if m == "malformed bot signal ignored"]
    assert len(evicted) == 1 and len(malformed) == REPORTS_PER_SWEEP
    tracker.expire(101.0, 3600)
    summaries = {m: c for m, c in problems if m.endswith("(more of the same)")}
    assert summaries == {
        "malformed bot signal ignored (more of the same)": {"not_logged": 1000 - REPORTS_PER_SWEEP},
        "call closed: more than 1 calls in progress (lost hangups?); the oldest is closed at its "
        "last event (more of the same)": {"not_logged": 998}}
    before = len(problems)
    tracker.feed(ChannelCreated(102.0, "x.1", "x.1", "Local/x", "other", "s", "", ""))
    assert len(problems) == before + 1  # after a summary, the next one is logged again


def test_usage_of_more_modules_than_a_bot_has_is_dropped_and_reported_once() -> None:
    from botmeter.tracking.tracker import MAX_MODULES_PER_CALL

    tracker, problems = _tracker()
    _offered(tracker, "9.1", 1.0)
    for i in range(MAX_MODULES_PER_CALL + 500):
        tracker.feed(BotSignal(2.0, "9.1", "", "usage",
                               {"Module": f"m{i}", "Quantity": "1", "Unit": "seconds"}))
    (record,) = tracker.feed(ChannelHungUp(3.0, "9.1", "9.1", "PJSIP/t-1", 16))
    assert sorted(record.modules) == sorted(f"m{i}" for i in range(MAX_MODULES_PER_CALL))
    assert tracker.dropped_signals == 500
    assert sum("further modules dropped" in m for m, _ in problems) == 1
