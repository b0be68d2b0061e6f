"""The `botmeter` command.

Every failure ends in one line on stderr, `botmeter: <what>: <where>: <reason>`, never a
traceback: exit code 2 for a usage or configuration problem (bad option, config or plan file,
secret file, a database that does not exist for a command that only reads), 1 for a runtime
failure (a database that cannot be created or read, nothing to replay, an internal error).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

# Only what `botmeter --help` needs is imported here (tests/test_startup_imports.py checks):
# each command imports the rest (config, storage, rating, logging, asyncio) when it runs.
from . import ENV_VAR
from .session_option import SessionId
from .tracking.record import CSAT_SCALE, OUTCOMES, iso_utc

if TYPE_CHECKING:
    from .config import Config
    from .rating import PlanSeries
    from .storage.store import CallStore

CHUNK = 64 * 1024
#: the longest window `botmeter report` covers (a year and a bit)
MAX_REPORT_DAYS = 400
USAGE, FAILURE = 2, 1
#: periods whose bounds exist in every time zone
FIRST_PERIOD, LAST_PERIOD = "0001-02", "9999-11"

#: click >= 8.2 raises this for a group run without a command; it shows the help
_HELP_INSTEAD: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())
#: how logging is set up: known to the last-resort guard, which logs tracebacks at debug level
_logging: dict[str, Any] = {"debug": False, "json": None}


def fail(what: str, where: str, reason: str, code: int) -> NoReturn:
    """Say `botmeter: <what>: <where>: <reason>` in one line on stderr and exit with `code`."""
    text = f"{where}: {reason}" if where else reason
    click.echo(f"botmeter: {what}: {_one_line(text)}", err=True)
    sys.exit(code)


def _one_line(text: str, limit: int = 1000) -> str:
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[:limit] + "..."


class BotmeterGroup(click.Group):
    """The top command: click's own error display replaced by one line each, and a last-resort
    guard so that no traceback reaches the user (it is logged at debug level)."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _HELP_INSTEAD as exc:  # `botmeter`, `botmeter plans`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx else (prog_name or "botmeter")
            where = path.split(" ", 1)[1] if " " in path else path
            fail("usage error", where, f"{exc.format_message()} (see '{path} --help')",
                 exc.exit_code)
        except click.ClickException as exc:
            fail("error", "", exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", "", "interrupted", FAILURE)
        except Exception as exc:
            internal_error(exc)
        sys.exit(code if isinstance(code, int) else 0)


def internal_error(exc: BaseException) -> NoReturn:
    """An exception nobody expected: one line, and the traceback at debug level only."""
    if _logging["debug"]:
        import structlog

        from .logs import setup_logging

        setup_logging("debug", json=_logging["json"])
        structlog.get_logger(__name__).debug("internal error", exc_info=exc)
    fail("internal error", type(exc).__name__,
         f"{exc} (run with --log-level debug for details)", FAILURE)
#: exit code: finished, but some calls are not in the database's calls table: `run` spilled
#: them to <db>.spill.jsonl (the next start stores them), `replay` set them aside in `rejected`
EXIT_NOT_STORED = 3
#: exit code: some calls could be neither stored nor spilled; their records are in the log
EXIT_LOST = 4


class Context:
    """What every command shares: the config file, and logging set up when first needed."""

    def __init__(self, config_path: str | None, log_level: str | None,
                 log_json: bool | None) -> None:
        self.config_path = config_path
        self.log_level, self.log_json = log_level, log_json
        _logging.update(debug=(log_level or "").lower() == "debug", json=log_json)

    def start_logging(self, config: Config | None = None) -> None:
        """Set logging up (a command that reads its config logs; `--help` never does): the
        options given, else the config's [log], else info and "auto"."""
        from .logs import setup_logging

        level = self.log_level or (config.log.level if config else "info")
        json = self.log_json if self.log_json is not None else (
            config.log.json_mode if config else None)
        _logging.update(debug=level.lower() == "debug", json=json)
        setup_logging(level, json=json)

    def config(self) -> Config:
        from .config import load_config

        with refuse_bad_files():
            config = load_config(self.config_path)
        self.start_logging(config)
        return config


@contextmanager
def refuse_bad_files() -> Iterator[None]:
    """A bad config or plan file: one line naming file, key and reason, exit code 2."""
    from .config import ConfigError
    from .rating import PlanError

    try:
        yield
    except ConfigError as exc:
        fail("configuration error", "", str(exc), USAGE)
    except PlanError as exc:
        fail("plan error", "", str(exc), USAGE)


class FiniteRange(click.FloatRange):
    """A float within bounds; `nan` too is refused (it compares false with every bound)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


class Period(click.ParamType):
    """A billing period, YYYY-MM."""

    name = "YYYY-MM"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from .rating.periods import parse_period

        text = str(value)
        try:
            parse_period(text)
        except ValueError:
            self.fail(f"{text!r} is not a period: write YYYY-MM, e.g. 2026-11", param, ctx)
        if not FIRST_PERIOD <= text <= LAST_PERIOD:
            self.fail(f"{text!r} is out of range: periods run from {FIRST_PERIOD} to "
                      f"{LAST_PERIOD}", param, ctx)
        return text


class CsatBound(click.ParamType):
    """A bound on the caller's rating on the 5-point scale: a number from 1 to 5 (ASCII digits,
    at most 6 decimals), kept exact."""

    name = "1..5"
    _NUMBER = re.compile(r"[0-9]+(?:\.[0-9]{1,6})?")

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        text = str(value).strip()
        if self._NUMBER.fullmatch(text) is None:
            self.fail(f"{value!r} is not a number from 1 to {CSAT_SCALE} (e.g. 4 or 3.5)",
                      param, ctx)
        bound = Decimal(text)
        if not 1 <= bound <= CSAT_SCALE:
            self.fail(f"{value!r} is outside 1..{CSAT_SCALE} (ratings are compared on the "
                      f"{CSAT_SCALE}-point scale)", param, ctx)
        return bound


@contextmanager
def opened_store(ctx: Context, db: str | None, *, create: bool) -> Iterator[CallStore]:
    """The database (`--db`, else [store] path), closed after use. `create=False` (commands
    that only read) refuses one that does not exist. Any database problem, on opening or
    while in use, ends the command with one line naming the file."""
    import sqlite3

    from .storage.store import CallStore, NoDatabase, StoreError, database_problem

    config = ctx.config() if create or not db else None
    path = Path(db) if db else config.store_path()  # type: ignore[union-attr]
    group = config.store.group if create and config else None
    try:
        store = CallStore(path, create=create, group=group)
    except NoDatabase as exc:
        fail("database error", exc.path, exc.reason, USAGE)
    except StoreError as exc:
        fail("database error", exc.path, exc.reason, FAILURE)
    try:
        yield store
    except sqlite3.Error as exc:
        fail("database error", str(path), database_problem(exc), FAILURE)
    finally:
        store.close()


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
        if moment.microsecond % 1000:  # stored times are whole milliseconds: round up to one
            try:
                moment += timedelta(microseconds=1000 - moment.microsecond % 1000)
            except OverflowError:
                self.fail(f"{value!r} is out of range: in UTC it must fall in the years 1 to "
                          "9999", param, ctx)
        epoch = moment.timestamp()
        try:
            iso_utc(epoch)  # as stored: UTC, to the millisecond
        except (ValueError, OverflowError, OSError):
            self.fail(f"{value!r} is out of range: in UTC it must fall in the years 1 to 9999",
                      param, ctx)
        return epoch


@click.group(cls=BotmeterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar=ENV_VAR, type=click.Path(dir_okay=False),
              help=f"Configuration file (default: ${ENV_VAR}, else /etc/botmeter/botmeter.toml).")
@click.option("--log-level", default=None,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log this level and above (default: [log] level, else info).")
@click.option("--log-json/--no-log-json", default=None,
              help="Log one JSON object per line, or console lines (default: [log] json; "
                   "auto: JSON under journald).")
@click.version_option(package_name="botmeter")
@click.pass_context
def main(click_ctx: click.Context, config_path: str | None, log_level: str | None,
         log_json: bool | None) -> None:
    """botmeter: meter every call your voice bot answers, on premises, beside Asterisk."""
    click_ctx.obj = Context(config_path, log_level, log_json)


@main.command()
@click.option("--stop-timeout", default=4.0, show_default=True, type=FiniteRange(1, 3600),
              help="Seconds a stop may take to store every finished call (and finish "
                   "re-rating); what is not stored by then is spilled. The default keeps "
                   "the whole stop within 5 s (keep it below the unit's TimeoutStopSec).")
@click.pass_obj
def run(ctx: Context, stop_timeout: float) -> None:
    """Attach to Asterisk over AMI and record calls until stopped (SIGTERM/SIGINT);
    SIGHUP reloads the configuration and plan files, keeping the calls in progress.

    Exit code 3: some calls could not be stored before the stop and were spilled to
    <db>.spill.jsonl (the next start stores them); 4: some could not even be spilled.
    """
    import asyncio
    import contextlib
    import signal
    import sqlite3

    from . import runtime
    from .service import AgentService, ServiceError
    from .storage.startup import open_at_start
    from .storage.store import StoreError

    config = ctx.config()
    try:  # a database no retry mends stops the agent here, in one line; one locked does not
        store = open_at_start(config.store_path(), config.store.group)
    except StoreError as exc:
        fail("database error", exc.path, exc.reason, FAILURE)
    try:
        with refuse_bad_files():
            service = AgentService(config, stop_timeout=stop_timeout)
        if service.uplink is not None and store is not None:  # would it count calls twice?
            from .uplink.identity import check_identity

            # unreadable now: the uplink checks again once it opens the database
            with refuse_bad_files(), contextlib.suppress(sqlite3.Error):
                check_identity(store.db.conn, service.uplink.settings, config.source_path)
    finally:
        if store is not None:
            store.close()

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        loop.add_signal_handler(signal.SIGHUP, service.reload)
        await service.run()

    try:
        runtime.run(_main())
    except ServiceError as exc:
        fail("cannot start", "", str(exc), FAILURE)
    except StoreError as exc:
        fail("database error", exc.path, exc.reason, FAILURE)
    if service.writer.lost:
        sys.exit(EXIT_LOST)
    if service.writer.spilled:
        sys.exit(EXIT_NOT_STORED)


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


@main.command()
@click.argument("capture", type=click.File("rb"))
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def replay(ctx: Context, capture: IO[bytes], db: str | None) -> None:
    """Feed a raw AMI capture (FILE, or - for stdin) through tracking and store its calls.

    Calls spilled by a stopped agent are stored first. Exit code 3: some calls were refused
    by the store and set aside in table `rejected` (the log says why); 1: the database
    refused writes.
    """
    from .plans import rating_series
    from .replay import replay as replay_capture
    from .storage.guard import StoreUnavailable
    from .storage.spill import spill_path

    config = ctx.config()
    with refuse_bad_files():
        series = rating_series(config)
    path = Path(db) if db else config.store_path()
    with opened_store(ctx, db, create=True) as store:
        try:
            stats = replay_capture(_chunks(capture), config.tracking_rules(), store,
                                   series=series, spill=spill_path(path),
                                   max_in_progress=config.calls.max_in_progress)
        except (StoreUnavailable, OSError) as exc:
            fail("replay error", str(path), f"stopped: {exc} (the calls stored so far stay; "
                                            "replaying again stores each call once)", FAILURE)
    if not stats["events"] + stats["skipped_events"] + stats["calls_from_spill"]:
        fail("replay error", capture.name, "no AMI event in it: not a raw AMI capture (the "
                                           "bytes Asterisk sends on port 5038)?", FAILURE)
    click.echo(" ".join(f"{key}={value}" for key, value in stats.items()))
    if stats["calls_rejected"]:
        total = stats["calls_recorded"] + stats["calls_from_spill"]
        click.echo(f"botmeter: {stats['calls_rejected']} of {total} calls refused by the store, "
                   f"set aside in table rejected of {path} (the log says why)", err=True)
        sys.exit(EXIT_NOT_STORED)


@main.command()
@click.option("--since", type=UtcTime(), help="Calls offered at or after this time.")
@click.option("--until", type=UtcTime(), help="Calls offered before this time.")
@click.option("--outcome", "outcomes", multiple=True, type=click.Choice(OUTCOMES),
              help="Only this outcome (repeatable).")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "csv"]))
@click.option("--limit", type=click.IntRange(1, 1_000_000_000), help="At most this many calls.")
@click.option("--csat-min", type=CsatBound(),
              help="Only calls the caller rated at least this, on the 5-point scale "
                   "(a 10-point 8 is 4.11).")
@click.option("--csat-max", type=CsatBound(),
              help="Only calls the caller rated at most this, on the 5-point scale.")
@click.option("--session", type=SessionId(),
              help="Only calls whose bot sent this session id (exact match).")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def calls(ctx: Context, since: float | None, until: float | None, outcomes: tuple[str, ...],
          fmt: str, limit: int | None, csat_min: Decimal | None, csat_max: Decimal | None,
          session: str | None, db: str | None) -> None:
    """List stored calls."""
    from .reports.calls import render_calls
    from .storage.store import CallFilter

    query = CallFilter(since, until, outcomes, limit, csat_min=csat_min, csat_max=csat_max,
                       session=session)
    with opened_store(ctx, db, create=False) as store:
        listed = store.listing(query)  # one SELECT
    ratings = listed.ratings()
    if fmt == "table" and not any(r.get("cost") for r in ratings.values()):
        ratings = {}
    render_calls(listed.calls, fmt, sys.stdout, ratings)


def _series(ctx: Context, plan_id: str | None):
    from .plans import active_series, load_plan_book

    config = ctx.config()
    with refuse_bad_files():
        return config, active_series(config, load_plan_book(config), plan_id)


@main.command()
@click.option("--period", required=True, type=Period(), help="The month to re-rate (plan's time zone).")
@click.option("--plan", "plan_id", help="Rate under this plan id (default: [plans] active).")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def rerate(ctx: Context, period: str, plan_id: str | None, db: str | None) -> None:
    """Re-rate every stored call of a period, so stored amounts equal rating them in order."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from .rerating import rerate_period

    _, series = _series(ctx, plan_id)
    steps = {"load": "loading calls", "rate": "rating", "store": "storing amounts"}
    with (opened_store(ctx, db, create=False) as store,
          Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                   disable=not sys.stderr.isatty(), console=_err_console()) as bar):
        task = bar.add_task(f"{period}: {steps['load']}", total=None)
        calls = {"n": 0}

        def progress(step: str, done: int) -> None:
            if step == "load":  # the period's size is known once it is loaded: 3 steps of it
                calls["n"] = done
                bar.update(task, total=3 * done, completed=done)
            else:
                offset = calls["n"] * (1 if step == "rate" else 2)
                bar.update(task, completed=offset + (done if step == "store" else calls["n"]))
            bar.update(task, description=f"{period}: {steps[step]}")

        count = rerate_period(store, series, period, progress)
        bar.update(task, completed=3 * count, total=3 * count, description=f"{period}: done")
    click.echo(f"re-rated {count} calls of {period} under {series.plan_id}")


def _err_console():
    from rich.console import Console

    return Console(stderr=True)


@main.command()
@click.option("--period", required=True, type=Period(), help="The month to bill (plan's time zone).")
@click.option("--plan", "plan_id", help="Bill under this plan id (default: [plans] active).")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def bill(ctx: Context, period: str, plan_id: str | None, fmt: str, db: str | None) -> None:
    """The period's statement: usage per charge, fees, the SLA, the total."""
    from .rating import build_statement, period_bounds
    from .reports.billing import render_statement

    _, series = _series(ctx, plan_id)
    with opened_store(ctx, db, create=False) as store:
        calls = store.calls_ended_between(*period_bounds(period, series.timezone))
    with refuse_bad_files():  # a period before the plan starts has no statement
        statement = build_statement(series, period, calls)
    render_statement(statement, fmt, sys.stdout)


class ReportTime(click.ParamType):
    """A date or time for `report --from/--to`, kept as text: a date or a time without an
    offset is read in the report's time zone once that is known."""

    name = "date|time"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-11-26 or "
                      "2026-11-26T15:00:00+08:00)", param, ctx)


REPORT_BY = ("day", "week", "hour", "weekday", "outcome", "dialed_number", "transfer_target")


@main.command()
@click.option("--period", type=Period(),
              help="The month to report (report time zone; default: the current month).")
@click.option("--from", "since", type=ReportTime(),
              help="Start of the window (a date or time; without an offset: report time zone).")
@click.option("--to", "until", type=ReportTime(), help="End of the window (excluded).")
@click.option("--by", default="day", show_default=True, type=click.Choice(REPORT_BY),
              help="What the rows are.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "csv", "json", "html"]))
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write to this file (atomically) instead of stdout.")
@click.option("--lang", type=click.Choice(["en", "zh-Hans", "zh-Hant"]),
              help="Language of table, CSV and HTML (default: [report] lang).")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def report(ctx: Context, period: str | None, since: datetime | None, until: datetime | None,
           by: str, fmt: str, out: str | None, lang: str | None, db: str | None) -> None:
    """A usage report: calls, rates, durations, satisfaction, cost, SLA, plan advice,
    forecast and budget, for a month or a window (docs/reports.md)."""
    import time
    from zoneinfo import ZoneInfo

    from .plans import active_series, load_plan_book
    from .reports.metrics import Pricing, build_report
    from .reports.window import Window

    if period is not None and (since is not None or until is not None):
        raise click.UsageError("give --period or --from/--to, not both")
    if (since is None) != (until is None):
        raise click.UsageError("give both --from and --to")
    config = ctx.config()
    with refuse_bad_files():
        book = load_plan_book(config)
        active = active_series(config, book) if book is not None else None
    zone = config.report.timezone
    tz = ZoneInfo(zone) if zone else active.timezone if active else ZoneInfo("UTC")
    if since is not None and until is not None:
        start, end = _local_epoch(since, tz, "--from"), _local_epoch(until, tz, "--to")
        if start >= end:
            raise click.UsageError("--from must be before --to")
        if end - start > MAX_REPORT_DAYS * 86400:
            raise click.UsageError(f"--from/--to span {(end - start) / 86400:,.0f} days: a report "
                                   f"covers at most {MAX_REPORT_DAYS} (one row and bar a day)")
        window = Window(start, end, tz)
    else:
        if period is None:
            now = datetime.fromtimestamp(time.time(), tz)
            period = f"{now.year:04d}-{now.month:02d}"
        window = Window.month(period, tz)
    if out is not None:  # never over the calls database or the config
        from .writing import read_file_named

        clash = read_file_named(out, [("configuration", config.source_path)],
                                db or config.store_path())
        if clash is not None:
            fail("report error", out, f"is the {clash[0]} ({clash[1]}): choose another --out",
                 USAGE)
    budget = config.budget.amount if config.budget is not None else None
    pricing = Pricing(active, list(book) if book is not None else [], budget)
    with opened_store(ctx, db, create=False) as store, refuse_bad_files():
        data = build_report(store, window, by, pricing)
    _write_report(data, fmt, lang or config.report.lang, out)


def _local_epoch(moment: datetime, tz: Any, option: str) -> float:
    """A --from/--to value as a UTC epoch: without an offset, in the report's time zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    try:
        epoch = moment.timestamp()
        iso_utc(epoch)
    except (ValueError, OverflowError, OSError):
        raise click.BadParameter("out of range: in UTC it must fall in the years 1 to 9999",
                                 param_hint=f"'{option}'") from None
    return epoch


def _write_report(data: dict[str, Any], fmt: str, lang: str, out: str | None) -> None:
    """JSON here; table, CSV and HTML by the renderer. To --out through a temporary file
    renamed into place, so a reader never sees half a report."""
    import io
    import json

    buffer = io.BytesIO()
    if fmt == "json":
        buffer.write(json.dumps(data, ensure_ascii=False, indent=2).encode() + b"\n")
    else:
        try:
            from .reports.render import render_report  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            fail("report error", f"--format {fmt}", "this botmeter has no report renderer; "
                 "use --format json", FAILURE)
        render_report(data, fmt, lang, buffer)
    from .writing import atomic_text

    try:
        with atomic_text(out) as stream:
            stream.flush()
            stream.buffer.write(buffer.getvalue())
    except OSError as exc:
        fail("report error", str(out), f"cannot write it: {exc.strerror or exc}", FAILURE)


@main.group()
def plans() -> None:
    """Plan files: compare what the period's calls would cost under each."""


@plans.command("compare")
@click.option("--period", required=True, type=Period(), help="The month whose calls to price.")
@click.argument("plan_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def plans_compare(ctx: Context, period: str, plan_files: tuple[str, ...], fmt: str,
                  db: str | None) -> None:
    """Price the period's real calls under each PLAN_FILE (and the active plan), cheapest first."""
    from .plans import comparison_plans, period_span
    from .rating import compare_plans
    from .reports.billing import render_comparison

    config = ctx.config()
    with refuse_bad_files():
        series, active = comparison_plans(config, [Path(p) for p in plan_files])
        _one_currency(series)
    with opened_store(ctx, db, create=False) as store:
        calls = store.calls_ended_between(*period_span(period, series))
    with refuse_bad_files():
        comparison = compare_plans(series, period, calls, active=active)
    render_comparison(comparison, fmt, sys.stdout)


def _one_currency(series: list[PlanSeries]) -> None:
    """Plans are compared in one currency: PlanError naming the first plan in another."""
    from .rating import PlanError

    first = series[0]
    for other in series[1:]:
        if other.currency != first.currency:
            raise PlanError(other.latest.source, "plan.currency",
                            f"{other.currency} differs from {first.currency} in "
                            f"{first.latest.source}: plans are compared in one currency")


@main.command()
@click.option("--calls", "count", default=36, show_default=True, type=click.IntRange(1, 10_000),
              help="How many scripted calls to play.")
@click.option("--speed", default=40.0, show_default=True, type=FiniteRange(min=1, max=10_000),
              help="Simulated seconds per real second.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--db", type=click.Path(dir_okay=False),
              help="Keep the demo's calls in this SQLite file (default: a temporary one).")
def demo(count: int, speed: float, concurrency: int, db: str | None) -> None:
    """Run the agent against the built-in simulated PBX on loopback and show what it recorded."""
    from . import runtime
    from .demo import run_demo
    from .storage.store import CallStore, StoreError

    if db:  # a database that cannot be used stops the demo here, in one line
        try:
            CallStore(db).close()
        except StoreError as exc:
            fail("database error", exc.path, exc.reason, FAILURE)
    ok = runtime.run(run_demo(count=count, speed=speed, concurrency=concurrency, db=db))
    sys.exit(0 if ok else 1)


from . import (  # noqa: E402 -- each registers its commands on main
    backfill_cli,  # noqa: F401 -- `botmeter backfill`
    db_cli,  # noqa: F401 -- `botmeter db`
    doctor_cli,  # noqa: F401 -- `botmeter doctor` and `check-config`
    reconcile_cli,  # noqa: F401 -- `botmeter reconcile`
    sim_cli,  # noqa: F401 -- `botmeter sim`
    sync_cli,  # noqa: F401 -- `botmeter sync`
)

if __name__ == "__main__":  # pragma: no cover
    # `python -m botmeter.cli`: run the module proper, on whose group every command registers
    from botmeter.cli import main as _main

    _main()
