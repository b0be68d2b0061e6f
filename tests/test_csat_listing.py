"""`botmeter calls --csat-min/--csat-max`: the store's filter compares each rating on the
5-point scale exactly (no float at the bounds), for every scale from 2 to 10."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from botmeter.cli import main
from botmeter.storage.store import CallFilter, CallStore
from botmeter.tracking.record import Csat

from .test_store import record

#: every rating there can be: (score, scale), scale 2..10
RATINGS = [(score, scale) for scale in range(2, 11) for score in range(1, scale + 1)]


def on_five(score: int, scale: int) -> Fraction:
    """The rating on the 5-point scale, exactly (independent of Csat.on_five)."""
    return 1 + Fraction(4 * (score - 1), scale - 1)


def _bounds() -> list[Decimal]:
    """Bounds to try: a grid, and for every rating its value to 6 decimals and the 6-decimal
    numbers either side (exact where the value has at most 6 decimals, e.g. 4, 1.5, 1.8)."""
    six = Decimal("0.000001")
    found = {Decimal(n) / 4 for n in range(4, 21)}  # 1, 1.25, ..., 5
    for score, scale in RATINGS:
        value = on_five(score, scale)
        near = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(six)
        found |= {near - six, near, near + six}
    return sorted(b for b in found if 1 <= b <= 5)


BOUNDS = _bounds()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CallStore:
    db = tmp_path_factory.mktemp("csat") / "csat.db"
    s = CallStore(db)
    calls = [record(f"{score}/{scale}", 1_795_000_000.0 + n)._replace(csat=Csat(score, scale))
             for n, (score, scale) in enumerate(RATINGS)]
    s.save([*calls, record("none", 1_795_100_000.0)])
    return s


def _ids(store: CallStore, **bounds: Decimal) -> set[str]:
    return {r.call_id for r in store.calls(CallFilter(**bounds))}  # type: ignore[arg-type]


def test_the_bounds_are_exact_for_every_rating(store: CallStore) -> None:
    assert len(BOUNDS) > 80  # the 54 ratings take 29 values
    for bound in BOUNDS:
        exact = Fraction(bound)
        at_least = {f"{s}/{k}" for s, k in RATINGS if on_five(s, k) >= exact}
        at_most = {f"{s}/{k}" for s, k in RATINGS if on_five(s, k) <= exact}
        assert _ids(store, csat_min=bound) == at_least, bound
        assert _ids(store, csat_max=bound) == at_most, bound
        assert _ids(store, csat_min=bound, csat_max=bound) == at_least & at_most, bound


def test_on_five_agrees_with_the_filter_at_the_documented_points(store: CallStore) -> None:
    assert Csat(4, 5).on_five() == 4 and Csat(8, 10).on_five() > Decimal("4.11")
    assert _ids(store, csat_min=Decimal(4), csat_max=Decimal(4)) == {"4/5", "7/9"}
    assert _ids(store, csat_min=Decimal(5)) == {f"{k}/{k}" for k in range(2, 11)}
    assert _ids(store, csat_max=Decimal(1)) == {f"1/{k}" for k in range(2, 11)}
    # with no bound, unrated calls are listed too; with any bound, never
    assert "none" in _ids(store) and "none" not in _ids(store, csat_min=Decimal(1))


def _cli(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["calls", "--db", str(db), "--format", "json", *args])
    return result.exit_code, result.output


def test_the_cli_bounds(store: CallStore) -> None:
    code, out = _cli(store.path, "--csat-min", "4", "--csat-max", "4.0")
    assert code == 0 and sorted(r["call_id"] for r in json.loads(out)) == ["4/5", "7/9"]
    code, out = _cli(store.path, "--csat-min", "4.111111", "--csat-max", "4.111112")
    assert code == 0 and [r["csat"] for r in json.loads(out)] == [{"score": 8, "scale": 10}]
    for bad in ("0", "0.99", "5.01", "6", "four", "4,5", "1e0", "nan", "４", "-1", "4.1234567"):
        code, out = _cli(store.path, "--csat-min", bad)
        assert code == 2 and "--csat-min" in out, (bad, out)
