"""A minimal HTTP/1.1 server for /healthz and /metrics, on the agent's event loop.

One request per connection (`Connection: close`), GET or HEAD only, no body read. Every
connection is bounded: the request head in HEAD_BYTES and HEAD_TIMEOUT seconds (a slow or
endless sender gets 408 or 431 and is cut off), the answer written in WRITE_TIMEOUT seconds,
at most MAX_CONNECTIONS at once (more are closed at once). Nothing a client sends can raise
into the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from ..runtime import bound_port

log = structlog.get_logger(__name__)

HEAD_BYTES = 8192
HEAD_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
MAX_CONNECTIONS = 32
MAX_HEADERS = 64
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_VERSION = re.compile(rb"HTTP/1\.[01]")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """A request that gets an error answer: its status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_head(head: bytes) -> Request:
    """The request line and headers (up to the blank line, excluded) as a Request; HttpError
    (400, 505, 431) for anything that is not plain HTTP/1.x."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise HttpError(400, "the request line is not METHOD TARGET HTTP/1.1")
    method, target, version = parts
    if not _VERSION.fullmatch(version):
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, "the target is not a path")
    headers = lines[1:]
    if len(headers) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    for line in headers:
        name, colon, _ = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "a header line is not NAME: VALUE")
    return Request(method.decode("ascii"), target.split(b"?", 1)[0].decode("ascii"))


def encode(response: Response, *, head_only: bool = False) -> bytes:
    """The response's bytes: status line, headers, the body (unless answering HEAD)."""
    lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}",
             f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}",
             "Cache-Control: no-store", "Connection: close",
             *(f"{name}: {value}" for name, value in response.headers.items())]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + response.body


def json_response(status: int, document: object, **headers: str) -> Response:
    body = (json.dumps(document, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    return Response(status, body, "application/json", headers)


Route = Callable[[], Awaitable[Response]]


class HttpServer:
    """Serves GET/HEAD of `routes` (path to an async handler) on host:port (0: any free)."""

    def __init__(self, host: str, port: int, routes: dict[str, Route], *,
                 head_timeout: float = HEAD_TIMEOUT, write_timeout: float = WRITE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.host = host
        self._port = port
        self.routes = routes
        self.head_timeout = head_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.active = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind (OSError when the address is taken or not local) and serve."""
        self._server = await asyncio.start_server(self._serve, self.host, self._port,
                                                  limit=HEAD_BYTES)
        log.info("http listening", host=self.host, port=self.port, paths=sorted(self.routes))

    @property
    def port(self) -> int:
        return bound_port(self._server, self._port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.active += 1
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug here must not reach the loop
            log.exception("http request failed")
        finally:
            self.active -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.head_timeout)
            request = parse_head(head[:-4])
            head_only = request.method == "HEAD"
            response = await self._answer(request)
        except TimeoutError:
            response = json_response(408, {"error": "request head not complete in time"})
        except (asyncio.LimitOverrunError, ValueError):
            response = json_response(431, {"error": f"request head over {HEAD_BYTES} bytes"})
        except HttpError as exc:
            response = json_response(exc.status, {"error": str(exc)})
        writer.write(encode(response, head_only=head_only))
        await asyncio.wait_for(writer.drain(), self.write_timeout)

    async def _answer(self, request: Request) -> Response:
        route = self.routes.get(request.path)
        if route is None:
            raise HttpError(404, f"no such path: try {' or '.join(sorted(self.routes))}")
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"error": f"method {request.method} not allowed"},
                                 Allow="GET, HEAD")
        return await route()
