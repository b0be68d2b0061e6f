"""`botmeter reconcile`: a hand-made invoice over the lab's recorded calls, each class planted
on purpose, the disputed amount computed by hand, every line and call in exactly one class."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from .reconcile_support import (
    PERIOD,
    cli,
    invoice_line,
    per_minute_billed,
    reconcile_json,
    recorded_calls,
    signalling_calls,
    write_invoice,
    write_mapping,
)

CLASSES = ("match", "duration_differs", "amount_differs", "vendor_only", "botmeter_only")


def answered(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls the bot answered and the plan bills something for (3 s or more)."""
    return [c for c in calls if c["bot_answered_at"] and c["bot_seconds"] >= 3]


@pytest.fixture
def lab(write_config):  # type: ignore[no-untyped-def]
    return recorded_calls(write_config)


def test_each_class_is_found_and_the_disputed_amount_is_the_hand_computed_sum(write_config,
                                                                             tmp_path):
    # the bots of the lab's signalling calls send their platform's session id with `start`
    sessions = {call: f"vendor-call-{n:04d}" for n, call in enumerate(signalling_calls(), 1)}
    config, calls = recorded_calls(write_config, sessions)
    bot = answered(calls)
    assert len(bot) >= 6
    by_session = next(c for c in bot if c["call_id"] in sessions)
    assert by_session["bot_session_id"] == sessions[by_session["call_id"]]
    plain, longer, dearer, unbilled = [c for c in bot if c is not by_session][:4]
    session = sessions[by_session["call_id"]]
    late = datetime.fromisoformat(by_session["bot_answered_at"]) + timedelta(seconds=7)
    longer_seconds = per_minute_billed(longer["bot_seconds"])[0] + 12  # and billed for them
    longer_amount = (Decimal(longer_seconds) / 60 * Decimal("0.12")).quantize(Decimal("0.0001"))
    dearer_amount = Decimal("0.5000")
    extra_amount = Decimal("0.3600")
    lines = [
        # matched by session id: the vendor writes the caller in international form, with a
        # start 7 s off the bot's answer (too far for caller and time: the session decides)
        invoice_line(by_session, session=session, caller="+86 " + by_session["caller_number"],
                     start=late.isoformat()),
        invoice_line(plain, caller="0086" + plain["caller_number"]),
        invoice_line(longer, seconds=longer_seconds, amount=longer_amount),
        invoice_line(dearer, amount=dearer_amount),
        ("", "+8613700000000", plain["bot_answered_at"], "60", str(extra_amount)),  # nobody
    ]
    # every other bot-answered call billed as the plan says, but `unbilled` left out
    lines += [invoice_line(c) for c in calls
              if c["bot_answered_at"] and c not in (by_session, plain, longer, dearer, unbilled)]
    invoice = write_invoice(tmp_path / "usage.csv", lines)
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))

    by_class = {name: [line for line in result["lines"] if line["class"] == name]
                for name in CLASSES}
    assert [line["call_id"] for line in by_class["duration_differs"]] == [longer["call_id"]]
    assert [line["call_id"] for line in by_class["amount_differs"]] == [dearer["call_id"]]
    assert [line["vendor"]["line"] for line in by_class["vendor_only"]] == [6]
    assert [line["call_id"] for line in by_class["botmeter_only"]] == [unbilled["call_id"]]
    session_line = next(line for line in result["lines"]
                        if line["call_id"] == by_session["call_id"])
    assert session_line["class"] == "match" and session_line["matched_by"] == "session_id"
    assert session_line["vendor"]["caller_number"] == "+86 " + by_session["caller_number"]
    assert session_line["botmeter"]["bot_session_id"] == session
    assert session_line["seconds_apart"] == "7"
    plain_line = next(line for line in result["lines"] if line["call_id"] == plain["call_id"])
    assert (plain_line["class"], plain_line["matched_by"]) == ("match", "caller_time")

    # the dispute: what the vendor billed above botmeter, by hand
    dearer_cost = per_minute_billed(dearer["bot_seconds"])[1]
    longer_cost = per_minute_billed(longer["bot_seconds"])[1]
    expected = extra_amount + (dearer_amount - dearer_cost) + (longer_amount - longer_cost)
    assert longer_amount > longer_cost
    assert Decimal(result["disputed_amount"]) == expected
    assert Decimal(result["classes"]["vendor_only"]["vendor_amount"]) == extra_amount
    assert Decimal(result["classes"]["amount_differs"]["botmeter_amount"]) == dearer_cost

    # every vendor line once, every bot-answered call of the period once
    vendor_lines = Counter(line["vendor"]["line"] for line in result["lines"] if line["vendor"])
    assert sorted(vendor_lines) == list(range(2, 2 + len(lines)))
    assert set(vendor_lines.values()) == {1}
    call_ids = Counter(line["call_id"] for line in result["lines"] if line["call_id"])
    assert sorted(call_ids) == sorted(c["call_id"] for c in calls if c["bot_answered_at"])
    assert set(call_ids.values()) == {1}
    assert sum(c["lines"] for c in result["classes"].values()) == len(result["lines"])
    counts = Counter(line["class"] for line in result["lines"])
    assert {name: result["classes"][name]["lines"] for name in CLASSES} == \
        {name: counts.get(name, 0) for name in CLASSES}
    assert result["problem_count"] == 0 and result["currency"] == "CNY"


def test_each_line_takes_the_closest_call_one_to_one(lab, tmp_path):
    """Two lines of the same caller between two calls of that caller: the closest pairs win,
    and no call is matched twice (a per-line nearest call would give the first one to both)."""
    config, calls = lab
    first, second = answered(calls)[:2]
    caller = first["caller_number"]
    db = config.parent / "calls.db"
    import sqlite3

    with sqlite3.connect(db) as conn:  # the second call from the same caller, 3 s later
        conn.execute("UPDATE calls SET caller_number = ?, bot_answered_at = "
                     "strftime('%Y-%m-%dT%H:%M:%fZ', julianday(?) + 3.0 / 86400) "
                     "WHERE call_id = ?", (caller, first["bot_answered_at"], second["call_id"]))
    lines = [invoice_line(first, start=first["bot_answered_at"].replace("Z", "+00:00"),
                          caller=caller),
             invoice_line(second, caller=caller, start=first["bot_answered_at"])]
    # line 2 is at the first call's answer exactly, line 3 too: the first call goes to line 2
    # (the earlier line on a tie), and line 3 takes the second call, 3 s away
    invoice = write_invoice(tmp_path / "usage.csv", lines)
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    matched = {line["vendor"]["line"]: line["call_id"] for line in result["lines"]
               if line["vendor"] and line["call_id"]}
    assert matched == {2: first["call_id"], 3: second["call_id"]}
    assert next(line for line in result["lines"]
                if line["vendor"] and line["vendor"]["line"] == 3)["seconds_apart"] == "3"


def test_lines_come_in_file_order_then_the_calls_not_billed_in_answer_order(lab, tmp_path):
    """The vendor's lines by their number (matched or not, whatever their calls' order),
    then the calls the vendor did not bill, by the bot's answer."""
    config, calls = lab
    bot = sorted(answered(calls), key=lambda c: c["bot_answered_at"])
    billed = [bot[3], bot[0], bot[5], bot[1]]  # the file's order is not the calls'
    extra = invoice_line(bot[2], caller="+8613700000000")  # no such caller: vendor_only
    invoice = write_invoice(tmp_path / "usage.csv",
                            [invoice_line(c) for c in billed[:2]] + [extra]
                            + [invoice_line(c) for c in billed[2:]])
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    order = [(line["vendor"] or {}).get("line") or line["call_id"] for line in result["lines"]]
    unbilled = sorted((c for c in calls if c["bot_answered_at"]
                       and c["call_id"] not in {b["call_id"] for b in billed}),
                      key=lambda c: c["bot_answered_at"])
    assert order == [2, 3, 4, 5, 6] + [c["call_id"] for c in unbilled]
    assert [line["call_id"] for line in result["lines"][:5]] == [
        bot[3]["call_id"], bot[0]["call_id"], None, bot[5]["call_id"], bot[1]["call_id"]]


def test_csv_and_table_carry_the_same_verdicts(lab, tmp_path):
    config, calls = lab
    bot = answered(calls)
    invoice = write_invoice(tmp_path / "usage.csv",
                            [invoice_line(bot[0], amount="9.99"), *map(invoice_line, bot[1:])])
    mapping = write_mapping(tmp_path / "map.toml")
    args = ("reconcile", "--period", PERIOD, "--invoice", str(invoice), "--mapping", str(mapping))
    rows = list(csv.DictReader(io.StringIO(cli(config, *args, "--format", "csv").stdout)))
    assert Counter(r["class"] for r in rows) == Counter(
        {"match": len(bot) - 1, "amount_differs": 1}) + Counter(
        {"botmeter_only": sum(1 for c in calls if c["bot_answered_at"]) - len(bot)})
    dearer = next(r for r in rows if r["class"] == "amount_differs")
    assert (dearer["call_id"], dearer["vendor_amount"]) == (bot[0]["call_id"], "9.99")
    table = cli(config, *args)
    assert table.exit_code == 0
    disputed = Decimal("9.99") - per_minute_billed(bot[0]["bot_seconds"])[1]
    shown = re.search(r"Disputed amount: ([0-9.]+) CNY", table.stdout)
    assert shown is not None and Decimal(shown.group(1)) == disputed
    assert bot[0]["call_id"] in table.stdout
    zh = cli(config, *args, "--lang", "zh-Hans")
    assert "争议金额" in zh.stdout and "金额不符" in zh.stdout


def test_output_to_a_file_is_written_whole(lab, tmp_path):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(c) for c in answered(calls)])
    out = tmp_path / "result.json"
    done = cli(config, "reconcile", "--period", PERIOD, "--invoice", str(invoice), "--mapping",
               str(write_mapping(tmp_path / "map.toml")), "--format", "json", "--out", str(out))
    assert done.exit_code == 0 and done.stdout == ""
    assert '"disputed_amount": "0.00"' in out.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".result")] == []


SHIPPED = Path(__file__).resolve().parent.parent / "config" / "reconcile"


def test_the_shipped_mappings_read_their_vendors_exports(lab, tmp_path):
    """config/reconcile/: a CSV export in UTC with E.164 callers, and a JSON-lines export in
    Beijing wall-clock time with billed minutes: both match every billed call."""
    import json
    from datetime import datetime
    from zoneinfo import ZoneInfo

    config, calls = lab
    bot = [c for c in calls if c["bot_answered_at"]]
    csv_lines = []
    jsonl = []
    for c in bot:
        billed, cost = per_minute_billed(c["bot_seconds"])
        csv_lines.append((f"CA{c['call_id']}", "+86" + c["caller_number"], "+862160001234",
                          c["bot_answered_at"], c["ended_at"], str(billed), str(cost), "CNY"))
        local = datetime.fromisoformat(c["bot_answered_at"]).astimezone(ZoneInfo("Asia/Shanghai"))
        jsonl.append(json.dumps({"会话ID": f"yb-{c['call_id']}", "主叫号码": c["caller_number"],
                                 "开始时间": local.strftime("%Y-%m-%d %H:%M:%S"),
                                 "计费分钟": str(Decimal(billed) / 60), "费用": str(cost)},
                                ensure_ascii=False))
    exports = {
        "callcloud-csv.toml": write_invoice(
            tmp_path / "callcloud.csv", csv_lines,
            header=("CallSid", "From", "To", "StartTime", "EndTime", "Duration", "Charge",
                    "Currency")),
        "yunbot-jsonl.toml": tmp_path / "yunbot.jsonl",
    }
    exports["yunbot-jsonl.toml"].write_text("\n".join(jsonl) + "\n", encoding="utf-8")
    for mapping, invoice in exports.items():
        result = reconcile_json(config, invoice, SHIPPED / mapping)
        assert result["problems"] == [], mapping
        assert result["classes"]["match"]["lines"] == len(bot), mapping
        assert sum(v["lines"] for v in result["classes"].values()) == len(bot), mapping
