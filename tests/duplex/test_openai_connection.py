"""The OpenAI Realtime connection (duplex/openai_connection.py) alone, on in-memory sockets.

The engine's side is played by callbacks; whole calls through a real
/v1/realtime are in test_openai_realtime_reconnect.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import cast

from websockets.asyncio.client import ClientConnection

from callagent.config import ProvidersSettings
from callagent.engines.base import EndCall, EngineEvent, Metric
from callagent.engines.duplex.openai_connection import (
    MAX_BACKLOG_MS,
    ProviderFailed,
    RealtimeConnection,
)
from callagent.engines.providers.openai_realtime_wire import HistoryTurn, ServerEvent, SessionConfig

CREATED = json.dumps({"type": "session.created", "session": {}})


class FakeSocket:
    """What the connection uses of a websockets client connection."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = ""

    async def recv(self) -> str:
        return CREATED

    async def send(self, text: str) -> None:
        self.sent.append(text)

    def __aiter__(self) -> FakeSocket:
        return self

    async def __anext__(self) -> str:
        item = await self._incoming.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def close(self, code: int, reason: str = "") -> None:
        """The far end closes (or the network drops) the connection."""
        self.close_code, self.close_reason = code, reason
        self._incoming.put_nowait(None)

    def types(self) -> list[str]:
        return [json.loads(t)["type"] if t.startswith("{") else t for t in self.sent]


class Harness:
    """A connection with the engine's callbacks recorded."""

    def __init__(self, **settings: object) -> None:
        self.sockets: list[FakeSocket] = []
        self.events: list[ServerEvent] = []
        self.emitted: list[EngineEvent] = []
        self.failed: list[ProviderFailed] = []
        self.resumed = asyncio.Event()
        self.on_lost: Callable[[], None] = lambda: None
        self.conn = RealtimeConnection(
            dataclasses.replace(ProvidersSettings(), **settings),  # type: ignore[arg-type]
            SessionConfig(instructions="be brief"),
            api_key="k",
            connect=self.connect,
            on_event=self.events.append,
            quiet=lambda: True,
            on_lost=lambda: self.on_lost(),
            on_resumed=self.resumed.set,
            emit=self.emitted.append,
            fail=self.failed.append,
        )

    def connect(
        self, url: str, headers: dict[str, str]
    ) -> AbstractAsyncContextManager[ClientConnection]:
        @contextlib.asynccontextmanager
        async def opened() -> AsyncIterator[ClientConnection]:
            ws = FakeSocket()
            self.sockets.append(ws)
            yield cast(ClientConnection, ws)

        return opened()

    def metrics(self) -> dict[str, float]:
        return {e.name: e.value for e in self.emitted if isinstance(e, Metric)}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_first_session_gets_the_settings_and_its_first_event_goes_to_the_engine() -> None:
    h = Harness()
    await h.conn.start()
    await settle()
    assert h.conn.session == 1 and len(h.events) == 1
    assert h.sockets[0].types() == ["session.update"]
    await h.conn.close()


async def test_after_a_drop_the_new_session_is_seeded_before_the_queued_audio() -> None:
    h = Harness()
    await h.conn.start()
    h.conn.history.append(HistoryTurn("user", "where is my order"))

    def lost() -> None:  # the engine's moment: audio and events while no session is up
        assert h.conn.reconnecting and h.conn.session == 2
        h.conn.send("control event for the old session")
        for i in range(20):
            h.conn.send_audio(f"audio{i}", 1000.0)

    h.on_lost = lost
    h.sockets[0].close(1001)
    await asyncio.wait_for(h.resumed.wait(), 5)
    await settle()
    new = h.sockets[1].types()
    kept = int(MAX_BACKLOG_MS // 1000)
    assert new[0] == "session.update" and new[-kept:] == [f"audio{i}" for i in range(20 - kept, 20)]
    assert "conversation.item.create" in new[1:-kept]  # the transcript, re-seeded
    assert "control event for the old session" not in new
    assert h.conn.reconnects == 1 and h.conn.renewals == 0 and not h.conn.reconnecting
    assert h.metrics() == {"provider_reconnect_going_away": 1.0,
                           "provider_reconnect_backlog_ms": MAX_BACKLOG_MS,
                           "provider_reconnect_dropped_ms": 20_000.0 - MAX_BACKLOG_MS}  # fmt: skip
    await h.conn.close()


async def test_a_connection_lost_once_too_often_fails() -> None:
    h = Harness(openai_max_reconnects=1)
    await h.conn.start()
    h.sockets[0].close(1006)
    await asyncio.wait_for(h.resumed.wait(), 5)
    h.sockets[1].close(1006)
    for _ in range(100):
        if h.failed:
            break
        await asyncio.sleep(0.01)
    assert [str(e) for e in h.failed] == ["provider connection lost (lost) after 1 reconnects"]
    await h.conn.close()


async def test_a_normal_close_by_the_far_end_ends_the_call() -> None:
    h = Harness()
    await h.conn.start()
    h.sockets[0].close(1000, "bye")
    await settle()
    assert [e for e in h.emitted if isinstance(e, EndCall)] == [EndCall("bye")]
    assert len(h.sockets) == 1 and not h.failed
    await h.conn.close()


async def test_a_tool_result_for_a_session_that_is_gone_is_carried_as_a_system_message() -> None:
    h = Harness()
    await h.conn.start()
    assert not h.conn.tool_result("c1", 1, "order_status", '{"id": 7}', '{"status": "shipped"}')
    assert h.conn.tool_result("c0", 0, "order_status", '{"id": 8}', '{"status": "lost"}')
    await settle()
    sent = [json.loads(t) for t in h.sockets[0].sent[1:]]
    assert sent[0]["item"]["type"] == "function_call_output" and sent[0]["item"]["call_id"] == "c1"
    assert sent[1]["item"]["role"] == "system" and "lost" in json.dumps(sent[1])
    assert [t.role for t in h.conn.history] == ["system", "system"]  # both re-seeded later
    await h.conn.close()
