"""`botmeter db ...`: care of the database (backup, stats, vacuum, purge of old calls).

`backup` and `stats` open the database read-only, so they run beside the live agent and never
create or migrate a file; `vacuum` and `purge` write, and may run beside it too (the agent's
writer waits for them, never dropping a call). Usage problems (a bad target, no database, not
a botmeter database, no `[store] keep_months`) exit 2; a failure while working exits 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli import FAILURE, USAGE, Context, fail, main, opened_store, refuse_bad_files

if TYPE_CHECKING:
    import sqlite3
    from datetime import tzinfo

_DB = click.option("--db", type=click.Path(dir_okay=False),
                   help="SQLite file (default: [store] path).")


@main.group()
def db() -> None:
    """The database: backup, stats, vacuum, and purging old calls ([store] keep_months)."""


def _source(ctx: Context, db: str | None) -> Path:
    return Path(db) if db else ctx.config().store_path()


def _zone(ctx: Context) -> tzinfo:
    """The time zone months are counted in: the active plan's, else UTC."""
    from .plans import rating_series
    from .storage.retention import UTC_ZONE

    config = ctx.config()
    with refuse_bad_files():
        series = rating_series(config)
    return series.timezone if series is not None else UTC_ZONE


@contextmanager
def _refuse_bad_database() -> Iterator[None]:
    """A database that is missing or not botmeter's: one line, exit 2; one that cannot be
    read: one line, exit 1."""
    from .storage.readonly import ForeignDatabase
    from .storage.store import NoDatabase, StoreError

    try:
        yield
    except (NoDatabase, ForeignDatabase) as exc:
        fail("database error", exc.path, exc.reason, USAGE)
    except StoreError as exc:
        fail("database error", exc.path, exc.reason, FAILURE)


@contextmanager
def _readonly(path: Path) -> Iterator[tuple[sqlite3.Connection, int]]:
    """The database opened read-only (see `_refuse_bad_database`), closed after use."""
    import sqlite3

    from .storage.readonly import open_readonly
    from .storage.store import database_problem

    with _refuse_bad_database():
        conn, version = open_readonly(path)
    try:
        yield conn, version
    except sqlite3.Error as exc:
        fail("database error", str(path), database_problem(exc), FAILURE)
    finally:
        conn.close()


def _botmeter_database(path: Path) -> None:
    """Exit 2 (one line) unless `path` is a botmeter database, before a command that writes
    opens it (which would take another program's empty file for a new database)."""
    with _readonly(path):
        pass


@db.command("backup")
@click.argument("target", metavar="FILE", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@_DB
@click.pass_obj
def db_backup(ctx: Context, target: Path, force: bool, db: str | None) -> None:
    """Copy the database to FILE while the agent keeps recording: consistent as of the
    moment the copy starts, checked with PRAGMA integrity_check, mode 0600."""
    from .storage.backup import BackupFailed, BadTarget, backup

    source = _source(ctx, db)
    with _refuse_bad_database():
        try:
            with _progress("copying") as progress:
                result = backup(source, target, force=force, progress=progress)
        except BadTarget as exc:
            fail("backup error", exc.path, exc.reason, USAGE)
        except BackupFailed as exc:
            fail("backup error", exc.path, exc.reason, FAILURE)
    click.echo(f"backed up {result.calls:,} calls (schema {result.schema_version}, "
               f"{_mib(result.bytes)}) to {result.path}; integrity check ok")


@contextmanager
def _progress(what: str) -> Iterator[Any]:
    """A progress bar on a terminal (stderr), else nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    with Progress(TextColumn(what), BarColumn(), TaskProgressColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@db.command("stats")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@_DB
@click.pass_obj
def db_stats(ctx: Context, as_json: bool, db: str | None) -> None:
    """What the database holds: calls in all and per month, the oldest and newest call, its
    size and schema version, rejected rows, the uplink outbox by state. Read-only."""
    from .storage.dbstats import database_stats

    zone = _zone(ctx)
    path = _source(ctx, db)
    with _readonly(path) as (conn, version):
        stats = database_stats(conn, path, version, zone)
    if as_json:
        click.echo(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        _stats_text(stats)


def _stats_text(stats: dict[str, Any]) -> None:
    echo = click.echo
    size = stats["size"]
    echo(f"database:      {stats['path']} (schema version {stats['schema_version']})")
    echo(f"size:          {_mib(size['database_bytes'])} + WAL {_mib(size['wal_bytes'])}; "
         f"{_mib(size['free_bytes'])} free (botmeter db vacuum gives it back)")
    echo(f"calls:         {stats['calls']:,}")
    if stats["calls"]:
        echo(f"oldest call:   {stats['oldest_call']} (offered)")
        echo(f"newest call:   {stats['newest_call']} (offered)")
    echo(f"rejected rows: {stats['rejected']:,}")
    echo("uplink outbox: " + ", ".join(f"{state} {count:,}"
                                       for state, count in stats["uplink_outbox"].items()))
    spill = stats["spill_file"]
    echo("spill file:    " + (f"{spill['path']} ({spill['bytes']:,} bytes: stored at the "
                              "next start)" if spill else "none"))
    if stats["months"]:
        echo(f"calls per month (by end, {stats['timezone']}):")
        for month in stats["months"]:
            echo(f"  {month['period']}  {month['calls']:>12,}")


def _mib(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


@db.command("vacuum")
@_DB
@click.pass_obj
def db_vacuum(ctx: Context, db: str | None) -> None:
    """Shrink the file after a purge (SQLite's VACUUM). The agent's writes wait while it
    runs: on a big database, run it when the PBX is quiet."""
    from .storage.vacuum import vacuum

    _botmeter_database(_source(ctx, db))
    with opened_store(ctx, db, create=False) as store:
        done = vacuum(store)
    click.echo(f"vacuumed {store.path}: {_mib(done.before)} -> {_mib(done.after)}"
               + ("" if done.checkpointed else " (the WAL is emptied once readers let go)"))


@db.command("purge")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, delete nothing.")
@_DB
@click.pass_obj
def db_purge(ctx: Context, dry_run: bool, db: str | None) -> None:
    """Delete the calls older than [store] keep_months full months (the running agent does
    it daily). A month with an uplink summary not yet delivered is kept, as are the current
    and previous months."""
    from .plans import rating_series
    from .storage.retention import plan_purge, purge, retention_policy

    config = ctx.config()
    with refuse_bad_files():
        policy = retention_policy(config, rating_series(config))
    if policy is None:
        fail("purge", config.source_path, "[store] keep_months is not set: calls are kept "
                                          "forever", USAGE)
    _botmeter_database(_source(ctx, db))
    with opened_store(ctx, db, create=False) as store:
        plan = plan_purge(store.db.conn, policy, time.time())
        deleted = {} if dry_run else purge(store.db.conn, plan, policy)
    click.echo(f"keeping {plan.first_kept} onwards ([store] keep_months = "
               f"{policy.keep_months}; months in {policy.timezone})")
    for month in plan.months:
        if month.held is not None:
            verdict = f"kept: {month.held}"
        elif dry_run:
            verdict = "would be purged"
        else:
            verdict = f"purged {deleted.get(month.period, 0):,}"
        click.echo(f"  {month.period}  {month.calls:>12,} calls  {verdict}")
    if dry_run:
        click.echo(f"dry run: {sum(m.calls for m in plan.purgeable):,} calls would be purged")
    else:
        click.echo(f"purged {sum(deleted.values()):,} calls"
                   + ("; botmeter db vacuum gives the space back" if deleted else ""))


__all__ = ["db"]
