"""`botmeter reconcile`: the vendor's invoice usage detail against botmeter's own records
(docs/reconcile.md)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType

import click

from .cli import (
    FAILURE,
    USAGE,
    Context,
    Period,
    _series,
    fail,
    main,
    opened_store,
    refuse_bad_files,
)


class Amount(click.ParamType):
    """A non-negative decimal (seconds or money), ASCII digits and one point."""

    name = "decimal"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        text = str(value).strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = Decimal("NaN")
        if (not text.replace(".", "", 1).isdigit() or not text.isascii() or not number.is_finite()
                or number >= 10**9 or number != round(number, 6)):
            self.fail(f"{text[:40]!r} is not a decimal >= 0 with at most 6 places", param, ctx)
        return number


@main.command()
@click.option("--period", required=True, type=Period(), help="The billed month (plan's time zone).")
@click.option("--invoice", required=True, type=click.Path(dir_okay=False),
              help="The vendor's usage detail: CSV (comma or tab) or JSON lines.")
@click.option("--mapping", required=True, type=click.Path(dir_okay=False),
              help="TOML file naming the invoice's columns (config/reconcile/ has examples).")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "csv", "json", "html"]))
@click.option("--plan", "plan_id", help="Compare with amounts under this plan (default: "
                                        "[plans] active).")
@click.option("--tolerance", default="1", show_default=True, type=Amount(),
              help="Seconds the vendor's duration may differ and still match.")
@click.option("--amount-tolerance", default="0", show_default=True, type=Amount(),
              help="Money the vendor's amount may differ and still match.")
@click.option("--all", "all_lines", is_flag=True,
              help="Table and HTML: list the matched lines too (CSV and JSON always do).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10**9),
              help="Table: at most this many lines listed.")
@click.option("--lang", type=click.Choice(["en", "zh-Hans", "zh-Hant"]),
              help="Language of the table and HTML (default: [report] lang).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write to this file (atomically) instead of stdout.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: [store] path).")
@click.pass_obj
def reconcile(ctx: Context, period: str, invoice: str, mapping: str, fmt: str,
              plan_id: str | None, tolerance: Decimal, amount_tolerance: Decimal,
              all_lines: bool, limit: int, lang: str | None, out: str | None, db: str | None) -> None:
    """Match the vendor's usage detail with the recorded calls of a period: which lines agree,
    which are disputed and for how much, and why."""
    from .reconcile.invoice import Invoice, InvoiceError, Problems
    from .reconcile.mapping import load_mapping
    from .reconcile.reconciler import ScratchError, Tolerances
    from .reconcile.reconciler import reconcile as run_reconcile
    from .reconcile.render import render
    from .writing import atomic_text

    config, series = _series(ctx, plan_id)
    if out is not None:
        refuse_overwriting(out, invoice=invoice, mapping=mapping, config=config.source_path,
                           database=db or config.store_path())
    with refuse_bad_files():
        invoice_mapping = load_mapping(Path(mapping))
    source = Invoice(Path(invoice), invoice_mapping, series.currency, Problems())
    with (terminated_as_interrupted(),
          opened_store(ctx, db, create=False) as store):  # exists, is botmeter's, is migrated
        try:
            with refuse_bad_files():  # a period the plan has no version for
                result = run_reconcile(store.path, source, series, period,
                                       Tolerances(tolerance, amount_tolerance))
        except InvoiceError as exc:
            fail("invoice error", "", str(exc), USAGE)
        except ScratchError as exc:
            fail("reconcile error", "", str(exc), FAILURE)
        try:
            with atomic_text(out) as stream:
                render(result, fmt, lang or config.report.lang, stream, all_lines=all_lines,
                       limit=limit)
        except BrokenPipeError:
            raise  # the reader went away (`| head`): handled like every command's
        except OSError as exc:
            fail("reconcile error", out or "stdout", f"cannot write it: {exc.strerror or exc}",
                 FAILURE)
        finally:
            result.close()
    if result.problems.count:
        many = "s" if result.problems.count > 1 else ""
        click.echo(f"botmeter: {result.problems.count} problem{many} in {invoice} (listed in "
                   "the output); the other lines are reconciled", err=True)
    sys.stdout.flush()


def refuse_overwriting(out: str, *, invoice: str, mapping: str, config: str,
                       database: str | Path) -> None:
    """`--out` must be none of the files the command reads (the vendor's invoice is the
    evidence of a dispute; the database is every call): a usage error naming it."""
    from .writing import read_file_named

    clash = read_file_named(out, [("invoice", invoice), ("mapping", mapping),
                                  ("configuration", config)], database)
    if clash is not None:
        fail("reconcile error", out, f"is the {clash[0]} ({clash[1]}): choose another --out",
             USAGE)


@contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM (`timeout`, a service manager, `kill`) ends the command as Ctrl-C does, so that
    its scratch folder and a half-written --out are removed (by default it would just die)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
