"""A minimal scripted AMI peer for tests that need Asterisk to misbehave in a precise way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

AfterSnapshot = Callable[[asyncio.StreamWriter], Awaitable[None]]


def _fields(frame: bytes) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in frame.decode().split("\r\n") if ": " in line)


async def fake_ami(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                   after_snapshot: AfterSnapshot | None = None, answer_pings: bool = True) -> None:
    """Banner; any Challenge and Login accepted; an empty CoreShowChannels list, after which
    `after_snapshot(writer)` runs (e.g. streams a capture); Pings answered unless told not to.
    Serves until the client leaves."""
    writer.write(b"Asterisk Call Manager/9.0.0\r\n")
    buf = b""
    try:
        while data := await reader.read(4096):
            buf += data
            while b"\r\n\r\n" in buf:
                frame, buf = buf.split(b"\r\n\r\n", 1)
                fields = _fields(frame)
                action, aid = fields.get("Action"), fields.get("ActionID", "")
                if action == "Ping" and not answer_pings:
                    continue
                extra = {"Challenge": "Challenge: 12345\r\n",
                         "CoreShowChannels": "EventList: start\r\n"}.get(action or "", "")
                writer.write(f"Response: Success\r\nActionID: {aid}\r\n{extra}\r\n".encode())
                if action == "CoreShowChannels":
                    writer.write(f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n"
                                 "EventList: Complete\r\nListItems: 0\r\n\r\n".encode())
                    if after_snapshot is not None:
                        await after_snapshot(writer)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_fake_ami(**options: object) -> tuple[asyncio.Server, int, list[int]]:
    """A listening fake AMI server: (server, port, a list that grows by one per connection)."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await fake_ami(reader, writer, **options)  # type: ignore[arg-type]

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections
