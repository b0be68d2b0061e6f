"""The agent's configuration: one TOML file, validated at start."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .tracking.rules import TrackingRules
from .tracking.tracker import MAX_IN_PROGRESS

ENV_VAR = "BOTMETER_CONFIG"
DEFAULT_PATHS = (Path("/etc/botmeter/botmeter.toml"),)


class ConfigError(Exception):
    """A configuration that cannot be used: names the file, the key and the reason."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")
        self.path, self.key, self.reason = path, key, reason


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]


class AgentSection(_Section):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class AmiSection(_Section):
    host: str = "127.0.0.1"
    port: Port = 5038
    username: Annotated[str, Field(min_length=1)]
    secret: str | None = None
    secret_file: str | None = None
    tls: bool = False
    auth: Annotated[str, Field(pattern=r"^(md5|plain)$")] = "md5"
    ping_interval: Annotated[float, Field(ge=1, le=3600)] = 10.0
    ping_timeout: Annotated[float, Field(ge=0.5, le=600)] = 5.0
    reconnect_min: Annotated[float, Field(ge=0.05, le=3600)] = 0.5
    reconnect_max: Annotated[float, Field(ge=0.05, le=3600)] = 30.0

    @model_validator(mode="after")
    def _one_secret(self) -> AmiSection:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret or secret_file")
        return self

    @field_validator("reconnect_max")
    @classmethod
    def _max_not_below_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("reconnect_min")
        if low is not None and value < low:
            raise ValueError(f"must be at least reconnect_min ({low})")
        return value

    def read_secret(self, base: Path) -> str:
        """The AMI secret, from the config or its file (relative to the config's folder)."""
        if self.secret is not None:
            return self.secret
        assert self.secret_file is not None
        path = Path(self.secret_file)
        if not path.is_absolute():
            path = base / path
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if not path.exists() and credentials:
            path = Path(credentials) / path.name
        return path.read_text(encoding="utf-8").strip()


class CallsSection(_Section):
    inbound_contexts: list[str] = Field(default_factory=list)
    inbound_numbers: list[str] = Field(default_factory=list)
    idle_timeout_seconds: Annotated[float, Field(ge=60)] = 4 * 3600.0
    max_in_progress: Annotated[int, Field(ge=1)] = MAX_IN_PROGRESS

    @model_validator(mode="after")
    def _some_inbound(self) -> CallsSection:
        if not self.inbound_contexts and not self.inbound_numbers:
            raise ValueError("give inbound_contexts or inbound_numbers: nothing would be recorded")
        return self


class BotSection(_Section):
    contexts: list[str] = Field(default_factory=list)
    applications: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_bot(self) -> BotSection:
        if not (self.contexts or self.applications or self.channels):
            raise ValueError("give contexts, applications or channels: no call would reach the bot")
        return self


class AgiSection(_Section):
    """The FastAGI server the bot signals to: `AGI(agi://<listen>/botmeter/<signal>?...)`."""

    enabled: bool = True
    listen: str = "127.0.0.1:4573"
    allow: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
        return value

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to (host, port); ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:4573 or [::1]:4573; port 0 = any free port)")
    return host, int(port)


class PlansSection(_Section):
    """Where the vendor's plan files are, and which plan is in force."""

    dir: Annotated[str, Field(min_length=1)] = "plans"
    active: Annotated[str, Field(pattern=r"^[a-z0-9._-]+$")]


class StoreSection(_Section):
    path: Annotated[str, Field(min_length=1)] = "/var/lib/botmeter/botmeter.db"


class Config(_Section):
    agent: AgentSection
    ami: AmiSection
    calls: CallsSection
    bot: BotSection
    agi: AgiSection = AgiSection()
    plans: PlansSection | None = None
    store: StoreSection = StoreSection()
    source_path: str = Field(default="<memory>", exclude=True)

    @property
    def base_dir(self) -> Path:
        return Path(self.source_path).parent

    def store_path(self) -> Path:
        path = Path(self.store.path)
        return path if path.is_absolute() else self.base_dir / path

    def plans_dir(self) -> Path | None:
        if self.plans is None:
            return None
        path = Path(self.plans.dir)
        return path if path.is_absolute() else self.base_dir / path

    def tracking_rules(self) -> TrackingRules:
        return TrackingRules.build(
            inbound_contexts=self.calls.inbound_contexts,
            inbound_numbers=self.calls.inbound_numbers,
            bot_contexts=self.bot.contexts,
            bot_applications=self.bot.applications,
            bot_channels=self.bot.channels,
        )


def _first_error(path: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        reason = "unknown key (mistyped?)"
    elif err["type"] == "missing":
        reason = "required key is missing"
    elif "input" in err and err["type"].endswith("_type"):
        reason = f"{err['msg']} (got {type(err['input']).__name__} {err['input']!r})"
    return ConfigError(path, key, reason)


def parse_config(data: dict[str, Any], path: str) -> Config:
    """Validate a parsed TOML document."""
    try:
        return Config.model_validate({**data, "source_path": path})
    except ValidationError as exc:
        raise _first_error(path, exc) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load from `path`, else $BOTMETER_CONFIG, else /etc/botmeter/botmeter.toml."""
    chosen = Path(path) if path else (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    if chosen is None:
        chosen = next((p for p in DEFAULT_PATHS if p.exists()), DEFAULT_PATHS[0])
    name = str(chosen)
    try:
        raw = chosen.read_bytes()
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(name, "", f"not valid TOML: {exc}") from None
    return parse_config(data, name)
