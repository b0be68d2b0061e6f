"""`botmeter demo`: the agent against the built-in simulated PBX, on loopback."""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import Config, parse_config
from .demo_reconcile import demo_reconcile
from .logs import setup_logging
from .rating import PlanBook, Statement, build_statement, period_of
from .reports.billing import sla_table, statement_table
from .reports.calls import calls_table, outcome_summary, table_width
from .service import AgentService
from .sim.pbx import SimulatedPBX
from .sim.scenarios import (
    ARI_APP,
    ARI_MEDIA_CHANNELS,
    ScriptedCall,
    demo_calls,
    expected_csat,
    expected_record,
)
from .storage.store import CallStore
from .tracking.record import CallRecord

TOLERANCE = 0.01  # seconds: the simulator stamps exact virtual times
DEMO_PLAN = "combined"


def _statements(store: CallStore, plans: Path) -> list[Statement]:
    """The statement of every period the demo's calls fall in, under the demo plan."""
    series = PlanBook.load(plans).series(DEMO_PLAN)
    calls = store.calls()
    periods = sorted({period_of(c.ended_at, series.timezone) for c in calls})
    return [build_statement(series, p, calls) for p in periods]


def demo_config(port: int, secret: str, db: Path, plans: Path | None = None) -> Config:
    """The configuration the demo runs with (the simulator's dialplan names)."""
    extra = {"plans": {"dir": str(plans), "active": DEMO_PLAN}} if plans else {}
    return parse_config({
        **extra,
        "agent": {"id": "demo"},
        "ami": {"host": "127.0.0.1", "port": port, "username": "botmeter", "secret": secret,
                "ping_interval": 2.0, "ping_timeout": 2.0, "reconnect_min": 0.1,
                "reconnect_max": 1.0},
        "calls": {"inbound_contexts": ["from-pstn"]},
        # the lab's dialplan bot, and an ARI bot recognised by its Stasis application and its
        # media channels (either alone would do)
        "bot": {"contexts": ["voicebot"], "applications": [f"Stasis:{ARI_APP}"],
                "channels": list(ARI_MEDIA_CHANNELS)},
        "agi": {"listen": "127.0.0.1:0"},
        "http": {"listen": ""},  # no health endpoint: the demo may run beside a real agent
        "store": {"path": str(db)},
    }, "<demo>")


def mismatches(scripted: ScriptedCall, record: CallRecord | None) -> list[str]:
    """How a record differs from what the script says (empty when it matches)."""
    if record is None:
        return ["not recorded"]
    want = expected_record(scripted)
    got = record.to_json()
    problems = []
    for key in ("outcome", "transfer_answered", "hangup_cause", "dialed_number", "csat",
                "bot_session_id"):
        if got[key] != want[key]:
            problems.append(f"{key} {got[key]!r} != {want[key]!r}")
    for key in ("ring_seconds", "bot_seconds", "human_seconds", "total_seconds"):
        a, b = got[key], want[key]
        if (a is None) != (b is None) or (a is not None and abs(a - b) > TOLERANCE):
            problems.append(f"{key} {a} != {b}")
    # to_json's quantities are exact (int or Decimal), the script's are floats
    modules = {m: (float(u["quantity"]), u["unit"]) for m, u in got["modules"].items()}
    if modules != {m: (u["quantity"], u["unit"]) for m, u in want["modules"].items()}:
        problems.append(f"modules {got['modules']} != {want['modules']}")
    return problems


async def record_scripted_calls(calls: list[ScriptedCall], db: Path, *, speed: float,
                                concurrency: int | None, timeout: float = 60.0,
                                plans: Path | None = None) -> list[CallRecord]:
    """Play `calls` on a simulated PBX with the agent attached; return what the agent stored.

    The agent runs on the simulator's virtual clock (it is the PBX's clock here), and the
    simulated bot signals to the agent's own FastAGI server when a call says so.
    """
    secret = secrets.token_hex(8)
    async with SimulatedPBX(speed=speed, secret=secret) as pbx:
        return await record_on(pbx, secret, calls, db, concurrency=concurrency,
                               timeout=timeout, plans=plans)


async def record_on(pbx: SimulatedPBX, secret: str, calls: list[ScriptedCall], db: Path, *,
                    concurrency: int | None = None, timeout: float = 60.0,
                    plans: Path | None = None, settle: float = 5.0) -> list[CallRecord]:
    """`record_scripted_calls` on a running simulator (whose counters the caller may read):
    the calls this run stored, after waiting up to `settle` seconds for the last of them."""
    saved: set[str] = set()  # this run's calls (the database may hold earlier runs')
    service = AgentService(demo_config(pbx.port, secret, db, plans), store_path=db,
                           clock=pbx.now,
                           on_saved=lambda records: saved.update(r.call_id for r in records))
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.client.connected.wait(), timeout)
        if service.fastagi is not None:
            pbx.agi_port = service.fastagi.port
        await asyncio.wait_for(pbx.play(calls, concurrency=concurrency), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settle
        while service.writer.saved < len(calls) and loop.time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        service.stop()
        await running
    store = CallStore(db)
    try:
        return [c for c in store.calls() if c.call_id in saved]
    finally:
        store.close()


def example_plans() -> Path | None:
    """The example plan files of a source checkout (config/plans), if this is one."""
    folder = Path(__file__).resolve().parents[2] / "config" / "plans"
    return folder if (folder / f"{DEMO_PLAN}.toml").exists() else None


def demo_uplink(db: Path, plans: Path, folder: Path) -> tuple[Table, bool]:
    """Sync the recorded calls' summaries to a reference receiver on loopback, its clock set past
    the close of the last bucket (the demo plays calls within minutes, buckets are hours). True
    when what the receiver holds adds up to the amounts and calls stored locally."""
    from decimal import Decimal

    from .uplink.agent import Uplink
    from .uplink.buckets import HOUR, bucket_start
    from .uplink.receiver import Receiver
    from .uplink.settings import UplinkSettings

    token, key = secrets.token_hex(16), secrets.token_hex(16).encode()
    series = PlanBook.load(plans).series(DEMO_PLAN)
    store = CallStore(db)
    calls = store.calls()
    stored_cost = sum((Decimal(r["cost"]) for r in store.ratings(c.call_id for c in calls).values()
                       if r["cost"] is not None), Decimal(0))
    later = bucket_start(max(c.ended_at for c in calls), "hour", series.timezone) + HOUR + 301
    with Receiver(folder / "vendor.db", token, key, clock=lambda: later) as receiver:
        settings = UplinkSettings(agent_id="demo", url=receiver.url, token=token, key=key,
                                  plans=(series,))
        uplink = Uplink(settings, store, clock=lambda: later)
        try:
            report = uplink.tick()
        finally:
            uplink.close()
            store.close()
        held = sorted(receiver.current().items())
    table = Table(title=f"uplink: {report.delivered} hourly summaries delivered in "
                        f"{report.requests} signed request(s) to a reference receiver on loopback")
    for name in ("plan", "bucket", "calls", "handled", "transferred", "bot s", "amount"):
        table.add_column(name, justify="left" if name in ("plan", "bucket") else "right")
    for (_, plan, bucket), summary in held:
        table.add_row(plan, bucket, str(summary["call_count"]), str(summary["calls"]["handled"]),
                      str(summary["calls"]["transferred"]), str(summary["seconds"]["bot"]),
                      summary["amount"])
    sent_amount = sum((Decimal(s["amount"]) for _, s in held), Decimal(0))
    sent_calls = sum(s["call_count"] for _, s in held)
    return table, sent_amount == stored_cost and sent_calls == len(calls)


def survey_line(calls: list[ScriptedCall], records: list[CallRecord]) -> tuple[str, bool]:
    """How many calls the callers rated and their mean on the 5-point scale, recorded against
    scripted; True when they agree exactly."""
    from decimal import Decimal

    from .tracking.record import Csat

    def mean(scores: list[Csat]) -> Decimal | None:
        return sum((c.on_five() for c in scores), Decimal(0)) / len(scores) if scores else None

    kept = [expected_csat(c.csat) for c in calls]
    scripted = [Csat(k["score"], k["scale"]) for k in kept if k is not None]
    recorded = [r.csat for r in records if r.csat is not None]
    want, got = mean(scripted), mean(recorded)

    def shown(value: Decimal | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    same = len(recorded) == len(scripted) and got == want
    return (f"surveys: {len(recorded)} calls rated, mean {shown(got)} on the 5-point scale "
            f"(scripted: {len(scripted)}, mean {shown(want)})"), same


async def run_demo(*, count: int, speed: float, concurrency: int, db: str | None) -> bool:
    """Run the demo and print what was recorded; True when every call matches its script."""
    setup_logging("warning")
    console = Console(width=None if sys.stdout.isatty() else 170)
    calls = demo_calls(count)
    plans = example_plans()
    console.print(f"[bold]botmeter demo[/]: {count} scripted calls on a simulated Asterisk "
                  f"(AMI on 127.0.0.1, {speed:g}x speed, up to {concurrency} at once)"
                  + (f", rated under config/plans/{DEMO_PLAN}.toml" if plans else ""))
    with tempfile.TemporaryDirectory(prefix="botmeter-demo-") as tmp:
        path = Path(db) if db else Path(tmp) / "demo.db"
        records = await record_scripted_calls(calls, path, speed=speed, concurrency=concurrency,
                                              plans=plans)
        store = CallStore(path)
        try:
            ratings = store.ratings(r.call_id for r in records)
            statements = _statements(store, plans) if plans else []
        finally:
            store.close()
        uplink, synced = (await asyncio.to_thread(demo_uplink, path, plans, Path(tmp))
                          if plans and records else (None, True))
        checked = (await asyncio.to_thread(demo_reconcile, path,
                                           PlanBook.load(plans).series(DEMO_PLAN), Path(tmp))
                   if plans and records else None)
    table = calls_table(records, ratings if plans else None)
    if sys.stdout.isatty():
        console.print(table)
    else:  # at the width `botmeter calls` prints it (wider with the session column)
        Console(width=table_width(records)).print(table)
    console.print(outcome_summary(records))
    for statement in statements:
        console.print(statement_table(statement))
        clauses = sla_table(statement)
        if clauses is not None:
            console.print(clauses)
    if uplink is not None:
        console.print(uplink)
        console.print("uplink: the receiver's summaries add up to the calls and amounts stored "
                      "locally" if synced else "[red]uplink: the receiver's summaries do not add "
                      "up to the calls stored locally[/]")
    reconciled = True
    if checked is not None:
        console.print(checked[0])
        reconciled = checked[1]
        console.print("reconcile: each class holds exactly the planted discrepancies" if reconciled
                      else "[red]reconcile: the classes differ from the planted discrepancies[/]")
    surveys, surveys_ok = survey_line(calls, records)
    console.print(surveys if surveys_ok else f"[red]{surveys}[/]")
    by_number = {r.caller_number: r for r in records}
    wrong = {c.caller_number: mismatches(c, by_number.get(c.caller_number)) for c in calls}
    wrong = {number: problems for number, problems in wrong.items() if problems}
    if wrong:
        for number, problems in wrong.items():
            console.print(f"[red]{number}[/]: " + "; ".join(problems))
    console.print(f"{len(calls) - len(wrong)} of {len(calls)} calls recorded exactly as scripted"
                  + (f"; stored in {db}" if db else ""))
    return (not wrong and len(records) == len(calls) and synced and surveys_ok
            and reconciled)
