"""The uplink's settings, resolved from `[uplink]`: plans, credentials and TLS files checked
at start, so that a bad one stops `botmeter run` with one line rather than a failing sync."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, ConfigError, credential_path, read_secret_file
from ..rating import PlanBook, PlanSeries

TOKEN_CREDENTIAL = "uplink.token"
KEY_CREDENTIAL = "uplink.key"


@dataclass(frozen=True)
class UplinkSettings:
    agent_id: str
    url: str
    token: str = field(repr=False)
    key: bytes = field(repr=False)
    plans: tuple[PlanSeries, ...]
    bucket: str = "hour"
    close_delay: float = 300.0
    format: str = "json"
    batch_size: int = 500
    max_backoff: float = 3600.0
    timeout: float = 30.0
    interval: float = 60.0
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1/usage/summaries"

    def secrets(self) -> tuple[str, ...]:
        """Texts that must never appear in a log line, a status or an error."""
        return tuple(s for s in (self.token, self.key.decode("utf-8", "replace")) if s)

    def tls_context(self) -> ssl.SSLContext:
        """Verification on, with the configured CA file and client certificate."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def uplink_settings(config: Config, book: PlanBook | None) -> UplinkSettings | None:
    """The uplink to run (None when `[uplink] url` is empty); ConfigError naming the key."""
    section = config.uplink
    if not section.enabled:
        return None
    where = config.source_path
    if book is None or config.plans is None:
        raise ConfigError(where, "uplink", "needs a [plans] section: summaries carry amounts")
    wanted = section.plans or [config.plans.active]
    missing = [p for p in wanted if p not in book]
    if missing:
        key = "uplink.plans" if section.plans else "plans.active"
        raise ConfigError(where, key, f"no plan {missing[0]!r} in {config.plans_dir()} "
                                      f"(have: {', '.join(book.plan_ids) or 'none'})")
    token = _secret(config, "token_file", section.token_file, TOKEN_CREDENTIAL)
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError(where, "uplink.token_file", "the token must be printable ASCII without "
                                                      "spaces: it is sent in the Authorization header")
    settings = UplinkSettings(
        agent_id=config.agent.id, url=section.url,
        token=token,
        key=_secret(config, "secret_file", section.secret_file, KEY_CREDENTIAL).encode(),
        plans=tuple(book.series(p) for p in wanted), bucket=section.bucket,
        close_delay=section.close_delay_seconds, format=section.format,
        batch_size=section.batch_size, max_backoff=section.max_backoff_seconds,
        timeout=section.timeout_seconds, interval=section.interval_seconds,
        ca_file=_path(config, section.ca_file), client_cert=_path(config, section.client_cert),
        client_key=_path(config, section.client_key))
    if settings.url.startswith("https:"):
        try:
            settings.tls_context()
        except (OSError, ssl.SSLError) as exc:
            key = "uplink.ca_file" if settings.ca_file and not settings.client_cert else \
                "uplink.client_cert"
            raise ConfigError(where, key, f"cannot load the TLS files: {exc}") from None
    return settings


def _secret(config: Config, key: str, file: str | None, credential: str) -> str:
    """A secret from its file, else from the systemd credential of that name."""
    if file is None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory or not (Path(directory) / credential).exists():
            raise ConfigError(config.source_path, f"uplink.{key}",
                              f"required (or the systemd credential {credential})")
        path = Path(directory) / credential
    else:
        path = credential_path(file, config.base_dir)
    return read_secret_file(path)


def _path(config: Config, file: str | None) -> str | None:
    if file is None:
        return None
    path = Path(file)
    return str(path if path.is_absolute() else config.base_dir / path)
