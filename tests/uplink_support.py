"""Helpers for the uplink tests: an agent's config with [uplink] pointing at a reference
receiver on loopback, a settable clock, and calls stored in a real SQLite file."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from botmeter.config import Config, load_config
from botmeter.plans import load_plan_book
from botmeter.storage.store import CallStore
from botmeter.tracking.record import CallRecord
from botmeter.uplink.agent import Uplink
from botmeter.uplink.receiver import Receiver
from botmeter.uplink.settings import UplinkSettings, uplink_settings

from .rating_support import PLANS_DIR, make_call

TOKEN = "tok-7f3a9c1e5b2d4086"
KEY = "hmac-k3y-5e8d2b7a9c1f4063"
AGENT = "pbx-test-01"
#: 2026-11-10 00:00 UTC: a Tuesday, in a month that both example plans rate
T0 = 1_794_268_800.0
HOUR = 3600.0


class Clock:
    """A clock the test sets; shared by the agent and the receiver."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def write_agent_config(tmp_path: Path, url: str, *, plans: tuple[str, ...] = ("per-minute",),
                       fmt: str = "json", extra: str = "", token: str = TOKEN,
                       name: str = "botmeter.toml") -> Path:
    """A config for an agent whose uplink posts to `url`, with the example plan files."""
    plan_dir = tmp_path / "plans"
    plan_dir.mkdir(parents=True, exist_ok=True)
    for file in ("per-minute.toml", "bundle.toml"):
        if not (plan_dir / file).exists():
            shutil.copy(PLANS_DIR / file, plan_dir / file)
    secret_file(tmp_path / "uplink.token", token)
    secret_file(tmp_path / "uplink.key", KEY)
    plan_list = ", ".join(f'"{p}"' for p in plans)
    path = tmp_path / name
    path.write_text(f"""
[agent]
id = "{AGENT}"

[ami]
username = "botmeter"
secret = "unused"

[calls]
inbound_contexts = ["from-pstn"]

[bot]
contexts = ["voicebot"]

[store]
path = "calls.db"

[http]
listen = "127.0.0.1:0"

[plans]
dir = "plans"
active = "per-minute"

[uplink]
url = "{url}"
token_file = "uplink.token"
secret_file = "uplink.key"
plans = [{plan_list}]
format = "{fmt}"
close_delay_seconds = 300
max_backoff_seconds = 3600
timeout_seconds = 2
{extra}
""", encoding="utf-8")
    return path


def settings_of(config_path: Path) -> tuple[Config, UplinkSettings]:
    config = load_config(config_path)
    settings = uplink_settings(config, load_plan_book(config))
    assert settings is not None
    return config, settings


@dataclass
class Site:
    """An agent's database and uplink, and the vendor's receiver, on one clock."""

    config_path: Path
    config: Config
    settings: UplinkSettings
    store: CallStore
    uplink: Uplink
    receiver: Receiver
    clock: Clock

    def save(self, calls: Iterable[CallRecord]) -> None:
        self.store.save(list(calls))

    def close(self) -> None:
        self.uplink.close()
        self.store.close()


def open_site(tmp_path: Path, receiver: Receiver, clock: Clock, **kw: object) -> Site:
    config_path = write_agent_config(tmp_path, receiver.url, **kw)  # type: ignore[arg-type]
    config, settings = settings_of(config_path)
    store = CallStore(config.store_path())
    return Site(config_path, config, settings, store, Uplink(settings, store, clock=clock),
                receiver, clock)


def hourly_calls(hours: int, per_hour: int, start: float = T0, prefix: str = "c",
                 bot: float = 61.0) -> list[CallRecord]:
    """`per_hour` calls ending in each of `hours` hours from `start`."""
    calls = []
    for hour in range(hours):
        for n in range(per_hour):
            end_ms = round((start + hour * HOUR + 60 + n * (3000 / per_hour)) * 1000)
            calls.append(make_call(f"{prefix}{hour:04d}-{n:03d}", bot=bot + n, end_ms=end_ms,
                                   modules={"asr": f"{10 + n}.5"}))
    return calls
