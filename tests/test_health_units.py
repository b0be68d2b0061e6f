"""The pure parts of health and metrics: the verdict, the request-head parser, and the Grafana
dashboard's metric names against what /metrics exposes."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from botmeter.health.http import HttpError, parse_head
from botmeter.health.metrics import AgentMetrics
from botmeter.health.snapshot import DiskReading, Snapshot
from botmeter.health.verdict import Limits, health_document, problems

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "botmeter.json"

HEALTHY = Snapshot(
    ami_target="127.0.0.1:5038", ami_connected=True, ami_events={"Newchannel": 3, "Hangup": 3},
    ami_sessions=1, ami_reconnects=0, ami_failures=0, ami_bad_values=0, ami_discarded_frames=0,
    seconds_since_ami_event=1.5, calls_in_progress=2, calls_stored={"handled": 3},
    calls_rejected=0, calls_spilled=0, calls_lost=0, writer_alive=True, writer_queue=0,
    writer_busy_seconds=None, writer_failing=None,
    fastagi={"sessions": 1, "signals": 1, "refused": 0, "errors": 0, "invalid": 0, "active": 0},
    uplink_enabled=True,
    disk=DiskReading(size_bytes=4096, uplink_backlog=2, uplink_parked=1,
                     uplink_last_success=1_790_000_000.0))


def test_a_healthy_snapshot_has_no_problem():
    assert problems(HEALTHY) == {}
    assert health_document(HEALTHY)[0] == 200


@pytest.mark.parametrize(("change", "component", "words"), [
    ({"ami_connected": False}, "ami", "not connected to Asterisk at 127.0.0.1:5038"),
    ({"writer_failing": "database is locked"}, "database", "database is locked"),
    ({"disk": DiskReading(writable="/var/lib/botmeter is not writable by this user")},
     "database", "not writable"),
    ({"writer_alive": False}, "writer", "stopped"),
    ({"writer_queue": 20_000}, "writer", "falling behind"),
    ({"ami_reading_paused": True}, "writer", "AMI is not read"),
    ({"writer_busy_seconds": 31.0}, "writer", "no commit lately"),
])
def test_each_problem_names_its_component(change, component, words):
    status, document = health_document(replace(HEALTHY, **change))
    assert status == 503 and document["status"] == "fail"
    assert words in document["reasons"][component]


def test_the_bounds_are_limits_not_constants():
    busy = replace(HEALTHY, writer_queue=50, writer_busy_seconds=5.0)
    assert problems(busy) == {}
    assert set(problems(busy, Limits(max_queue=10))) == {"writer"}
    assert set(problems(busy, Limits(max_busy_seconds=1.0))) == {"writer"}


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /healthz", 400),
    (b"GET  /healthz HTTP/1.1", 400),
    (b"GET healthz HTTP/1.1", 400),
    (b"G\xe9T /healthz HTTP/1.1", 400),
    (b"GET /healthz HTTP/2.0", 505),
    (b"GET /healthz HTTP/1.1\r\nno colon", 400),
    (b"GET /healthz HTTP/1.1\r\n folded: value", 400),
    (b"GET /healthz HTTP/1.1" + b"\r\nX: y" * 65, 431),
])
def test_request_heads_that_are_not_plain_http_are_refused(head, status):
    with pytest.raises(HttpError) as refused:
        parse_head(head)
    assert refused.value.status == status


def test_a_request_head_gives_method_and_path_without_query():
    request = parse_head(b"GET /metrics?x=1 HTTP/1.0\r\nHost: localhost:9464\r\nAccept: */*")
    assert (request.method, request.path) == ("GET", "/metrics")


def test_every_metric_the_dashboard_uses_is_exposed():
    metrics = AgentMetrics()
    metrics.observe_commit(0.002, 1)
    exposed = {sample.name for family in text_string_to_metric_families(
        metrics.render(HEALTHY).decode()) for sample in family.samples}
    used = set(re.findall(r"\bbotmeter_[a-z_]+", json.dumps(json.loads(DASHBOARD.read_text()))))
    assert used, "the dashboard queries no botmeter metric"
    assert used <= exposed, sorted(used - exposed)


def test_metric_registries_are_per_agent():
    one, two = AgentMetrics(), AgentMetrics()
    one.observe_commit(0.01, 1)
    count = "botmeter_writer_commit_seconds_count 1.0"
    assert count in one.render(HEALTHY).decode()
    assert count not in two.render(HEALTHY).decode()
