"""The demo's last step: a vendor invoice for the demo's calls, with four discrepancies planted,
checked by `reconcile` (docs/reconcile.md)."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

from rich.table import Table

from .rating import PlanSeries, period_of
from .reconcile.invoice import Invoice, Problems
from .reconcile.mapping import Columns, Format, InvoiceMapping
from .reconcile.reconciler import CLASSES, reconcile, time_charge
from .storage.store import CallStore
from .tracking.record import CallRecord, iso_utc

HEADER = ("CallSid", "From", "StartTime", "Duration", "Charge")
MAPPING = InvoiceMapping(columns=Columns(session_id="CallSid", caller_number="From",
                                         started_at="StartTime", seconds="Duration",
                                         amount="Charge"),
                         format=Format(country_code="86"))  # the vendor writes +86...


#: bot-answered calls the demo needs to plant its discrepancies
MIN_CALLS = 4


def write_invoice(calls: list[CallRecord], ratings: dict[str, dict[str, str | None]],
                  charge: str | None, path: Path) -> dict[str, int]:
    """The vendor's usage detail for `calls` (bot-answered, one period), as a vendor would bill
    them (billed seconds and amounts from the calls' own rating), but: the first call not
    billed, the second billed 30 s longer, the third 0.10 dearer, and one line for a call nobody
    made. Returns the class counts this must give."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        for n, call in enumerate(calls):
            rating = ratings[call.call_id]
            billed = _billed(rating["charges"], charge, call)
            amount = Decimal(rating["cost"] or 0)
            if n == 0:
                continue
            billed += 30 if n == 1 else 0
            amount += Decimal("0.10") if n == 2 else 0
            out.writerow((call.bot_session_id or "", f"+86{call.caller_number}",
                          iso_utc(call.bot_answered_at), billed, amount))
        out.writerow(("", "+8613700000000", iso_utc(calls[-1].bot_answered_at), 60, "0.12"))
    expected = {"match": len(calls) - 3, "duration_differs": 1, "amount_differs": 1,
                "vendor_only": 1, "botmeter_only": 1}
    return expected


def _billed(charges: str | None, charge: str | None, call: CallRecord) -> Decimal:
    """The billed seconds of the plan's time charge, as the rating stored them (the bot's
    measured seconds for a plan without one)."""
    for name, metered, _ in json.loads(charges or "[]"):
        if name == charge:
            return Decimal(metered)
    assert call.bot_ended_at is not None and call.bot_answered_at is not None
    return Decimal(round((call.bot_ended_at - call.bot_answered_at) * 1000)).scaleb(-3)


def demo_reconcile(db: Path, series: PlanSeries, folder: Path) -> tuple[Table, bool] | None:
    """Reconcile the planted invoice of the first period's calls; True when each class holds
    what was planted. None with too few calls to plant the discrepancies."""
    store = CallStore(db, create=False)
    try:
        calls = [c for c in store.calls() if c.bot_answered_at is not None]
        period = min((period_of(c.ended_at, series.timezone) for c in calls), default=None)
        calls = sorted((c for c in calls if period_of(c.ended_at, series.timezone) == period),
                       key=lambda c: (c.ended_at, c.call_id))
        ratings = store.ratings(c.call_id for c in calls)
    finally:
        store.close()
    if period is None or len(calls) < MIN_CALLS:
        return None
    invoice = folder / "vendor-invoice.csv"
    expected = write_invoice(calls, ratings, time_charge(series, period)[1], invoice)
    result = reconcile(db, Invoice(invoice, MAPPING, series.currency, Problems()), series, period)
    try:
        summary = result.summary()
    finally:
        result.close()
    table = Table(title=f"reconcile: a vendor invoice for these calls with 4 discrepancies "
                        f"planted; disputed {summary['disputed_amount']} {summary['currency']}")
    for name in ("class", "lines", "planted", "vendor amount", "botmeter amount"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for name in CLASSES:
        row = summary["classes"][name]
        table.add_row(name, str(row["lines"]), str(expected[name]), row["vendor_amount"],
                      row["botmeter_amount"])
    same = all(summary["classes"][name]["lines"] == expected[name] for name in CLASSES)
    return table, same and summary["problem_count"] == 0
