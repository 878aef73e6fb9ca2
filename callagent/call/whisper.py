"""The whisper of a warm transfer: what the human hears before the caller is connected.

``<Dial><Number url=".../twilio/whisper?text=...">`` makes Twilio fetch this TwiML
when the human answers (a signed POST, verified like every webhook) and play
it to them only. Register with ``*whisper.routes()`` in the app's route list.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.twiml.voice_response import VoiceResponse

from callagent.services import Services
from callagent.telephony.twilio.webhooks import TWIML, twilio_webhook

__all__ = ["MAX_WHISPER_CHARS", "routes", "whisper"]

MAX_WHISPER_CHARS = 500


@twilio_webhook
async def whisper(request: Request, services: Services, form: FormData) -> Response:
    text = request.query_params.get("text", "").strip()
    if not text:
        return PlainTextResponse("missing text", status_code=400)
    if len(text) > MAX_WHISPER_CHARS:
        return PlainTextResponse(f"text longer than {MAX_WHISPER_CHARS} characters",
                                 status_code=400)  # fmt: skip
    response = VoiceResponse()
    response.say(text)
    return Response(str(response), media_type=TWIML)


def routes() -> list[Route]:
    return [Route("/twilio/whisper", whisper, methods=["POST"])]
