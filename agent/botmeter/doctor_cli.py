"""`botmeter doctor` and `botmeter check-config`: one line per check (OK, WARN or FAIL and the
fix); exit code 0 only when nothing failed, else 1."""

from __future__ import annotations

import sys

import click

from .cli import Context, FiniteRange, main

#: seconds `doctor` watches the event stream for the read classes by default
DEFAULT_WATCH = 10.0


def _printer():
    from .doctor.findings import Finding

    found: list[Finding] = []

    def say(finding: Finding) -> None:
        found.append(finding)
        click.echo(finding.line())
        sys.stdout.flush()

    return found, say


@main.command()
@click.option("--watch", default=DEFAULT_WATCH, show_default=True, type=FiniteRange(0, 3600),
              help="Seconds to watch Asterisk's events for the read classes (it stops early "
                   "once all are seen; run it during a test call).")
@click.pass_obj
def doctor(ctx: Context, watch: float) -> None:
    """Check everything the agent needs: config, secret files, plans, database, ports,
    Asterisk (login, read and write classes, timestampevents, clock) and the uplink."""
    from .doctor.findings import exit_code
    from .doctor.run import doctor as run_doctor

    ctx.start_logging()
    found, say = _printer()
    run_doctor(ctx.config_path, say, watch=watch)
    sys.exit(exit_code(found))


@main.command("check-config")
@click.pass_obj
def check_config(ctx: Context) -> None:
    """Offline checks only: config, secret files, plans, database path."""
    from .doctor.findings import exit_code
    from .doctor.run import offline

    ctx.start_logging()
    found, say = _printer()
    offline(ctx.config_path, say)
    sys.exit(exit_code(found))
