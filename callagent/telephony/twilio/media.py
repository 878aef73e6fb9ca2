"""The media WebSocket: a thin shell that reads, feeds the session, and closes.

The upgrade is verified against the exact wss:// URL we put in <Stream url>
(Twilio signs it with no parameters) before we accept, so an unsigned peer
never reaches an engine or a model session.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from callagent.call.records import AuditRecord
from callagent.call.session import CallSession
from callagent.services import Services
from callagent.telephony.twilio.protocol import TwilioStreamProtocol
from callagent.telephony.twilio.signature import SignatureVerdict

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
START_TIMEOUT_S = 10.0


async def media_endpoint(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    url = services.settings.media_stream_url
    verdict = services.signatures.check(url, {}, ws.headers)
    if verdict not in (SignatureVerdict.VALID, SignatureVerdict.SKIPPED):
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
        return

    await ws.accept()
    protocol = TwilioStreamProtocol(max_message_bytes=services.settings.media.max_message_bytes)
    session = CallSession(services, protocol, ws.send_text)

    async def read() -> None:
        received = 0
        while True:
            message = await ws.receive()
            received += 1
            if received % 8 == 0:
                # A burst of buffered messages must not starve other calls' pumps.
                await asyncio.sleep(0)
            if message["type"] == "websocket.disconnect":
                session.finish("media stream disconnected before stop")
                return
            text = message.get("text")
            session.receive(text if text is not None else message.get("bytes") or b"")

    def start_timeout() -> None:
        if session.call is None:
            session.finish(f"no start event within {START_TIMEOUT_S:.0f} s")

    timer = asyncio.get_running_loop().call_later(START_TIMEOUT_S, start_timeout)
    reader = asyncio.create_task(read())
    ended = asyncio.create_task(session.ended.wait())
    try:
        await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        for task in (reader, ended):
            task.cancel()
        await asyncio.gather(reader, ended, return_exceptions=True)
        await session.close()
        try:
            await ws.close()
        except (RuntimeError, WebSocketDisconnect):
            pass  # the peer closed first
