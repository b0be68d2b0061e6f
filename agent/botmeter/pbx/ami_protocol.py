"""panoramisk's AMI protocol with a byte-safe, bounded frame parser.

panoramisk 1.4 decodes every TCP read on its own with `errors='ignore'`, so a
UTF-8 character split across two reads vanishes. This protocol keeps
panoramisk's action/response matching (`send`, `handle_message`) and replaces
how bytes become messages.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from .ami_frames import MAX_FRAME_BYTES, DiscardReport, FrameParser, event_name, parse_frame
from .events import PbxEvent
from .stream import BadValues, decode_event
from .traffic import AmiTraffic

log = structlog.get_logger(__name__)

_ACTION_EVENTS = frozenset({b"CoreShowChannelsComplete"})


class BotmeterAmiProtocol(AMIProtocol):
    """One AMI connection: events to `on_event`, responses to panoramisk's action futures."""

    def __init__(self, on_event: Callable[[PbxEvent], None],
                 clock: Callable[[], float] = time.time,
                 bad_values: BadValues | None = None,
                 traffic: AmiTraffic | None = None) -> None:
        self._on_event = on_event
        self._clock = clock
        self.bad_values = bad_values or BadValues()
        self.traffic = traffic or AmiTraffic()
        self.parser = FrameParser()
        self.discards = DiscardReport()
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.encoding = "utf-8"
        self.queue: deque[Any] = deque()

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        for raw in parser.feed(data):
            name = event_name(raw)
            if name is None:
                if not raw.startswith(b"Response: "):
                    parser.note_junk(raw)
                    continue
                message = Message.from_line(raw.decode("utf-8", "replace"))
                if message is not None:
                    self.handle_message(message)
                continue
            self.traffic.saw(name)
            if name == b"Shutdown":
                self._lose("Asterisk is shutting down")
                return
            event = decode_event(raw, self._clock(), parser.note_bad, self.bad_values)
            if event is not None:
                self._on_event(event)
            if name in _ACTION_EVENTS:
                self.handle_message(Message(parse_frame(raw)))
        self._report_discards()

    def _report_discards(self, final: bool = False) -> None:
        """One log line about discarded input, rate-limited (see `DiscardReport`)."""
        summary = self.discards.due(self.parser, time.monotonic(), final=final)
        if summary is not None:
            log.warning("ami input discarded", max_frame_bytes=MAX_FRAME_BYTES, **summary)

    def handle_message(self, message: Message) -> None:
        response = self.responses.get(message.id)
        if response is None and message.action_id:
            response = self.responses.get(message.action_id)
        if response is not None and response.add_message(message):
            self.responses.pop(response.id, None)
            if response.action_id:
                self.responses.pop(response.action_id, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._report_discards(final=True)
        self._lose(f"connection lost: {exc}" if exc else "connection closed by Asterisk")

    def _lose(self, why: str) -> None:
        if not self.lost.done():
            self.lost.set_result(why)
        self.close()

    def close(self) -> None:
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(ConnectionError("AMI connection closed"))
        self.responses.clear()
        if not self.closed:
            self.closed: bool = True
            self.transport.close()
