"""The agent's metrics in Prometheus text format, on a registry of its own (several agents in
one process, as in tests, never share counters).

Everything but the commit latency is read from a Snapshot when scraped (the agent keeps those
counters anyway); the commit latency is a histogram the writer feeds after each commit.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..storage.trouble import KINDS
from ..tracking.record import OUTCOMES
from .snapshot import Snapshot
from .verdict import COMPONENTS, DEFAULT_LIMITS, Limits, problems

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: seconds: a commit of one call takes milliseconds; a locked or slow disk, seconds
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FASTAGI_COUNTERS = {
    "sessions": "FastAGI connections accepted and served.",
    "signals": "Bot signals delivered by FastAGI sessions.",
    "refused": "FastAGI connections refused (peer not allowed, too many sessions, no descriptors).",
    "errors": "FastAGI sessions that ended without delivering a signal.",
    "invalid": "FastAGI requests refused as invalid (bad route or values).",
}


class AgentMetrics:
    """A private registry: the snapshot's families plus the writer's commit histogram."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commit_seconds = Histogram(
            "botmeter_writer_commit_seconds", "Seconds to store one batch of calls (one commit).",
            buckets=COMMIT_BUCKETS, registry=self.registry)
        self._snapshot = _SnapshotCollector(limits)
        self.registry.register(self._snapshot)

    def observe_commit(self, seconds: float, calls: int) -> None:
        """The writer's hook, called from its thread after each commit."""
        self.commit_seconds.observe(seconds)

    def render(self, snap: Snapshot) -> bytes:
        """The text exposition of every metric, the snapshot's as of `snap`."""
        self._snapshot.current = snap
        try:
            return generate_latest(self.registry)
        finally:
            self._snapshot.current = None


class _SnapshotCollector(Collector):
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.current: Snapshot | None = None

    def describe(self) -> list[Metric]:
        return []  # families are made at collect time only

    def collect(self) -> Iterator[Metric]:
        if self.current is not None:
            yield from families(self.current, self.limits)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(family: CounterMetricFamily | GaugeMetricFamily,
              values: dict[str, int]) -> CounterMetricFamily | GaugeMetricFamily:
    for label, value in sorted(values.items()):
        family.add_metric([label], value)
    return family


def families(snap: Snapshot, limits: Limits = DEFAULT_LIMITS) -> Iterator[Metric]:
    """The snapshot as metric families (pure)."""
    found = problems(snap, limits)
    yield _gauge("botmeter_healthy", "1 when /healthz answers 200, else 0.", 0 if found else 1)
    yield _labelled(GaugeMetricFamily(
        "botmeter_health_problem", "1 for each part that fails /healthz now (its reason is "
        "in /healthz), else 0.", labels=["component"]),
        {component: int(component in found) for component in COMPONENTS})
    yield _gauge("botmeter_ami_connected", "1 while logged in to Asterisk's AMI, else 0.",
                 1 if snap.ami_connected else 0)
    yield _labelled(CounterMetricFamily("botmeter_ami_events", "AMI events received, by type.",
                                        labels=["type"]), snap.ami_events)
    yield _counter("botmeter_ami_sessions", "AMI sessions logged in.", snap.ami_sessions)
    yield _counter("botmeter_ami_reconnects", "AMI reconnections started after a session ended "
                   "or a connection failed.", snap.ami_reconnects)
    yield _counter("botmeter_ami_connect_failures", "AMI connections or logins that failed.",
                   snap.ami_failures)
    yield _labelled(CounterMetricFamily(
        "botmeter_ami_parse_errors", "AMI input refused: bad header values, bad or oversized "
        "frames.", labels=["kind"]),
        {"bad_value": snap.ami_bad_values, "bad_frame": snap.ami_discarded_frames})
    if snap.seconds_since_ami_event is not None:
        yield _gauge("botmeter_ami_seconds_since_last_event", "Seconds since the last AMI event "
                     "arrived.", snap.seconds_since_ami_event)
    yield _gauge("botmeter_calls_in_progress", "Calls being tracked (offered, not yet ended).",
                 snap.calls_in_progress)
    yield _labelled(CounterMetricFamily(
        "botmeter_calls_recorded", "Calls stored in the database since start, by outcome.",
        labels=["outcome"]), {outcome: 0 for outcome in OUTCOMES} | snap.calls_stored)
    yield _labelled(CounterMetricFamily(
        "botmeter_calls_not_stored", "Calls not in table calls: set aside as rejected, spilled "
        "at stop, or lost (only in the log).", labels=["reason"]),
        {"rejected": snap.calls_rejected, "spilled": snap.calls_spilled, "lost": snap.calls_lost})
    yield _gauge("botmeter_writer_queue_depth", "Calls waiting to be stored.", snap.writer_queue)
    yield _gauge("botmeter_writer_queue_bound", "Calls waiting to be stored from which AMI is no "
                 "longer read ([store] max_queued).", limits.max_queue)
    yield _gauge("botmeter_ami_reading_paused", "1 while AMI is not read because the calls "
                 "waiting to be stored reached their bound, else 0.", int(snap.ami_reading_paused))
    yield _labelled(GaugeMetricFamily(
        "botmeter_database_trouble", "1 for the kind of trouble storing calls meets now "
        "(all 0 while it works).", labels=["kind"]),
        {kind: int(kind == snap.database_trouble) for kind in KINDS})
    yield _gauge("botmeter_database_failing_seconds", "Seconds storing calls has been failing "
                 "(0 while it works).", snap.writer_failing_seconds or 0.0)
    if snap.fastagi is not None:
        for key, doc in FASTAGI_COUNTERS.items():
            yield _counter(f"botmeter_fastagi_{key}", doc, snap.fastagi[key])
        yield _gauge("botmeter_fastagi_sessions_active", "FastAGI sessions in progress.",
                     snap.fastagi["active"])
    disk = snap.disk
    if disk.size_bytes is not None:
        yield _gauge("botmeter_database_size_bytes", "Size of the SQLite database and its WAL.",
                     disk.size_bytes)
    if snap.uplink_enabled and disk.uplink_backlog is not None:
        yield _gauge("botmeter_uplink_backlog", "Summary revisions not delivered to the vendor "
                     "(pending and parked).", disk.uplink_backlog)
        yield _gauge("botmeter_uplink_parked", "Summary revisions the vendor refused, waiting "
                     "for sync retry --parked.", disk.uplink_parked or 0)
        if disk.uplink_last_success is not None:
            yield _gauge("botmeter_uplink_last_success_timestamp_seconds", "Unix time of the "
                         "last delivery the vendor accepted.", disk.uplink_last_success)
