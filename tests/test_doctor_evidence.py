"""The doctor's pure decisions: read classes from the events that arrived, clock skew."""

from __future__ import annotations

import pytest

from botmeter.doctor.ami import FAIL_SKEW, WARN_SKEW, skew_finding
from botmeter.doctor.evidence import GRACE, ReadEvidence
from botmeter.doctor.findings import FAIL, OK, WARN


def event(name: str, privilege: str, **headers: str) -> dict[str, str]:
    return {"Event": name, "Privilege": privilege, "Timestamp": "1.0", **headers}


def test_a_class_is_confirmed_by_any_event_of_it():
    evidence = ReadEvidence()
    evidence.feed(event("Hangup", "call,all"), 0.0)
    evidence.feed(event("QueueCallerJoin", "agent,all"), 0.0)
    verdicts = evidence.verdicts(10.0)
    assert verdicts["call"] == ("seen", "Hangup") and verdicts["agent"] == ("seen", "QueueCallerJoin")
    assert verdicts["user"] == ("unknown", "") and not evidence.complete()


def test_an_app_that_sends_an_event_at_once_makes_its_class_missing_after_the_grace():
    evidence = ReadEvidence()
    evidence.feed(event("Newexten", "dialplan,all", Channel="SIP/a-1", Application="UserEvent"),
                  5.0)
    assert evidence.waiting_until() == 5.0 + GRACE
    assert evidence.verdicts(5.0 + GRACE / 2)["user"] == ("unknown", "")
    verdict, why = evidence.verdicts(5.0 + GRACE)["user"]
    assert verdict == "missing" and "SIP/a-1 ran UserEvent()" in why


def test_the_implied_event_arriving_in_time_confirms_the_class():
    evidence = ReadEvidence()
    evidence.feed(event("Newexten", "dialplan,all", Application="Queue"), 1.0)
    evidence.feed(event("QueueCallerJoin", "agent,all"), 1.1)
    assert evidence.verdicts(60.0)["agent"] == ("seen", "QueueCallerJoin")
    assert evidence.waiting_until() is None


def test_an_inbound_channel_implies_dialplan_events_other_contexts_do_not():
    evidence = ReadEvidence(frozenset({"from-pstn"}))
    evidence.feed(event("Newchannel", "call,all", Context="internal", Channel="SIP/x"), 0.0)
    assert evidence.verdicts(60.0)["dialplan"] == ("unknown", "")
    evidence.feed(event("Newchannel", "call,all", Context="from-pstn", Channel="SIP/y"), 0.0)
    assert evidence.verdicts(60.0)["dialplan"][0] == "missing"


def test_an_actions_answers_and_fullybooted_are_no_evidence():
    evidence = ReadEvidence()
    evidence.feed({"Event": "CoreShowChannel", "ActionID": "1", "Privilege": "call,all"}, 0.0)
    evidence.feed({"Event": "FullyBooted", "Privilege": "system,all"}, 0.0)
    assert evidence.seen == {} and evidence.stamped == evidence.unstamped == 0


@pytest.mark.parametrize(("skew", "status"), [
    (0.2, OK), (-0.2, OK), (WARN_SKEW, WARN), (-5.0, WARN), (FAIL_SKEW, FAIL), (-3600.0, FAIL)])
def test_clock_skew_thresholds(skew, status):
    finding = skew_finding(skew)
    assert finding.status == status
    assert ("behind" in finding.detail) == (skew < 0)
