"""A row edited or damaged by hand never stops the others: module usage that is not module
usage reads as none, for listings, statements and re-rating alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from botmeter.rating import PlanBook, build_statement
from botmeter.storage.store import CallStore

from .rating_support import PLANS_DIR, make_call

DAMAGED = ["garbage", "[]", "null", '{"asr": 1}', '{"asr": ["x", "s"]}', '{"asr": [1]}']


@pytest.mark.parametrize("text", DAMAGED)
def test_damaged_module_usage_reads_as_none_and_the_month_still_bills(tmp_path: Path,
                                                                      text: str) -> None:
    store = CallStore(tmp_path / "c.db")
    calls = [make_call(f"c{i}", bot=60.0, modules={"asr": "12.5"}) for i in range(3)]
    store.save(calls)
    store.db.conn.execute("UPDATE calls SET modules = ? WHERE call_id = 'c1'", (text,))
    read = {c.call_id: dict(c.modules) for c in store.calls()}
    assert read["c1"] == {} and read["c0"] == read["c2"] == dict(calls[0].modules)
    series = PlanBook.load(PLANS_DIR).series("per-module")
    statement = build_statement(series, "2026-11", store.calls_ended_between(0, 4e9))
    assert statement.calls == 3
    store.close()


def test_a_report_goes_on_past_damaged_json(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from botmeter.reports.metrics import Pricing, build_report
    from botmeter.reports.window import Window
    from botmeter.tracking.record import Csat

    book = PlanBook.load(PLANS_DIR)
    store = CallStore(tmp_path / "c.db")
    calls = [make_call(f"c{i}", bot=60.0, modules={"asr": "12.5"})._replace(csat=Csat(4, 5))
             for i in range(4)]
    store.save(calls)
    for column, text in (("modules", "garbage"), ("csat", "not json"), ("charges", "{oops")):
        store.db.conn.execute(f"UPDATE calls SET {column} = ? WHERE call_id = 'c1'", (text,))
    active = book.series("per-module")
    report = build_report(store, Window.month("2026-11", ZoneInfo("Asia/Shanghai")), "day",
                          Pricing(active=active, plans=[active, book.series("bundle-5000")]))
    assert report["totals"]["offered"] == 4
    assert report["totals"]["csat"]["responses"] == 3
    assert report["totals"]["modules"]["asr"]["quantity"] == 37.5  # c1's usage is unreadable
    store.close()
