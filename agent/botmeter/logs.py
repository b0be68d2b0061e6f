"""structlog set-up: one line per event, to stderr (journald keeps it under systemd).

structlog and logging are imported when logging is set up, not when this module is: importing
structlog costs more than a whole `botmeter --help`. The CLI sets logging up when a command
first needs its configuration, so `--help` never pays for it.
"""

from __future__ import annotations

import sys
from typing import Any


class _CurrentStderr:
    """Whatever sys.stderr is now (tests and tools swap it after logging is set up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


#: one shared file object, so every logger shares structlog's lock for it: threads (the
#: writer, the re-rater) never interleave their lines (print writes text and newline apart)
_STDERR = _CurrentStderr()


def _named_logger_factory() -> Any:
    """A factory of print loggers that know their module's name (`botmeter.pbx.ami_client`)."""
    import structlog

    class NamedPrintLogger(structlog.PrintLogger):
        def __init__(self, name: str) -> None:
            super().__init__(file=_STDERR)  # type: ignore[arg-type]
            self.name = name

    return lambda *args: NamedPrintLogger(str(args[0]) if args else "botmeter")


def setup_logging(level: str = "info", *, json: bool = False) -> None:
    """Log events at `level` and above to stderr, as JSON objects or console lines."""
    import logging

    import structlog

    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_named_logger_factory(),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
