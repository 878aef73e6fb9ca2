"""The WebSocket protocol we run uvicorn with: every message arrives, in order,
and reading pauses when the app falls behind (a real uvicorn server on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets

from callagent.config import Settings
from callagent.serving import HIGH_WATER, media_ws_protocol, uvicorn_options
from tests.e2e.conftest import free_port


class _SlowReader:
    """An ASGI app that accepts, waits for ``go``, then reads every message."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.received: list[str] = []
        self.done = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await self.go.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            self.received.append(message["text"])
        self.done.set()


async def _serve(app: _SlowReader) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    port = free_port()
    options = uvicorn_options(Settings())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def _ws_protocol(server: uvicorn.Server) -> Any:
    [protocol] = [c for c in server.server_state.connections if hasattr(c, "read_paused")]
    return protocol


def test_our_protocol_is_uvicorns_sansio_protocol() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    protocol = media_ws_protocol()
    assert isinstance(protocol, type) and issubclass(protocol, WebSocketsSansIOProtocol)


async def test_every_message_arrives_in_order_and_reading_pauses_only_when_behind() -> None:
    app = _SlowReader()
    messages = [f'{{"event":"media","sequenceNumber":"{i}"}}' for i in range(600)]
    async for server, port in _serve(app):
        async with websockets.connect(f"ws://127.0.0.1:{port}/twilio/media") as ws:
            protocol = _ws_protocol(server)
            for text in messages[:HIGH_WATER - 1]:
                await ws.send(text)
            for _ in range(200):  # wait until the server has read them
                if protocol.queue.qsize() == HIGH_WATER - 1:
                    break
                await asyncio.sleep(0.01)
            # Below the high-water mark the socket is still being read.
            assert protocol.queue.qsize() == HIGH_WATER - 1
            assert protocol.read_paused is False
            for text in messages[HIGH_WATER - 1:]:
                await ws.send(text)
            for _ in range(200):
                if protocol.read_paused:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            # The app is behind: reading has stopped, and the queue is bounded
            # (one read's worth past the mark), not the whole backlog.
            assert protocol.read_paused is True
            assert HIGH_WATER <= protocol.queue.qsize() < len(messages)
            app.go.set()
            for _ in range(300):
                if len(app.received) == len(messages):
                    break
                await asyncio.sleep(0.01)
            assert protocol.read_paused is False
        await asyncio.wait_for(app.done.wait(), timeout=5)
    assert app.received == messages
