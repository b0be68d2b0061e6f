"""The fault-injection harness. One run: the simulated PBX (`botmeter sim`, writing CEL and its
truth file), the agent (`botmeter run`, healing from that CEL, rating under the example plans)
and, for the uplink's run, the vendor's receiver (`botmeter-receiver`), all real processes on
loopback; one fault injected throughout the load; then, once the agent has caught up, it is
stopped with SIGTERM and its database judged against the truth file, its statement against a
clean run's, and the receiver's summaries against the database's.

The PBX and the agent share the host's clock, as botmeter assumes (docs/recovery.md). For the
uplink's run that clock is set back (shifted.py) so that an hour ends in the middle of the load:
the uplink only sends hours that have ended.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from botmeter.rating import PlanBook
from botmeter.uplink.buckets import parse_iso

from ..helpers import eventually
from .faults import CLEAN, INJECTORS, Profile, Struck, Targets, load_seconds
from .judge import Verdict, judge
from .money import periods, statement_total, truth_record
from .observe import UplinkCheck, read_truth, stored_ids, truth_ids, uplink_check
from .procs import Process, agent_argv, cli_json, receiver_argv, sim_argv
from .proxy import CuttingProxy
from .site import PLANS, Site, free_port, make_site

#: what `botmeter sim` says when its round's calls have all ended
ROUND_OVER = "round 1 over"
_ROUND_COUNTS = re.compile(ROUND_OVER + r": (\d+) calls placed, (\d+) not placed")
#: what the agent logs when it has logged in to AMI
ATTACHED = '"ami attached"'
HOUR = 3600.0
#: about how long the processes take to start
STARTUP_SECONDS = 2.0


@dataclass
class RunResult:
    """One run's figures."""

    fault: str
    root: Path
    did: Struck  # what the fault did
    placed: int  # calls the PBX placed ...
    not_placed: int  # ... and those due while it was down
    verdict: Verdict
    totals: dict[str, Decimal]  # plan -> the statement total of the agent's database
    truth_totals: dict[str, Decimal]  # plan -> the statement total of the truth's records
    caught_up: bool  # every truth call was stored before the agent was stopped
    agent_exit: int | None  # `botmeter run`'s exit code at the final SIGTERM
    seconds: float
    sources: dict[str, int]  # records by `source`
    joined_late: int
    periods: dict[str, tuple[str, ...]]  # plan -> the periods billed
    uplink: str | None = None  # the receiver against the database (None: no receiver)
    uplink_equal: bool | None = None
    clean_totals: dict[str, Decimal] = field(default_factory=dict)  # set by the suite

    @property
    def totals_equal(self) -> bool:
        return bool(self.clean_totals) and self.totals == self.clean_totals

    @property
    def ok(self) -> bool:
        return (self.verdict.ok and self.caught_up and self.totals_equal
                and self.totals == self.truth_totals and self.uplink_equal is not False
                and self.agent_exit == 0)

    def problems(self) -> list[str]:
        """Why the run is not right, one line each (empty when it is)."""
        lines = self.verdict.problems()
        if not self.caught_up:
            lines.append("the agent had not stored every call when it was stopped")
        if self.totals != self.clean_totals:
            lines.append(f"statement totals {self.totals} != clean {self.clean_totals}")
        if self.totals != self.truth_totals:
            lines.append(f"statement totals {self.totals} != the truth's {self.truth_totals}")
        if self.uplink_equal is False:
            lines.append(f"uplink: {self.uplink}")
        if self.agent_exit != 0:
            lines.append(f"botmeter run exited {self.agent_exit} at SIGTERM")
        return lines


def round_counts(sim_output: str) -> tuple[int, int]:
    """(calls placed, calls due while the PBX was down) of the first round."""
    found = _ROUND_COUNTS.search(sim_output)
    if found is None:
        raise RuntimeError(f"botmeter sim did not say how its round went:\n{sim_output[-2000:]}")
    return int(found.group(1)), int(found.group(2))


def to_next_hour(clock: float) -> float:
    """Seconds from `clock` to the next full hour."""
    return HOUR - clock % HOUR


def clock_behind(fault: str, profile: Profile, now: float) -> float:
    """How far the run's site clock is set back: for the uplink's run, so far that on it an
    hour ends about halfway through the load (0 for the others)."""
    if fault != "flap":
        return 0.0
    return now % HOUR + STARTUP_SECONDS + load_seconds(profile) / 2


async def run_suite(faults: Sequence[str], profile: Profile, root: Path, *, jobs: int,
                    seed: int = 1) -> list[RunResult]:
    """A clean run and one run per fault, `jobs` at a time. A fault run's clean totals are the
    clean run's (the same script), unless its calls differ from the clean run's in more than
    their ids and times: a PBX restart cuts and drops calls, and a run on another month's
    clock bills another period; then they are those of its own truth file's records."""
    gate = asyncio.Semaphore(jobs)

    async def one(index: int, fault: str) -> RunResult:
        async with gate:
            return await run_fault(fault, profile, root / fault, seed=seed + index)

    results = await asyncio.gather(*(one(i, f) for i, f in enumerate((CLEAN, *faults))))
    clean = results[0]
    clean.clean_totals = clean.truth_totals
    for result in results[1:]:
        same = result.fault != "restart" and result.periods == clean.periods
        result.clean_totals = clean.totals if same else result.truth_totals
    return list(results)


async def run_fault(fault: str, profile: Profile, root: Path, *, seed: int) -> RunResult:
    """One run with `fault` injected (or none: `clean`)."""
    began = time.monotonic()
    sim_port = free_port()
    proxy = CuttingProxy(sim_port) if fault == "cut" else None
    ami_port = await proxy.start() if proxy is not None else sim_port
    now = time.time()
    site = make_site(root, ami_port=ami_port, agi_port=free_port(),
                     uplink_port=free_port() if fault == "flap" else None,
                     clock_behind=clock_behind(fault, profile, now), now=now)
    agent = Process("agent", agent_argv(site), root / "agent.log", root)
    sim = Process("sim", sim_argv(site, port=sim_port, calls=profile.calls, rate=profile.rate,
                                  down=profile.restart_down),
                  root / "sim.log", root)
    receiver = (Process("receiver", receiver_argv(site), root / "receiver.log", root)
                if site.uplink_port is not None else None)
    processes = [p for p in (receiver, agent, sim) if p is not None]
    try:
        for process in processes:
            process.start()
        # the calls begin when the agent has logged in (`--wait-login`), and so do the faults
        await eventually(lambda: ATTACHED in agent.output(), timeout=60, interval=0.1)
        over = asyncio.Event()
        targets = Targets(agent, sim, site.db, proxy, receiver,
                          hour_ends_at=time.monotonic() + to_next_hour(
                              time.time() - site.clock_behind))
        injecting = asyncio.ensure_future(INJECTORS[fault](
            targets, profile, over, random.Random(seed)))
        await eventually(lambda: ROUND_OVER in sim.output() or not sim.running,
                         timeout=load_seconds(profile) + profile.settle, interval=0.2)
        if not sim.running:
            raise RuntimeError(f"botmeter sim ended early:\n{sim.output()[-2000:]}")
        over.set()
        did = await injecting
        for restart in (agent, receiver):
            if restart is not None and not restart.running:
                restart.start()
        caught_up = await settled(lambda: truth_ids(site) <= stored_ids(site), profile.settle)
        if receiver is not None:
            await settled(lambda: uplink_check(site).equal, profile.settle)
        agent_exit = await agent.stop()
        uplink = uplink_check(site) if receiver is not None else None
        for other in (sim, receiver):
            if other is not None:
                await other.stop()
        return await _judged(fault, site, did, round_counts(sim.output()), caught_up,
                             agent_exit, began, uplink)
    finally:
        for process in processes:
            process.kill()
        if proxy is not None:
            await proxy.close()


async def _judged(fault: str, site: Site, did: Struck, placed: tuple[int, int], caught_up: bool,
                  agent_exit: int | None, began: float, uplink: UplinkCheck | None) -> RunResult:
    records: list[dict[str, Any]] = json.loads(await cli_json(
        site, "calls", "--format", "json", "--db", str(site.db)))
    truth = read_truth(site)
    book = PlanBook.load(site.root / "plans")
    totals: dict[str, Decimal] = {}
    truth_totals: dict[str, Decimal] = {}
    billed: dict[str, tuple[str, ...]] = {}
    clean = [truth_record(line) for line in truth]
    for plan in PLANS:
        series = book.series(plan)
        truth_totals[plan] = statement_total(series, clean)
        ends = [c.ended_at for c in clean] + [parse_iso(r["ended_at"]) for r in records]
        billed[plan] = tuple(periods(series, ends))
        totals[plan] = sum([await _billed(site, plan, period) for period in billed[plan]],
                           Decimal(0))
    return RunResult(
        fault=fault, root=site.root, did=did, placed=placed[0], not_placed=placed[1], verdict=judge(truth, records), totals=totals,
        truth_totals=truth_totals, caught_up=caught_up, agent_exit=agent_exit,
        seconds=round(time.monotonic() - began, 1),
        sources=dict(Counter(r["source"] for r in records)),
        joined_late=sum(bool(r["joined_late"]) for r in records), periods=billed,
        uplink=None if uplink is None else uplink.detail,
        uplink_equal=None if uplink is None else uplink.equal)


async def _billed(site: Site, plan: str, period: str) -> Decimal:
    """`botmeter bill`'s total for the period under the plan."""
    out = await cli_json(site, "bill", "--period", period, "--plan", plan, "--format", "json",
                         "--db", str(site.db))
    return Decimal(json.loads(out)["total"])


async def settled(predicate: Callable[[], object], timeout: float) -> bool:
    """Whether `predicate` came true within `timeout` seconds."""
    try:
        await eventually(predicate, timeout=timeout, interval=0.25)
    except AssertionError:
        return False
    return True
