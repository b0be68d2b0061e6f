"""Plan currencies follow the current ISO 4217 list (amendments up to 2025)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from botmeter.rating import PlanError, build_statement
from botmeter.rating.currencies import ACTIVE, minor_unit
from tests.rating_support import make_call, plan_from


def plan_in(code: str) -> str:
    return f"""
[plan]
id = "p"
currency = "{code}"
timezone = "UTC"
[[charge]]
name = "Calls"
metric = "calls"
price = "0.125"
"""


@pytest.mark.parametrize(("code", "digits"), [
    ("ZWG", 2),  # Zimbabwe Gold, amendment 177 (2024)
    ("VES", 2),
    ("VED", 2),  # the digital bolivar
    ("SLE", 2),  # the redenominated leone
    ("XCG", 2),  # the Caribbean guilder, amendment 180 (2025)
    ("XAD", 2),  # the Arab Accounting Dinar, amendment 179 (2025)
    ("MRU", 2), ("STN", 2), ("CNY", 2), ("EUR", 2),
    ("JPY", 0), ("KRW", 0), ("VUV", 0), ("UYI", 0),
    ("KWD", 3), ("IQD", 3), ("TND", 3),
    ("CLF", 4), ("UYW", 4),
])
def test_current_codes_are_known_with_their_minor_unit(code: str, digits: int) -> None:
    assert minor_unit(code) == digits
    plan = plan_from(plan_in(code))
    assert plan.currency == code and plan.minor_unit == digits


@pytest.mark.parametrize(("code", "successor"), [
    ("HRK", "EUR"), ("SLL", "SLE"), ("ZWL", "ZWG"), ("VEF", "VES"), ("MRO", "MRU"),
    ("STD", "STN"), ("CUC", "CUP"), ("ANG", "XCG"), ("BYR", "BYN"), ("LTL", "EUR"),
])
def test_withdrawn_codes_are_refused_naming_their_successor(code: str, successor: str) -> None:
    assert code not in ACTIVE
    with pytest.raises(PlanError) as caught:
        plan_from(plan_in(code))
    assert caught.value.key == "plan.currency"
    assert caught.value.reason == (f"{code!r} was withdrawn from ISO 4217 (its successor is "
                                   f"{successor!r})")


@pytest.mark.parametrize("code", ["XAU", "XDR", "XTS", "XXX"])
def test_codes_without_a_minor_unit_cannot_bill(code: str) -> None:
    assert code in ACTIVE and minor_unit(code) is None
    with pytest.raises(PlanError, match="without a minor unit"):
        plan_from(plan_in(code))


@pytest.mark.parametrize("code", ["RMB", "XYZ", "cny", "EURO"])
def test_unknown_codes_are_refused(code: str) -> None:
    with pytest.raises(PlanError, match="not a known ISO 4217 currency code"):
        plan_from(plan_in(code))


def test_the_list_is_the_whole_current_list() -> None:
    # 179 codes in list one after amendment 180 (2025), 13 of them without a minor unit
    assert len(ACTIVE) == 179
    assert sum(1 for digits in ACTIVE.values() if digits is None) == 13
    assert all(len(code) == 3 and code.isupper() for code in ACTIVE)


def test_totals_round_to_the_new_codes_minor_unit() -> None:
    # 3 calls at 0.125: 0.375, rounded half-up once to each currency's minor unit
    calls = [make_call(f"c{i}") for i in (1, 2, 3)]
    totals = {code: build_statement(plan_from(plan_in(code)), "2026-11", calls).total
              for code in ("ZWG", "XAD", "KWD", "VUV", "CLF")}
    assert totals == {"ZWG": Decimal("0.38"), "XAD": Decimal("0.38"), "KWD": Decimal("0.375"),
                      "VUV": Decimal("0"), "CLF": Decimal("0.3750")}
