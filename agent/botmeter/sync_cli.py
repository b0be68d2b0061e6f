"""`botmeter sync ...`: the uplink's outbox by hand (status, now, retry, show).

`sync now` and `sync retry` may run while `botmeter run` syncs too: revisions are claimed
under the database's write lock and leased while a request is out, so none is sent twice at
once.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from .cli import FAILURE, USAGE, Context, fail, main, opened_store, refuse_bad_files

if TYPE_CHECKING:
    from .storage.store import CallStore
    from .uplink.delivery import Report
    from .uplink.settings import UplinkSettings

#: `sync now` / `sync retry`: summaries the vendor refused were parked
EXIT_PARKED = 3

_DB = click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")


@main.group()
def sync() -> None:
    """The uplink: usage summaries for the vendor's billing API."""


def _settings(ctx: Context) -> UplinkSettings:
    from .plans import load_plan_book
    from .uplink.settings import uplink_settings

    config = ctx.config()
    with refuse_bad_files():
        settings = uplink_settings(config, load_plan_book(config))
    if settings is None:
        fail("sync", config.source_path, "[uplink] url is empty: no uplink configured", USAGE)
    return settings


@sync.command("status")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@_DB
@click.pass_obj
def sync_status(ctx: Context, fmt: str, db: str | None) -> None:
    """Backlog by plan, the oldest unsent bucket, the last success and error, parked summaries
    with the vendor's status and reason."""
    from .uplink.status import sync_status as read_status

    with opened_store(ctx, db, create=False) as store:
        status = read_status(store.db.conn, time.time())
    if fmt == "json":
        json.dump(status, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    _status_table(status)


def _status_table(status: dict[str, Any]) -> None:
    echo = click.echo
    if not status["plans"]:
        echo("No summaries yet (a bucket is summarised once it has closed).")
    else:
        echo(f"{'plan':<20} {'pending':>8} {'delivered':>10} {'parked':>7}  oldest unsent")
        for p in status["plans"]:
            echo(f"{p['plan_id']:<20} {p['pending']:>8} {p['delivered']:>10} {p['parked']:>7}  "
                 f"{p['oldest_unsent'] or '-'}")
    success, error = status["last_success"], status["last_error"]
    echo(f"last success: {success['at']} (HTTP {success['status']}, {success['summaries']} "
         f"summaries)" if success else "last success: never")
    if error:
        echo(f"last error:   {error['at']}: {error['error']}")
    if status["retry_at"]:
        echo(f"backing off after {status['failures']} failures, until {status['retry_at']}")
    if status["in_flight"]:
        echo(f"in flight:    {status['in_flight']} summaries")
    for p in status["parked"]:
        echo(f"parked: {p['plan_id']} {p['bucket_start']} revision {p['revision']}: "
             f"{p['reason']}  (botmeter sync retry --parked)")


@sync.command("now")
@_DB
@click.pass_obj
def sync_now(ctx: Context, db: str | None) -> None:
    """Summarise closed buckets and deliver everything due now, then exit (cron-safe).

    Exit code 1: the vendor could not be reached (the summaries stay queued); 3: the vendor
    refused some summaries (parked: see sync status).
    """
    settings = _settings(ctx)
    with opened_store(ctx, db, create=False) as store:
        report = _deliver(settings, store, ctx.config().source_path, refresh=True)
    _conclude(settings, report)


@sync.command("retry")
@click.option("--parked", is_flag=True, help="Also send again the summaries the vendor refused.")
@_DB
@click.pass_obj
def sync_retry(ctx: Context, parked: bool, db: str | None) -> None:
    """Stop backing off and deliver now; with --parked, parked summaries are queued again
    (a parked revision that a newer one replaced is dropped instead)."""
    from .uplink import outbox

    settings = _settings(ctx)
    with opened_store(ctx, db, create=False) as store:
        conn = store.db.conn
        with outbox.write_transaction(conn):
            outbox.set_state(conn, "retry_at", None)
            outbox.set_state(conn, "failures", 0)
        if parked:
            requeued, superseded = outbox.requeue_parked(conn)
            click.echo(f"{requeued} parked summaries queued again"
                       + (f", {superseded} replaced by newer revisions" if superseded else ""))
        report = _deliver(settings, store, ctx.config().source_path, refresh=False)
    _conclude(settings, report)


def _deliver(settings: UplinkSettings, store: CallStore, config_path: str, *,
             refresh: bool) -> Report:
    from .uplink.agent import Uplink

    with refuse_bad_files():
        uplink = Uplink(settings, store, where=config_path)
    try:
        if refresh:
            uplink.refresh()
        return uplink.deliver(force=True)
    finally:
        uplink.close()


def _conclude(settings: UplinkSettings, report: Report) -> None:
    click.echo(f"delivered {report.delivered} summaries in {report.requests} requests"
               + (f"; {report.parked} parked" if report.parked else ""))
    if report.failed is not None:
        fail("sync", settings.endpoint, f"{report.failed.reason}: the summaries stay queued "
                                        "and are retried", FAILURE)
    if report.parked:
        sys.exit(EXIT_PARKED)


@sync.command("show")
@click.option("--bucket", required=True, help="The bucket's start, ISO 8601 (e.g. 2026-11-26T15:00:00Z).")
@click.option("--plan", "plan_id", required=True, help="The plan id.")
@click.option("--revision", type=click.IntRange(1, 2**62), help="Default: the newest.")
@_DB
@click.pass_obj
def sync_show(ctx: Context, bucket: str, plan_id: str, revision: int | None,
              db: str | None) -> None:
    """The exact request body that was sent (or will be) for one summary, for disputes."""
    from .uplink import outbox
    from .uplink.buckets import iso_z, parse_iso
    from .uplink.delivery import cloudevent

    try:
        start = iso_z(parse_iso(bucket))
    except (ValueError, OverflowError, OSError):
        fail("sync show", "--bucket", f"{bucket!r} is not an ISO 8601 time", USAGE)
    config = ctx.config()
    with opened_store(ctx, db, create=False) as store:
        conn = store.db.conn
        row = outbox.find(conn, plan_id, start, revision)
        if row is None:
            fail("sync show", str(store.path), f"no summary of plan {plan_id!r} for the bucket "
                                               f"{start}" + (f" revision {revision}" if revision else ""),
                 FAILURE)
        try:
            summary = json.loads(row["summary"])
            previous = outbox.previous_delivered(conn, plan_id, start, row["revision"])
            element = json.loads(row["sent"]) if row["sent"] is not None else None
        except (TypeError, ValueError):
            fail("sync show", str(store.path), f"the summary of plan {plan_id!r} for {start} is "
                                               "damaged in the database (not JSON)", FAILURE)
    if element is not None:
        cloud = isinstance(element, dict) and "specversion" in element
    else:
        cloud = config.uplink.format == "cloudevents"
        element = cloudevent(outbox.Claimed(row["id"], row["agent_id"], plan_id, start,
                                            row["revision"], row["key"], summary, previous)) \
            if cloud else summary
    body: Any = [element] if cloud else {"agent_id": row["agent_id"], "summaries": [element]}
    click.echo(f"# {plan_id} {start} revision {row['revision']}: {row['state']}"
               + (f", last sent {row['last_attempt_at']}" if row["sent"] else ", not sent yet")
               + f"; Idempotency-Key {row['key']}", err=True)
    json.dump(body, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


__all__ = ["sync"]
