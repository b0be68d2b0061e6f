"""/healthz and /metrics of one agent: its probe, metrics registry and HTTP server."""

from __future__ import annotations

import asyncio

from ..config import split_listen
from .http import HttpServer, Response, json_response
from .metrics import CONTENT_TYPE, AgentMetrics
from .snapshot import AgentProbe, Snapshot
from .verdict import DEFAULT_LIMITS, Limits, health_document


class HealthEndpoint:
    """Serves the agent's health and metrics on `listen` (`host:port`, port 0: any free)."""

    def __init__(self, listen: str, probe: AgentProbe, limits: Limits = DEFAULT_LIMITS) -> None:
        self.listen = listen
        self.probe = probe
        self.limits = limits
        self.metrics = AgentMetrics(limits)
        probe.writer.on_commit = self.metrics.observe_commit
        host, port = split_listen(listen)
        self.http = HttpServer(host, port, {"/healthz": self.healthz, "/metrics": self.scrape})

    async def start(self) -> None:
        """Bind and serve; OSError when the address cannot be bound."""
        await self.http.start()

    async def stop(self) -> None:
        await self.http.stop()

    @property
    def port(self) -> int:
        return self.http.port

    async def snapshot(self) -> Snapshot:
        disk = await asyncio.to_thread(self.probe.read_disk)
        return self.probe.counters(disk)

    async def healthz(self) -> Response:
        status, document = health_document(await self.snapshot(), self.limits)
        return json_response(status, document)

    async def scrape(self) -> Response:
        return Response(200, self.metrics.render(await self.snapshot()), CONTENT_TYPE)
