"""What one check found, as the line the doctor prints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    """`check` (what was checked) is `status`: `detail` says what was found, `fix` what to do."""

    status: str
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.check}: {self.detail}"
        if self.fix and self.status != OK:
            text += f" -> fix: {self.fix}"
        return f"{self.status:<4}  " + " ".join(text.split())  # one line, whatever it quotes


def ok(check: str, detail: str) -> Finding:
    return Finding(OK, check, detail)


def warn(check: str, detail: str, fix: str) -> Finding:
    return Finding(WARN, check, detail, fix)


def fail(check: str, detail: str, fix: str) -> Finding:
    return Finding(FAIL, check, detail, fix)


def exit_code(findings: Iterable[Finding]) -> int:
    """0 when nothing failed, else 1."""
    return 1 if any(f.status == FAIL for f in findings) else 0
