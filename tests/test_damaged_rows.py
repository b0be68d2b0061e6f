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
