"""The reference receiver of the uplink: the vendor side of `POST /v1/usage/summaries`.

A small standard-library HTTP server (plus SQLite) showing vendors what to verify and store:

- verifies, in this order, the bearer token (constant-time), the HMAC signature and its timestamp
  (`signing.verify`), the body size (64 MiB), that the (timestamp, signature) pair was not already
  processed (a replay: 409), the Content-Type, and that the body is UTF-8 JSON;
- validates every summary (or CloudEvent) and the request's `Idempotency-Key`: one malformed
  item refuses the whole request (422) and nothing of it is stored;
- stores, in one SQLite transaction per request: each new idempotency key once (`deliveries`),
  the highest revision per (agent, plan, bucket) (`current`), the running sums of CloudEvents'
  `data.delta` per (agent, plan) (`totals`, amounts as decimal text), and the request's
  (timestamp, signature) pair (`processed_requests`, kept for `max_skew` seconds).

For the agent's tests it can also misbehave on demand (`misbehave`, `down`) and be queried
(`requests`, `statuses`, `effects`, `deliveries`, `current`, `totals`). It logs no secret.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import re
import signal
import socket
import sqlite3
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast

from botmeter.config import ConfigError, read_secret_file
from botmeter.uplink.signing import (
    MAX_SKEW_SECONDS,
    SignatureError,
    batch_key,
    idempotency_key,
    verify,
)

log = logging.getLogger(__name__)

ENDPOINT = "/v1/usage/summaries"
MAX_BODY_BYTES = 64 * 1024 * 1024
JSON_TYPE = "application/json"
CLOUDEVENTS_TYPE = "application/cloudevents-batch+json"
EVENT_TYPE = "botmeter.usage.summary"
SOURCE_PREFIX = "botmeter/"
MISBEHAVIOURS = ("status", "slow", "reset", "reset_after_commit")

_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY, agent_id TEXT NOT NULL, plan_id TEXT NOT NULL,
    bucket_start TEXT NOT NULL, revision INTEGER NOT NULL, body TEXT NOT NULL,
    received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS current (
    agent_id TEXT NOT NULL, plan_id TEXT NOT NULL, bucket_start TEXT NOT NULL,
    revision INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (agent_id, plan_id, bucket_start));
CREATE TABLE IF NOT EXISTS totals (
    agent_id TEXT NOT NULL, plan_id TEXT NOT NULL, currency TEXT NOT NULL,
    calls TEXT NOT NULL, seconds_bot TEXT NOT NULL, seconds_billable TEXT NOT NULL,
    modules TEXT NOT NULL, amount TEXT NOT NULL, call_count INTEGER NOT NULL,
    PRIMARY KEY (agent_id, plan_id));
CREATE TABLE IF NOT EXISTS processed_requests (
    timestamp INTEGER NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (timestamp, signature));
"""


class Reject(Exception):
    """A request refused with an HTTP status and a one-line reason (sent as `{"error": ...}`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Item:
    """One validated summary of a request, with its idempotency key and (CloudEvents) delta."""

    key: str
    agent_id: str
    summary: dict[str, Any]
    delta: dict[str, Any] | None = None

    @property
    def plan_id(self) -> str:
        return cast(str, self.summary["plan_id"])

    @property
    def bucket_start(self) -> str:
        return cast(str, self.summary["bucket_start"])

    @property
    def revision(self) -> int:
        return cast(int, self.summary["revision"])


@dataclass
class _Misbehaviour:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# validation (pure)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)


def _decimal(value: object, where: str) -> Decimal:
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise Reject(422, f'{where}: must be a decimal string such as "17.2800"')
    return Decimal(value)


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Reject(422, f"{where}: must be an object")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise Reject(422, f"{where}: must be a non-empty string")
    return value


def _ints(value: object, where: str, *, minimum: int | None) -> None:
    for name, count in _object(value, where).items():
        if not _is_int(count) or (minimum is not None and count < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            raise Reject(422, f"{where}.{name}: must be an integer{bound}")


def _numbers(value: object, where: str, *, required: tuple[str, ...] = ()) -> None:
    values = _object(value, where)
    for name in required:
        if name not in values:
            raise Reject(422, f"{where}.{name}: missing")
    for name, number in values.items():
        if not _is_number(number):
            raise Reject(422, f"{where}.{name}: must be a number")


def _modules(value: object, where: str) -> None:
    for name, module in _object(value, where).items():
        module = _object(module, f"{where}.{name}")
        if not _is_number(module.get("quantity")):
            raise Reject(422, f"{where}.{name}.quantity: must be a number")
        if not isinstance(module.get("unit"), str):
            raise Reject(422, f"{where}.{name}.unit: must be a string")


def _timestamp(value: object, where: str) -> datetime:
    if not isinstance(value, str) or not _ISO_UTC.fullmatch(value):
        raise Reject(422, f"{where}: must be an ISO 8601 UTC time ending in Z")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise Reject(422, f"{where}: not a valid time") from None


def check_summary(summary: object, where: str) -> dict[str, Any]:
    """The summary, or Reject(422) naming `where` and the first bad field."""
    summary = _object(summary, where)
    for name in ("plan_id", "bucket_start", "bucket_end", "revision", "calls", "seconds",
                 "modules", "amount", "currency", "call_count", "calls_sha256"):
        if name not in summary:
            raise Reject(422, f"{where}.{name}: missing")
    _text(summary["plan_id"], f"{where}.plan_id")
    start = _timestamp(summary["bucket_start"], f"{where}.bucket_start")
    if _timestamp(summary["bucket_end"], f"{where}.bucket_end") <= start:
        raise Reject(422, f"{where}.bucket_end: must be after bucket_start")
    if not _is_int(summary["revision"]) or summary["revision"] < 1:
        raise Reject(422, f"{where}.revision: must be an integer >= 1")
    _ints(summary["calls"], f"{where}.calls", minimum=0)
    _numbers(summary["seconds"], f"{where}.seconds")
    _modules(summary["modules"], f"{where}.modules")
    _decimal(summary["amount"], f"{where}.amount")
    if not isinstance(summary["currency"], str) or not _CURRENCY.fullmatch(summary["currency"]):
        raise Reject(422, f"{where}.currency: must be 3 upper-case letters (ISO 4217)")
    if not _is_int(summary["call_count"]) or summary["call_count"] < 0:
        raise Reject(422, f"{where}.call_count: must be an integer >= 0")
    if not isinstance(summary["calls_sha256"], str) or not _SHA256.fullmatch(
            summary["calls_sha256"]):
        raise Reject(422, f"{where}.calls_sha256: must be 64 lower-case hex digits")
    return summary


def check_delta(delta: object, where: str) -> dict[str, Any]:
    """A CloudEvent's `data.delta`, or Reject(422). Its counts may be negative (a change)."""
    delta = _object(delta, where)
    for name in ("calls", "seconds", "modules", "amount", "call_count"):
        if name not in delta:
            raise Reject(422, f"{where}.{name}: missing")
    _ints(delta["calls"], f"{where}.calls", minimum=None)
    _numbers(delta["seconds"], f"{where}.seconds", required=("bot", "billable"))
    _modules(delta["modules"], f"{where}.modules")
    _decimal(delta["amount"], f"{where}.amount")
    if not _is_int(delta["call_count"]):
        raise Reject(422, f"{where}.call_count: must be an integer")
    return delta


def parse_json_batch(document: object) -> list[Item]:
    """Items of an `application/json` body: `{"agent_id": ..., "summaries": [...]}`."""
    document = _object(document, "body")
    agent_id = _text(document.get("agent_id"), "agent_id")
    summaries = document.get("summaries")
    if not isinstance(summaries, list) or not summaries:
        raise Reject(422, "summaries: must be a non-empty array")
    items = []
    for index, raw in enumerate(summaries):
        summary = check_summary(raw, f"summaries[{index}]")
        items.append(Item(idempotency_key(agent_id, summary["plan_id"], summary["bucket_start"],
                                          summary["revision"]), agent_id, summary))
    return items


def parse_cloudevents_batch(document: object) -> list[Item]:
    """Items of an `application/cloudevents-batch+json` body: an array of CloudEvents 1.0."""
    if not isinstance(document, list) or not document:
        raise Reject(422, "body: must be a non-empty array of CloudEvents")
    items = []
    for index, raw in enumerate(document):
        where = f"events[{index}]"
        event = _object(raw, where)
        if event.get("specversion") != "1.0":
            raise Reject(422, f'{where}.specversion: must be "1.0"')
        if event.get("type") != EVENT_TYPE:
            raise Reject(422, f'{where}.type: must be "{EVENT_TYPE}"')
        source = _text(event.get("source"), f"{where}.source")
        agent_id = source.removeprefix(SOURCE_PREFIX)
        if not source.startswith(SOURCE_PREFIX) or not agent_id:
            raise Reject(422, f'{where}.source: must be "{SOURCE_PREFIX}<agent_id>"')
        event_id = _text(event.get("id"), f"{where}.id")
        data = _object(event.get("data"), f"{where}.data")
        delta = check_delta(data.get("delta"), f"{where}.data.delta")
        summary = check_summary({k: v for k, v in data.items() if k != "delta"}, f"{where}.data")
        if event.get("subject") != summary["plan_id"]:
            raise Reject(422, f"{where}.subject: must equal data.plan_id")
        if event.get("time") != summary["bucket_start"]:
            raise Reject(422, f"{where}.time: must equal data.bucket_start")
        key = idempotency_key(agent_id, summary["plan_id"], summary["bucket_start"],
                              summary["revision"])
        if event_id != key:
            raise Reject(422, f"{where}.id: is not the idempotency key of "
                              "agent_id|plan_id|bucket_start|revision")
        items.append(Item(key, agent_id, summary, delta))
    return items


def parse_body(content_type: str, body: bytes, header_key: str | None) -> list[Item]:
    """The request's validated items: 415, 400 (not UTF-8 JSON, wrong Idempotency-Key) or 422."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in (JSON_TYPE, CLOUDEVENTS_TYPE):
        raise Reject(415, f"unsupported Content-Type {media_type or '(none)'!r}: use "
                          f"{JSON_TYPE} or {CLOUDEVENTS_TYPE}")
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise Reject(400, f"body is not UTF-8 (byte {exc.start + 1})") from None
    except ValueError as exc:
        raise Reject(400, f"body is not JSON: {exc}") from None
    if media_type == JSON_TYPE:
        items = parse_json_batch(document)
    else:
        items = parse_cloudevents_batch(document)
    if header_key != batch_key(item.key for item in items):
        raise Reject(400, "Idempotency-Key header does not match the batch's summaries "
                          "(batch_key of their keys, in body order)")
    return items


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------------------------------------
# storage


def _dec(value: object) -> Decimal:
    """A JSON number as an exact Decimal (a float by its shortest repr)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(cast(int, value))


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Store:
    """The receiver's SQLite database. `apply` runs one request's items in one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(self.connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=30)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def transaction(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def is_replay(db: sqlite3.Connection, stamp: int, signed: str) -> bool:
        row = db.execute("SELECT 1 FROM processed_requests WHERE timestamp = ? AND signature = ?",
                         (stamp, signed)).fetchone()
        return row is not None

    @staticmethod
    def mark_processed(db: sqlite3.Connection, stamp: int, signed: str, now: float,
                       max_skew: float) -> None:
        db.execute("DELETE FROM processed_requests WHERE timestamp < ?", (now - max_skew,))
        db.execute("INSERT INTO processed_requests (timestamp, signature) VALUES (?, ?)",
                   (stamp, signed))

    def apply(self, db: sqlite3.Connection, items: list[Item], now: float) -> list[dict[str, str]]:
        """Record each new key once, keep the highest revision, add CloudEvents deltas."""
        results = []
        for item in items:
            if db.execute("SELECT 1 FROM deliveries WHERE key = ?", (item.key,)).fetchone():
                results.append({"key": item.key, "status": "duplicate"})
                continue
            body = dict(item.summary, delta=item.delta) if item.delta is not None else item.summary
            db.execute("INSERT INTO deliveries (key, agent_id, plan_id, bucket_start, revision, "
                       "body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (item.key, item.agent_id, item.plan_id, item.bucket_start, item.revision,
                        _dumps(body), now))
            row = db.execute("SELECT revision FROM current WHERE agent_id = ? AND plan_id = ? AND "
                             "bucket_start = ?",
                             (item.agent_id, item.plan_id, item.bucket_start)).fetchone()
            if row is not None and row["revision"] > item.revision:
                status = "superseded"
            else:
                status = "accepted"
                db.execute("INSERT OR REPLACE INTO current (agent_id, plan_id, bucket_start, "
                           "revision, body) VALUES (?, ?, ?, ?, ?)",
                           (item.agent_id, item.plan_id, item.bucket_start, item.revision,
                            _dumps(item.summary)))
            if item.delta is not None:
                self._add_delta(db, item, item.delta)
            results.append({"key": item.key, "status": status})
        return results

    def _add_delta(self, db: sqlite3.Connection, item: Item, delta: dict[str, Any]) -> None:
        where = (item.agent_id, item.plan_id)
        row = db.execute("SELECT * FROM totals WHERE agent_id = ? AND plan_id = ?",
                         where).fetchone()
        currency = item.summary["currency"]
        if row is None:
            calls: dict[str, int] = {}
            modules: dict[str, dict[str, str]] = {}
            bot = billable = amount = Decimal(0)
            call_count = 0
        else:
            if row["currency"] != currency:
                raise Reject(422, f"{item.key}: currency {currency} differs from the "
                                  f"{row['currency']} already summed for this agent and plan")
            calls, modules = json.loads(row["calls"]), json.loads(row["modules"])
            bot, billable = Decimal(row["seconds_bot"]), Decimal(row["seconds_billable"])
            amount, call_count = Decimal(row["amount"]), row["call_count"]
        for name, count in delta["calls"].items():
            calls[name] = calls.get(name, 0) + count
        for name, module in delta["modules"].items():
            total = modules.setdefault(name, {"quantity": "0", "unit": module["unit"]})
            if total["unit"] != module["unit"]:
                raise Reject(422, f"{item.key}: module {name} unit {module['unit']!r} differs "
                                  f"from the {total['unit']!r} already summed")
            total["quantity"] = str(Decimal(total["quantity"]) + _dec(module["quantity"]))
        bot += _dec(delta["seconds"]["bot"])
        billable += _dec(delta["seconds"]["billable"])
        amount += Decimal(delta["amount"])
        call_count += delta["call_count"]
        db.execute("INSERT OR REPLACE INTO totals (agent_id, plan_id, currency, calls, "
                   "seconds_bot, seconds_billable, modules, amount, call_count) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (*where, currency, _dumps(calls), str(bot), str(billable), _dumps(modules),
                    str(amount), call_count))


# ---------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its Receiver and can close its open connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.receiver = receiver
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One connection: each request is handed to the Receiver."""

    protocol_version = "HTTP/1.1"
    server_version = "botmeter-receiver"
    timeout = 60  # an idle keep-alive connection is closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, Nagle holds the body back for
        # the client's delayed ACK (40 ms a request)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self.server.receiver._handle(self)

    def do_GET(self) -> None:
        self.server.receiver._handle(self)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def read_body(self) -> bytes | None:
        """The body, None when larger than MAX_BODY_BYTES (then not read). Reject 411/400."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise Reject(411, "send the body with Content-Length (no chunked transfer encoding)")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise Reject(411, "Content-Length required")
        if not length_text.strip().isdigit():
            self.close_connection = True
            raise Reject(400, "Content-Length is not a number")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread
            return None
        return self.rfile.read(length)

    def answer(self, status: int, document: object, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(document).encode("utf-8")
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def reset(self) -> None:
        """Close the connection with an RST (SO_LINGER 1, 0), answering nothing."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the socket closes for real once its file objects are closed
        self.connection.close()


class Receiver:
    """The reference receiver: `with Receiver(db, token, secret) as r: ... r.url ...`.

    `token`, `secret`, `max_skew` and `down` are plain attributes a test may change while it runs.
    """

    def __init__(self, db_path: Path | str, token: str, secret: bytes, *, host: str = "127.0.0.1",
                 port: int = 0, clock: Callable[[], float] = time.time,
                 max_skew: float = MAX_SKEW_SECONDS, tls: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.tls = tls
        self.secret = secret
        self.host = host
        self.clock = clock
        self.max_skew = max_skew
        self.down = False
        self._requested_port = port
        self._store = Store(Path(db_path))
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._queue: deque[_Misbehaviour] = deque()
        self._requests = 0
        self._statuses: list[int] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> Receiver:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("receiver already started")
        self._stopping.clear()
        self._db = self._store.connect()
        try:
            self._server = _Server((self.host, self._requested_port), self)
            if self.tls is not None:  # the handshake happens in the connection's own thread
                self._server.socket = self.tls.wrap_socket(
                    self._server.socket, server_side=True, do_handshake_on_connect=False)
        except BaseException:
            self._db.close()
            self._db = None
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"botmeter-receiver:{self.port}", daemon=True)
        self._thread.start()
        log.info("receiver listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, close open connections and the database; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join()
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (RuntimeError before start)."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """`http://HOST:PORT` (https with TLS), the base URL to give the agent."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    # -- misbehaving on demand ----------------------------------------------------------------

    def misbehave(self, kind: str, times: int = 1, **params: Any) -> None:
        """Apply `kind` to the next `times` POST requests (after those already queued):
        "status" (code=, retry_after=, body= the error text), "slow" (seconds=), "reset",
        "reset_after_commit"."""
        allowed = {"status": {"code", "retry_after", "body"}, "slow": {"seconds"}, "reset": set(),
                   "reset_after_commit": set()}
        if kind not in allowed:
            raise ValueError(f"unknown misbehaviour {kind!r}: one of {', '.join(MISBEHAVIOURS)}")
        if unknown := set(params) - allowed[kind]:
            raise ValueError(f"{kind}: unknown parameter(s) {', '.join(sorted(unknown))}")
        if kind == "status" and not (_is_int(params.get("code")) and
                                     100 <= params["code"] <= 599):
            raise ValueError("status: code= must be an HTTP status (100-599)")
        if kind == "slow" and not (_is_number(params.get("seconds")) and params["seconds"] >= 0):
            raise ValueError("slow: seconds= must be a number >= 0")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._state_lock:
            self._queue.extend(_Misbehaviour(kind, dict(params)) for _ in range(times))

    # -- queries for tests ----------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """POST requests received, misbehaved ones included."""
        with self._state_lock:
            return self._requests

    @property
    def statuses(self) -> list[int]:
        """HTTP statuses answered, in order; 0 for a connection reset."""
        with self._state_lock:
            return list(self._statuses)

    def effects(self) -> dict[str, int]:
        """Idempotency key -> how many times it had an effect (counted from `deliveries`)."""
        with closing(self._store.connect()) as db:
            rows = db.execute("SELECT key, COUNT(*) FROM deliveries GROUP BY key").fetchall()
        return {row[0]: row[1] for row in rows}

    def deliveries(self) -> list[dict[str, Any]]:
        """Every effect in arrival order: key, agent_id, plan_id, bucket_start, revision,
        body (the summary; for CloudEvents with its `delta`), received_at."""
        with closing(self._store.connect()) as db:
            rows = db.execute("SELECT * FROM deliveries ORDER BY rowid").fetchall()
        return [dict(row, body=json.loads(row["body"])) for row in rows]

    def current(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """(agent_id, plan_id, bucket_start) -> the summary with the highest revision."""
        with closing(self._store.connect()) as db:
            rows = db.execute("SELECT * FROM current").fetchall()
        return {(row["agent_id"], row["plan_id"], row["bucket_start"]): json.loads(row["body"])
                for row in rows}

    def totals(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(agent_id, plan_id) -> the sums of the CloudEvents' deltas: calls, seconds (bot,
        billable), modules (quantity, unit), amount (Decimal), call_count, currency."""
        with closing(self._store.connect()) as db:
            rows = db.execute("SELECT * FROM totals").fetchall()
        return {(row["agent_id"], row["plan_id"]): {
            "calls": json.loads(row["calls"]),
            "seconds": {"bot": float(row["seconds_bot"]),
                        "billable": float(row["seconds_billable"])},
            "modules": {name: {"quantity": float(module["quantity"]), "unit": module["unit"]}
                        for name, module in json.loads(row["modules"]).items()},
            "amount": Decimal(row["amount"]),
            "call_count": row["call_count"],
            "currency": row["currency"],
        } for row in rows}

    # -- one request ----------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        """Answer one request (on its handler thread)."""
        is_post = handler.command == "POST"
        with self._state_lock:
            self._requests += is_post
        reset_after_commit = False
        try:
            body = handler.read_body() if handler.command in ("POST", "PUT", "PATCH") else b""
            if self.down:
                raise Reject(503, "receiver is down")
            if handler.path.split("?", 1)[0] != ENDPOINT:
                raise Reject(404, f"no such endpoint: use POST {ENDPOINT}")
            if not is_post:
                raise Reject(405, f"method {handler.command} not allowed: use POST")
            misbehaviour = self._next_misbehaviour()
            if misbehaviour is not None:
                if misbehaviour.kind == "status":
                    retry_after = misbehaviour.params.get("retry_after")
                    self._answer(handler, misbehaviour.params["code"],
                                 {"error": misbehaviour.params.get("body", "misbehaving on demand")},
                                 {"Retry-After": str(retry_after)} if retry_after is not None
                                 else None)
                    return
                if misbehaviour.kind == "reset":
                    self._reset(handler)
                    return
                if misbehaviour.kind == "slow":
                    self._stopping.wait(misbehaviour.params["seconds"])
                reset_after_commit = misbehaviour.kind == "reset_after_commit"
            results = self._process(handler, body)
        except Reject as reject:
            headers = {"WWW-Authenticate": "Bearer"} if reject.status == 401 else None
            if reject.status == 405:
                headers = {"Allow": "POST"}
            self._answer(handler, reject.status, {"error": reject.message}, headers)
            return
        if reset_after_commit:
            self._reset(handler)
        else:
            self._answer(handler, 200, {"results": results})

    def _next_misbehaviour(self) -> _Misbehaviour | None:
        with self._state_lock:
            return self._queue.popleft() if self._queue else None

    def _process(self, handler: _Handler, body: bytes | None) -> list[dict[str, str]]:
        """Verify, validate and store one POST; the results, or Reject."""
        given = handler.headers.get("Authorization", "").encode("latin-1", "replace")
        expected = b"Bearer " + self.token.encode("utf-8")
        if not hmac.compare_digest(given, expected):
            raise Reject(401, "missing or wrong bearer token")
        if body is None:
            raise Reject(413, f"body larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        now = self.clock()
        signed = handler.headers.get("X-Botmeter-Signature")
        try:
            stamp = verify(self.secret, handler.headers.get("X-Botmeter-Timestamp"), signed, body,
                           now, self.max_skew)
        except SignatureError as exc:
            raise Reject(401, str(exc)) from None
        assert signed is not None  # verify refuses a missing signature
        with self._db_lock:
            if self._db is None:
                raise Reject(503, "receiver is stopping")
            if self._store.is_replay(self._db, stamp, signed):
                raise Reject(409, "replayed request: already processed")
            items = parse_body(handler.headers.get("Content-Type", ""), body,
                               handler.headers.get("Idempotency-Key"))
            with self._store.transaction(self._db) as db:
                results = self._store.apply(db, items, now)
                self._store.mark_processed(db, stamp, signed, now, self.max_skew)
        log.info("stored %d summaries: %s", len(results),
                 ", ".join(f"{r['key'][:12]} {r['status']}" for r in results))
        return results

    def _answer(self, handler: _Handler, status: int, document: object,
                headers: dict[str, str] | None = None) -> None:
        with self._state_lock:
            self._statuses.append(status)
        handler.answer(status, document, headers)

    def _reset(self, handler: _Handler) -> None:
        with self._state_lock:
            self._statuses.append(0)
        log.info("resetting the connection on demand")
        handler.reset()


# ---------------------------------------------------------------------------------------------
# command line


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def server_tls(cert: Path | None, key: Path | None,
               client_ca: Path | None = None) -> ssl.SSLContext | None:
    """A server TLS context (None without a certificate); with `client_ca`, clients must
    present a certificate it signed."""
    if cert is None:
        if key is not None or client_ca is not None:
            raise ValueError("--tls-key and --client-ca need --tls-cert")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def main(argv: list[str] | None = None) -> int:
    """`botmeter-receiver`: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="botmeter-receiver",
        description="Reference receiver of the botmeter uplink (POST /v1/usage/summaries).")
    parser.add_argument("--listen", type=_listen_address, default=("127.0.0.1", 8080),
                        metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    parser.add_argument("--db", type=Path, default=Path("receiver.db"), metavar="PATH",
                        help="SQLite database file (default receiver.db)")
    parser.add_argument("--token-file", type=Path, required=True, metavar="PATH",
                        help="file holding the bearer token (mode 0600)")
    parser.add_argument("--secret-file", type=Path, required=True, metavar="PATH",
                        help="file holding the HMAC secret (mode 0600)")
    parser.add_argument("--max-skew", type=_positive, default=float(MAX_SKEW_SECONDS),
                        metavar="SECONDS",
                        help=f"largest accepted clock difference (default {MAX_SKEW_SECONDS})")
    parser.add_argument("--tls-cert", type=Path, metavar="PATH",
                        help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", type=Path, metavar="PATH", help="its private key (PEM)")
    parser.add_argument("--client-ca", type=Path, metavar="PATH",
                        help="require client certificates signed by this CA (mutual TLS)")
    args = parser.parse_args(argv)
    try:
        tls = server_tls(args.tls_cert, args.tls_key, args.client_ca)
    except (OSError, ssl.SSLError, ValueError) as exc:
        print(f"botmeter-receiver: TLS: {exc}", file=sys.stderr)
        return 2
    try:
        token = read_secret_file(args.token_file)
        secret = read_secret_file(args.secret_file).encode("utf-8")
    except ConfigError as exc:
        print(f"botmeter-receiver: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    host, port = args.listen
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        receiver = Receiver(args.db, token, secret, host=host, port=port, max_skew=args.max_skew,
                            tls=tls)
        receiver.start()
    except (OSError, sqlite3.Error) as exc:
        print(f"botmeter-receiver: cannot serve on {host}:{port} with {args.db}: {exc}",
              file=sys.stderr)
        return 1
    print(f"botmeter-receiver: listening on {receiver.url}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
