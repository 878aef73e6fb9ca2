"""The OpenAI Realtime API (GA) wire protocol, sans I/O: JSON text in, typed events out.

Both ends live here, because both are ours: the `/v1/realtime` endpoint parses
client events (`parse_client_event`) and encodes server events (`ServerEncoder`);
the OpenAI Realtime backend encodes client events (`encode_*`) and parses server
events (`parse_server_event`). No sockets, no clock, no randomness: ids come
from a counter owned by the caller.

Bad client input never raises out of `parse_client_event`: it becomes a
`Rejected` carrying the `error` payload the protocol prescribes
(`invalid_request_error`, a code, a message, the offending `param` and the
client's `event_id`). Session settings are validated by `apply_session_update`.
Reference: /work/shared/reference/openai-realtime.md sections 2-5.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

__all__ = [
    "AUDIO_FORMATS",
    "VOICES",
    "AudioDelta",
    "AudioFormat",
    "ClientEvent",
    "ErrorInfo",
    "FunctionCallDone",
    "FunctionCallOutputItem",
    "FunctionTool",
    "HistoryTurn",
    "InputAudioAppend",
    "InputAudioClear",
    "InputAudioCommit",
    "InputTranscript",
    "ItemReference",
    "ItemCreate",
    "ItemDelete",
    "ItemTruncate",
    "ItemTruncated",
    "MessageItem",
    "OtherServerEvent",
    "Rejected",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ServerEncoder",
    "ServerError",
    "ServerEvent",
    "SessionConfig",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptDelta",
    "TurnDetection",
    "WireError",
    "apply_session_update",
    "encode_append",
    "encode_cancel",
    "encode_function_output",
    "encode_message",
    "encode_response_create",
    "encode_session_update",
    "encode_truncate",
    "parse_client_event",
    "parse_server_event",
    "reseed_events",
    "session_json",
    "parse_tool_result_text",
    "tool_result_text",
]

AUDIO_FORMATS: Final = ("audio/pcmu", "audio/pcma", "audio/pcm")
VOICES: Final = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse",
                 "marin", "cedar")  # fmt: skip
TURN_TYPES: Final = ("server_vad", "semantic_vad")
EAGERNESS: Final = ("low", "medium", "high", "auto")
MAX_APPEND_BYTES: Final = 15 * 1024 * 1024
MAX_METADATA_PAIRS: Final = 16  # response.metadata: keys <= 64 chars, values <= 512


class WireError(ValueError):
    """Client input the protocol refuses: becomes an `error` event, never a dropped socket."""

    def __init__(self, code: str, message: str, param: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    type: str
    code: str
    message: str
    param: str = ""
    event_id: str = ""

    def json(self) -> dict[str, Any]:
        return {"type": self.type, "code": self.code, "message": self.message,
                "param": self.param or None, "event_id": self.event_id or None}  # fmt: skip


# ---- session ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioFormat:
    type: str = "audio/pcmu"
    rate: int = 8000  # implied for pcmu/pcma; 24000 for audio/pcm

    def json(self) -> dict[str, Any]:
        if self.type == "audio/pcm":
            return {"type": self.type, "rate": self.rate}
        return {"type": self.type}


@dataclass(frozen=True, slots=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None
    eagerness: str = "auto"  # semantic_vad only
    create_response: bool = True
    interrupt_response: bool = True

    def json(self) -> dict[str, Any]:
        common = {"create_response": self.create_response,
                  "interrupt_response": self.interrupt_response}  # fmt: skip
        if self.type == "semantic_vad":
            return {"type": self.type, "eagerness": self.eagerness, **common}
        return {"type": self.type, "threshold": self.threshold,
                "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms,
                "idle_timeout_ms": self.idle_timeout_ms, **common}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": dict(self.parameters)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SessionConfig:
    model: str = "gpt-realtime"
    instructions: str = ""
    output_modalities: tuple[str, ...] = ("audio",)
    input_format: AudioFormat = AudioFormat()
    output_format: AudioFormat = AudioFormat()
    turn_detection: TurnDetection | None = TurnDetection()
    voice: str = "marin"
    speed: float = 1.0
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: str = "auto"
    max_output_tokens: int | str = "inf"


def session_json(cfg: SessionConfig, session_id: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": cfg.model,
        "instructions": cfg.instructions,
        "output_modalities": list(cfg.output_modalities),
        "audio": {
            "input": {
                "format": cfg.input_format.json(),
                "turn_detection": cfg.turn_detection.json() if cfg.turn_detection else None,
            },
            "output": {"format": cfg.output_format.json(), "voice": cfg.voice,
                       "speed": cfg.speed},  # fmt: skip
        },
        "tools": [t.json() for t in cfg.tools],
        "tool_choice": cfg.tool_choice,
        "max_output_tokens": cfg.max_output_tokens,
    }


def _obj(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WireError("invalid_type", f"{param}: expected an object", param)
    return value


def _only(obj: Mapping[str, Any], allowed: tuple[str, ...], param: str) -> None:
    for key in obj:
        if key not in allowed:
            where = f"{param}.{key}"
            raise WireError("unknown_parameter", f"Unknown parameter: '{where}'.", where)


def _typed(value: Any, kinds: type | tuple[type, ...], what: str, param: str) -> Any:
    bad_bool = isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))
    if not isinstance(value, kinds) or bad_bool:
        raise WireError("invalid_type", f"{param}: expected {what}, got {json.dumps(value)}", param)
    return value


def _format(value: Any, param: str) -> AudioFormat:
    obj = _obj(value, param)
    _only(obj, ("type", "rate"), param)
    kind = obj.get("type")
    if kind not in AUDIO_FORMATS:
        raise WireError("invalid_value", f"{param}.type: expected one of "
                        f"{', '.join(AUDIO_FORMATS)}, got {json.dumps(kind)}", f"{param}.type")  # fmt: skip
    if kind == "audio/pcm":
        rate = obj.get("rate", 24000)
        if rate != 24000:
            raise WireError("invalid_value", f"{param}.rate: audio/pcm supports only 24000",
                            f"{param}.rate")  # fmt: skip
        return AudioFormat(kind, 24000)
    if "rate" in obj:
        raise WireError("unknown_parameter", f"{param}.rate: {kind} takes no rate", f"{param}.rate")
    return AudioFormat(kind, 8000)


def _turn_detection(value: Any, current: TurnDetection | None, param: str) -> TurnDetection | None:
    if value is None:
        return None
    obj = _obj(value, param)
    kind = obj.get("type", current.type if current else "server_vad")
    if kind not in TURN_TYPES:
        raise WireError("invalid_value", f"{param}.type: expected server_vad or semantic_vad",
                        f"{param}.type")  # fmt: skip
    td = current if current is not None and current.type == kind else TurnDetection(type=kind)
    if kind == "semantic_vad":
        _only(obj, ("type", "eagerness", "create_response", "interrupt_response"), param)
        if "eagerness" in obj and obj["eagerness"] not in EAGERNESS:
            raise WireError("invalid_value", f"{param}.eagerness: expected one of "
                            f"{', '.join(EAGERNESS)}", f"{param}.eagerness")  # fmt: skip
        td = replace(td, eagerness=obj.get("eagerness", td.eagerness))
    else:
        _only(obj, ("type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                    "idle_timeout_ms", "create_response", "interrupt_response"), param)  # fmt: skip
        threshold = float(_typed(obj.get("threshold", td.threshold), (int, float), "a number",
                                 f"{param}.threshold"))  # fmt: skip
        if not 0.0 <= threshold <= 1.0:
            raise WireError("invalid_value", f"{param}.threshold: expected 0.0-1.0",
                            f"{param}.threshold")  # fmt: skip
        ints = {}
        for key in ("prefix_padding_ms", "silence_duration_ms"):
            ints[key] = _typed(obj.get(key, getattr(td, key)), int, "an integer", f"{param}.{key}")
            if ints[key] < 0:
                raise WireError("invalid_value", f"{param}.{key}: must be >= 0", f"{param}.{key}")
        idle = obj.get("idle_timeout_ms", td.idle_timeout_ms)
        if idle is not None:
            _typed(idle, int, "an integer or null", f"{param}.idle_timeout_ms")
        td = replace(td, threshold=threshold, idle_timeout_ms=idle, **ints)
    for key in ("create_response", "interrupt_response"):
        if key in obj:
            _typed(obj[key], bool, "a boolean", f"{param}.{key}")
    return replace(td, create_response=obj.get("create_response", td.create_response),
                   interrupt_response=obj.get("interrupt_response", td.interrupt_response))  # fmt: skip


def _tools(value: Any, param: str) -> tuple[FunctionTool, ...]:
    items = _typed(value, list, "an array", param)
    tools: list[FunctionTool] = []
    for i, raw in enumerate(items):
        where = f"{param}[{i}]"
        obj = _obj(raw, where)
        _only(obj, ("type", "name", "description", "parameters"), where)
        if obj.get("type", "function") != "function":
            raise WireError("invalid_value", f"{where}.type: only function tools are supported",
                            f"{where}.type")  # fmt: skip
        name = _typed(obj.get("name"), str, "a string", f"{where}.name")
        if not name or any(t.name == name for t in tools):
            raise WireError("invalid_value", f"{where}.name: empty or duplicate tool name",
                            f"{where}.name")  # fmt: skip
        params = _obj(obj.get("parameters", {}), f"{where}.parameters")
        desc = _typed(obj.get("description", ""), str, "a string", f"{where}.description")
        tools.append(FunctionTool(name, desc, params))
    return tuple(tools)


def apply_session_update(
    cfg: SessionConfig, patch: Any, *, audio_started: bool = False
) -> SessionConfig:
    """`cfg` with the fields present in a `session.update`'s `session` applied; raises WireError."""
    s = _obj(patch, "session")
    _only(s, ("type", "model", "instructions", "output_modalities", "audio", "tools",
              "tool_choice", "max_output_tokens", "truncation", "tracing", "include",
              "prompt"), "session")  # fmt: skip
    if s.get("type") != "realtime":
        raise WireError("invalid_value", "session.type: expected 'realtime' (beta session "
                        "shapes are not accepted)", "session.type")  # fmt: skip
    if "model" in s and s["model"] != cfg.model:
        raise WireError("invalid_value", "session.model: the model is fixed by the URL",
                        "session.model")  # fmt: skip
    if "instructions" in s:
        cfg = replace(cfg, instructions=_typed(s["instructions"], str, "a string",
                                               "session.instructions"))  # fmt: skip
    if "output_modalities" in s:
        mods = _typed(s["output_modalities"], list, "an array", "session.output_modalities")
        if mods not in (["audio"], ["text"]):
            raise WireError("invalid_value", 'session.output_modalities: expected ["audio"] '
                            'or ["text"]', "session.output_modalities")  # fmt: skip
        cfg = replace(cfg, output_modalities=tuple(mods))
    if "audio" in s:
        audio = _obj(s["audio"], "session.audio")
        _only(audio, ("input", "output"), "session.audio")
        if "input" in audio:
            inp = _obj(audio["input"], "session.audio.input")
            _only(inp, ("format", "turn_detection", "transcription", "noise_reduction"),
                  "session.audio.input")  # fmt: skip
            if "format" in inp:
                cfg = replace(cfg, input_format=_format(inp["format"], "session.audio.input.format"))
            if "turn_detection" in inp:
                cfg = replace(cfg, turn_detection=_turn_detection(
                    inp["turn_detection"], cfg.turn_detection,
                    "session.audio.input.turn_detection"))  # fmt: skip
        if "output" in audio:
            out = _obj(audio["output"], "session.audio.output")
            _only(out, ("format", "voice", "speed"), "session.audio.output")
            if "format" in out:
                cfg = replace(cfg, output_format=_format(out["format"],
                                                         "session.audio.output.format"))  # fmt: skip
            if "voice" in out:
                if audio_started and out["voice"] != cfg.voice:
                    raise WireError("cannot_update_voice", "session.audio.output.voice: the voice "
                                    "cannot change after audio was produced",
                                    "session.audio.output.voice")  # fmt: skip
                if out["voice"] not in VOICES:
                    raise WireError("invalid_value", "session.audio.output.voice: expected one of "
                                    f"{', '.join(VOICES)}", "session.audio.output.voice")  # fmt: skip
                cfg = replace(cfg, voice=out["voice"])
            if "speed" in out:
                speed = float(_typed(out["speed"], (int, float), "a number",
                                     "session.audio.output.speed"))  # fmt: skip
                if not 0.25 <= speed <= 1.5:
                    raise WireError("invalid_value", "session.audio.output.speed: expected "
                                    "0.25-1.5", "session.audio.output.speed")  # fmt: skip
                cfg = replace(cfg, speed=speed)
    if "tools" in s:
        cfg = replace(cfg, tools=_tools(s["tools"], "session.tools"))
    if "tool_choice" in s:
        choice = s["tool_choice"]
        if choice not in ("auto", "none", "required"):
            raise WireError("invalid_value", "session.tool_choice: expected auto, none or "
                            "required", "session.tool_choice")  # fmt: skip
        cfg = replace(cfg, tool_choice=choice)
    if "max_output_tokens" in s:
        m = s["max_output_tokens"]
        if m != "inf" and not (isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 4096):
            raise WireError("invalid_value", 'session.max_output_tokens: expected 1-4096 or "inf"',
                            "session.max_output_tokens")  # fmt: skip
        cfg = replace(cfg, max_output_tokens=m)
    return cfg


# ---- client events --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    event_id: str
    session: Mapping[str, Any]  # validated against the live config by apply_session_update


@dataclass(frozen=True, slots=True)
class InputAudioAppend:
    event_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class InputAudioCommit:
    event_id: str


@dataclass(frozen=True, slots=True)
class InputAudioClear:
    event_id: str


@dataclass(frozen=True, slots=True)
class MessageItem:
    id: str
    role: str  # "user" | "system" | "assistant"
    text: str


@dataclass(frozen=True, slots=True)
class FunctionCallOutputItem:
    id: str
    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class ItemCreate:
    event_id: str
    previous_item_id: str
    item: MessageItem | FunctionCallOutputItem


@dataclass(frozen=True, slots=True)
class ItemTruncate:
    event_id: str
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ItemDelete:
    event_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemReference:
    """`{"type": "item_reference", "id": ...}` in `response.input`: an item of the conversation."""

    id: str


InputItem = MessageItem | FunctionCallOutputItem | ItemReference


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    event_id: str
    instructions: str = ""
    out_of_band: bool = False  # response.conversation == "none"
    input: tuple[InputItem, ...] | None = None  # None: the default conversation is the context
    metadata: tuple[tuple[str, str], ...] | None = None  # echoed on the response, in order
    output_modalities: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    event_id: str
    response_id: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    error: ErrorInfo


ClientEvent = (
    SessionUpdate | InputAudioAppend | InputAudioCommit | InputAudioClear | ItemCreate
    | ItemTruncate | ItemDelete | ResponseCreate | ResponseCancel
)  # fmt: skip

_CLIENT_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "session.update": ("session",),
    "input_audio_buffer.append": ("audio",),
    "input_audio_buffer.commit": (),
    "input_audio_buffer.clear": (),
    "conversation.item.create": ("item", "previous_item_id"),
    "conversation.item.truncate": ("item_id", "content_index", "audio_end_ms"),
    "conversation.item.delete": ("item_id",),
    "response.create": ("response",),
    "response.cancel": ("response_id",),
}


def _reject(code: str, message: str, param: str = "", event_id: str = "") -> Rejected:
    return Rejected(ErrorInfo("invalid_request_error", code, message, param, event_id))


def parse_client_event(text: str | bytes) -> ClientEvent | Rejected:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return _reject("invalid_json", f"The event is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return _reject("invalid_json", "The event must be a JSON object.")
    raw_id = data.get("event_id", "")
    event_id = raw_id if isinstance(raw_id, str) else ""
    kind = data.get("type")
    if not isinstance(kind, str):
        return _reject("missing_required_parameter", "Missing required parameter: 'type'.",
                       "type", event_id)  # fmt: skip
    if kind not in _CLIENT_KEYS:
        return _reject("invalid_value", f"Invalid value: '{kind}'. Unsupported client event "
                       "type.", "type", event_id)  # fmt: skip
    try:
        if not isinstance(raw_id, str):
            raise WireError("invalid_type", "event_id: expected a string", "event_id")
        _only({k: v for k, v in data.items() if k not in ("type", "event_id")},
              _CLIENT_KEYS[kind], "")  # fmt: skip
        return _client_event(kind, event_id, data)
    except WireError as exc:
        return _reject(exc.code, exc.message, exc.param.lstrip("."), event_id)


def _required(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise WireError("missing_required_parameter", f"Missing required parameter: '{key}'.", key)
    return data[key]


def _client_event(kind: str, event_id: str, data: Mapping[str, Any]) -> ClientEvent:
    if kind == "session.update":
        return SessionUpdate(event_id, _obj(_required(data, "session"), "session"))
    if kind == "input_audio_buffer.append":
        audio = _typed(_required(data, "audio"), str, "a base64 string", "audio")
        if len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
            raise WireError("invalid_value", "audio: larger than 15 MiB", "audio")
        try:
            return InputAudioAppend(event_id, base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError):
            raise WireError("invalid_value", "audio: not valid base64", "audio") from None
    if kind == "input_audio_buffer.commit":
        return InputAudioCommit(event_id)
    if kind == "input_audio_buffer.clear":
        return InputAudioClear(event_id)
    if kind == "conversation.item.create":
        prev = _typed(data.get("previous_item_id") or "", str, "a string", "previous_item_id")
        return ItemCreate(event_id, prev, _item(_obj(_required(data, "item"), "item")))
    if kind == "conversation.item.truncate":
        item_id = _typed(_required(data, "item_id"), str, "a string", "item_id")
        index = _typed(_required(data, "content_index"), int, "an integer", "content_index")
        end = _typed(_required(data, "audio_end_ms"), int, "an integer", "audio_end_ms")
        if end < 0:
            raise WireError("invalid_value", "audio_end_ms: must be >= 0", "audio_end_ms")
        return ItemTruncate(event_id, item_id, index, end)
    if kind == "conversation.item.delete":
        return ItemDelete(event_id, _typed(_required(data, "item_id"), str, "a string", "item_id"))
    if kind == "response.create":
        resp = _obj(data.get("response", {}), "response")
        _only(resp, ("instructions", "conversation", "output_modalities", "metadata", "input",
                     "tools", "tool_choice", "max_output_tokens", "audio"), "response")  # fmt: skip
        instructions = _typed(resp.get("instructions", ""), str, "a string", "response.instructions")
        conv = resp.get("conversation", "auto")
        if conv not in ("auto", "none"):
            raise WireError("invalid_value", "response.conversation: expected auto or none",
                            "response.conversation")  # fmt: skip
        items: tuple[InputItem, ...] | None = None
        if "input" in resp:
            raw = _typed(resp["input"], list, "an array", "response.input")
            items = tuple(_input_item(_obj(x, f"response.input[{i}]"), f"response.input[{i}]")
                          for i, x in enumerate(raw))  # fmt: skip
        mods = None
        if "output_modalities" in resp:
            mods = _typed(resp["output_modalities"], list, "an array", "response.output_modalities")
            if mods not in (["audio"], ["text"]):
                raise WireError("invalid_value", 'response.output_modalities: expected ["audio"] '
                                'or ["text"]', "response.output_modalities")  # fmt: skip
            mods = tuple(mods)
        return ResponseCreate(event_id, instructions, conv == "none", items,
                              _metadata(resp.get("metadata")), mods)  # fmt: skip
    assert kind == "response.cancel"
    rid = _typed(data.get("response_id") or "", str, "a string", "response_id")
    return ResponseCancel(event_id, rid)


def _metadata(value: Any) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return None
    obj = _obj(value, "response.metadata")
    if len(obj) > MAX_METADATA_PAIRS:
        raise WireError("invalid_value", f"response.metadata: at most {MAX_METADATA_PAIRS} "
                        f"key-value pairs, got {len(obj)}", "response.metadata")  # fmt: skip
    pairs = []
    for key, val in obj.items():
        where = f"response.metadata.{key}"
        if len(key) > 64:
            raise WireError("invalid_value", f"{where}: keys are at most 64 characters", where)
        if not isinstance(val, str) or len(val) > 512:
            raise WireError("invalid_value", f"{where}: values are strings of at most 512 "
                            "characters", where)  # fmt: skip
        pairs.append((key, val))
    return tuple(pairs)


def _input_item(obj: Mapping[str, Any], param: str) -> InputItem:
    if obj.get("type") == "item_reference":
        _only(obj, ("type", "id"), param)
        return ItemReference(_typed(_required(obj, "id"), str, "a string", f"{param}.id"))
    return _item(obj, param)


def _item(obj: Mapping[str, Any], param: str = "item") -> MessageItem | FunctionCallOutputItem:
    item_id = _typed(obj.get("id") or "", str, "a string", f"{param}.id")
    kind = obj.get("type", "message")
    if kind == "function_call_output":
        _only(obj, ("type", "id", "object", "call_id", "output", "status"), param)
        call_id = _typed(_required(obj, "call_id"), str, "a string", f"{param}.call_id")
        output = _typed(_required(obj, "output"), str, "a string", f"{param}.output")
        return FunctionCallOutputItem(item_id, call_id, output)
    if kind != "message":
        raise WireError("invalid_value", f"{param}.type: expected message or "
                        f"function_call_output, got {json.dumps(kind)}", f"{param}.type")  # fmt: skip
    _only(obj, ("type", "id", "object", "role", "content", "status"), param)
    role = obj.get("role")
    if role not in ("user", "system", "assistant"):
        raise WireError("invalid_value", f"{param}.role: expected user, system or assistant",
                        f"{param}.role")  # fmt: skip
    content = _typed(_required(obj, "content"), list, "an array", f"{param}.content")
    texts: list[str] = []
    for i, part in enumerate(content):
        where = f"{param}.content[{i}]"
        p = _obj(part, where)
        want = "output_text" if role == "assistant" else "input_text"
        if p.get("type") != want:
            raise WireError("invalid_value", f"{where}.type: expected {want} (audio content "
                            "items are not supported)", f"{where}.type")  # fmt: skip
        texts.append(_typed(p.get("text"), str, "a string", f"{where}.text"))
    return MessageItem(item_id, role, "".join(texts))


# ---- server events: encoding (the endpoint) ---------------------------------------


class ServerEncoder:
    """Builds server events as JSON text; ids come from one counter per session."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self._seq = 0

    def new_id(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}_{self._prefix}{self._seq:06d}"

    def event(self, kind: str, **fields: Any) -> str:
        return json.dumps({"type": kind, "event_id": self.new_id("event"), **fields})

    def error(self, err: ErrorInfo) -> str:
        return self.event("error", error=err.json())


# ---- client events: encoding (the backend) ----------------------------------------


def encode_session_update(cfg: SessionConfig) -> str:
    session = session_json(cfg, "")
    for key in ("id", "object", "model"):
        session.pop(key)
    return json.dumps({"type": "session.update", "session": session})


def encode_append(audio: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(audio).decode("ascii")})  # fmt: skip


def encode_truncate(item_id: str, audio_end_ms: int, event_id: str = "") -> str:
    event = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
             "audio_end_ms": audio_end_ms}  # fmt: skip
    return json.dumps({**event, "event_id": event_id} if event_id else event)


def encode_function_output(call_id: str, output: str) -> str:
    return json.dumps({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": output}})  # fmt: skip


def encode_message(role: str, text: str) -> str:
    """A `conversation.item.create` message: user/system `input_text`, assistant `output_text`."""
    if role not in ("user", "system", "assistant"):
        raise ValueError(f"message role must be user, system or assistant, not {role!r}")
    part = "output_text" if role == "assistant" else "input_text"
    return json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": role, "content": [{"type": part, "text": text}]}})  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """One line of a call's transcript, kept by the backend to re-seed a new session."""

    role: str  # "user" | "assistant" | "system" (a tool result, or a note)
    text: str


RESEED_NOTE: Final = (
    "The connection to this conversation was renewed mid-call. The messages that follow are "
    "the most recent part of the call so far. Continue the call from where it stands: do not "
    "greet the caller again and do not repeat what you already said."
)


def tool_result_text(name: str, arguments: str, output: str) -> str:
    """A tool result as a system message, for a session that never saw the function call."""
    return f"Result of the function call {name}({arguments}): {output}"


_TOOL_RESULT = re.compile(r"Result of the function call ([A-Za-z0-9_.-]+)\((.*?)\): (.*)", re.S)


def parse_tool_result_text(text: str) -> tuple[str, str, str] | None:
    """(name, arguments, output) of a `tool_result_text` message, else None."""
    m = _TOOL_RESULT.fullmatch(text.strip())
    return (m.group(1), m.group(2), m.group(3)) if m else None


def reseed_events(
    history: Sequence[HistoryTurn], *, last: int, note: str = RESEED_NOTE
) -> list[str]:
    """`conversation.item.create` events rebuilding a call on a new session (no session cap
    renewal exists): a system note, then the last `last` turns, oldest first. Empty turns are
    skipped; `last` counts the turns kept, not the events."""
    turns = [t for t in history if t.text.strip()]
    kept = turns[-last:] if last > 0 else []
    return [encode_message("system", note)] + [encode_message(t.role, t.text) for t in kept]


def encode_response_create(instructions: str = "") -> str:
    response = {"instructions": instructions} if instructions else {}
    return json.dumps({"type": "response.create", "response": response})


def encode_cancel() -> str:
    return json.dumps({"type": "response.cancel"})


# ---- server events: parsing (the backend) -----------------------------------------


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: Mapping[str, Any]
    created: bool


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    response_id: str
    item_id: str
    delta: str
    done: bool  # response.output_audio_transcript.done: delta holds the whole transcript


@dataclass(frozen=True, slots=True)
class FunctionCallDone:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str
    status: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ServerError:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class OtherServerEvent:
    type: str


ServerEvent = (
    SessionUpdated | SpeechStarted | SpeechStopped | InputTranscript | ResponseCreated
    | AudioDelta | TranscriptDelta | FunctionCallDone | ResponseDone | ItemTruncated
    | ServerError | OtherServerEvent
)  # fmt: skip


def _s(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def parse_server_event(text: str | bytes) -> ServerEvent:
    """One server event; raises WireError if it is not a JSON object with a type."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError("invalid_json", f"server event is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise WireError("invalid_event", "server event without a type")
    kind: str = data["type"]
    if kind in ("session.created", "session.updated"):
        return SessionUpdated(data.get("session") or {}, kind == "session.created")
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(_s(data, "item_id"), int(data.get("audio_start_ms") or 0))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(_s(data, "item_id"), int(data.get("audio_end_ms") or 0))
    if kind == "conversation.item.input_audio_transcription.completed":
        return InputTranscript(_s(data, "item_id"), _s(data, "transcript"))
    if kind == "response.created":
        return ResponseCreated(_s(data.get("response") or {}, "id"))
    if kind in ("response.output_audio.delta", "response.audio.delta"):
        try:
            audio = base64.b64decode(_s(data, "delta"), validate=True)
        except (binascii.Error, ValueError):
            raise WireError("invalid_event", f"{kind}: delta is not base64") from None
        return AudioDelta(_s(data, "response_id"), _s(data, "item_id"), audio)
    if kind in ("response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                "response.text.delta"):  # fmt: skip
        done = kind.endswith(".done")
        return TranscriptDelta(_s(data, "response_id"), _s(data, "item_id"),
                               _s(data, "transcript" if done else "delta"), done)  # fmt: skip
    if kind == "response.output_item.done":
        item = data.get("item") or {}
        if isinstance(item, dict) and item.get("type") == "function_call":
            return FunctionCallDone(_s(data, "response_id"), _s(item, "id"), _s(item, "call_id"),
                                    _s(item, "name"), _s(item, "arguments"),
                                    _s(item, "status"))  # fmt: skip
        return OtherServerEvent(kind)
    if kind == "response.done":
        resp = data.get("response") or {}
        details = resp.get("status_details") or {}
        return ResponseDone(_s(resp, "id"), _s(resp, "status"),
                            _s(details, "reason") if isinstance(details, dict) else "")  # fmt: skip
    if kind == "conversation.item.truncated":
        return ItemTruncated(_s(data, "item_id"), int(data.get("audio_end_ms") or 0))
    if kind == "error":
        err = data.get("error") or {}
        return ServerError(ErrorInfo(_s(err, "type"), _s(err, "code"), _s(err, "message"),
                                     _s(err, "param"), _s(err, "event_id")))  # fmt: skip
    return OtherServerEvent(kind)
