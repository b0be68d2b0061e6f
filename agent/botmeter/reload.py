"""SIGHUP: the configuration and the plan files read again, without losing a call in progress.

What changes at once (the tracker and its calls in progress stay as they are):

- `[calls]` and `[bot]`: the tracking rules, `max_in_progress` and the idle timeout; a call
  in progress keeps what was decided about it so far;
- `[plans]` and the plan files: each call stored from then on is rated under the plan now in
  force, and the current period is re-rated under it in the background (as at a start);
  an older period keeps its amounts until a late call or `botmeter rerate --period` re-rates
  it. Plans added or removed start or stop rating;
- `[budget]`, `[uplink]` (checked as at a start: a change of what the vendor's summaries are
  keyed on is refused), `[store] keep_months`, `[agi] allow`, `[report]`.

What needs a restart is logged as such and keeps its old value: `[agent] id`, `[ami]` (the
connection and its credentials, a changed secret file too), `[agi] enabled` and `listen`,
`[store] path` and `group`, and any key not named above.

A configuration or plan file that does not load, or an uplink change that is refused, is
logged (`config not reloaded`, with the file, the key and the reason) and the old
configuration stays in force, all of it. Reloads run one at a time; none is applied once
the agent is stopping.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from .config import Config, ConfigError, load_config
from .plans import active_series, load_plan_book
from .rating import PlanError, PlanSeries
from .rating.periods import period_of
from .reports.budget import BudgetWatch
from .rerating import RerateWorker
from .storage.rated_saver import RatedSaver
from .storage.retention import RetentionPolicy, RetentionWorker, retention_policy
from .uplink.agent import UplinkWorker
from .uplink.identity import check_identity
from .uplink.settings import UplinkSettings, uplink_settings

if TYPE_CHECKING:
    from .service import AgentService

log = structlog.get_logger(__name__)

#: keys (or whole sections) a reload applies at once; every other key needs a restart
LIVE_KEYS = frozenset({"calls", "bot", "plans", "budget", "uplink", "report", "agi.allow",
                       "store.keep_months"})
#: seconds a retired re-rating thread (plans removed) gets to finish
RETIRE_SECONDS = 5.0


# -- what changed (pure) ------------------------------------------------------------------

def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ (a section added or removed: its name)."""
    before, after = old.model_dump(), new.model_dump()
    keys: list[str] = []
    for section in sorted(before.keys() | after.keys()):
        a, b = before.get(section), after.get(section)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{section}.{k}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        else:
            keys.append(section)
    return keys


def is_live(key: str) -> bool:
    """Whether a reload applies this key at once (else it needs a restart)."""
    return key in LIVE_KEYS or key.split(".", 1)[0] in LIVE_KEYS


def keep_old_values(new: Config, old: Config, keys: list[str]) -> Config:
    """`new` with these keys (dotted, or whole sections) as they are in `old`."""
    for key in keys:
        section, _, name = key.partition(".")
        value: Any = getattr(old, section)
        if name:
            value = getattr(new, section).model_copy(update={name: getattr(value, name)})
        new = new.model_copy(update={section: value})
    return new


def same_plan(a: PlanSeries | None, b: PlanSeries | None) -> bool:
    """Whether two plan series rate alike (same plan id, same versions)."""
    if a is None or b is None:
        return a is b
    return a.plan_id == b.plan_id and a.versions == b.versions


@dataclass(frozen=True)
class Change:
    """A reload, checked and ready to apply."""

    config: Config  # in force after it: the new values, but the old ones of `restart`
    applied: tuple[str, ...]  # keys that take effect now
    restart: tuple[str, ...]  # keys that changed but keep their old value until a restart
    series: PlanSeries | None  # the plan calls are rated under
    plan_changed: bool
    uplink: UplinkSettings | None
    retention: RetentionPolicy | None


# -- reading and checking (a thread: files and the database) ------------------------------

def prepare(service: AgentService, new: Config) -> Change:
    """Check a new configuration against the running agent; ConfigError or PlanError if it
    cannot be used (nothing is changed then)."""
    old = service.config
    keys = changed_keys(old, new)
    restart = [k for k in keys if not is_live(k)]
    if not any(k in ("ami.secret", "ami.secret_file") for k in restart) and \
            new.ami.read_secret(new.base_dir) != service.client.settings.secret:
        restart.append("ami.secret_file" if new.ami.secret_file else "ami.secret")
    config = keep_old_values(new, old, restart)
    book = load_plan_book(config)
    series = None if book is None else active_series(config, book)
    uplink = uplink_settings(config, book)
    if uplink is not None:
        store = service.store_factory()
        try:
            check_identity(store.db.conn, uplink, config.source_path)
        finally:
            store.close()
    current = service.saver.series if service.saver is not None else None
    changed = not same_plan(current, series)
    applied = [k for k in keys if is_live(k)]
    if changed and not any(k.startswith("plans") for k in applied):
        applied.append("plan files")
    return Change(config, tuple(applied), tuple(restart), series, changed, uplink,
                  retention_policy(config, series))


# -- applying (the event loop) -----------------------------------------------------------

def apply(service: AgentService, change: Change,
          rating: tuple[RatedSaver, RerateWorker] | None) -> RerateWorker | None:
    """Put a checked change in force; `rating` is the saver and started re-rating thread of
    plans added by it. Returns a re-rating thread to close (plans removed)."""
    config = service.config = change.config
    tracker = service.recorder.tracker
    tracker.rules = config.tracking_rules()
    tracker.max_in_progress = config.calls.max_in_progress
    if service.fastagi is not None:
        service.fastagi.set_allow(config.agi.allow)
    retired = _apply_rating(service, change, rating)
    _apply_budget(service, change.series, config)
    _apply_uplink(service, change.uplink)
    _apply_retention(service, change.retention)
    return retired


def new_rating(service: AgentService, series: PlanSeries) -> tuple[RatedSaver, RerateWorker]:
    """A saver rating under `series` and its re-rating thread (not started), as at a start."""
    from .service import FRESH_PERIOD_MARGIN

    saver = RatedSaver(series, on_late=service._late,
                       fresh_after=service.clock() + FRESH_PERIOD_MARGIN)
    return saver, RerateWorker(service.store_factory, saver)


def _apply_rating(service: AgentService, change: Change,
                  rating: tuple[RatedSaver, RerateWorker] | None) -> RerateWorker | None:
    from .service import FRESH_PERIOD_MARGIN

    series = change.series
    if series is None:
        retired, service.saver, service.rerater = service.rerater, None, None
        service.writer.use_saver(None)
        return retired
    if rating is not None:  # plans added
        service.saver, service.rerater = rating
        service.writer.use_saver(rating[0])
    elif service.saver is None or not change.plan_changed:
        return None
    else:
        service.saver.use(series, fresh_after=service.clock() + FRESH_PERIOD_MARGIN)
    service.saver.request_rerate(period_of(service.clock(), series.timezone))
    return None


def _apply_budget(service: AgentService, series: PlanSeries | None, config: Config) -> None:
    if service.budget is not None:
        service.budget.stop(timeout=0)  # a check in progress ends on its own
        service.budget = None
    if series is not None and config.budget is not None:
        service.budget = BudgetWatch(service.store_factory, series, config.budget.amount,
                                     clock=service.clock)
        service.budget.start()


def _apply_uplink(service: AgentService, settings: UplinkSettings | None) -> None:
    if settings is None:
        if service.uplink is not None:
            service.uplink.stop(timeout=0)  # a request still out ends on its own
            service.uplink = None
    elif service.uplink is None:
        service.uplink = UplinkWorker(settings, service.store_factory, clock=service.clock)
        service.uplink.start()
    else:
        service.uplink.reconfigure(settings)


def _apply_retention(service: AgentService, policy: RetentionPolicy | None) -> None:
    if policy is None:
        if service.retention is not None:
            service.retention.stop(timeout=0)
            service.retention = None
    elif service.retention is None:
        service.retention = RetentionWorker(service.store_factory, policy, clock=service.clock)
        service.retention.start()
    else:
        service.retention.update(policy)


class Reloader:
    """The agent's reloads: `request()` (the SIGHUP handler) starts one on the event loop;
    they run one at a time. Counters: `reloads` applied, `failures` refused."""

    def __init__(self, service: AgentService) -> None:
        self._service = service
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        self.reloads = 0
        self.failures = 0

    def request(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Read, check and apply the configuration file; whether it was applied."""
        async with self._lock:
            service = self._service
            if service.stopping:
                return False
            path = service.config.source_path
            log.info("reloading the configuration", config=path)
            try:
                change = await asyncio.to_thread(lambda: prepare(service, load_config(path)))
                rating = None
                if change.series is not None and service.saver is None:
                    rating = new_rating(service, change.series)
                    await asyncio.to_thread(rating[1].start)
            except (ConfigError, PlanError) as exc:
                return self._refused(str(exc))
            except Exception as exc:  # e.g. the database, for the uplink's check
                return self._refused(f"{type(exc).__name__}: {exc}")
            if service.stopping:
                if rating is not None:
                    await asyncio.to_thread(rating[1].close, time.monotonic() + RETIRE_SECONDS)
                return False
            retired = apply(service, change, rating)
            self.reloads += 1
            log.info("config reloaded", config=path, changed=list(change.applied) or None)
            for key in change.restart:
                log.warning("config change needs a restart; the old value stays in force",
                            key=key, config=path)
            if retired is not None:
                await asyncio.to_thread(retired.close, time.monotonic() + RETIRE_SECONDS)
            return True

    def _refused(self, reason: str) -> bool:
        self.failures += 1
        log.error("config not reloaded; the old one stays in force", error=reason)
        return False
