"""`botmeter sim`: the built-in simulated PBX as a server of its own, for trying botmeter
(`run`, `doctor`, the health endpoint, a dashboard) without an Asterisk."""

from __future__ import annotations

import sys

import click

from .cli import FAILURE, USAGE, FiniteRange, fail, main


@main.command()
@click.option("--listen", default="127.0.0.1:5038", show_default=True,
              help="Where its AMI listens (host:port; loopback is meant).")
@click.option("--username", default="botmeter", show_default=True)
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The AMI secret (the file's first line), as the agent's [ami] reads it.")
@click.option("--calls", "count", default=12, show_default=True, type=click.IntRange(0, 10_000),
              help="Scripted calls per round (0: none, AMI only).")
@click.option("--every", default=60.0, show_default=True, type=FiniteRange(min=1, max=86_400),
              help="Seconds between rounds of calls.")
@click.option("--agi-port", default=4573, show_default=True, type=click.IntRange(1, 65_535),
              help="The agent's FastAGI port, which the simulated bot signals to.")
def sim(listen: str, username: str, secret_file: str, count: int, every: float,
        agi_port: int) -> None:
    """Serve the simulated PBX's AMI and play rounds of scripted calls until SIGINT/SIGTERM."""
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
    runtime.run(_serve(host.strip("[]"), int(port), username, secret, count, every, agi_port))
    sys.exit(0)


async def _serve(host: str, port: int, username: str, secret: str, count: int, every: float,
                 agi_port: int) -> None:
    import asyncio  # here, not at import: `botmeter --help` stays light
    import contextlib
    import signal

    from .sim.pbx import SimulatedPBX
    from .sim.scenarios import mixed_calls

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pbx = SimulatedPBX(host=host, port=port, username=username, secret=secret,
                       agi_port=agi_port)
    try:
        await pbx.start()
    except OSError as exc:
        fail("cannot listen", f"{host}:{port}", exc.strerror or str(exc), FAILURE)
    click.echo(f"simulated PBX: AMI on {host}:{pbx.port} (user {username}); "
               f"{count} calls every {every:g} s; Ctrl-C stops it", err=True)
    round_ = 0
    try:
        while not stop.is_set():
            if count:
                round_ += 1
                play = asyncio.ensure_future(pbx.play(mixed_calls(count, seed=round_)))
                await asyncio.wait([play, asyncio.ensure_future(stop.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
                if not play.done():
                    play.cancel()
                    break
                if play.exception() is not None:
                    click.echo(f"round {round_}: {play.exception()}", err=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await pbx.stop()
