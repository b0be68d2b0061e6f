"""One fault run's site on disk: the agent's configuration, its secret files and plans, its
calls database, and where the simulated PBX writes its CEL and truth file."""

from __future__ import annotations

import json
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from botmeter.recovery.checkpoint import write_checkpoint
from botmeter.sim.scenarios import ARI_APP, ARI_MEDIA_CHANNELS
from botmeter.storage.store import CallStore

from ..uplink_support import secret_file

#: the example plans the runs are rated under; the first is the active one
PLANS = ("per-minute", "combined")
PLAN_FILES = {"per-minute": "per-minute.toml", "combined": "combined.toml"}
PLANS_DIR = Path(__file__).resolve().parents[2] / "config" / "plans"
AMI_SECRET = "faults-ami-secret"
UPLINK_TOKEN = "faults-uplink-token-5b2d4086"
UPLINK_KEY = "faults-uplink-key-9c1f4063"
AGENT_ID = "faults"


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Site:
    """The files of one run, all under `root`."""

    root: Path
    ami_port: int  # where the agent attaches (the PBX, or a proxy in front of it)
    agi_port: int
    uplink_port: int | None  # the vendor's receiver, when the run has one
    clock_behind: float = 0.0  # the site's clock (agent and PBX) is this far behind the real one

    @property
    def config(self) -> Path:
        return self.root / "botmeter.toml"

    @property
    def db(self) -> Path:
        return self.root / "calls.db"

    @property
    def cel(self) -> Path:
        return self.root / "cel.db"

    @property
    def truth(self) -> Path:
        return self.root / "truth.jsonl"

    @property
    def ami_secret(self) -> Path:
        return self.root / "ami.secret"

    @property
    def token(self) -> Path:
        return self.root / "uplink.token"

    @property
    def key(self) -> Path:
        return self.root / "uplink.key"

    @property
    def receiver_db(self) -> Path:
        return self.root / "receiver.db"

    @property
    def uplink_url(self) -> str | None:
        return None if self.uplink_port is None else f"http://127.0.0.1:{self.uplink_port}"


def make_site(root: Path, *, ami_port: int, agi_port: int, uplink_port: int | None,
              clock_behind: float, now: float) -> Site:
    """Write the run's files. The calls database starts with a recovery checkpoint a second
    before `now` (the site's clock; as left by an agent that ran on this site before), so that
    the agent's first attach heals the calls the PBX began before it."""
    root.mkdir(parents=True, exist_ok=True)
    site = Site(root, ami_port, agi_port, uplink_port, clock_behind)
    secret_file(site.ami_secret, AMI_SECRET)
    (root / "plans").mkdir(exist_ok=True)
    for plan in PLANS:
        shutil.copy(PLANS_DIR / PLAN_FILES[plan], root / "plans" / PLAN_FILES[plan])
    site.config.write_text(agent_config(site), encoding="utf-8")
    store = CallStore(site.db)
    try:
        write_checkpoint(store.db.conn, now - clock_behind - 1)
    finally:
        store.close()
    if uplink_port is not None:
        secret_file(site.token, UPLINK_TOKEN)
        secret_file(site.key, UPLINK_KEY)
    return site


def agent_config(site: Site) -> str:
    """The agent's TOML: the simulator's dialplan names, fast AMI reconnects, the plans, CEL as
    the recovery source, and (with a receiver) an uplink that sends every plan's summary of an
    hour as soon as it has ended, one summary a request."""
    text = f"""
[agent]
id = "{AGENT_ID}"

[ami]
host = "127.0.0.1"
port = {site.ami_port}
username = "botmeter"
secret_file = "ami.secret"
ping_interval = 2.0
ping_timeout = 2.0
reconnect_min = 0.1
reconnect_max = 1.0

[calls]
inbound_contexts = ["from-pstn"]

[bot]
contexts = ["voicebot"]
applications = [{json.dumps(f"Stasis:{ARI_APP}")}]
channels = {json.dumps(list(ARI_MEDIA_CHANNELS))}

[agi]
listen = "127.0.0.1:{site.agi_port}"

[http]
listen = ""

[store]
path = "calls.db"

[plans]
dir = "plans"
active = "{PLANS[0]}"

[recovery]
cel_db = "cel.db"
"""
    if site.uplink_url is not None:
        text += f"""
[uplink]
url = "{site.uplink_url}"
token_file = "uplink.token"
secret_file = "uplink.key"
plans = {json.dumps(list(PLANS))}
batch_size = 1
bucket = "hour"
close_delay_seconds = 0
interval_seconds = 1
max_backoff_seconds = 2
timeout_seconds = 2
"""
    return text
