"""The recorded calls' caller keys: SQL for plain national numbers, `caller_key` for the rest,
and together the same key `caller_key` gives every caller (a real SQLite, real copies)."""

from __future__ import annotations

import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from botmeter.reconcile import matching
from botmeter.reconcile.callers import caller_key, plain_key_sql, plain_sql

COUNTRIES = st.sampled_from([None, "1", "44", "86", "852", "1234"])
NUMBERS = st.one_of(
    st.text(alphabet="0123456789", max_size=16),
    st.text(alphabet="+0123456789 -()", max_size=16),
    st.builds(lambda cc, rest: f"+{cc}{rest}", st.sampled_from(["1", "44", "86", "852"]),
              st.text(alphabet="0123456789", max_size=12)),
    st.builds(lambda cc, rest: f"00{cc}{rest}", st.sampled_from(["1", "44", "86"]),
              st.text(alphabet="0123456789", max_size=12)),
    st.text(max_size=12),  # anything: letters, other scripts' digits, controls
)


def recorded(numbers: list[str | None]) -> sqlite3.Connection:
    """Calls from these numbers copied as `load_calls` copies them (plain ones keyed)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(matching.RECORDED_SCHEMA)
    conn.executemany(f"""
        INSERT INTO recorded (id, call_id, caller, ckey, tof, offered_at, outcome, in_period)
        VALUES (?1, 'c' || ?1, ?2, CASE WHEN {plain_sql('?2')} THEN {plain_key_sql('?2')} END,
                0, '', 'handled', 1)""", enumerate(numbers, 1))
    return conn


def keys(conn: sqlite3.Connection) -> list[str | None]:
    return [key for (key,) in conn.execute("SELECT ckey FROM recorded ORDER BY id")]


def sql_keys(numbers: list[str | None], country: str | None) -> list[str | None]:
    """Each number's key as `load_calls` and `fill_caller_keys` give a recorded call."""
    conn = recorded(numbers)
    matching.fill_caller_keys(conn, lambda number: caller_key(number, country))
    return keys(conn)


@given(st.lists(st.one_of(st.none(), NUMBERS), max_size=30), COUNTRIES)
def test_sql_and_python_give_every_caller_the_same_key(numbers, country):
    assert sql_keys(numbers, country) == [caller_key(n, country) for n in numbers]


def test_plain_numbers_are_their_own_keys_whatever_the_country():
    for country in (None, "86", "1"):
        odd = ["0139", "+86139", "８６", "139\x00001111"]
        assert sql_keys(["13900001111", "112", "12", *odd], country) == [
            "13900001111", "112", None, *(caller_key(n, country) for n in odd)]


def test_only_callers_that_are_not_plain_are_keyed_in_python():
    seen: list[str] = []

    def key(number: str) -> str | None:
        seen.append(number)
        return caller_key(number, "86")

    conn = recorded(["13900001111", "+8613900001111", "+8613900001111", "010 1234"])
    matching.fill_caller_keys(conn, key)
    assert sorted(seen) == ["+8613900001111", "010 1234"]  # each once
    assert keys(conn) == ["13900001111", "13900001111", "13900001111", "101234"]
