"""The Gemini Live API (BidiGenerateContent) WebSocket JSON protocol, sans I/O.

Both ends: the Gemini Live backend encodes client messages and parses server
messages; the local test server (tests/duplex/gemini_server.py) parses client
messages and encodes server messages. JSON with camelCase proto field names;
every message has exactly one top-level key. Audio: PCM16 LE, 16 kHz in
(`audio/pcm;rate=16000`), 24 kHz out. Reference: gemini-live-and-moshi.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CLIENT_KEYS",
    "ClientAudio",
    "ClientContent",
    "FunctionCall",
    "GeminiWireError",
    "GoAway",
    "InputTranscription",
    "Interrupted",
    "ModelAudio",
    "OtherMessage",
    "OutputTranscription",
    "ResumptionUpdate",
    "ServerMessage",
    "Setup",
    "SetupComplete",
    "ToolCall",
    "ToolCallCancellation",
    "ToolResponse",
    "TurnComplete",
    "encode_audio",
    "encode_setup",
    "encode_tool_response",
    "parse_client_message",
    "parse_server_message",
    "server_message",
]

INPUT_MIME: Final = "audio/pcm;rate=16000"
OUTPUT_MIME: Final = "audio/pcm;rate=24000"
CLIENT_KEYS: Final = ("setup", "clientContent", "realtimeInput", "toolResponse")


class GeminiWireError(ValueError):
    """A message that breaks the protocol (the server closes with 1007)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise GeminiWireError(f"{where}: expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise GeminiWireError(f"{where}: not valid base64") from None


def _one(text: str | bytes, allowed: Sequence[str] | None) -> tuple[str, Mapping[str, Any]]:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GeminiWireError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or len(data) != 1:
        raise GeminiWireError("a message is a JSON object with exactly one field")
    [(key, body)] = data.items()
    if allowed is not None and key not in allowed:
        raise GeminiWireError(f"unknown message {key!r}; expected one of {', '.join(allowed)}")
    if not isinstance(body, dict):
        raise GeminiWireError(f"{key}: expected an object")
    return key, body


# ---- client -> server ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionDecl:
    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Setup:
    model: str
    instructions: str
    functions: tuple[FunctionDecl, ...]
    voice: str = ""
    resume_handle: str = ""


@dataclass(frozen=True, slots=True)
class ClientAudio:
    pcm16k: bytes


@dataclass(frozen=True, slots=True)
class ClientContent:
    text: str
    turn_complete: bool


@dataclass(frozen=True, slots=True)
class ToolResponse:
    responses: tuple[tuple[str, str, Mapping[str, Any]], ...]  # (id, name, response)


def encode_setup(s: Setup) -> str:
    setup: dict[str, Any] = {
        "model": s.model,
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "systemInstruction": {"parts": [{"text": s.instructions}]},
        "tools": [{"functionDeclarations": [
            {"name": f.name, "description": f.description, "parameters": dict(f.parameters)}
            for f in s.functions]}] if s.functions else [],
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": {"handle": s.resume_handle} if s.resume_handle else {},
    }  # fmt: skip
    if s.voice:
        setup["generationConfig"]["speechConfig"] = {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": s.voice}}}
    return json.dumps({"setup": setup})


def encode_audio(pcm16k: bytes) -> str:
    return json.dumps({"realtimeInput": {"audio": {"data": _b64(pcm16k), "mimeType": INPUT_MIME}}})


def encode_tool_response(responses: Sequence[tuple[str, str, Mapping[str, Any]]]) -> str:
    return json.dumps({"toolResponse": {"functionResponses": [
        {"id": i, "name": n, "response": dict(r)} for i, n, r in responses]}})  # fmt: skip


def parse_client_message(text: str | bytes) -> Setup | ClientAudio | ClientContent | ToolResponse:
    key, body = _one(text, CLIENT_KEYS)
    if key == "setup":
        model = body.get("model")
        if not isinstance(model, str) or not model.startswith("models/"):
            raise GeminiWireError("setup.model: expected 'models/<name>'")
        parts = (body.get("systemInstruction") or {}).get("parts") or []
        instructions = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
        functions: list[FunctionDecl] = []
        for tool in body.get("tools") or []:
            for f in (tool or {}).get("functionDeclarations") or []:
                if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                    raise GeminiWireError("setup.tools.functionDeclarations: each needs a name")
                functions.append(FunctionDecl(f["name"], str(f.get("description", "")),
                                              f.get("parameters") or {}))  # fmt: skip
        resumption = body.get("sessionResumption") or {}
        return Setup(model, instructions, tuple(functions),
                     resume_handle=str(resumption.get("handle") or ""))  # fmt: skip
    if key == "realtimeInput":
        audio = body.get("audio")
        if not isinstance(audio, dict):
            raise GeminiWireError("realtimeInput: only audio is supported here")
        if audio.get("mimeType") != INPUT_MIME:
            raise GeminiWireError(f"realtimeInput.audio.mimeType: expected {INPUT_MIME}")
        data = _unb64(audio.get("data"), "realtimeInput.audio.data")
        if len(data) % 2:
            raise GeminiWireError("realtimeInput.audio.data: PCM16 needs an even byte count")
        return ClientAudio(data)
    if key == "clientContent":
        turns = body.get("turns") or []
        text_parts = [p.get("text", "") for t in turns for p in (t or {}).get("parts") or []]
        return ClientContent("".join(text_parts), bool(body.get("turnComplete")))
    responses = []
    for r in body.get("functionResponses") or []:
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            raise GeminiWireError("toolResponse.functionResponses: each needs an id")
        responses.append((r["id"], str(r.get("name", "")), r.get("response") or {}))
    return ToolResponse(tuple(responses))


# ---- server -> client ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupComplete:
    pass


@dataclass(frozen=True, slots=True)
class ModelAudio:
    pcm24k: bytes


@dataclass(frozen=True, slots=True)
class OutputTranscription:
    text: str


@dataclass(frozen=True, slots=True)
class InputTranscription:
    text: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    pass


@dataclass(frozen=True, slots=True)
class TurnComplete:
    pass


@dataclass(frozen=True, slots=True)
class FunctionCall:
    id: str
    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class ToolCallCancellation:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GoAway:
    time_left_s: float


@dataclass(frozen=True, slots=True)
class ResumptionUpdate:
    handle: str
    resumable: bool


@dataclass(frozen=True, slots=True)
class OtherMessage:
    key: str


ServerMessage = (
    SetupComplete | ModelAudio | OutputTranscription | InputTranscription | Interrupted
    | TurnComplete | ToolCall | ToolCallCancellation | GoAway | ResumptionUpdate | OtherMessage
)  # fmt: skip
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def parse_server_message(text: str | bytes) -> list[ServerMessage]:
    """One server message as events (a serverContent can carry several)."""
    key, body = _one(text, None)
    if key == "setupComplete":
        return [SetupComplete()]
    if key == "serverContent":
        out: list[ServerMessage] = []
        for part in (body.get("modelTurn") or {}).get("parts") or []:
            inline = (part or {}).get("inlineData")
            if isinstance(inline, dict):
                if not str(inline.get("mimeType", "")).startswith("audio/pcm"):
                    raise GeminiWireError("serverContent.modelTurn: unexpected inlineData type")
                out.append(ModelAudio(_unb64(inline.get("data"), "inlineData.data")))
        if isinstance(body.get("inputTranscription"), dict):
            out.append(InputTranscription(str(body["inputTranscription"].get("text", ""))))
        if isinstance(body.get("outputTranscription"), dict):
            out.append(OutputTranscription(str(body["outputTranscription"].get("text", ""))))
        if body.get("interrupted"):
            out.append(Interrupted())
        if body.get("turnComplete"):
            out.append(TurnComplete())
        return out
    if key == "toolCall":
        calls = []
        for c in body.get("functionCalls") or []:
            if not isinstance(c, dict) or not isinstance(c.get("id"), str):
                raise GeminiWireError("toolCall.functionCalls: each needs an id")
            calls.append(FunctionCall(c["id"], str(c.get("name", "")), c.get("args") or {}))
        return [ToolCall(tuple(calls))]
    if key == "toolCallCancellation":
        return [ToolCallCancellation(tuple(str(i) for i in body.get("ids") or []))]
    if key == "goAway":
        match = _DURATION.match(str(body.get("timeLeft", "0s")))
        return [GoAway(float(match.group(1)) if match else 0.0)]
    if key == "sessionResumptionUpdate":
        return [ResumptionUpdate(str(body.get("newHandle") or ""), bool(body.get("resumable")))]
    return [OtherMessage(key)]


def server_message(key: str, body: Mapping[str, Any]) -> str:
    """A server message (for a server speaking this protocol, e.g. the local test server)."""
    return json.dumps({key: dict(body)})


def audio_part(pcm24k: bytes) -> dict[str, Any]:
    return {"inlineData": {"mimeType": OUTPUT_MIME, "data": _b64(pcm24k)}}
