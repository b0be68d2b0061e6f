"""The `botmeter` command."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click

from .config import ENV_VAR, Config, ConfigError, load_config
from .logs import setup_logging
from .storage.store import CallFilter, CallStore
from .tracking.record import OUTCOMES

CHUNK = 64 * 1024


class Context:
    def __init__(self, config_path: str | None, log_level: str, log_json: bool) -> None:
        self.config_path = config_path
        setup_logging(log_level, json=log_json)

    def config(self) -> Config:
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            click.echo(f"botmeter: configuration error: {exc}", err=True)
            sys.exit(2)


def _store(ctx: Context, db: str | None) -> CallStore:
    path = Path(db) if db else ctx.config().store_path()
    return CallStore(path)


class UtcTime(click.ParamType):
    """An ISO 8601 date or time; without a zone it is UTC."""

    name = "time"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-11-26 or "
                      "2026-11-26T15:00:00+08:00)", param, ctx)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar=ENV_VAR, type=click.Path(dir_okay=False),
              help=f"Configuration file (default: ${ENV_VAR}, else /etc/botmeter/botmeter.toml).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.version_option(package_name="botmeter")
@click.pass_context
def main(click_ctx: click.Context, config_path: str | None, log_level: str, log_json: bool) -> None:
    """botmeter: meter every call your voice bot answers, on premises, beside Asterisk."""
    click_ctx.obj = Context(config_path, log_level, log_json)


@main.command()
@click.pass_obj
def run(ctx: Context) -> None:
    """Attach to Asterisk over AMI and record calls until stopped (SIGTERM/SIGINT)."""
    from .service import AgentService, ServiceError

    config = ctx.config()
    try:
        service = AgentService(config)
    except OSError as exc:
        click.echo(f"botmeter: cannot read the AMI secret: {exc}", err=True)
        sys.exit(2)

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    try:
        asyncio.run(_main())
    except ServiceError as exc:
        click.echo(f"botmeter: cannot start: {exc}", err=True)
        sys.exit(1)


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


@main.command()
@click.argument("capture", type=click.File("rb"))
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def replay(ctx: Context, capture: IO[bytes], db: str | None) -> None:
    """Feed a raw AMI capture (FILE, or - for stdin) through tracking and store its calls."""
    from .service import replay as replay_capture

    config = ctx.config()
    store = _store(ctx, db)
    try:
        stats = replay_capture(_chunks(capture), config.tracking_rules(), store)
    finally:
        store.close()
    click.echo(" ".join(f"{key}={value}" for key, value in stats.items()))


@main.command()
@click.option("--since", type=UtcTime(), help="Calls offered at or after this time.")
@click.option("--until", type=UtcTime(), help="Calls offered before this time.")
@click.option("--outcome", "outcomes", multiple=True, type=click.Choice(OUTCOMES),
              help="Only this outcome (repeatable).")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "csv"]))
@click.option("--limit", type=click.IntRange(min=1), help="At most this many calls.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def calls(ctx: Context, since: float | None, until: float | None, outcomes: tuple[str, ...],
          fmt: str, limit: int | None, db: str | None) -> None:
    """List stored calls."""
    from .reports.calls import render_calls

    if db and not Path(db).exists():
        raise click.BadParameter(f"no database at {db}", param_hint="--db")
    store = _store(ctx, db)
    try:
        records = store.calls(CallFilter(since, until, outcomes, limit))
        ratings = {r.call_id: store.rating_of(r.call_id) for r in records} if fmt != "table" else {}
    finally:
        store.close()
    render_calls(records, fmt, sys.stdout, ratings)


@main.command()
@click.option("--calls", "count", default=36, show_default=True, type=click.IntRange(1, 10_000),
              help="How many scripted calls to play.")
@click.option("--speed", default=40.0, show_default=True, type=click.FloatRange(min=1, max=10_000),
              help="Simulated seconds per real second.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--db", type=click.Path(dir_okay=False),
              help="Keep the demo's calls in this SQLite file (default: a temporary one).")
def demo(count: int, speed: float, concurrency: int, db: str | None) -> None:
    """Run the agent against the built-in simulated PBX on loopback and show what it recorded."""
    from .demo import run_demo

    ok = asyncio.run(run_demo(count=count, speed=speed, concurrency=concurrency, db=db))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
