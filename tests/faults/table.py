"""The fault suite's table: one row per run, the figures the issue asks for."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from .faults import Profile
from .harness import RunResult
from .site import PLANS

COLUMNS = ("fault", "scripted", "recorded", "missing", "extra/duplicates", "wrong outcome",
           "max |Δ bot_seconds|", "statement total", "clean total", "equal", "uplink = db",
           "seconds taken")


def _money(totals: dict[str, Decimal]) -> str:
    return " / ".join(str(totals.get(plan, "-")) for plan in PLANS)


def row(result: RunResult) -> tuple[str, ...]:
    v = result.verdict
    uplink = "-" if result.uplink_equal is None else "yes" if result.uplink_equal else "NO"
    return (result.fault, str(v.scripted), str(v.recorded), str(len(v.missing)),
            str(len(v.extra) + len(v.duplicates)), str(len(v.wrong_outcome)),
            f"{v.max_bot_delta:.3f}", _money(result.totals), _money(result.clean_totals),
            "yes" if result.totals_equal else "NO", uplink, f"{result.seconds:.0f}")


def render(results: Sequence[RunResult], profile: Profile, *, width: int = 200) -> str:
    """The table and a line per run on what its fault did and anything wrong."""
    table = Table(title=f"botmeter fault runs: {profile.calls} calls at {profile.rate:g} calls/s "
                        "per run")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name == "fault" else "right")
    for result in results:
        table.add_row(*row(result))
    console = Console(width=width, force_terminal=False, color_system=None, markup=False,
                      highlight=False)
    with console.capture() as captured:
        console.print(table)
        console.print(f"statement total: `botmeter bill` under {' / '.join(PLANS)} (CNY), every "
                      "period of the run. clean total: the clean run's (the same script); for "
                      "the clean run itself and for 'restart' (which changes the calls) the "
                      "statement of the truth file's records, rated by botmeter's rating")
        for result in results:
            mark = "ok" if result.ok else "WRONG"
            sources = ", ".join(f"{n} {s}" for s, n in sorted(result.sources.items()))
            console.print(f"{result.fault} [{mark}]: {profile.describe(result.fault)}; did: "
                          f"{result.did.detail}; PBX: {result.placed} calls placed, "
                          f"{result.not_placed} due while down; records by source: "
                          f"{sources or 'none'}; joined late: "
                          f"{result.joined_late}; exit at SIGTERM: {result.agent_exit}; "
                          f"files: {result.root}")
            if result.uplink is not None:
                console.print(f"    uplink: {result.uplink}")
            for problem in result.problems():
                console.print(f"    {problem}")
    return captured.get()
