"""TwiML documents we answer with, built by the twilio SDK."""

from __future__ import annotations

from dataclasses import dataclass, field

from twilio.twiml.voice_response import VoiceResponse


@dataclass(frozen=True, slots=True)
class StreamTarget:
    url: str  # wss://…/twilio/media: no query string (Twilio refuses one)
    status_callback: str
    parameters: dict[str, str] = field(default_factory=dict)


def connect_stream_twiml(target: StreamTarget) -> str:
    if "?" in target.url:
        raise ValueError(f"<Stream url> must not carry a query string: {target.url}")
    response = VoiceResponse()
    connect = response.connect()
    stream = connect.stream(url=target.url, status_callback=target.status_callback)
    for name, value in target.parameters.items():
        stream.parameter(name=name, value=value)
    # Runs only once our server closes the media WebSocket.
    response.hangup()
    return str(response)
