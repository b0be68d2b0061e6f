"""The money of a fault run, computed by botmeter's own rating: the statement totals of a set of
calls, the truth file's calls as records, and the usage summaries a calls database says the
vendor should hold. Pure (no I/O)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from botmeter.rating import PlanSeries, build_statement, period_of, rate_calls
from botmeter.tracking.record import CallRecord, Csat, ModuleUsage
from botmeter.uplink.buckets import bucket_end, bucket_start, iso_z, parse_iso
from botmeter.uplink.summary import summarize

Line = Mapping[str, Any]


def periods(series: PlanSeries, ended: Iterable[float]) -> list[str]:
    """The plan's billing periods (`YYYY-MM`) holding these end times."""
    return sorted({period_of(moment, series.timezone) for moment in ended})


def statement_total(series: PlanSeries, calls: Iterable[CallRecord]) -> Decimal:
    """The statement totals of every period the calls end in, added up."""
    calls = list(calls)
    return sum((build_statement(series, period, calls).total
                for period in periods(series, (c.ended_at for c in calls))), Decimal(0))


def truth_record(line: Line) -> CallRecord:
    """A truth line as the record a clean run stores: its times rebuilt from the durations
    (the bot answers after the ring, the human's time runs up to the end)."""
    offered, ended = parse_iso(line["offered_at"]), parse_iso(line["ended_at"])
    bot = line["bot_seconds"]
    answered = None if bot is None else round(offered + line["ring_seconds"], 3)
    bot_ended = None if answered is None else round(answered + bot, 3)
    human = line["human_seconds"]
    csat = line["csat"]
    return CallRecord(
        call_id=line["call_id"], linkedid=line["call_id"], caller_number=line["caller_number"],
        caller_name=line["caller_name"], dialed_number=line["dialed_number"],
        offered_at=offered, bot_answered_at=answered, bot_ended_at=bot_ended,
        transferred_at=bot_ended if line["outcome"] == "transferred" else None,
        human_answered_at=None if human is None else round(ended - human, 3), ended_at=ended,
        outcome=line["outcome"], transfer_target=None, hangup_cause=line["hangup_cause"],
        modules={name: ModuleUsage(Decimal(str(usage["quantity"])), usage["unit"])
                 for name, usage in line["modules"].items()},
        csat=None if csat is None else Csat(csat["score"], csat["scale"]))


def summaries(series: PlanSeries, calls: Iterable[CallRecord],
              kind: str = "hour") -> dict[str, dict[str, Any]]:
    """bucket_start -> the summary (without its revision) of every bucket the calls end in, as
    the uplink computes it: each call rated among its period's calls."""
    calls = list(calls)
    charges = rate_calls(calls, series)
    buckets: dict[float, list[CallRecord]] = defaultdict(list)
    for call in calls:
        buckets[bucket_start(call.ended_at, kind, series.timezone)].append(call)
    return {iso_z(start): without_revision(summarize(
        series, start, bucket_end(start, kind, series.timezone), mine, charges))
        for start, mine in buckets.items()}


def without_revision(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A summary's content: everything but its revision number."""
    return {key: value for key, value in summary.items() if key != "revision"}
