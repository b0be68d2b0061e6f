"""The one place that decides a call's outcome."""

from __future__ import annotations

from dataclasses import dataclass

from .record import Outcome

#: hangup causes that are not a failure: normal clearing, busy, no answer, unknown
NORMAL_CAUSES = frozenset({0, 16, 17, 19})


@dataclass(frozen=True, slots=True)
class OutcomeFacts:
    bot_answered: bool
    handoff_started: bool
    ended_in_bot: bool
    hangup_cause: int | None
    signalled: Outcome | None


def decide_outcome(facts: OutcomeFacts) -> Outcome:
    """Exactly one outcome; a signal from the bot wins over the call flow."""
    if facts.signalled is not None:
        return facts.signalled
    if not facts.bot_answered:
        return "abandoned"
    if facts.handoff_started:
        return "transferred"
    if facts.ended_in_bot and facts.hangup_cause is not None and facts.hangup_cause not in NORMAL_CAUSES:
        return "failed"
    return "handled"
