"""A test-only WebSocket relay in front of our /v1/realtime, with the hooks a vendor's
connection problems need: it records every client event per session, and it can
close a session with a code (1001 at the session cap), hold new sessions at the
handshake, refuse them (503), or drop each new one right after its session.update.

Production code has no such hooks: the backend is aimed at the relay with its
ordinary `openai_base_url`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


@dataclass
class ProxySession:
    received: list[dict[str, Any]] = field(default_factory=list)  # client events, in order
    client: ServerConnection | None = None
    close_code: int | None = None  # how the relay closed it towards the client
    client_close_code: int | None = None  # how the client's side ended
    updated: asyncio.Event = field(default_factory=asyncio.Event)  # session.update seen

    def types(self) -> list[str]:
        return [e["type"] for e in self.received]

    def audio_ms(self) -> float:
        """Caller audio appended on this session (audio/pcmu: 8 bytes per ms)."""
        return sum(len(base64.b64decode(e["audio"])) / 8.0 for e in self.received
                   if e["type"] == "input_audio_buffer.append")  # fmt: skip

    def items(self) -> list[dict[str, Any]]:
        return [e["item"] for e in self.received if e["type"] == "conversation.item.create"]


class RealtimeProxy:
    def __init__(self, upstream_http: str) -> None:
        self._upstream = upstream_http.replace("http://", "ws://", 1).rstrip("/")
        self.sessions: list[ProxySession] = []
        self.hold: asyncio.Event | None = None  # new sessions wait at the handshake until set
        self.refuse = False  # new sessions get HTTP 503
        self.drop_after_update = False  # new sessions are closed (1001) after session.update
        self._server: Server | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def __aenter__(self) -> RealtimeProxy:
        self._server = await serve(self._relay, "127.0.0.1", 0, process_request=self._gate,
                                   max_size=16 * 1024 * 1024, close_timeout=1.0)  # fmt: skip
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def drop(self, code: int = 1001, reason: str = "going away") -> None:
        """Close the live session towards the client, as a vendor at its session cap does."""
        session = self.sessions[-1]
        assert session.client is not None
        session.close_code = code
        await session.client.close(code, reason)

    async def _gate(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse:
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable\n")
        return None

    async def _relay(self, client: ServerConnection) -> None:
        assert client.request is not None
        session = ProxySession(client=client)
        self.sessions.append(session)
        headers = {"Authorization": client.request.headers.get("Authorization", "")}
        async with websockets.connect(self._upstream + client.request.path,
                                      additional_headers=headers, close_timeout=1.0,
                                      max_size=16 * 1024 * 1024) as up:  # fmt: skip
            tasks = [asyncio.create_task(self._up(client, up, session)),
                     asyncio.create_task(self._down(client, up, session))]  # fmt: skip
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _up(self, client: ServerConnection, up: ClientConnection,
                  session: ProxySession) -> None:  # fmt: skip
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in client:
                event = json.loads(message)
                session.received.append(event)
                await up.send(message)
                if event.get("type") == "session.update":
                    session.updated.set()
                    if self.drop_after_update:
                        session.close_code = 1001
                        await client.close(1001, "going away")
        session.client_close_code = client.close_code

    async def _down(self, client: ServerConnection, up: ClientConnection,
                    session: ProxySession) -> None:  # fmt: skip
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in up:
                await client.send(message)
            session.close_code = up.close_code
            await client.close(up.close_code or 1000, up.close_reason or "")
