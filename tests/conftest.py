"""Shared test helpers: the real lab capture and a config file factory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red CI must be reproducible); developers explore.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

FIXTURES = Path(__file__).parent / "fixtures"
LAB_CAPTURE = FIXTURES / "lab-basic.ami"
LAB_EXPECTED = FIXTURES / "lab-basic.expected.json"

CONFIG_TEMPLATE = """
[agent]
id = "test-agent"

[ami]
host = "127.0.0.1"
port = {port}
username = "botmeter"
secret = "{secret}"
auth = "{auth}"
ping_interval = {ping_interval}
ping_timeout = {ping_timeout}
reconnect_min = 0.05
reconnect_max = 0.5

[calls]
inbound_contexts = ["from-pstn"]

[bot]
contexts = ["voicebot"]

[agi]
listen = "127.0.0.1:0"

[store]
path = "{db}"
"""


@pytest.fixture
def lab_expected() -> list[dict]:
    return json.loads(LAB_EXPECTED.read_text(encoding="utf-8"))


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a valid config (overridable) and return its path."""

    def _write(port: int = 5038, secret: str = "botmeter-sim", auth: str = "md5",
               ping_interval: float = 10.0, ping_timeout: float = 5.0, extra: str = "") -> Path:
        path = tmp_path / "botmeter.toml"
        path.write_text(CONFIG_TEMPLATE.format(
            port=port, secret=secret, auth=auth, ping_interval=ping_interval,
            ping_timeout=ping_timeout, db=tmp_path / "calls.db") + extra, encoding="utf-8")
        return path

    return _write
