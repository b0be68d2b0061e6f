"""`botmeter sim`: the built-in simulated PBX as a server of its own, for trying botmeter
(`run`, `doctor`, the health endpoint, a dashboard) without an Asterisk, and for fault runs:
its own CEL and CDR files, a truth file, a call rate, and restarts on SIGUSR1."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from .cli import FAILURE, USAGE, FiniteRange, fail, main

#: where the PBX's own records may go, by option
_FILES = ("--cel-db", "--cdr-db", "--cdr-csv", "--truth")


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `botmeter sim` plays and writes."""

    count: int
    every: float
    rate: float | None
    rounds: int
    speed: float
    down: float
    files: dict[str, Path | None]
    commit: str
    wait_login: bool = False


def _file(_ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """A file to write: its folder must exist (the file is created if missing)."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise click.BadParameter("is a directory", param=param)
    if not path.parent.is_dir():
        raise click.BadParameter(f"no folder {str(path.parent)!r}", param=param)
    return path


@main.command()
@click.option("--listen", default="127.0.0.1:5038", show_default=True,
              help="Where its AMI listens (host:port; loopback is meant).")
@click.option("--username", default="botmeter", show_default=True)
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The AMI secret (the file's first line), as the agent's [ami] reads it.")
@click.option("--calls", "count", default=12, show_default=True, type=click.IntRange(0, 100_000),
              help="Scripted calls per round (0: none, AMI only).")
@click.option("--every", default=60.0, show_default=True, type=FiniteRange(min=1, max=86_400),
              help="Seconds between rounds of calls.")
@click.option("--rate", type=FiniteRange(min=0.01, max=1000),
              help="New calls per second within a round (default: the script's own spacing, "
                   "a call every 0.5-3 s).")
@click.option("--rounds", default=0, show_default=True, type=click.IntRange(0, 1_000_000),
              help="Rounds to play, then exit (0: until SIGINT/SIGTERM).")
@click.option("--speed", default=1.0, show_default=True, type=FiniteRange(min=0.01, max=1000),
              help="Virtual seconds per second: the calls' times (Timestamp headers, CEL, "
                   "CDR) run this much faster; an agent watching it should keep 1.")
@click.option("--agi-port", default=4573, show_default=True, type=click.IntRange(1, 65_535),
              help="The agent's FastAGI port, which the simulated bot signals to.")
@click.option("--cel-db", callback=_file, help="Write CEL into this SQLite file (table cel).")
@click.option("--cdr-db", callback=_file, help="Write CDRs into this SQLite file (table cdr).")
@click.option("--cdr-csv", callback=_file, help="Append CDRs to this Master.csv.")
@click.option("--commit", type=click.Choice(["row", "step"]), default="step", show_default=True,
              help="CEL/CDR rows: committed each in its own transaction (row, as Asterisk), "
                   "or together whenever the PBX has caught up (step).")
@click.option("--truth", callback=_file,
              help="Append one JSON line per call as it ends: what a correct record says.")
@click.option("--wait-login", is_flag=True,
              help="Play the first round only once an AMI client has logged in.")
@click.option("--down", default=5.0, show_default=True, type=FiniteRange(min=0, max=3600),
              help="Seconds the PBX stays down when SIGUSR1 restarts it.")
def sim(listen: str, username: str, secret_file: str, count: int, every: float,
        rate: float | None, rounds: int, speed: float, agi_port: int, cel_db: Path | None,
        cdr_db: Path | None, cdr_csv: Path | None, commit: str, truth: Path | None,
        down: float, wait_login: bool) -> None:
    """Serve the simulated PBX's AMI and play rounds of scripted calls until SIGINT/SIGTERM
    (or `--rounds`); SIGUSR1 restarts the PBX like `core restart now`."""
    from . import runtime

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65_536:
        fail("bad --listen", listen, "expected host:port", USAGE)
    try:
        with open(secret_file, encoding="utf-8") as handle:
            secret = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        fail("cannot read --secret-file", secret_file, str(exc), USAGE)
    if not secret:
        fail("empty --secret-file", secret_file, "the secret is its first line", USAGE)
    files = dict(zip(_FILES, (cel_db, cdr_db, cdr_csv, truth), strict=True))
    plan = _Plan(count, every, rate, rounds, speed, down, files, commit, wait_login)
    runtime.run(_serve(host.strip("[]"), int(port), username, secret, agi_port, plan))
    sys.exit(0)


async def _serve(host: str, port: int, username: str, secret: str, agi_port: int,
                 plan: _Plan) -> None:
    import asyncio  # here, not at import: `botmeter --help` stays light
    import contextlib
    import signal

    from .sim.pbx import SimulatedPBX
    from .sim.records import RecordsUnavailable
    from .sim.scenarios import mixed_calls

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    files = plan.files
    pbx = SimulatedPBX(host=host, port=port, username=username, secret=secret,
                       speed=plan.speed, agi_port=agi_port, cel_db=files["--cel-db"], cdr_db=files["--cdr-db"],
                       cdr_csv=files["--cdr-csv"], truth=files["--truth"],
                       records_commit="row" if plan.commit == "row" else "step")
    try:
        await pbx.start()
    except RecordsUnavailable as exc:
        fail("cannot write", str(exc.path), exc.reason, FAILURE)
    except OSError as exc:
        fail("cannot listen", f"{host}:{port}", exc.strerror or str(exc), FAILURE)
    restarting: set[asyncio.Task[None]] = set()

    def restart() -> None:
        if restarting or stop.is_set():
            return
        click.echo(f"simulated PBX: restarting, down for {plan.down:g} s", err=True)
        task = asyncio.ensure_future(pbx.restart(plan.down))
        restarting.add(task)
        task.add_done_callback(restarting.discard)

    loop.add_signal_handler(signal.SIGUSR1, restart)
    pace = f"{plan.rate:g} calls/s" if plan.rate else "scripted spacing"
    click.echo(f"simulated PBX: AMI on {host}:{pbx.port} (user {username}); "
               f"{plan.count} calls every {plan.every:g} s ({pace}); Ctrl-C stops it", err=True)
    round_ = 0
    try:
        while plan.wait_login and not stop.is_set() and not pbx.clients:
            with contextlib.suppress(TimeoutError):  # a look every 50 ms for a logged-in client
                await asyncio.wait_for(stop.wait(), 0.05)
        while not stop.is_set() and (plan.rounds == 0 or round_ < plan.rounds):
            round_ += 1
            if plan.count:
                before = pbx.calls_placed, pbx.calls_missed
                play = asyncio.ensure_future(
                    pbx.play(mixed_calls(plan.count, seed=round_), rate=plan.rate))
                await asyncio.wait([play, asyncio.ensure_future(stop.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
                if not play.done():
                    play.cancel()
                    break
                if play.exception() is not None:
                    click.echo(f"round {round_}: {play.exception()}", err=True)
                else:
                    click.echo(f"round {round_} over: {pbx.calls_placed - before[0]} calls "
                               f"placed, {pbx.calls_missed - before[1]} not placed while down",
                               err=True)
            if plan.rounds and round_ >= plan.rounds:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), plan.every)
    finally:
        for task in list(restarting):
            with contextlib.suppress(Exception):
                await task
        await pbx.stop()
        if pbx.restarts or pbx.calls_missed:
            click.echo(f"simulated PBX: {pbx.restarts} restarts, {pbx.calls_missed} calls "
                       "not placed while down", err=True)
