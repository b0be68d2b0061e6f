"""Plan files: loading, validation (file, key and reason), and plan books."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from botmeter.rating import PlanBook, PlanError, UnknownPlan, load_plan
from tests.rating_support import PLANS_DIR

HEAD = """
[plan]
id = "p"
currency = "CNY"
timezone = "Asia/Shanghai"
"""
CHARGE = """
[[charge]]
name = "Bot minutes"
metric = "bot_seconds"
unit = 60
"""


def refused(tmp_path: Path, text: str, name: str = "plan.toml") -> PlanError:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    error = caught.value
    assert str(error) == f"{path}: {error.key}: {error.reason}"
    assert error.path == str(path)
    return error


@pytest.mark.parametrize(("text", "key", "reason"), [
    (HEAD + CHARGE + 'prise = "0.12"\n', "charge[1].prise", "unknown key"),
    (HEAD + CHARGE + 'price = "0.12"\n' + CHARGE.replace("Bot", "Other") + 'price = "1"\nfoo = 1\n',
     "charge[2].foo", "unknown key"),
    (HEAD + 'colour = "red"\n', "plan.colour", "unknown key"),
    (HEAD + "[extras]\nx = 1\n", "extras", "unknown key"),
    (HEAD + CHARGE + 'model = "graduated"\ntiers = [{ price = "1", upto = 3 }]\n',
     "charge[1].tiers[1].upto", "unknown key"),
    (HEAD + "[sla]\nfee = \"1\"\nanswer_rate = 0.9\nmax_ring_seconds = 5\ncredit_percent = 1\n"
     "credits = 2\n", "sla.credits", "unknown key"),
    (HEAD + CHARGE + 'price = "-0.12"\n', "charge[1].price", "must not be negative"),
    (HEAD + '[[fee]]\nname = "x"\namount = "-5"\n', "fee[1].amount", "must not be negative"),
    (HEAD + CHARGE + 'model = "graduated"\ntiers = [{ up_to = 5, price = "-1" }, { price = "1" }]\n',
     "charge[1].tiers[1].price", "must not be negative"),
    (HEAD + CHARGE + "price = 0.12\n", "charge[1].price",
     'quoted decimal string, e.g. price = "0.12"'),
    (HEAD + CHARGE + "price = 1\n", "charge[1].price", 'quoted decimal string, e.g. price = "1"'),
    (HEAD + '[[fee]]\nname = "x"\namount = 2000.5\n', "fee[1].amount",
     'quoted decimal string, e.g. amount = "2000.5"'),
    (HEAD + CHARGE + "included = 2.5\nprice = \"1\"\n", "charge[1].included", "TOML float"),
    (HEAD + CHARGE + 'model = "graduated"\ntiers = [{ up_to = 10, price = "1" }, '
     '{ up_to = 5, price = "1" }, { price = "1" }]\n',
     "charge[1].tiers[2].up_to", "tiers out of order"),
    (HEAD + CHARGE + 'model = "volume"\ntiers = [{ up_to = 10, price = "1" }, '
     '{ up_to = 10, price = "1" }, { price = "1" }]\n',
     "charge[1].tiers[2].up_to", "tiers out of order"),
    (HEAD + CHARGE + 'model = "graduated"\ntiers = [{ price = "1" }, { up_to = 5, price = "1" }]\n',
     "charge[1].tiers[1]", "must be the last tier"),
    (HEAD + CHARGE + 'model = "graduated"\ntiers = [{ up_to = 5, price = "1" }]\n',
     "charge[1].tiers[1].up_to", "the last tier must have no up_to"),
    (HEAD + CHARGE + 'model = "graduated"\nprice = "1"\n', "charge[1].price", "tiers"),
    (HEAD + CHARGE + 'model = "graduated"\n', "charge[1].tiers", "required"),
    (HEAD + CHARGE + 'tiers = [{ price = "1" }]\nprice = "1"\n', "charge[1].tiers", "only for"),
    (HEAD + CHARGE + 'model = "package"\nprice = "2.00"\n', "charge[1].package_size",
     'required when model = "package"'),
    (HEAD + CHARGE + 'price = "2.00"\npackage_size = 3\n', "charge[1].package_size", "only for"),
    (HEAD + CHARGE + 'model = "package"\nprice = "2.00"\npackage_size = 0\n',
     "charge[1].package_size", "greater than 0"),
    (HEAD + CHARGE + 'model = "flat"\nprice = "1"\n', "charge[1].model", "not one of"),
    (HEAD.replace("CNY", "XYZ"), "plan.currency", "not a known ISO 4217"),
    (HEAD.replace("CNY", "cny"), "plan.currency", "not a known ISO 4217"),
    (HEAD.replace("Asia/Shanghai", "Asia/Beijing"), "plan.timezone", "not a known IANA"),
    (HEAD.replace("Asia/Shanghai", "../etc/passwd"), "plan.timezone", "not a known IANA"),
    (HEAD.replace('id = "p"', 'id = "Bundle 2026"'), "plan.id", "[a-z0-9._-]+"),
    (HEAD.replace('id = "p"\n', ""), "plan.id", "required"),
    ('[plan]\nid = "p"\ncurrency = "CNY"\n', "plan.timezone", "required"),
    (HEAD + 'effective_from = "2026-13-01"\n', "plan.effective_from", "date"),
    (HEAD + 'precision = "0.0005"\n', "plan.precision", "power of ten"),
    (HEAD + 'precision = "10"\n', "plan.precision", "power of ten"),
    (CHARGE, "plan", "required"),
    (HEAD + CHARGE.replace("bot_seconds", "minutes") + 'price = "1"\n', "charge[1].metric",
     "not one of"),
    (HEAD + CHARGE.replace("bot_seconds", "module:") + 'price = "1"\n', "charge[1].metric",
     "module name"),
    (HEAD + CHARGE + 'price = "1"\noutcomes = ["handled", "hungup"]\n', "charge[1].outcomes",
     "'hungup' is not an outcome"),
    (HEAD + CHARGE + 'price = "1"\noutcomes = []\n', "charge[1].outcomes", "non-empty"),
    (HEAD + CHARGE.replace("bot_seconds", "calls").replace("unit = 60\n", "") +
     'price = "1"\nmin_seconds = 3\n', "charge[1].min_seconds", "only for time metrics"),
    (HEAD + CHARGE + 'price = "1"\nblock = 0\n', "charge[1].block", "at least 1"),
    (HEAD + CHARGE + 'price = "1"\nfirst_block = 1.5\n', "charge[1].first_block", "whole number"),
    (HEAD + CHARGE.replace("unit = 60", "unit = 0") + 'price = "1"\n', "charge[1].unit",
     "greater than 0"),
    (HEAD + CHARGE + 'price = "1"\n' + CHARGE + 'price = "2"\n', "charge[2].name",
     "already the name of charge[1]"),
    (HEAD + '[[fee]]\nname = "Setup"\namount = "1"\nevery = "once"\n', "fee[1].on", "required"),
    (HEAD + '[[fee]]\nname = "Setup"\namount = "1"\non = "2026-01-01"\n', "fee[1].on", "only for"),
    (HEAD + '[[fee]]\nname = "Setup"\namount = "1"\nevery = "yearly"\n', "fee[1].every",
     "not one of"),
    (HEAD + "[sla]\nfee = \"1\"\nanswer_rate = 1.5\nmax_ring_seconds = 5\ncredit_percent = 1\n",
     "sla.answer_rate", "between 0 and 1"),
    (HEAD + "[sla]\nfee = \"1\"\nanswer_rate = 0.9\ncredit_percent = 1\n", "sla.max_ring_seconds",
     "required"),
    (HEAD + "[sla]\nfee = 300.0\nanswer_rate = 0.9\nmax_ring_seconds = 5\ncredit_percent = 1\n",
     "sla.fee", 'quoted decimal string, e.g. fee = "300.0"'),
    ("charge = 3\n" + HEAD, "charge", "array of tables"),
    (HEAD + "[plan.x\n", "(syntax)", "line"),
])
def test_bad_plan_files_are_refused(tmp_path: Path, text: str, key: str, reason: str) -> None:
    error = refused(tmp_path, text)
    assert error.key == key
    assert reason in error.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="nope.toml: \\(file\\)"):
        load_plan(tmp_path / "nope.toml")


def test_two_versions_with_the_same_effective_from_name_both_files(tmp_path: Path) -> None:
    version = HEAD + 'effective_from = "2026-11-01"\n' + CHARGE + 'price = "1"\n'
    (tmp_path / "a.toml").write_text(version, encoding="utf-8")
    (tmp_path / "b.toml").write_text(version.replace('"1"', '"2"'), encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        PlanBook.load(tmp_path)
    assert caught.value.key == "plan.effective_from"
    assert str(tmp_path / "a.toml") in str(caught.value)
    assert str(tmp_path / "b.toml") in str(caught.value)


def test_two_versions_without_effective_from_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(HEAD, encoding="utf-8")
    (tmp_path / "b.toml").write_text(HEAD, encoding="utf-8")
    with pytest.raises(PlanError, match="already has a version"):
        PlanBook.load(tmp_path)


def test_versions_must_share_currency_and_timezone(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(HEAD, encoding="utf-8")
    (tmp_path / "b.toml").write_text(HEAD.replace("CNY", "USD") + 'effective_from = "2026-01-01"\n',
                                     encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        PlanBook.load(tmp_path)
    assert caught.value.key == "plan.currency" and str(tmp_path / "a.toml") in caught.value.reason


def test_a_bad_file_in_a_book_is_named(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text(HEAD, encoding="utf-8")
    (tmp_path / "bad.toml").write_text(HEAD + CHARGE + "price = 0.1\n", encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        PlanBook.load(tmp_path)
    assert caught.value.path == str(tmp_path / "bad.toml")


def test_example_plans_load() -> None:
    book = PlanBook.load(PLANS_DIR)
    assert set(book.plan_ids) == {"per-minute", "per-call", "bundle-5000", "graduated", "volume",
                                  "per-module", "combined"}
    combined = book.series("combined").latest
    assert [c.metric for c in combined.charges] == ["bot_seconds", "calls"]
    assert [f.every for f in combined.fees] == ["period", "once"]
    assert combined.sla is not None and combined.sla.answer_rate == Decimal("0.98")
    modules = book.series("per-module").latest
    assert [c.metric for c in modules.charges] == ["module:asr", "module:nlu", "module:tts",
                                                   "module:qa"]
    with pytest.raises(UnknownPlan):
        book.series("nope")


def test_plan_values_are_typed_and_immutable() -> None:
    plan = load_plan(PLANS_DIR / "graduated.toml")
    assert plan.precision == Decimal("0.0001") and plan.minor_unit == 2
    assert plan.timezone.key == "Asia/Shanghai"
    assert [(t.up_to, t.price) for t in plan.charges[0].tiers] == [
        (Decimal(10000), Decimal("0.12")), (Decimal(50000), Decimal("0.10")),
        (None, Decimal("0.08"))]
    with pytest.raises(AttributeError):
        plan.name = "x"  # type: ignore[misc]


def test_toml_dates_and_strings_both_work(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(HEAD + "effective_from = 2026-11-01\n", encoding="utf-8")
    assert load_plan(path).effective_from.isoformat() == "2026-11-01"


# Absurd amounts: refused at load (fast), never left to stall or crash rating later

HUGE = [
    ('"1e1000"', "too large: at most 12 digits before the decimal point"),
    ('"1e999999999"', "too large: at most 12 digits before the decimal point"),
    ('"1E+13"', "too large"),
    ('"' + "9" * 40 + '"', "too large"),
    ('"0.' + "1" * 20 + '"', "has 20 decimal places: at most 6"),
    ('"1e-999999999"', "decimal places: at most 6"),
    ('"0.0000001"', "has 7 decimal places"),
    # spellings Decimal() takes but nobody means: "0_12" would bill 12, not 0.12
    ('"0_12"', "is not a decimal number"),
    ('" 0.12 "', "is not a decimal number"),
    ('"\u0660.\u0661\u0662"', "is not a decimal number"),  # Arabic-Indic digits
    ('"\uff10.\uff11\uff12"', "is not a decimal number"),  # full-width digits
    ('".5"', "is not a decimal number"),
]


@pytest.mark.parametrize(("value", "reason"), HUGE)
@pytest.mark.parametrize(("template", "key"), [
    (HEAD + CHARGE + "price = {}\n", "charge[1].price"),
    (HEAD + '[[fee]]\nname = "x"\namount = {}\n', "fee[1].amount"),
    (HEAD + CHARGE + 'model = "graduated"\ntiers = [{{ up_to = 5, price = {} }}, { price = "1" }]\n',
     "charge[1].tiers[1].price"),
    (HEAD + CHARGE + 'price = "1"\nincluded = {}\n', "charge[1].included"),
    (HEAD + CHARGE.replace("unit = 60", "unit = {}") + 'price = "1"\n', "charge[1].unit"),
    (HEAD + "[sla]\nfee = {}\nanswer_rate = 0.9\nmax_ring_seconds = 5\ncredit_percent = 1\n",
     "sla.fee"),
    (HEAD + '[sla]\nfee = "1"\nanswer_rate = 0.9\nmax_ring_seconds = {}\ncredit_percent = 1\n',
     "sla.max_ring_seconds"),
])
def test_absurd_numbers_are_refused_at_load(tmp_path: Path, template: str, key: str, value: str,
                                            reason: str) -> None:
    started = time.monotonic()
    error = refused(tmp_path, template.replace("{}", value).replace("{{", "{").replace("}}", "}"))
    assert time.monotonic() - started < 1.0
    assert error.key == key and reason in error.reason
    assert len(str(error)) < 300  # the value is quoted short


@pytest.mark.parametrize(("text", "key", "reason"), [
    (HEAD + CHARGE + "price = \"1\"\nincluded = " + "9" * 40 + "\n", "charge[1].included",
     "too large"),
    (HEAD + CHARGE + "price = \"1\"\nblock = " + "9" * 13 + "\n", "charge[1].block", "too large"),
    (HEAD + CHARGE + "price = \"1\"\nincluded = " + "9" * 5000 + "\n", "(syntax)",
     "too many digits"),
    (HEAD + 'precision = "0.0000001"\n', "plan.precision", "has 7 decimal places"),
    (HEAD + "[sla]\nfee = \"1\"\nanswer_rate = 0.12345678\nmax_ring_seconds = 5\n"
     "credit_percent = 1\n", "sla.answer_rate", "has 8 decimal places"),
])
def test_absurd_integers_and_floats_are_refused(tmp_path: Path, text: str, key: str,
                                                reason: str) -> None:
    error = refused(tmp_path, text)
    assert error.key == key and reason in error.reason


def test_numbers_within_bounds_load_without_exponent(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(HEAD + 'precision = "0.000001"\n' + CHARGE +
                    'price = "999999999999.999999"\nincluded = "1.5e3"\n'
                    '[[fee]]\nname = "x"\namount = "2000.00"\n', encoding="utf-8")
    plan = load_plan(path)
    assert plan.charges[0].price == Decimal("999999999999.999999")
    included = plan.charges[0].included
    assert included == 1500 and format(included, "f") == "1500"
    assert format(plan.fees[0].amount, "f") == "2000.00"  # trailing zeros are kept
