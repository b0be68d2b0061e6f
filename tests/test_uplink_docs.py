"""docs/uplink.md's example summary is what botmeter computes for those calls."""

from __future__ import annotations

import json
import re
from pathlib import Path

from botmeter.rating import PlanBook, rate_calls
from botmeter.tracking.record import ModuleUsage
from botmeter.uplink.summary import summarize

from .rating_support import PLANS_DIR
from .uplink_support import HOUR, T0, hourly_calls

DOC = Path(__file__).resolve().parent.parent / "docs" / "uplink.md"


def test_the_documented_summary_is_computed_exactly() -> None:
    section = DOC.read_text(encoding="utf-8").split("## Buckets and summaries", 1)[1]
    documented = json.loads(re.search(r"```json\n(.*?)```", section, re.S)[1])
    series = PlanBook.load(PLANS_DIR).series("per-minute")
    calls = [c._replace(modules={"asr": ModuleUsage(c.modules["asr"].quantity, "seconds")})
             for c in hourly_calls(1, 4)]
    summary = summarize(series, T0, T0 + HOUR, calls, rate_calls(calls, series))
    assert summary == documented
