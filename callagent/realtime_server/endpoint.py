"""The /v1/realtime WebSocket shell: authenticate, then read, feed, drain and write.

`?model=<profile>` names the agent profile served (default
`realtime.default_profile`); `engines.profile_engines` builds its engine
(loaded lazily: the speech stack is imported at the first session).

The engine starts (and speaks its opening) once the client has set the
session up: at its first event other than `session.update` and
`conversation.item.create`, or `SETUP_GRACE_S` after its last one. A
transcript re-seeded in that burst is then the engine's history before it
says a word, so a re-seeded session does not greet again. Client events are
never held back meanwhile (audio reaching an engine still loading is dropped
by it, as before).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from starlette.websockets import WebSocket, WebSocketDisconnect

from callagent.config import Settings
from callagent.engines.base import CallContext, Engine
from callagent.realtime_server.conversation import TextConversation
from callagent.realtime_server.session import RealtimeSession, ToolDelegate, is_setup_event

__all__ = ["EngineBuilder", "realtime_endpoint", "serve"]

log = logging.getLogger(__name__)

SETUP_GRACE_S = 0.3

# (profile name, tool delegate) -> engine, or None for an unknown profile.
EngineBuilder = Callable[[str, ToolDelegate], Engine | None]


def _token(ws: WebSocket) -> str:
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for proto in ws.headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith("openai-insecure-api-key."):
            return proto.removeprefix("openai-insecure-api-key.")
    return ""


def realtime_endpoint(
    settings: Settings, engines: EngineBuilder | None = None
) -> Callable[[WebSocket], object]:
    built: list[EngineBuilder] = [engines] if engines else []

    async def endpoint(ws: WebSocket) -> None:
        expected = settings.realtime.api_token
        if not settings.realtime.enabled or not expected:
            log.warning("/v1/realtime refused: realtime.enabled is off or "
                        "CALLAGENT_REALTIME_API_TOKEN is not set")  # fmt: skip
            await ws.close(code=1008)
            return
        if not hmac.compare_digest(_token(ws).encode(), expected.encode()):
            await ws.close(code=1008)
            return
        protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
        await ws.accept(subprotocol="realtime" if "realtime" in protocols else None)
        if not built:
            from callagent.realtime_server.engines import profile_engines

            built.append(profile_engines())
        name = ws.query_params.get("model") or settings.realtime.default_profile
        delegate = ToolDelegate()
        engine = built[0](name, delegate)
        if engine is None:
            await ws.send_text(json.dumps({"type": "error", "event_id": "event_0", "error": {
                "type": "invalid_request_error", "code": "model_not_found", "param": "model",
                "message": f"The model {name!r} does not exist: expected an agent profile with "
                           "a flow", "event_id": None}}))  # fmt: skip
            await ws.close(code=1008)
            return
        await serve(ws, engine, name, delegate)

    return endpoint


async def serve(ws: WebSocket, engine: Engine, model: str, delegate: ToolDelegate) -> None:
    out: asyncio.Queue[str | None] = asyncio.Queue()
    sid = uuid.uuid4().hex[:16]

    def wake() -> None:
        for frame in session.flush():
            out.put_nowait(frame)

    conversation = engine if isinstance(engine, TextConversation) else None
    session = RealtimeSession(engine, model, f"sess_{sid}", delegate, wake, conversation)
    for frame in session.created():
        out.put_nowait(frame)

    loop = asyncio.get_running_loop()
    last_event = loop.time()
    starting: list[asyncio.Task[None]] = []

    def begin() -> asyncio.Task[None]:
        if not starting:
            call = CallContext(call_id=f"rt-{sid}", direction="inbound", agent=model)
            starting.append(asyncio.create_task(engine.start(call)))
        return starting[0]

    async def read() -> None:
        nonlocal last_event
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text") or message.get("bytes") or b""
            last_event = loop.time()
            if not starting and not is_setup_event(data):
                begin()  # the client is past its setup; a failure surfaces in pump()
            for frame in session.on_client(data):
                out.put_nowait(frame)

    async def pump() -> None:
        while not starting and (wait := last_event + SETUP_GRACE_S - loop.time()) > 0:
            await asyncio.sleep(wait)
        await begin()
        async for event in engine.events():
            for frame in session.on_engine(event):
                out.put_nowait(frame)
            if session.closed_reason:
                break
        out.put_nowait(None)

    async def write() -> None:
        while (frame := await out.get()) is not None:
            await ws.send_text(frame)
        await ws.close(code=1000, reason=session.closed_reason[:100])

    tasks = [asyncio.create_task(t()) for t in (read, pump, write)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is None or isinstance(exc, WebSocketDisconnect):
                continue
            log.error("realtime session %s failed", sid, exc_info=exc)
            if task is tasks[1]:  # the engine failed: say so, then close
                tasks[2].cancel()
                await ws.send_text(session.server_error(f"engine failure: {type(exc).__name__}"))
                await ws.close(code=1011, reason="engine failure")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        delegate.cancel_all()
        await engine.close()

