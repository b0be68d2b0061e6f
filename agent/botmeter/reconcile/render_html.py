"""The reconciliation as a self-contained, printable HTML annex (placeholder: being built)."""

from __future__ import annotations

from typing import TextIO

from .reconciler import Reconciliation


def write_html(result: Reconciliation, lang: str, out: TextIO, *, all_lines: bool) -> None:
    raise NotImplementedError
