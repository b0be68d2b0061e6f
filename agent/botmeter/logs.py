"""structlog set-up: one line per event, to stderr (journald keeps it under systemd).

- Format: JSON objects (tracebacks as dicts) or console lines. `json=None` ("auto") picks JSON
  when stderr is the journal's stream (systemd sets $JOURNAL_STREAM to its device and inode),
  console lines otherwise.
- Under journald each line starts with its syslog priority, `<3>` for an error, `<4>` a
  warning, `<6>` info, `<7>` debug: journald files it at that priority (`SyslogLevelPrefix=`).
- stdlib logging (asyncio, panoramisk) goes through the same processors, at warning and above.
- Secrets: `redact_secret(text)` registers one (the AMI secret, the uplink's token and key,
  when they are read); from then on any occurrence in any field of any line is `***`.

structlog and logging are imported when logging is set up, not when this module is: importing
structlog costs more than a whole `botmeter --help`. The CLI sets logging up when a command
first needs its configuration, so `--help` never pays for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

#: what a secret is replaced with
MASK = "***"
#: a secret this short is masked only where it is a whole value: inside other text it would
#: mask ordinary words and numbers
MIN_SECRET_IN_TEXT = 4
#: syslog priority of each level, for journald's `<N>` prefix
PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6,
              "debug": 7}

_SECRETS: set[str] = set()


def redact_secret(*values: str | None) -> None:
    """Never log these texts: each occurrence, in any field of any line, becomes `***`."""
    _SECRETS.update(v for v in values if v)


def redacted(value: Any, secrets: frozenset[str] | set[str]) -> Any:
    """`value` with every secret masked: strings, and strings inside dicts, lists and tuples;
    any other object whose text holds a secret becomes its masked text."""
    if not secrets or value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if value in secrets:
            return MASK
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= MIN_SECRET_IN_TEXT and secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, Mapping):
        return {redacted(k, secrets): redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redacted(v, secrets) for v in value)
    text = str(value)
    masked = redacted(text, secrets)
    return value if masked == text else masked


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The processor: every field's value with the registered secrets masked (not structlog's
    own `_record`, the stdlib record a line came from: its text is the `event` field)."""
    secrets = frozenset(_SECRETS)
    if not secrets:
        return event
    return {key: value if key.startswith("_") else redacted(value, secrets)
            for key, value in event.items()}


def journal_stream(environ: Mapping[str, str], stat: os.stat_result | None) -> bool:
    """Whether a stream with this `stat` is the journal's: $JOURNAL_STREAM is `device:inode`
    of it (systemd sets it; a child that inherits the variable but not the stream is not)."""
    device, sep, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep or stat is None:
        return False
    try:
        return (int(device), int(inode)) == (stat.st_dev, stat.st_ino)
    except ValueError:
        return False


def _stderr_stat() -> os.stat_result | None:
    try:
        return os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (tests)
        return None


def under_journald() -> bool:
    """Whether stderr goes to the journal."""
    return journal_stream(os.environ, _stderr_stat())


class _Prefixed:
    """A renderer whose lines start with journald's `<priority>`."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        priority = PRIORITIES.get(str(event.get("level", method)).lower(), 6)
        return f"<{priority}>{self.renderer(logger, method, event)}"


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


def setup_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Log events at `level` and above to stderr: as JSON objects (`json=True`), console lines
    (`False`), or JSON under journald and console lines elsewhere (`None`)."""
    import logging

    import structlog

    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    journald = under_journald()
    as_json = journald if json is None else json
    if as_json:
        exceptions = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        renderer: Any = structlog.processors.JSONRenderer()
    else:  # a traceback as text before redaction, so that a secret in it is masked too
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty() and not journald,
            exception_formatter=structlog.dev.plain_traceback)
    if journald:
        renderer = _Prefixed(renderer)
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        exceptions,
        _redact,
    ]
    named_logger = _named_logger_factory()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=named_logger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    _route_stdlib(formatter, named_logger("logging"), max(numeric, logging.WARNING))


def _route_stdlib(formatter: Any, printer: Any, level: int) -> None:
    """stdlib records through `formatter`, written by `printer` (with structlog's lock for
    stderr, so that its lines never interleave with structlog's); replaces an earlier set-up."""
    import logging

    class StructlogHandler(logging.Handler):
        botmeter = True

        def emit(self, record: logging.LogRecord) -> None:
            try:
                printer.msg(self.format(record))
            except Exception:
                self.handleError(record)

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "botmeter", False)]:
        root.removeHandler(handler)
    handler = StructlogHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
