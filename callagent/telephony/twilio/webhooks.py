"""Twilio's HTTP webhooks: answer a call with <Connect><Stream>, take status callbacks
and asynchronous answering-machine verdicts.

Every webhook verifies X-Twilio-Signature first; a missing or bad signature
gets 403, a counter and an audit event. A signed post that lacks a field or
carries a bad value gets 400 naming the field, and nothing is recorded.
Nothing here awaits the database: records go to the recorder's queue.

``/twilio/amd`` (the ``AsyncAmdStatusCallback``): the post has ``CallSid``,
``AccountSid``, ``AnsweredBy`` and ``MachineDetectionDuration`` but no
``CallStatus``. The verdict is an ``AmdVerdictRecord`` (table ``amd_verdicts``, one
per call sid: a retried callback changes nothing), not a status event, since it has
no ``SequenceNumber``; the dialer reads it when the call ends
(``campaigns.store.apply_status_events``). For a campaign call (the dialer's URL
carries ``campaign``, ``attempt``, ``voicemail`` and ``message``) the voicemail
policy (``campaigns.voicemail.decide``) then runs after the response is sent: hang
up, or say the message after the beep, by a call update over the REST API.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callagent.call.records import AmdVerdictRecord, AuditRecord, CallOpened, CallStatusChanged
from callagent.campaigns.voicemail import (
    ANSWERED_BY,
    AmdAction,
    AmdQueryError,
    VoicemailRest,
    decide,
    parse_amd_query,
)
from callagent.services import Services, new_call_id
from callagent.telephony.twilio.signature import SignatureVerdict, public_request_url
from callagent.telephony.twilio.twiml import StreamTarget, connect_stream_twiml

log = logging.getLogger(__name__)

TWIML = "application/xml"
CALL_STATUSES: Final = frozenset({"queued", "initiated", "ringing", "in-progress", "completed",
                                  "busy", "failed", "no-answer", "canceled"})
_CALL_SID: Final = re.compile(r"CA[0-9a-fA-F]{32}")
_ATTEMPT: Final = re.compile(r"([0-9]+):[0-9]+")


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
    campaign = request.query_params.get("campaign", "")
    attempt = _ATTEMPT.fullmatch(request.query_params.get("attempt", ""))
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
            campaign_id=int(campaign) if campaign.isdigit() else None,
            contact_id=int(attempt.group(1)) if attempt else None,
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
    if call_status not in CALL_STATUSES:
        return _bad(f"CallStatus: expected one of {', '.join(sorted(CALL_STATUSES))}, "
                    f"got {call_status!r}")
    sequence_text = _field(form, "SequenceNumber")
    if sequence_text and not sequence_text.isdigit():
        return _bad(f"SequenceNumber: expected a non-negative integer, got {sequence_text!r}")
    sequence = int(sequence_text or 0)      # missing: tolerated (Twilio always sends it)
    duration_text = _field(form, "CallDuration")
    if duration_text and not duration_text.isdigit():
        return _bad(f"CallDuration: expected seconds, got {duration_text!r}")
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


def _bad(message: str) -> Response:
    return PlainTextResponse(message, status_code=400)


@twilio_webhook
async def amd(request: Request, services: Services, form: FormData) -> Response:
    call_sid = _field(form, "CallSid")
    answered_by = _field(form, "AnsweredBy")
    detection_ms = _field(form, "MachineDetectionDuration")
    if not _CALL_SID.fullmatch(call_sid):
        return _bad(f"CallSid: expected CA followed by 32 hex digits, got {call_sid!r}")
    if answered_by not in ANSWERED_BY:
        return _bad(f"AnsweredBy: expected one of {', '.join(sorted(ANSWERED_BY))}, "
                    f"got {answered_by!r}")
    if detection_ms and not detection_ms.isdigit():
        return _bad(f"MachineDetectionDuration: expected milliseconds, got {detection_ms!r}")
    try:
        query = parse_amd_query(request.query_params)
    except AmdQueryError as exc:
        return _bad(f"AMD callback URL: {exc}")
    now = services.now()
    services.recorder.submit(
        AmdVerdictRecord(twilio_call_sid=call_sid, answered_by=answered_by, at=now,
                         detection_ms=int(detection_ms) if detection_ms else None)
    )
    action = decide(answered_by, query.policy) if query is not None else None
    details: dict[str, object] = {
        "call_sid": call_sid, "answered_by": answered_by,
        "detection_ms": int(detection_ms) if detection_ms else None,
        "action": action.value if action else None,
    }
    if query is not None:
        details |= {"campaign_id": query.campaign_id, "attempt": query.attempt}
    services.recorder.submit(
        AuditRecord(action="call.amd", actor="twilio", at=now, details=details)
    )
    services.metrics.inc("callagent_amd_verdicts_total", answered_by=answered_by)
    if action is None or query is None:
        return Response(status_code=204)
    return Response(status_code=204, background=BackgroundTask(
        _voicemail_action, services, call_sid, action, query.message))


async def _voicemail_action(
    services: Services, call_sid: str, action: AmdAction, message: str,
) -> None:
    """Runs after the 204 went out: Twilio does not wait for the REST update."""
    twilio = services.settings.twilio
    result = "ok"
    try:
        rest = VoicemailRest(twilio.account_sid, twilio.auth_token, base_url=twilio.api_base_url)
        try:
            if action is AmdAction.LEAVE_MESSAGE:
                await rest.say_and_hang_up(call_sid, message)
            else:
                await rest.hang_up(call_sid)
        finally:
            rest.close()
    except Exception as exc:        # a failed update leaves the agent on the line: say so
        result = f"failed: {exc}"
        log.warning("call %s: voicemail action %s failed: %s", call_sid, action.value, exc)
        services.metrics.inc("callagent_amd_action_failures_total", action=action.value)
    services.recorder.submit(
        AuditRecord(action="call.voicemail", actor="dialer", at=services.now(),
                    details={"call_sid": call_sid, "action": action.value, "result": result})
    )


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
        Route("/twilio/amd", amd, methods=["POST"]),
        Route("/twilio/stream-status", stream_status, methods=["POST"]),
    ]
