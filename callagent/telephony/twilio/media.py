"""The media WebSocket: a thin shell that reads, feeds the session, and closes.

The upgrade is verified against the exact wss:// URL we put in <Stream url>
(Twilio signs it with no parameters) before we accept, so an unsigned peer
never reaches an engine or a model session.

`media_endpoint` is a raw ASGI app (Starlette's ``WebSocketRoute`` mounts
any non-function as one). The handshake goes through Starlette's
``WebSocket``; once accepted, every message (about 70 per call-second) is
read and written as a bare ASGI event, without the wrapper's per-message
state checks and its extra layers of coroutines. Under our uvicorn protocol
(``callagent.serving``) it goes shorter still: text messages come in as a
call from the protocol and go out as a frame written to the socket
(`DirectChannel`), with the ASGI queue and ``send`` kept for everything else.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from callagent.call.records import AuditRecord
from callagent.call.session import CallSession
from callagent.serving import DIRECT, DirectChannel
from callagent.services import Services
from callagent.telephony.twilio.protocol import TwilioStreamProtocol
from callagent.telephony.twilio.signature import SignatureVerdict

__all__ = ["media_endpoint"]

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
START_TIMEOUT_S = 10.0
# A burst of buffered messages must not starve other calls' pumps: the read
# loop yields to the event loop after this many messages.
YIELD_EVERY = 8


class MediaEndpoint:
    """ASGI app of ``/twilio/media``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive=receive, send=send)
        if not await _admit(ws):
            return
        await ws.accept()
        await _stream(ws, receive, send)


media_endpoint = MediaEndpoint()


async def _admit(ws: WebSocket) -> bool:
    services: Services = ws.app.state.services
    url = services.settings.media_stream_url
    verdict = services.signatures.check(url, {}, ws.headers)
    if verdict in (SignatureVerdict.VALID, SignatureVerdict.SKIPPED):
        return True
    services.metrics.inc("callagent_webhook_rejections_total", path="/twilio/media")
    services.recorder.submit(
        AuditRecord(
            "webhook.rejected",
            "twilio",
            services.now(),
            details={"path": "/twilio/media", "reason": f"signature {verdict.value}"},
        )
    )
    log.warning("rejected media WebSocket upgrade: signature %s", verdict.value)
    await ws.close(code=POLICY_VIOLATION)  # before accept: the client gets 403
    return False


async def _stream(ws: WebSocket, receive: Receive, send: Send) -> None:
    services: Services = ws.app.state.services
    protocol = TwilioStreamProtocol(max_message_bytes=services.settings.media.max_message_bytes)
    direct: DirectChannel | None = (ws.scope.get("extensions") or {}).get(DIRECT)

    async def send_text(text: str) -> None:
        if direct is not None and direct.send_text(text):
            return
        try:
            await send({"type": "websocket.send", "text": text})
        except OSError:  # the server's ClientDisconnected, as Starlette reports it
            raise WebSocketDisconnect(code=1006) from None

    session = CallSession(services, protocol, send_text)

    async def read() -> None:
        feed = session.receive
        received = 0
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                feed(text if text is not None else message.get("bytes") or b"")
            elif kind == "websocket.disconnect":
                session.finish("media stream disconnected before stop")
                return
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} on the media stream")
            # After the feed, never between receive() and feed(): a message the
            # protocol hands over directly must not overtake one taken from the queue.
            received += 1
            if received % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def deliver(text: str) -> None:  # called by the protocol, inside data_received
        try:
            session.receive(text)
        except Exception:  # as an exception in read() would: the stream ends
            log.exception("media stream: feeding a message failed")
            if direct is not None:
                direct.detach()
            reader.cancel()

    def start_timeout() -> None:
        if session.call is None:
            session.finish(f"no start event within {START_TIMEOUT_S:.0f} s")

    timer = asyncio.get_running_loop().call_later(START_TIMEOUT_S, start_timeout)
    reader = asyncio.create_task(read())
    ended = asyncio.create_task(session.ended.wait())
    if direct is not None:
        direct.attach(deliver)
    try:
        await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if direct is not None:
            direct.detach()
        timer.cancel()
        for task in (reader, ended):
            task.cancel()
        await asyncio.gather(reader, ended, return_exceptions=True)
        await session.close()
        try:
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
        except (OSError, RuntimeError):
            pass  # the peer closed first
