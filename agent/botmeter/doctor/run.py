"""The doctor's checks in order, each printed as soon as it is known."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..config import Config, ConfigError
from .findings import Finding, fail
from .offline import check_config, check_database, check_listen, check_plans, check_secrets
from .recovery import check_recovery
from .storing import check_storing

Say = Callable[[Finding], None]


def offline(config_path: str | None, say: Say) -> Config | None:
    """`check-config`: the config, secret files, plans, database path (no socket)."""
    config, finding = check_config(config_path)
    say(finding)
    if config is None:
        return None
    for each in check_secrets(config):
        say(each)
    say(check_plans(config))
    say(check_database(config))
    say(check_recovery(config))
    return config


def doctor(config_path: str | None, say: Say, *, watch: float) -> None:
    """Everything: the offline checks, the ports, Asterisk, the uplink."""
    config = offline(config_path, say)
    if config is None:
        return
    asked = _agent_answers(config)
    if config.agi.enabled:
        say(check_listen("fastagi port", "agi", config.agi.listen, asked))
    if config.http.enabled:
        say(check_listen("http port", "http", config.http.listen, asked))
    health = agent_health(config)
    if isinstance(health, dict):
        say(check_storing(health))
    for finding in _ami(config, watch):
        say(finding)
    if config.uplink.enabled:
        say(_uplink(config))


def _ami(config: Config, watch: float) -> list[Finding]:
    from .. import runtime
    from ..service import ami_settings
    from .ami import check_ami

    try:
        settings = ami_settings(config)
    except ConfigError as exc:  # its secret file: already reported by the secret checks
        return [fail("ami login", f"no secret to log in with: {exc.reason}",
                     "fix the AMI secret file (see its line above)")]
    contexts = frozenset(config.calls.inbound_contexts)
    return runtime.run(check_ami(settings, watch=watch, inbound_contexts=contexts))


def _uplink(config: Config) -> Finding:
    from ..plans import load_plan_book
    from ..rating import PlanError
    from ..uplink.settings import uplink_settings
    from .uplink import check_uplink

    try:
        settings = uplink_settings(config, load_plan_book(config))
    except (ConfigError, PlanError) as exc:
        return fail("uplink", f"not checked: {exc}", "fix [uplink] (see the lines above)")
    assert settings is not None
    return check_uplink(settings)


def _agent_answers(config: Config) -> Callable[[], bool | None]:
    """Whether the running agent answers on its [http] listen (None: it has none to ask)."""

    def ask() -> bool | None:
        health = agent_health(config)
        return health if health is None or health is False else True

    return ask


def agent_health(config: Config) -> dict[str, Any] | bool | None:
    """The running agent's /healthz document; False when nothing answers there, None when
    there is nothing to ask (no [http] listen, or any free port)."""
    if not config.http.enabled:
        return None
    import httpx

    from ..config import split_listen

    host, port = split_listen(config.http.listen)
    if port == 0:
        return None
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
    try:
        document = httpx.get(url, timeout=2.0, trust_env=False).json()
    except (httpx.HTTPError, json.JSONDecodeError, TypeError, ValueError):
        return False
    return document if isinstance(document, dict) and "ami" in document else False
