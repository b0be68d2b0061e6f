"""The faults a run injects, and how hard: each is a coroutine that acts on the run's real
processes, sockets and files until the load is over, and says what it did."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from botmeter.sim.scenarios import expected_record, mixed_calls

from .procs import Process
from .proxy import CuttingProxy

#: the runs of a suite: a clean one, then one per fault
CLEAN = "clean"
FAULTS = ("kill", "cut", "restart", "lock", "flap")


@dataclass(frozen=True, slots=True)
class Profile:
    """The load (one round of `calls` at `rate` calls per second) and the pace of the faults,
    in seconds. The PBX's clock runs at the agent's pace: they are on one host."""

    calls: int
    rate: float
    kill_every: float  # the agent is SIGKILLed this often ...
    kill_pause: float  # ... and restarted after up to this long
    cut_every: float
    restart_down: float  # the PBX restarts once, in the middle of placing the calls
    lock_seconds: float  # the calls db is locked once, in the middle of the load
    flap_every: float  # the receiver is up this long, then down half as long
    settle: float  # how long the agent may take to catch up after the load

    def describe(self, fault: str) -> str:
        """What the fault does at this pace."""
        return {
            CLEAN: "no fault",
            "kill": f"SIGKILL every {self.kill_every:g} s, restart within {self.kill_pause:g} s",
            "cut": f"AMI connection cut every {self.cut_every:g} s",
            "restart": f"PBX restarted mid-load, down {self.restart_down:g} s",
            "lock": f"calls db locked (BEGIN EXCLUSIVE) {self.lock_seconds:g} s mid-load",
            "flap": f"receiver up {self.flap_every:g} s, down {self.flap_every / 2:g} s",
        }[fault]


REDUCED = Profile(calls=80, rate=20, kill_every=2, kill_pause=1, cut_every=3,
                  restart_down=1, lock_seconds=5, flap_every=2, settle=60)
FULL = Profile(calls=2000, rate=20, kill_every=4, kill_pause=2, cut_every=10,
               restart_down=5, lock_seconds=30, flap_every=4, settle=300)


@dataclass
class Targets:
    """What a fault acts on: the run's processes, its proxy, its database."""

    agent: Process
    sim: Process
    db: Path
    proxy: CuttingProxy | None = None
    receiver: Process | None = None
    hour_ends_at: float | None = None  # time.monotonic() when the site's clock ends an hour


@dataclass(frozen=True, slots=True)
class Struck:
    """What a fault did: how many times it struck (seconds, for a lock), and how."""

    times: int
    detail: str


Injector = Callable[[Targets, Profile, asyncio.Event, random.Random], Awaitable[Struck]]


async def _wait(over: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` (the fault's pace); True if the load ended meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(over.wait(), seconds)
    return over.is_set()


async def kill_agent(t: Targets, p: Profile, over: asyncio.Event,
                    rng: random.Random) -> Struck:
    """SIGKILL the agent every `kill_every` s (jittered) and start it again, at once or after
    a short random pause, until the load is over."""
    kills = 0
    while not await _wait(over, p.kill_every * rng.uniform(0.75, 1.25)):
        t.agent.kill()
        kills += 1
        if rng.random() < 0.5:
            await _wait(over, rng.uniform(0, p.kill_pause))
        t.agent.start()
    return Struck(kills, f"{kills} SIGKILLs")


async def cut_ami(t: Targets, p: Profile, over: asyncio.Event,
                 rng: random.Random) -> Struck:
    """Cut every AMI connection through the proxy every `cut_every` s."""
    assert t.proxy is not None
    links = 0
    while not await _wait(over, p.cut_every):
        links += t.proxy.cut()
    return Struck(links, f"{t.proxy.cuts} cuts, {links} live connections cut")


async def restart_pbx(t: Targets, p: Profile, over: asyncio.Event,
                     rng: random.Random) -> Struck:
    """SIGUSR1 to the simulated PBX (a `core restart now`) halfway through placing the calls."""
    if await _wait(over, p.calls / p.rate / 2):
        return Struck(0, "the load was over before the restart")
    t.sim.signal(signal.SIGUSR1)
    return Struck(1, f"PBX restarted, down {p.restart_down:g} s")


async def lock_db(t: Targets, p: Profile, over: asyncio.Event,
                 rng: random.Random) -> Struck:
    """Another connection holds BEGIN EXCLUSIVE on the calls database for `lock_seconds`,
    from the middle of the load (half the time the calls take to place and end)."""
    if await _wait(over, load_seconds(p) / 2):
        return Struck(0, "the load was over before the lock")
    held = await asyncio.to_thread(hold_exclusive, t.db, p.lock_seconds)
    return Struck(int(held), f"calls db held exclusively for {held:.1f} s")


def hold_exclusive(db: Path, seconds: float) -> float:
    """Take the database's write lock (waiting for the agent's transaction to end) and hold
    it `seconds`; the seconds it was held."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        taken = time.monotonic()
        time.sleep(seconds)  # the fault itself: the lock stays taken this long
        conn.execute("ROLLBACK")
        return time.monotonic() - taken
    finally:
        conn.close()


async def flap_receiver(t: Targets, p: Profile, over: asyncio.Event,
                       rng: random.Random) -> Struck:
    """Stop the receiver (SIGTERM or SIGKILL in turn) after `flap_every` s up, start it again
    after half that, until the load is over; it stays up then. It is down when the site's
    hour ends and for twice `flap_every` after, when the uplink first tries to send it."""
    assert t.receiver is not None
    stops = 0
    across = ""
    while True:
        up, down = p.flap_every, p.flap_every / 2
        to_hour = None if t.hour_ends_at is None else t.hour_ends_at - time.monotonic()
        if to_hour is not None and 0 < to_hour <= 2 * (up + down):  # stopping takes a while
            up, down = max(0.0, to_hour - 0.5), 2 * p.flap_every
            across = ", down when the hour ended"
        if await _wait(over, up):
            break
        if stops % 2:
            t.receiver.kill()
        else:
            await t.receiver.stop(timeout=10)
        stops += 1
        await _wait(over, down)
        t.receiver.start()
    return Struck(stops, f"receiver stopped {stops} times{across}")


async def no_fault(t: Targets, p: Profile, over: asyncio.Event,
                  rng: random.Random) -> Struck:
    await over.wait()
    return Struck(0, "-")


INJECTORS: dict[str, Injector] = {CLEAN: no_fault, "kill": kill_agent, "cut": cut_ami,
                                  "restart": restart_pbx, "lock": lock_db,
                                  "flap": flap_receiver}


def load_seconds(p: Profile) -> float:
    """Seconds from the first call placed to the last one's end, from the script."""
    calls = mixed_calls(p.calls, seed=1)  # `botmeter sim`'s first round
    return max(i / p.rate + expected_record(c)["total_seconds"] for i, c in enumerate(calls))
