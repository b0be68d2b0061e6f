"""The agent's configuration: one TOML file, validated at start."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from . import ENV_VAR
from .backpressure import MAX_QUEUED
from .logs import redact_secret
from .tracking.rules import MAX_IN_PROGRESS, TrackingRules

DEFAULT_PATHS = (Path("/etc/botmeter/botmeter.toml"),)
#: keys whose values are never repeated in an error message
SENSITIVE_KEY = re.compile(r"secret|token|key|password", re.IGNORECASE)
MAX_SECRET_BYTES = 64 * 1024


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

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty")
        return value

    @field_validator("host", "username", "secret")
    @classmethod
    def _one_header_line(cls, value: str | None) -> str | None:
        """Sent in AMI header lines: a CR, LF or NUL would start a header (or an action) of its
        own."""
        if value is not None and any(c in value for c in "\r\n\0"):
            raise ValueError("contains a line break or NUL: it is sent as one AMI header line")
        return value

    @field_validator("secret_file")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty: give the path of the file holding the AMI secret")
        return value

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

    def secret_path(self, base: Path) -> Path | None:
        """Where the secret file is (see `credential_path`)."""
        if self.secret_file is None:
            return None
        return credential_path(self.secret_file, base)

    def read_secret(self, base: Path) -> str:
        """The AMI secret, from the config or its file; ConfigError naming the file if that is
        missing, unreadable, open to group or others, not UTF-8 text, or empty."""
        if self.secret is not None:
            redact_secret(self.secret)
            return self.secret
        path = self.secret_path(base)
        assert path is not None
        return read_secret_file(path)


def credential_path(file: str, base: Path) -> Path:
    """Where a secret file is: relative to the config's folder; under systemd, a file that is
    not there (or that this user cannot read) is looked up by name in $CREDENTIALS_DIRECTORY
    (`LoadCredential=`)."""
    path = Path(file)
    if not path.is_absolute():
        path = base / path
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        credential = Path(credentials) / path.name
        if not _exists(path) or (not os.access(path, os.R_OK) and _exists(credential)):
            return credential
    return path


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:  # e.g. EACCES: there is something there, reading it will say what
        return True
    return True


def read_secret_file(path: Path) -> str:
    """A secret file's text, stripped; ConfigError (file, reason) when it cannot be used."""
    name = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(name, "", "is not a regular file")
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(name, "", f"secret file is open to group or others (mode "
                                            f"{mode:04o}): run chmod 600 {name}")
            raw = file.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read the secret file: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(name, "", f"is larger than {MAX_SECRET_BYTES // 1024} KiB: not a secret file")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(name, "", f"secret file is not UTF-8 text (byte {exc.start + 1})") from None
    if not text:
        raise ConfigError(name, "", "secret file is empty")
    if any(c in text for c in "\r\n\0"):
        raise ConfigError(name, "", "secret file holds more than one line (or a NUL): the secret "
                                    "is sent as one line of a protocol header")
    redact_secret(text)  # from now on masked in every log line
    return text


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
    #: a bot channel back in the caller's bridge within this many seconds never left it
    rejoin_seconds: float = Field(default=1.0, ge=0.0, le=60.0)

    @model_validator(mode="after")
    def _some_bot(self) -> BotSection:
        if not (self.contexts or self.applications or self.channels):
            raise ValueError("give contexts, applications or channels: no call would reach the bot")
        return self


class AgiSection(_Section):
    """The FastAGI server the bot signals to: `AGI(agi://<listen>/botmeter/<signal>?...)`.
    `allow` holds parsed networks: an IP address is a /32 (or /128) network."""

    enabled: bool = True
    listen: str = "127.0.0.1:4573"
    allow: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("::1")])

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("allow", mode="wrap")
    @classmethod
    def _networks(cls, value: object,
                  handler: ValidatorFunctionWrapHandler) -> list[IPvAnyNetwork]:
        """Strings only (pydantic would take an integer for an address); one reason for the
        first bad entry, naming it."""
        if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
            raise ValueError('must be a list of IP addresses or CIDR blocks, e.g. '
                             '["127.0.0.1", "10.0.0.0/8"]')
        entries = [entry.strip() for entry in value]
        try:
            networks: list[IPvAnyNetwork] = handler(entries)
        except ValidationError as exc:
            loc = exc.errors()[0]["loc"]
            entry = entries[loc[0]] if loc and isinstance(loc[0], int) else str(value)
            raise ValueError(_network_problem(entry)) from None
        return networks

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def _network_problem(entry: str) -> str:
    """Why `entry` is not an allow entry (a CIDR block with host bits set says which one)."""
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return f"{entry!r} is not an IP address or network (CIDR)"
    return f"{entry!r} has host bits set: write {str(network)!r} (or the address alone)"


def split_listen(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to (host, port); ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:4573 or [::1]:4573; port 0 = any free port)")
    return host, int(port)


class HttpSection(_Section):
    """Health and metrics over HTTP (`/healthz`, `/metrics`); an empty `listen`: none."""

    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _host_port_or_empty(cls, value: str) -> str:
        value = value.strip()
        if value:
            split_listen(value)
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.listen)


class PlansSection(_Section):
    """Where the vendor's plan files are, and which plan is in force."""

    dir: Annotated[str, Field(min_length=1)] = "plans"
    active: Annotated[str, Field(pattern=r"^[a-z0-9._-]+$")]


class StoreSection(_Section):
    """The SQLite file; created 0600, or 0640 owned by `group` when one is given.
    `keep_months`: calls are kept this many full months before the current one (default:
    forever); older ones are purged (`botmeter.storage.retention`). `max_queued`: finished
    calls waiting to be stored (the database refusing writes) beyond which AMI is no longer
    read until half of them are stored (`botmeter.backpressure`)."""

    path: Annotated[str, Field(min_length=1)] = "/var/lib/botmeter/botmeter.db"
    group: Annotated[str, Field(min_length=1)] | None = None
    keep_months: Annotated[int, Field(ge=1, le=1200)] | None = None
    max_queued: Annotated[int, Field(ge=2, le=10_000_000)] = MAX_QUEUED

    @field_validator("group")
    @classmethod
    def _known_group(cls, value: str | None) -> str | None:
        if value is not None:
            import grp

            try:
                grp.getgrnam(value)
            except KeyError:
                raise ValueError(f"no group {value!r} on this system") from None
        return value


REPORT_LANGUAGES = ("en", "zh-Hans", "zh-Hant")


class ReportSection(_Section):
    """`botmeter report`: the time zone its days and hours are in (default: the active plan's,
    else UTC) and the language of its table, CSV and HTML."""

    timezone: str | None = None
    lang: str = "en"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai, "
                             "UTC)") from None
        return value

    @field_validator("lang")
    @classmethod
    def _known_lang(cls, value: str) -> str:
        if value not in REPORT_LANGUAGES:
            raise ValueError(f"{value!r} is not one of {', '.join(REPORT_LANGUAGES)}")
        return value


_BUDGET = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")


class BudgetSection(_Section):
    """The monthly budget: an amount in the active plan's currency, a quoted decimal string
    (as plan amounts: at most 12 digits before the point and 6 after it), above 0."""

    monthly: str

    @field_validator("monthly")
    @classmethod
    def _amount(cls, value: str) -> str:
        from .rating.fields import MAX_INTEGER_DIGITS, MAX_PLACES, digits_of

        text = value.strip()
        if not _BUDGET.match(text):
            raise ValueError(f"{value[:40]!r} is not a decimal amount (write ASCII digits with "
                             'at most one decimal point, e.g. "2000.00")')
        amount = Decimal(text)
        integer, places = digits_of(amount)
        if integer > MAX_INTEGER_DIGITS:
            raise ValueError(f"is too large: at most {MAX_INTEGER_DIGITS} digits before the "
                             "decimal point")
        if places > MAX_PLACES:
            raise ValueError(f"has {places} decimal places: at most {MAX_PLACES}")
        if amount <= 0:
            raise ValueError("must be above 0")
        return text

    @property
    def amount(self) -> Decimal:
        return Decimal(self.monthly)


#: hosts an http:// uplink may name: anything else must be https (the token crosses the wire)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class UplinkSection(_Section):
    """Usage summaries to the vendor's billing API (docs/uplink.md); an empty url: none."""

    url: str = ""
    token_file: str | None = None
    secret_file: str | None = None
    bucket: Annotated[str, Field(pattern=r"^(hour|day)$")] = "hour"
    close_delay_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 300.0
    format: Annotated[str, Field(pattern=r"^(json|cloudevents)$")] = "json"
    plans: list[Annotated[str, Field(pattern=r"^[a-z0-9._-]+$")]] | None = None
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 500
    max_backoff_seconds: Annotated[float, Field(ge=1, le=86400)] = 3600.0
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    interval_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
            parts.port  # noqa: B018 -- raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in ("https", "http") or not host:
            raise ValueError("must be an https:// URL (e.g. https://billing.vendor.example)")
        if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
            raise ValueError("http:// only to this host (127.0.0.1, ::1, localhost): the token "
                             "would cross the network in clear; use https://")
        if parts.query or parts.fragment or any(c.isspace() or ord(c) < 32 for c in value):
            raise ValueError("give the base URL only (no query, fragment or spaces)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("holds a user name or password: give the URL without them (the "
                             "uplink authenticates with token_file)")
        if not _valid_host(host):
            raise ValueError(f"{host!r} is not a valid host name or IP address")
        return value.rstrip("/")

    @field_validator("plans")
    @classmethod
    def _some_plans(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("is empty: leave it out to summarise the active plan")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("names a plan twice")
        return value

    @model_validator(mode="after")
    def _key_needs_cert(self) -> UplinkSection:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        tls_files = [k for k in ("ca_file", "client_cert") if getattr(self, k) is not None]
        if tls_files and not self.url.startswith("https:"):
            raise ValueError(f"{tls_files[0]} is for an https:// url; this url has no TLS")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url)


_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _valid_host(host: str) -> bool:
    """An IP address, or a name whose every label is a valid (IDNA) DNS label."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    import idna

    try:
        name = idna.encode(host.rstrip("."), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return False
    return len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


LOG_LEVELS = ("debug", "info", "warning", "error")


class LogSection(_Section):
    """Logging: the level, and the format: JSON lines (true), console lines (false), or "auto"
    (JSON under journald, console lines elsewhere). The CLI's --log-level and --log-json win."""

    level: str = "info"
    json_: bool | str = Field(default="auto", alias="json")

    @field_validator("level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in LOG_LEVELS:
            return value.lower()
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")

    @field_validator("json_", mode="before")
    @classmethod
    def _json_mode(cls, value: object) -> object:
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError('must be true, false or "auto"')

    @property
    def json_mode(self) -> bool | None:
        """True or False, or None for "auto"."""
        return self.json_ if isinstance(self.json_, bool) else None


class RecoverySection(_Section):
    """Asterisk's own records of its calls, read when AMI missed some (docs/recovery.md):
    the CEL file (`cel_sqlite3_custom`'s SQLite, or a CEL CSV) and, without CEL, the CDR
    file (`cdr_db`: `cdr_sqlite3_custom`'s SQLite; `cdr_csv`: `cdr_csv`'s Master.csv).
    An empty path: not used. Relative paths are taken relative to the config file."""

    cel_db: str = ""
    cdr_db: str = ""
    cdr_csv: str = ""


class Config(_Section):
    agent: AgentSection
    ami: AmiSection
    calls: CallsSection
    bot: BotSection
    agi: AgiSection = AgiSection()
    http: HttpSection = HttpSection()
    plans: PlansSection | None = None
    store: StoreSection = StoreSection()
    uplink: UplinkSection = UplinkSection()
    report: ReportSection = ReportSection()
    budget: BudgetSection | None = None
    log: LogSection = LogSection()
    recovery: RecoverySection = RecoverySection()
    source_path: str = Field(default="<memory>", exclude=True)

    @property
    def base_dir(self) -> Path:
        return Path(self.source_path).parent

    def store_path(self) -> Path:
        return self.config_relative(self.store.path)

    def config_relative(self, path: str) -> Path:
        """A path from the config: as given if absolute, else relative to the config file."""
        given = Path(path)
        return given if given.is_absolute() else self.base_dir / given

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
            rejoin_seconds=self.bot.rejoin_seconds,
        )


class RecoverySources(NamedTuple):
    """Where Asterisk's records are: the CEL file and the CDR file (None: not configured)."""

    cel: Path | None
    cdr: Path | None


def recovery_sources(config: Config) -> RecoverySources:
    """The `[recovery]` files, resolved like `[store] path`; the CDR SQLite file is preferred
    to Master.csv when both are given (it holds each CDR's linkedid)."""
    section = config.recovery
    cdr = section.cdr_db or section.cdr_csv
    return RecoverySources(config.config_relative(section.cel_db) if section.cel_db else None,
                           config.config_relative(cdr) if cdr else None)


def first_error(path: str, exc: ValidationError) -> ConfigError:
    """The first problem as file, key and reason. A value is shown only when it is a short
    scalar of a key that holds no secret (never a table, which could hold one)."""
    err = exc.errors(include_url=False, include_context=False, include_input=True)[0]
    key = ".".join(str(p) for p in err["loc"])
    reason = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        reason = "unknown key (mistyped?)"
    elif err["type"] == "missing":
        reason = "required key is missing"
    elif "input" in err and err["type"].endswith("_type"):
        value = err["input"]
        got = type(value).__name__
        if (isinstance(value, str | int | float | bool) and not SENSITIVE_KEY.search(key)
                and len(repr(value)) <= 60):
            got += f" {value!r}"
        reason = f"{err['msg']} (got {got})"
    return ConfigError(path, key, reason)


def parse_config(data: dict[str, Any], path: str) -> Config:
    """Validate a parsed TOML document."""
    try:
        return Config.model_validate({**data, "source_path": path})
    except ValidationError as exc:
        raise first_error(path, exc) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load from `path`, else $BOTMETER_CONFIG, else /etc/botmeter/botmeter.toml."""
    chosen = Path(path) if path else (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    if chosen is None:
        chosen = next((p for p in DEFAULT_PATHS if p.exists()), DEFAULT_PATHS[0])
    return parse_config(read_toml(chosen), str(chosen))


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's document; ConfigError naming the file when it cannot be read or parsed."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(name, "", f"not valid TOML: {exc}") from None
    except ValueError:  # tomllib: an integer of thousands of digits
        raise ConfigError(name, "", "not valid TOML: a number has too many digits") from None
