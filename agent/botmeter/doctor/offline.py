"""The checks that need no network: the config, the secret files, the plans, the database and
the listening ports (`botmeter check-config` runs those that need no socket either)."""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

from ..config import (
    Config,
    ConfigError,
    credential_path,
    load_config,
    read_secret_file,
    split_listen,
)
from .findings import Finding, fail, ok, warn

CHMOD = "chmod 600 {path}"


def check_config(path: str | None) -> tuple[Config | None, Finding]:
    """The config loaded (None if it cannot be) and the finding about it."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, fail("config", str(exc), "correct the file (config/botmeter.toml is the "
                                              "commented example)")
    return config, ok("config", f"{config.source_path} is valid")


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """(what, path) of every secret file the config names."""
    found: list[tuple[str, Path]] = []
    ami_secret = config.ami.secret_path(config.base_dir)
    if ami_secret is not None:
        found.append(("ami.secret_file", ami_secret))
    uplink = config.uplink
    if uplink.enabled:
        for key, file in (("uplink.token_file", uplink.token_file),
                          ("uplink.secret_file", uplink.secret_file),
                          ("uplink.client_key", uplink.client_key)):
            if file is not None:
                found.append((key, credential_path(file, config.base_dir)))
    return found


def check_secrets(config: Config, euid: int | None = None) -> list[Finding]:
    """Each secret file: readable, owned by this user, open to nobody else; a secret written
    in the config itself: the config open to nobody else."""
    euid = os.geteuid() if euid is None else euid
    findings = [check_secret_file(key, path, euid) for key, path in secret_files(config)]
    if config.ami.secret is not None:
        findings.append(_inline_secret(Path(config.source_path)))
    return findings


def check_secret_file(key: str, path: Path, euid: int) -> Finding:
    check = f"secret {key}"
    try:
        read_secret_file(path)  # mode, size, text: the checks `run` makes
    except ConfigError as exc:
        fix = CHMOD.format(path=path) if "chmod" in exc.reason else \
            f"put the secret, one line, in {path}, mode 0600, owned by the agent's user"
        return fail(check, f"{path}: {exc.reason}", fix)
    info = path.stat()
    if info.st_uid != euid:
        return warn(check, f"{path} is owned by uid {info.st_uid}, not by this user "
                           f"(uid {euid})", "chown the file to the user the agent runs as, and "
                                            "run doctor as that user")
    return ok(check, f"{path}: mode {stat.S_IMODE(info.st_mode):04o}, owned by this user")


def _inline_secret(path: Path) -> Finding:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return fail("secret ami.secret", f"written in {path}, which group or others may read "
                                         f"(mode {mode:04o})",
                    f"{CHMOD.format(path=path)}, or move it to a secret_file")
    return warn("secret ami.secret", f"written in {path} (mode {mode:04o})",
                "move it to secret_file (under systemd: LoadCredential=)")


def check_plans(config: Config) -> Finding:
    from ..plans import active_series, load_plan_book
    from ..rating import PlanError

    if config.plans is None:
        return ok("plans", "no [plans]: calls are stored unrated")
    try:
        book = load_plan_book(config)
        series = active_series(config, book)
        if config.uplink.enabled:
            from ..uplink.settings import uplink_settings

            uplink_settings(config, book)
    except (ConfigError, PlanError) as exc:
        return fail("plans", str(exc), "correct the plan file or [plans] (docs/plans.md)")
    count = len(book.plan_ids) if book is not None else 0
    return ok("plans", f"{count} plan(s) in {config.plans_dir()}, active {series.plan_id!r} valid")


def check_database(config: Config) -> Finding:
    """Writable (a write transaction opened and rolled back: nothing changes) and a schema
    this botmeter reads."""
    from ..storage.schema import SCHEMA_VERSION
    from ..storage.store import database_problem

    path = config.store_path()
    fix_dir = (f"create {path.parent} owned by the agent's user (systemd: "
               "StateDirectory=botmeter)")
    if not path.exists():
        folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            return fail("database", f"{path} does not exist and cannot be created here", fix_dir)
        return ok("database", f"{path} does not exist yet: the agent creates it at start")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=2.0,
                               isolation_level=None)
    except sqlite3.Error as exc:
        return fail("database", f"{path}: {database_problem(exc)}", fix_dir)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        problem = database_problem(exc)
        fix = fix_dir if "readonly" in problem or "unable to open" in problem else \
            "restore it from a backup, or move it aside (the agent starts a new one)"
        return fail("database", f"{path}: {problem}", fix)
    finally:
        conn.close()
    if "calls" not in tables:
        return fail("database", f"{path} is not a botmeter database (no table calls)",
                    "set [store] path to the agent's database")
    if version > SCHEMA_VERSION:
        return fail("database", f"{path}: schema version {version} is newer than this botmeter "
                                f"({SCHEMA_VERSION})", "upgrade botmeter")
    upgrade = f", upgraded to {SCHEMA_VERSION} at the next start" if version < SCHEMA_VERSION else ""
    return ok("database", f"{path} is writable, schema version {version}{upgrade}")


def check_listen(check: str, key: str, listen: str,
                 held_by_agent: Callable[[], bool | None]) -> Finding:
    """A port the agent listens on: free, or held by this agent. `held_by_agent()`: True when
    the running agent answers, False when nothing answers, None when it cannot be asked."""
    host, port = split_listen(listen)
    if port == 0:
        return ok(check, f"{listen}: any free port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return fail(check, f"{listen}: cannot listen there: {exc.strerror or exc}",
                        f"set [{key}] listen to an address of this host")
        held = held_by_agent()
        if held:
            return ok(check, f"{listen}: in use by the running agent (its /healthz answers)")
        blame = "another program" if held is False else "a program (the running agent?)"
        return (fail if held is False else warn)(
            check, f"{listen}: in use by {blame}",
            f"ss -ltnp 'sport = :{port}' shows which; stop it or change [{key}] listen")
    return ok(check, f"{listen}: free")
