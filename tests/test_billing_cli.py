"""Rating wired to storage and the CLI: rated on arrival, late calls re-rate, bill, compare."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from botmeter.cli import main
from botmeter.config import load_config
from botmeter.plans import active_series, load_plan_book
from botmeter.rating import PlanBook, build_statement, period_bounds, period_of, rate_calls
from botmeter.rerating import rate_stored
from botmeter.storage.rated_saver import RatedSaver
from botmeter.storage.store import CallStore

from .conftest import LAB_CAPTURE
from .rating_support import PLANS_DIR, local_ms, make_call

PLANS = f'\n[plans]\ndir = "{PLANS_DIR}"\nactive = "combined"\n'


def cli(config: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["--config", str(config), *args])


def stored(config: Path) -> tuple[CallStore, list]:
    store = CallStore(load_config(config).store_path())
    return store, store.calls()


def save_rated(store: CallStore, saver: RatedSaver, records: list) -> None:
    """Store calls rated as they come, then re-rate the periods found late and hand them
    back (what the live agent's re-rating thread does)."""
    saver(store, records)
    for period in saver.late:
        stored, rater, charges = rate_stored(store, saver.series, period)
        store.replace_ratings(stored, charges)
        assert saver.reopen(period, rater, charges) == {}


def test_replayed_calls_are_rated_and_amounts_add_up_to_the_bill(write_config):
    config = write_config(extra=PLANS)
    assert cli(config, "replay", str(LAB_CAPTURE)).exit_code == 0
    listed = json.loads(cli(config, "calls", "--format", "json").output)
    assert {c["plan_id"] for c in listed} == {"combined"} and {c["currency"] for c in listed} == {"CNY"}
    statement = json.loads(cli(config, "bill", "--period", "2026-11", "--format", "json").output)
    usage = sum(Decimal(line["amount"]) for line in statement["lines"] if line["kind"] == "usage")
    assert sum(Decimal(c["cost"]) for c in listed) == usage
    assert statement["plan_id"] == "combined" and statement["period"] == "2026-11"
    kinds = [line["kind"] for line in statement["lines"]]
    assert kinds.count("usage") == 2 and "fee" in kinds and "sla_fee" in kinds
    # the transfers charge: 5 transferred calls at 0.05
    transfers = next(line for line in statement["lines"] if line["name"] == "Transfers to agents")
    assert (transfers["quantity"], transfers["amount"]) == ("5", "0.2500")


def test_stored_amounts_equal_rating_the_period_in_order_whatever_the_arrival_order(tmp_path, write_config):
    config = write_config(extra=PLANS)
    cfg = load_config(config)
    series = active_series(cfg, load_plan_book(cfg))
    # 200 calls of 50 minutes each: the 5,000-minute bundle runs out in the middle
    calls = [make_call(f"c{i:03d}", bot=3000.0, end_ms=local_ms(2026, 11, 2) + i * 3_600_000)
             for i in range(200)]
    store = CallStore(cfg.store_path())
    saver = RatedSaver(series, fresh_after=0.0)  # periods open empty: no call stored
    order = calls[100:] + calls[:50] + calls[50:100]  # late calls arrive after later ones
    for start in range(0, len(order), 30):
        save_rated(store, saver, order[start:start + 30])
    expected = rate_calls(calls, series)
    got = store.ratings(c.call_id for c in calls)
    assert {cid: Decimal(r["cost"]) for cid, r in got.items()} == {
        cid: charge.amount for cid, charge in expected.items()}
    assert any(charge.amount > 0 for charge in expected.values())  # the bundle did run out
    lines = json.loads(got["c150"]["charges"])
    assert [line[0] for line in lines] == ["Bot minutes", "Transfers to agents"]
    statement = build_statement(series, "2026-11", calls)
    assert sum(charge.amount for charge in expected.values()) == statement.usage_amount


def test_rerate_command_after_a_plan_change(write_config, tmp_path):
    plans = tmp_path / "plans"
    shutil.copytree(PLANS_DIR, plans)
    config = write_config(extra=f'\n[plans]\ndir = "{plans}"\nactive = "per-minute"\n')
    assert cli(config, "replay", str(LAB_CAPTURE)).exit_code == 0
    before = {c["call_id"]: c["cost"] for c in json.loads(cli(config, "calls", "--format", "json").output)}
    text = (plans / "per-minute.toml").read_text()
    (plans / "per-minute.toml").write_text(text.replace('price = "0.12"', 'price = "0.24"'))
    result = cli(config, "rerate", "--period", "2026-11")
    assert result.exit_code == 0 and "re-rated 13 calls of 2026-11 under per-minute" in result.output
    after = {c["call_id"]: c["cost"] for c in json.loads(cli(config, "calls", "--format", "json").output)}
    assert after.keys() == before.keys()
    assert all(Decimal(after[k]) == 2 * Decimal(before[k]) for k in before)
    assert any(Decimal(v) > 0 for v in after.values())


def test_bill_table_and_period_boundary_in_the_plan_time_zone(write_config):
    config = write_config(extra=PLANS)
    cfg = load_config(config)
    store = CallStore(cfg.store_path())
    series = active_series(cfg, load_plan_book(cfg))
    last = make_call("nov", bot=120.0, end_ms=local_ms(2026, 11, 30, 23, 59, 59))
    first = make_call("dec", bot=120.0, end_ms=local_ms(2026, 12, 1, 0, 0, 0))
    save_rated(store, RatedSaver(series), [last, first])
    start, end = period_bounds("2026-11", series.timezone)
    assert [c.call_id for c in store.calls_ended_between(start, end)] == ["nov"]
    november = json.loads(cli(config, "bill", "--period", "2026-11", "--format", "json").output)
    december = json.loads(cli(config, "bill", "--period", "2026-12", "--format", "json").output)
    assert november["lines"][0]["quantity"] == december["lines"][0]["quantity"] == "2"  # minutes
    table = cli(config, "bill", "--period", "2026-11")
    assert table.exit_code == 0 and "Bot minutes" in table.output and "total" in table.output


def test_plans_compare_orders_cheapest_first_with_difference_to_active(write_config):
    config = write_config(extra=PLANS)
    assert cli(config, "replay", str(LAB_CAPTURE)).exit_code == 0
    files = [str(PLANS_DIR / name) for name in ("per-minute.toml", "per-call.toml", "bundle.toml")]
    result = cli(config, "plans", "compare", "--period", "2026-11", "--format", "json", *files)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    totals = [Decimal(p["total"]) for p in data["plans"]]
    assert totals == sorted(totals)
    assert {p["plan_id"] for p in data["plans"]} == {"per-minute", "per-call", "bundle-5000", "combined"}
    active = next(p for p in data["plans"] if p["active"])
    assert active["plan_id"] == "combined" and Decimal(active["difference"]) == 0
    for plan in data["plans"]:
        assert Decimal(plan["difference"]) == Decimal(plan["total"]) - Decimal(active["total"])
    assert len(data["break_even"]) == 6  # every pair of the four plans
    table = cli(config, "plans", "compare", "--period", "2026-11", *files)
    assert table.exit_code == 0 and "Break-even" in table.output


@pytest.mark.parametrize(("args", "message"), [
    (["bill", "--period", "2026-13"], "not a period"),
    (["bill", "--period", "2026-11", "--plan", "nope"], "--plan"),
    (["rerate", "--period", "11/2026"], "not a period"),
    (["plans", "compare", "--period", "2026-11", "/does/not/exist.toml"], "does not exist"),
])
def test_bad_billing_arguments(write_config, args, message):
    result = cli(write_config(extra=PLANS), *args)
    assert result.exit_code == 2 and message in result.output


def test_bad_plan_file_stops_run_and_replay_naming_file_key_and_reason(write_config, tmp_path):
    plans = tmp_path / "plans"
    shutil.copytree(PLANS_DIR, plans)
    bad = plans / "per-call.toml"
    bad.write_text(bad.read_text().replace('price = "', 'prise = "', 1))
    config = write_config(extra=f'\n[plans]\ndir = "{plans}"\nactive = "combined"\n')
    for args in (["replay", str(LAB_CAPTURE)], ["run"], ["bill", "--period", "2026-11"]):
        result = cli(config, *args)
        assert result.exit_code == 2, (args, result.output)
        assert str(bad) in result.output and "charge[1].prise" in result.output


def test_unknown_active_plan_is_a_configuration_error(write_config):
    config = write_config(extra=PLANS.replace('active = "combined"', 'active = "gold"'))
    result = cli(config, "replay", str(LAB_CAPTURE))
    assert result.exit_code == 2
    assert "plans.active" in result.output and "gold" in result.output and "combined" in result.output


async def test_live_agent_stores_then_rates_and_amounts_match_the_bill(tmp_path):
    from botmeter.demo import record_scripted_calls
    from botmeter.sim.scenarios import mixed_calls

    db = tmp_path / "live.db"
    calls = mixed_calls(16, seed=8)
    records = await record_scripted_calls(calls, db, speed=60, concurrency=16, plans=PLANS_DIR)
    store = CallStore(db)
    ratings = store.ratings(r.call_id for r in records)
    assert len(ratings) == 16 and all(r["plan_id"] == "combined" for r in ratings.values())
    series = PlanBook.load(PLANS_DIR).series("combined")
    periods = {period_of(r.ended_at, series.timezone) for r in records}
    usage = sum(build_statement(series, p, records).usage_amount for p in periods)
    assert sum(Decimal(r["cost"]) for r in ratings.values()) == usage
    expected = rate_calls(records, series)
    assert {cid: Decimal(r["cost"]) for cid, r in ratings.items()} == {
        cid: c.amount for cid, c in expected.items()}
