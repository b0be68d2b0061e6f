"""structlog set-up: one line per event, to stderr (journald keeps it under systemd).

`import structlog` costs more than a whole `botmeter --help` (its package imports its console
renderer with rich, its tracebacks with rich.pretty, and asyncio), so `setup_logging` imports
neither structlog nor logging: each is set up at once if it is imported already, else the moment
something imports it (the modules that log import structlog at their top), before that module
can log. A command that logs nothing (`botmeter calls`, `botmeter <command> --help`) never pays
for them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType


class _CurrentStderr:
    """Whatever sys.stderr is now (tests and tools swap it after logging is set up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup_logging(level: str = "info", *, json: bool = False) -> None:
    """Log events at `level` and above to stderr, as JSON objects or console lines."""
    _when_imported("structlog", lambda: _setup_structlog(level, json))
    _when_imported("logging", lambda: _setup_stdlib(level))


def _numeric(level: str) -> int:
    import logging

    return logging.getLevelNamesMapping().get(level.upper(), logging.INFO)


def _setup_structlog(level: str, json: bool) -> None:
    import structlog

    class NamedPrintLogger(structlog.PrintLogger):
        """A print logger that knows its module's name (`botmeter.pbx.ami_client`, ...)."""

        def __init__(self, name: str) -> None:
            super().__init__(file=_CurrentStderr())  # type: ignore[arg-type]
            self.name = name

    def named_logger(*args: object) -> NamedPrintLogger:
        return NamedPrintLogger(str(args[0]) if args else "botmeter")

    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_numeric(level)),
        logger_factory=named_logger,
        cache_logger_on_first_use=False,
    )


def _setup_stdlib(level: str) -> None:
    """Other libraries' records (panoramisk, asyncio): warnings and above, to stderr."""
    import logging

    logging.basicConfig(level=max(_numeric(level), logging.WARNING), stream=sys.stderr)


def _when_imported(module: str, setup: Callable[[], None]) -> None:
    """Run `setup` now if `module` is imported, else right after it is (the latest `setup`
    given for it wins)."""
    if module in sys.modules:
        _after_import.pending.pop(module, None)
        setup()
        return
    _after_import.pending[module] = setup
    if _after_import not in sys.meta_path:
        sys.meta_path.insert(0, _after_import)


class _AfterImport:
    """A finder first on sys.meta_path: a module with a pending set-up is found by the other
    finders and loaded as usual, then the set-up runs, before the import statement returns.
    It leaves sys.meta_path when nothing is pending."""

    def __init__(self) -> None:
        self.pending: dict[str, Callable[[], None]] = {}

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name not in self.pending:
            return None
        for finder in [f for f in sys.meta_path if f is not self]:
            find = getattr(finder, "find_spec", None)
            spec: ModuleSpec | None = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenSetUp(spec.loader, name)  # type: ignore[assignment]
                return spec
        return None

    def loaded(self, name: str) -> None:
        """`name` is imported: run its set-up (a spec found but never loaded runs nothing)."""
        setup = self.pending.pop(name, None)
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        if setup is not None:
            setup()


class _ThenSetUp:
    """A loader: the module's own, then the module's set-up. The module keeps its own loader."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader, self._name = loader, name

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _after_import.loaded(self._name)


_after_import = _AfterImport()
