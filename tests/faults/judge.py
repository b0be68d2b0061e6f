"""Judging a fault run: the agent's records against the simulator's truth file. Pure.

The truth file has one line per call the simulated PBX placed, with what a correct record of
it says (docs/simulator.md, "The truth file"); the records are `botmeter calls --format json`.
Both are matched by `call_id` (the call's linkedid, the calls table's primary key), so a call
recorded under another id counts as missing *and* extra.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: seconds a record's bot_seconds may differ from the truth's, by the record's `source`
BOT_TOLERANCE = {"cdr": 1.0}
DEFAULT_BOT_TOLERANCE = 0.35

Line = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one run's records compare with its truth."""

    scripted: int
    recorded: int
    missing: tuple[str, ...]  # truth calls with no record
    extra: tuple[str, ...]  # records of no truth call
    duplicates: tuple[str, ...]  # call ids recorded more than once
    wrong_outcome: tuple[str, ...]  # "call_id: recorded X, truth Y"
    bot_off: tuple[str, ...]  # bot_seconds beyond the tolerance, as wrong_outcome
    max_bot_delta: float

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicates or self.wrong_outcome
                    or self.bot_off)

    def problems(self, limit: int = 8) -> list[str]:
        """One line per kind of problem, naming its first `limit` calls."""
        kinds = (("missing", self.missing), ("extra", self.extra),
                 ("duplicated", self.duplicates), ("wrong outcome", self.wrong_outcome),
                 ("bot_seconds off", self.bot_off))
        return [f"{len(items)} {name}: {', '.join(items[:limit])}"
                + (" ..." if len(items) > limit else "") for name, items in kinds if items]


def judge(truth: Sequence[Line], records: Sequence[Line]) -> Verdict:
    """Compare `records` with `truth` call by call."""
    want = {line["call_id"]: line for line in truth}
    counts = Counter(record["call_id"] for record in records)
    got = {record["call_id"]: record for record in records}
    wrong: list[str] = []
    off: list[str] = []
    max_delta = 0.0
    for call_id in sorted(want.keys() & got.keys()):
        truth_line, record = want[call_id], got[call_id]
        if record["outcome"] != truth_line["outcome"]:
            wrong.append(f"{call_id}: recorded {record['outcome']}, truth {truth_line['outcome']}")
        delta = abs((record["bot_seconds"] or 0.0) - (truth_line["bot_seconds"] or 0.0))
        max_delta = max(max_delta, delta)
        if delta > BOT_TOLERANCE.get(record.get("source", ""), DEFAULT_BOT_TOLERANCE):
            off.append(f"{call_id}: recorded {record['bot_seconds']}, "
                       f"truth {truth_line['bot_seconds']} ({record.get('source')})")
    return Verdict(
        scripted=len(want), recorded=len(records),
        missing=tuple(sorted(want.keys() - got.keys())),
        extra=tuple(sorted(got.keys() - want.keys())),
        duplicates=tuple(sorted(call_id for call_id, n in counts.items() if n > 1)),
        wrong_outcome=tuple(wrong), bot_off=tuple(off), max_bot_delta=round(max_delta, 3))
