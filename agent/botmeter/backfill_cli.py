"""`botmeter backfill`: the calls of a window that Asterisk's own records hold and the
database does not, rebuilt and stored (docs/recovery.md).

From CEL (`--cel`, else `[recovery] cel_db`) the calls are rebuilt by the one call tracker,
as from AMI (`source = "cel"`); from CDRs (`--cdr`, else `[recovery] cdr_db` or `cdr_csv`,
when no CEL file is configured) they are the CDR fallback's records (`source = "cdr"`). A call
already stored (from AMI, or by an earlier backfill) is left as it is, so running it again
stores nothing new. Calls are rated as `replay` rates them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli import (
    EXIT_NOT_STORED,
    FAILURE,
    USAGE,
    Context,
    UtcTime,
    fail,
    main,
    opened_store,
    refuse_bad_files,
)

if TYPE_CHECKING:
    from .config import Config
    from .recovery.bad_rows import BadRows
    from .recovery.cdr import CdrSource
    from .recovery.cel_source import CelSource
    from .tracking.record import CallRecord


@main.command()
@click.option("--from", "since", required=True, type=UtcTime(),
              help="Calls offered at or after this time (ISO 8601; without a zone: UTC).")
@click.option("--to", "until", required=True, type=UtcTime(), help="Calls offered before this time.")
@click.option("--cel", type=click.Path(dir_okay=False),
              help="Asterisk's CEL file, SQLite or CSV (default: [recovery] cel_db).")
@click.option("--cdr", type=click.Path(dir_okay=False),
              help="Asterisk's CDR file, SQLite or Master.csv (default, without a CEL file: "
                   "[recovery] cdr_db or cdr_csv).")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def backfill(ctx: Context, since: float, until: float, cel: str | None, cdr: str | None,
             db: str | None) -> None:
    """Store the calls of a window that Asterisk's CEL (or CDR) file holds and the database
    does not. Idempotent: calls already stored are left as they are.

    Exit code 3: some calls were refused by the store and set aside in table `rejected`.
    """
    from .plans import rating_series
    from .recovery.bad_rows import BadRows
    from .recovery.tables import SourceError
    from .storage.guard import StoreUnavailable
    from .storage.offline_saver import OfflineSaver

    if cel and cdr:
        raise click.UsageError("give --cel or --cdr, not both")
    if since >= until:
        raise click.UsageError("--from must be before --to")
    config = ctx.config()
    with refuse_bad_files():
        series = rating_series(config)
    bad = BadRows()
    kind, path = _source(config, cel, cdr)
    try:
        source = _open(kind, path, bad)
    except SourceError as exc:  # a file that is not there or not laid out as botmeter reads it
        fail("backfill error", exc.path, exc.reason, USAGE)
    try:
        with source:
            calls, unfinished = _calls(source, since, until, config, bad)
    except SourceError as exc:
        fail("backfill error", exc.path, exc.reason, FAILURE)
    with opened_store(ctx, db, create=True) as store:
        present = store.stored_call_ids(r.call_id for r in calls)
        missing = [r for r in calls if r.call_id not in present]
        saver = OfflineSaver(store, series)
        try:
            for record in missing:
                saver.add(record)
            late = saver.finish()
        except StoreUnavailable as exc:
            fail("backfill error", str(store.path), f"stopped: {exc} (the calls stored so far "
                                                    "stay; running it again stores the rest)",
                 FAILURE)
    stats = {"source": kind, "calls_found": len(calls), "calls_stored": len(missing) - saver.rejected,
             "calls_present": len(present), "calls_rejected": saver.rejected,
             "calls_unfinished": unfinished, "bad_rows": bad.count,
             "periods_rerated": len(late)}
    click.echo(" ".join(f"{key}={value}" for key, value in stats.items()))
    if saver.rejected:
        click.echo(f"botmeter: {saver.rejected} of {len(missing)} calls refused by the store, "
                   f"set aside in table rejected (the log says why)", err=True)
        sys.exit(EXIT_NOT_STORED)


def _source(config: Config, cel: str | None, cdr: str | None) -> tuple[str, Path]:
    """Which file to read: the option given, else [recovery]'s CEL file, else its CDR file."""
    from .config import recovery_sources

    if cel:
        return "cel", Path(cel)
    if cdr:
        return "cdr", Path(cdr)
    sources = recovery_sources(config)
    if sources.cel is not None:
        return "cel", sources.cel
    if sources.cdr is not None:
        return "cdr", sources.cdr
    fail("usage error", "backfill", "no CEL or CDR file: give --cel or --cdr, or set "
                                    "[recovery] cel_db (or cdr_db, cdr_csv) in the config", USAGE)


def _open(kind: str, path: Path, bad: BadRows) -> CelSource | CdrSource:
    from .recovery.cdr import open_cdr
    from .recovery.cel_source import open_cel

    return open_cel(path, on_bad=bad) if kind == "cel" else open_cdr(path, on_bad=bad)


def _calls(source: CelSource | CdrSource, since: float, until: float, config: Config,
           bad: BadRows) -> tuple[list[CallRecord], int]:
    """The calls offered in [since, until) that the file holds, and how many calls were still
    in progress at the end of what was read (CEL: its rows up to `MAX_CALL_SECONDS` after)."""
    from .recovery.cdr import CdrSource
    from .recovery.cel import cel_events
    from .recovery.rebuild import MAX_CALL_SECONDS, rebuild

    rules = config.tracking_rules()
    if isinstance(source, CdrSource):
        return list(source.records(since, until, rules)), 0
    rows = source.rows(since - MAX_CALL_SECONDS, until + MAX_CALL_SECONDS)
    records, tracker = rebuild(cel_events(rows, bad), rules, source="cel",
                               max_in_progress=config.calls.max_in_progress)
    unfinished = tracker.active_calls
    tracker.end_of_input()
    return [r for r in records if since <= r.offered_at < until], unfinished
