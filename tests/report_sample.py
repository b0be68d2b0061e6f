"""A realistic `build_report` result for the renderers' tests: November 2026 in Asia/Shanghai,
seen on the 20th (calls on days 1..20, days 21..30 still empty), a monthly budget, two SLA
clauses (the answer rate missed, csat met) and three plans."""

from __future__ import annotations

import copy
import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

OUTCOMES = ("handled", "transferred", "abandoned", "failed")


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _counts(offered: int, rng: random.Random) -> dict[str, Any]:
    abandoned = round(offered * rng.uniform(0.015, 0.035))
    failed = round(offered * rng.uniform(0.005, 0.02))
    answered = offered - abandoned - failed
    transferred = round(answered * rng.uniform(0.17, 0.25))
    handled = answered - transferred
    transfer_answered = round(transferred * rng.uniform(0.9, 0.98))
    return {"offered": offered, "bot_answered": answered, "handled": handled,
            "transferred": transferred, "abandoned": abandoned, "failed": failed,
            "_transfer_answered": transfer_answered}


def _with_rates(row: dict[str, Any]) -> dict[str, Any]:
    row["answer_rate"] = _rate(row["bot_answered"], row["offered"])
    row["containment_rate"] = _rate(row["handled"], row["bot_answered"])
    row["transfer_rate"] = _rate(row["transferred"], row["bot_answered"])
    row["transfer_answered_rate"] = _rate(row.pop("_transfer_answered"), row["transferred"])
    return row


def sample_report(days_with_calls: int = 20, plan_name: str = "Combined 2026 (per minute + SLA)",
                  by: str = "day") -> dict[str, Any]:
    rng = random.Random(12)
    first = date(2026, 11, 1)
    daily: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    totals = {"offered": 0, "bot_answered": 0, "handled": 0, "transferred": 0, "abandoned": 0,
              "failed": 0, "_transfer_answered": 0}
    cost_total = Decimal(0)
    for i in range(30):
        day = first + timedelta(days=i)
        if i < days_with_calls:
            base = 30 if day.weekday() >= 5 else 58
            counts = _counts(base + rng.randint(-8, 12), rng)
        else:
            counts = _counts(0, rng)
        cost = (Decimal(counts["handled"]) * Decimal("1.05")
                + Decimal(counts["transferred"]) * Decimal("1.62")).quantize(Decimal("0.0001"))
        cost_total += cost
        for key in totals:
            totals[key] += counts[key]
        daily.append({"date": day.isoformat(), "handled": counts["handled"],
                      "transferred": counts["transferred"], "abandoned": counts["abandoned"],
                      "failed": counts["failed"], "cost": f"{cost:f}"})
        row = _with_rates(dict(counts, key=day.isoformat()))
        row["cost"] = f"{cost:f}"
        rows.append({"key": row.pop("key"), **row})
    total_row = _with_rates(dict(totals))
    handled = total_row["handled"]
    per_day = cost_total / days_with_calls if days_with_calls else Decimal(0)
    forecast = (per_day * 30).quantize(Decimal("0.01"))
    budget = Decimal("2500.00")
    used = float(round(cost_total / budget, 4))
    histogram_edges = [0, 15, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, None]
    shape = [4, 9, 15, 19, 16, 11, 8, 6, 4, 3, 2, 1]
    answered = total_row["bot_answered"]
    weights = sum(shape)
    hist_counts = [answered * s // weights for s in shape]
    hist_counts[3] += answered - sum(hist_counts)
    histogram = [{"from": histogram_edges[i], "to": histogram_edges[i + 1],
                  "calls": hist_counts[i]} for i in range(len(shape))]
    hours = [0, 0, 0, 0, 0, 0, 1, 3, 9, 14, 15, 13, 8, 10, 14, 13, 11, 8, 5, 3, 2, 1, 1, 0]
    heatmap = []
    for weekday in range(7):
        scale = 0.45 if weekday >= 5 else 1.0 - 0.05 * weekday
        heatmap.append([round(h * scale * 3 * rng.uniform(0.8, 1.2)) for h in hours])
    report: dict[str, Any] = {
        "period": {"from": "2026-11-01T00:00:00+08:00", "to": "2026-12-01T00:00:00+08:00",
                   "timezone": "Asia/Shanghai"},
        "by": by,
        "plan": {"plan_id": "combined-2026", "name": plan_name},
        "totals": {
            **total_row,
            "sla_answer_rate": 0.9712,
            "bot_seconds": {"total": 81234.5, "mean": 69.4, "median": 55.0, "p90": 140.2},
            "human_seconds": {"total": 30210.0},
            "human_wait_seconds": {"median": 18.5},
            "abandoned_wait_seconds": {"mean": 4.1},
            "modules": {"asr": {"quantity": 80000, "unit": "seconds"},
                        "tts": {"quantity": 412345, "unit": "characters"}},
            "csat": {"responses": 410, "response_rate": 0.3504, "mean": 4.31,
                     "distribution": {"1": 12, "2": 20, "3": 41, "4": 130, "5": 207},
                     "by_outcome": {"handled": 4.45, "transferred": 4.02}},
            "cost": f"{cost_total:f}", "currency": "CNY",
            "cost_per_handled_call": f"{(cost_total / handled).quantize(Decimal('0.0001')):f}"
            if handled else None,
        },
        "sla": [{"clause": "answer_rate", "measured": 0.9712, "target": 0.98, "sample": 1170,
                 "met": False},
                {"clause": "csat", "measured": 4.31, "target": 4.2, "sample": 410, "met": True}],
        "plans": [
            {"plan_id": "per-call-2026", "total": "1795.20", "vs_active": "-190.50"},
            {"plan_id": "combined-2026", "total": "1985.70", "vs_active": "0.00"},
            {"plan_id": "bundle-5000", "total": "2400.00", "vs_active": "414.30"},
        ],
        "forecast": {"month_end_cost": f"{forecast:f}", "bundle_exhausted_on": "2026-11-27"},
        "budget": {"monthly": f"{budget:f}", "used_share": used,
                   "status": "over" if used >= 1 else "warning" if used >= 0.8 else "ok"},
        "repeat_callers": {"within_24h": 37, "within_7d": 81,
                           "top": [{"caller_number": "13900000001", "calls": 6},
                                   {"caller_number": "+86 21 5555 0100", "calls": 5},
                                   {"caller_number": "13800138000", "calls": 4}]},
        "rows": rows,
        "charts": {"daily": daily, "bot_seconds_histogram": histogram, "heatmap": heatmap},
    }
    return report


def empty_report() -> dict[str, Any]:
    """A month with no calls and no plan: rates, cost, forecast and budget are null."""
    report = copy.deepcopy(sample_report(days_with_calls=0))
    totals = report["totals"]
    for key in ("answer_rate", "containment_rate", "transfer_rate", "transfer_answered_rate",
                "sla_answer_rate", "cost", "currency", "cost_per_handled_call"):
        totals[key] = None
    totals["csat"] = {"responses": 0, "response_rate": None, "mean": None,
                      "distribution": {}, "by_outcome": {}}
    totals["bot_seconds"] = {"total": 0, "mean": None, "median": None, "p90": None}
    totals["human_wait_seconds"] = {"median": None}
    totals["abandoned_wait_seconds"] = {"mean": None}
    totals["modules"] = {}
    report.update(plan=None, sla=[], plans=[], forecast=None, budget=None,
                  repeat_callers={"within_24h": 0, "within_7d": 0, "top": []})
    for day in report["charts"]["daily"]:
        day["cost"] = None
    for row in report["rows"]:
        row["cost"] = None
    return report
