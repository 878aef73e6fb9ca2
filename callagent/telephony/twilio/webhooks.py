"""Twilio's HTTP webhooks: answer a call with <Connect><Stream>, take status callbacks.

Every webhook verifies X-Twilio-Signature first; a missing or bad signature
gets 403, a counter and an audit event. Nothing here awaits the database:
records go to the recorder's queue.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callagent.call.records import AuditRecord, CallOpened, CallStatusChanged
from callagent.services import Services, new_call_id
from callagent.telephony.twilio.signature import SignatureVerdict, public_request_url
from callagent.telephony.twilio.twiml import StreamTarget, connect_stream_twiml

log = logging.getLogger(__name__)

TWIML = "application/xml"


async def _verified_form(request: Request, services: Services) -> FormData | Response:
    form = await request.form()
    url = public_request_url(
        services.settings.server.public_origin, request.url.path, request.url.query
    )
    verdict = services.signatures.check(url, form, request.headers)
    if verdict in (SignatureVerdict.VALID, SignatureVerdict.SKIPPED):
        return form
    services.metrics.inc("callagent_webhook_rejections_total", path=request.url.path)
    log.warning("rejected %s: signature %s (url %s)", request.url.path, verdict.value, url)
    services.recorder.submit(
        AuditRecord(
            action="webhook.rejected",
            actor="twilio",
            at=services.now(),
            details={
                "path": request.url.path,
                "reason": f"signature {verdict.value}",
                "call_sid": str(form.get("CallSid", ""))[:64],
                "client": request.client.host if request.client else "",
            },
        )
    )
    return PlainTextResponse("invalid Twilio signature", status_code=403)


Handler = Callable[[Request, Services, FormData], Awaitable[Response]]


def twilio_webhook(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Verify the signature first; the handler only ever sees a verified form."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        form = await _verified_form(request, services)
        if isinstance(form, Response):
            return form
        return await handler(request, services, form)

    return endpoint


def _field(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


@twilio_webhook
async def voice(request: Request, services: Services, form: FormData) -> Response:
    call_sid = _field(form, "CallSid")
    if not call_sid:
        return PlainTextResponse("missing CallSid", status_code=400)
    twilio_direction = _field(form, "Direction")
    direction = "outbound" if twilio_direction.startswith("outbound") else "inbound"
    # Outbound calls placed by our dialer name their agent and call id in the URL.
    call_id = request.query_params.get("call_id") or new_call_id()
    agent = request.query_params.get("agent") or services.settings.agent.default_profile
    now = services.now()
    services.recorder.submit(
        CallOpened(
            call_id=call_id,
            direction=direction,
            agent=agent,
            engine=services.settings.agent.engine,
            from_number=_field(form, "From"),
            to_number=_field(form, "To"),
            twilio_call_sid=call_sid,
            started_at=now,
        )
    )
    services.recorder.submit(
        AuditRecord(
            action="call.received",
            actor="twilio",
            at=now,
            call_id=call_id,
            details={"call_sid": call_sid, "direction": direction, "agent": agent},
        )
    )
    target = StreamTarget(
        url=services.settings.media_stream_url,
        status_callback=services.settings.public_url("/twilio/stream-status"),
        parameters={
            "call_id": call_id,
            "agent": agent,
            "direction": direction,
            "from": _field(form, "From"),
            "to": _field(form, "To"),
        },
    )
    return Response(connect_stream_twiml(target), media_type=TWIML)


@twilio_webhook
async def status(request: Request, services: Services, form: FormData) -> Response:
    call_sid = _field(form, "CallSid")
    call_status = _field(form, "CallStatus")
    if not call_sid or not call_status:
        return PlainTextResponse("missing CallSid or CallStatus", status_code=400)
    try:
        sequence = int(_field(form, "SequenceNumber") or 0)
    except ValueError:
        sequence = 0
    duration_text = _field(form, "CallDuration")
    services.recorder.submit(
        CallStatusChanged(
            twilio_call_sid=call_sid,
            status=call_status,
            sequence=sequence,
            at=services.now(),
            duration_s=int(duration_text) if duration_text.isdigit() else None,
            answered_by=_field(form, "AnsweredBy") or None,
        )
    )
    return Response(status_code=204)


@twilio_webhook
async def stream_status(request: Request, services: Services, form: FormData) -> Response:
    event = _field(form, "StreamEvent")
    if event == "stream-error":
        log.warning(
            "stream error on call %s: %s", _field(form, "CallSid"), _field(form, "StreamError")
        )
        services.metrics.inc("callagent_stream_errors_total")
    return Response(status_code=204)


def routes() -> list[Route]:
    return [
        Route("/twilio/voice", voice, methods=["POST"]),
        Route("/twilio/status", status, methods=["POST"]),
        Route("/twilio/stream-status", stream_status, methods=["POST"]),
    ]
