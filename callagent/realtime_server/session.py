"""One /v1/realtime session: OpenAI Realtime (GA) client events in, our engine behind it.

The core never awaits and never touches the socket: `on_client(text)` and
`on_engine(event)` return the server events to send (JSON text). It drives a
callagent `Engine` (8 kHz PCM in, `EngineEvent`s out):

- `input_audio_buffer.append` audio (audio/pcmu passthrough, audio/pcma
  decoded, or audio/pcm at 24 kHz resampled) is fed to the engine, which does
  its own turn detection: the session behaves like `server_vad` /
  `semantic_vad`.
- manual turns (`turn_detection: null`, engines that take text turns only,
  `conversation.TextConversation`): appended audio waits in the session, the
  engine hears none of it. `input_audio_buffer.commit` makes it a user item,
  transcribed by the engine's recogniser (`conversation.item.done` and
  `...input_audio_transcription.completed` once it is); `response.create`
  answers what the client said since the last response (after the pending
  transcriptions), with nothing new it completes empty. The engine's clock
  stands still meanwhile, so each finished response is reported heard.
  Switching to manual leaves audio already fed with the engine's turn
  detection; switching back hands the uncommitted audio to it.
- client messages (`conversation.item.create`) go into the engine's
  conversation (see `conversation`): a re-seeded transcript continues the
  flow where it stood; `response.create` speaks the reply owed.
- out-of-band responses (`response.conversation: "none"`) answer the user
  messages of `response.input` (given, or referenced by id) as the flow would,
  without moving it, or speak the text of an `instructions` of the form
  `Say only: <text>` / `Say exactly: <text>`; their events carry no
  conversation items, `conversation_id` is null and `metadata` is echoed.
  Other per-response instructions, and `response.input` in band, cannot steer
  a scripted flow: they get an `unsupported_response` error.
- engine speech becomes a response: `response.created`, the assistant item,
  `response.output_audio.delta` / `..._transcript.delta`, then `.done` events
  and `response.done`. Speech the engine starts on its own (the profile's
  disclosure and greeting) is a response nobody requested.
- a caller barge-in (`Interrupt`) is `input_audio_buffer.speech_started`, and
  an open response ends `cancelled` / `turn_detected`.
- `conversation.item.truncate` tells the engine how much the caller heard
  (`Engine.played`), and later audio of that item is dropped.
- tools the client declared (`session.tools`) are delegated: when the engine's
  flow calls one, the client gets a `function_call` item and the engine waits
  for the client's `function_call_output` (see `pending_call` / `ToolDelegate`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callagent.audio.codec import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from callagent.audio.pcm import Pcm
from callagent.audio.resample import Resampler, make_resampler
from callagent.engines.base import (
    AgentAudio,
    AgentTextDelta,
    AgentTurnDone,
    EndCall,
    Engine,
    EngineEvent,
    Interrupt,
    PlaybackProgress,
    UserTranscript,
)
from callagent.engines.providers.openai_realtime_wire import (
    ErrorInfo,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCommit,
    ItemCreate,
    ItemReference,
    ItemDelete,
    ItemTruncate,
    MessageItem,
    Rejected,
    ResponseCancel,
    ResponseCreate,
    ServerEncoder,
    SessionConfig,
    SessionUpdate,
    WireError,
    apply_session_update,
    parse_client_event,
    session_json,
)
from callagent.realtime_server.conversation import TextConversation

__all__ = ["RealtimeSession", "ToolDelegate", "is_setup_event"]

log = logging.getLogger(__name__)

ENGINE_RATE = 8000
DELTA_MS = 200  # audio per response.output_audio.delta
MIN_COMMIT_MS = 100
# The one kind of per-response instructions a scripted engine can follow (what our own
# backend sends for its holding phrase): speak these words.
_SAY_ONLY = re.compile(r"\s*say (?:only|exactly):\s*(.+)", re.I | re.S)


def is_setup_event(text: str | bytes) -> bool:
    """A `session.update` or `conversation.item.create`: what a client sends before the
    conversation starts (the shell starts the engine after them; see endpoint)."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("type") in ("session.update",
                                                            "conversation.item.create")


@dataclass
class _Item:
    id: str
    role: str
    kind: str  # "message" | "function_call" | "function_call_output"
    turn_id: str = ""
    audio_ms: float = 0.0
    text: str = ""


@dataclass
class _Response:
    id: str
    requested: bool
    turn_id: str = ""
    item: _Item | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] | None = None
    out_of_band: bool = False
    awaiting_input: bool = False  # answers once the committed audio is transcribed
    speech_owed: bool = True  # the engine's speech is to come (else a tool call ends it)


class ToolDelegate:
    """Tool calls the engine hands to the client; one per session."""

    def __init__(self) -> None:
        self.declared: frozenset[str] = frozenset()
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.announce: Callable[[str, str, str], None] = lambda call_id, name, args: None

    def handles(self, name: str) -> bool:
        return name in self.declared

    def call(self, call_id: str, name: str, arguments: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = future
        self.announce(call_id, name, arguments)
        return future

    def cancel_all(self) -> None:
        for future in self.waiting.values():
            future.cancel()
        self.waiting.clear()


class RealtimeSession:
    def __init__(
        self,
        engine: Engine,
        model: str,
        session_id: str,
        tools: ToolDelegate,
        wake: Callable[[], None] = lambda: None,
        conversation: TextConversation | None = None,
    ) -> None:
        if engine.input_rate != ENGINE_RATE:
            raise ValueError(f"the realtime endpoint drives 8 kHz engines, not {engine.input_rate}")
        self.engine = engine
        self.config = SessionConfig(model=model)
        self.session_id = session_id
        self.closed_reason = ""  # set when the engine ended the call
        self._enc = ServerEncoder()
        self._tools = tools
        self._tools.announce = self._announce_call
        self._wake = wake
        self._items: dict[str, _Item] = {}
        self._order: list[str] = []
        self._turn_items: dict[str, str] = {}
        self._dropped_turns: set[str] = set()
        self._response: _Response | None = None
        self._pending: list[str] = []  # out-of-band frames (function calls)
        self._buffer_ms = 0.0
        self._fed_ms = 0.0
        self._user_item: str = ""
        self._speech_start_ms = 0.0
        self._audio_started = False
        self._in_rs: Resampler | None = None
        self._out_rs: Resampler | None = None
        self._conv = conversation if conversation is not None and conversation.text_turns else None
        self._manual: list[np.ndarray[Any, np.dtype[np.int16]]] = []  # uncommitted, manual turns
        self._transcribing: dict[str, asyncio.Future[str]] = {}  # by user item id
        self._expect_speech = False  # a tool output was given: the engine's reply follows
        self._side: dict[str, _Response] = {}  # out-of-band responses being synthesized

    @property
    def manual_turns(self) -> bool:
        return self.config.turn_detection is None

    # ---- session start --------------------------------------------------------

    def created(self) -> list[str]:
        return [self._enc.event("session.created", session=self._session())]

    def _session(self) -> dict[str, Any]:
        return session_json(self.config, self.session_id)

    # ---- client events ----------------------------------------------------------

    def on_client(self, text: str | bytes) -> list[str]:
        event = parse_client_event(text)
        if isinstance(event, Rejected):
            return [self._enc.error(event.error)]
        try:
            if isinstance(event, SessionUpdate):
                return self._session_update(event)
            if isinstance(event, InputAudioAppend):
                return self._append(event.audio)
            if isinstance(event, InputAudioCommit):
                return self._commit()
            if isinstance(event, InputAudioClear):
                self._buffer_ms = 0.0
                self._manual.clear()
                return [self._enc.event("input_audio_buffer.cleared")]
            if isinstance(event, ItemCreate):
                return self._item_create(event)
            if isinstance(event, ItemTruncate):
                return self._truncate(event)
            if isinstance(event, ItemDelete):
                return self._delete(event)
            if isinstance(event, ResponseCreate):
                return self._response_create(event)
            assert isinstance(event, ResponseCancel)
            return self._response_cancel(event)
        except WireError as exc:
            err = ErrorInfo("invalid_request_error", exc.code, exc.message, exc.param,
                            event.event_id)  # fmt: skip
            return [self._enc.error(err)]

    def _session_update(self, event: SessionUpdate) -> list[str]:
        cfg = apply_session_update(self.config, event.session, audio_started=self._audio_started)
        if cfg.turn_detection is None and self._conv is None:
            raise WireError("unsupported_turn_detection", "session.audio.input.turn_detection: "
                            f"the engine of {self.config.model!r} detects turns itself and takes "
                            "no text turns; null (manual turns) is not supported",
                            "session.audio.input.turn_detection")  # fmt: skip
        if cfg.output_modalities != ("audio",):
            raise WireError("unsupported_modalities", 'session.output_modalities: only ["audio"] '
                            "is supported", "session.output_modalities")  # fmt: skip
        self._in_rs = (make_resampler(24000, ENGINE_RATE)
                       if cfg.input_format.type == "audio/pcm" else None)  # fmt: skip
        self._out_rs = (make_resampler(ENGINE_RATE, 24000)
                        if cfg.output_format.type == "audio/pcm" else None)  # fmt: skip
        self._tools.declared = frozenset(t.name for t in cfg.tools)
        was_manual, self.config = self.manual_turns, cfg
        if was_manual and not self.manual_turns and self._manual:
            # Uncommitted audio goes to the engine's turn detection, which takes over.
            self._feed(np.concatenate(self._manual))
            self._manual.clear()
        elif self.manual_turns and not was_manual:
            self._buffer_ms = 0.0  # what the engine heard stays with its turn detection
        return [self._enc.event("session.updated", session=self._session())]

    def _append(self, audio: bytes) -> list[str]:
        kind = self.config.input_format.type
        if kind == "audio/pcm":
            if len(audio) % 2:
                raise WireError("invalid_value", "audio: audio/pcm needs whole 16-bit samples",
                                "audio")  # fmt: skip
            assert self._in_rs is not None
            samples = self._in_rs.process(audio)
        else:
            samples = alaw_to_pcm(audio) if kind == "audio/pcma" else ulaw_to_pcm(audio)
        self._buffer_ms += 1000.0 * len(samples) / ENGINE_RATE
        if self.manual_turns:
            self._manual.append(samples)
        else:
            self._feed(samples)
        return []

    def _feed(self, samples: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        self._fed_ms += 1000.0 * len(samples) / ENGINE_RATE
        if len(samples):
            self.engine.feed(Pcm(samples, ENGINE_RATE))

    def _commit(self) -> list[str]:
        if self._buffer_ms < MIN_COMMIT_MS:
            raise WireError("input_audio_buffer_commit_empty", "Error committing input audio "
                            f"buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of "
                            f"audio, but buffer only has {self._buffer_ms:.2f}ms of audio.")  # fmt: skip
        self._buffer_ms = 0.0
        item = self._new_item("user", "message")
        prev = self._previous(item.id)
        out = [self._enc.event("input_audio_buffer.committed", item_id=item.id,
                               previous_item_id=prev)]  # fmt: skip
        if not self.manual_turns or self._conv is None:
            return out  # the engine's own turn detection has this audio
        samples, self._manual = np.concatenate(self._manual), []
        out.append(self._enc.event("conversation.item.added", previous_item_id=prev,
                                   item=self._user_json(item, None)))  # fmt: skip
        future = self._conv.transcribe(Pcm(samples, ENGINE_RATE))
        self._transcribing[item.id] = future
        future.add_done_callback(functools.partial(self._transcribed, item.id))
        return out

    def _transcribed(self, item_id: str, future: asyncio.Future[str]) -> None:
        """A committed buffer's words: the item is done, the flow hears them, a waiting
        response answers once nothing is left to transcribe."""
        self._transcribing.pop(item_id, None)
        if future.cancelled():
            return
        item = self._items.get(item_id)  # None: deleted meanwhile, the flow never hears it
        out: list[str] = []
        exc = future.exception()
        text = "" if exc is not None else future.result().strip()
        if item is not None:
            item.text = text
            if text and self._conv is not None:
                self._conv.add_user_text(text)
            out.append(self._enc.event("conversation.item.done",
                                       previous_item_id=self._previous(item_id),
                                       item=self._user_json(item, text)))  # fmt: skip
            if exc is not None:
                log.warning("transcription of %s failed", item_id, exc_info=exc)
                out.append(self._enc.event(
                    "conversation.item.input_audio_transcription.failed", item_id=item_id,
                    content_index=0, error={"type": "transcription_error",
                                            "code": "transcription_failed",
                                            "message": f"{type(exc).__name__}: {exc}",
                                            "param": None}))  # fmt: skip
            else:
                out.append(self._enc.event(
                    "conversation.item.input_audio_transcription.completed", item_id=item_id,
                    content_index=0, transcript=text))  # fmt: skip
        resp = self._response
        if resp is not None and resp.awaiting_input and not self._transcribing:
            out += self._answer(resp)
        self._pending += out
        self._wake()

    @staticmethod
    def _user_json(item: _Item, transcript: str | None) -> dict[str, Any]:
        return {"id": item.id, "object": "realtime.item", "type": "message",
                "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": transcript}]}  # fmt: skip

    def _item_create(self, event: ItemCreate) -> list[str]:
        if event.previous_item_id and event.previous_item_id not in self._items:
            raise WireError("item_not_found", f"previous_item_id {event.previous_item_id!r} "
                            "does not exist", "previous_item_id")  # fmt: skip
        if event.item.id and event.item.id in self._items:
            raise WireError("item_already_exists", f"item {event.item.id!r} already exists",
                            "item.id")  # fmt: skip
        item_json: dict[str, Any]
        if isinstance(event.item, MessageItem):
            item = self._new_item(event.item.role, "message", item_id=event.item.id)
            item.text = event.item.text
            part = "output_text" if item.role == "assistant" else "input_text"
            item_json = {"id": item.id, "object": "realtime.item", "type": "message",
                         "status": "completed", "role": item.role,
                         "content": [{"type": part, "text": item.text}]}  # fmt: skip
        else:
            future = self._tools.waiting.pop(event.item.call_id, None)
            if future is None:
                raise WireError("invalid_value", f"item.call_id: no function call "
                                f"{event.item.call_id!r} is waiting for output", "item.call_id")  # fmt: skip
            item = self._new_item("", "function_call_output", item_id=event.item.id)
            if not future.done():
                future.set_result(event.item.output)
                self._expect_speech = True  # the flow answers the tool's result
            item_json = {"id": item.id, "object": "realtime.item",
                         "type": "function_call_output", "call_id": event.item.call_id,
                         "output": event.item.output}  # fmt: skip
        prev = self._previous(item.id)
        if isinstance(event.item, MessageItem) and self._conv is not None:
            self._converse(event.item)
        return [self._enc.event("conversation.item.added", previous_item_id=prev, item=item_json),
                self._enc.event("conversation.item.done", previous_item_id=prev, item=item_json)]  # fmt: skip

    def _converse(self, message: MessageItem) -> None:
        """A client message into the engine's conversation (a re-seeded transcript)."""
        assert self._conv is not None
        if message.role == "user":
            self._conv.add_user_text(message.text)
        elif message.role == "assistant":
            self._conv.add_assistant_text(message.text)
        else:
            self._conv.add_system_text(message.text)

    def _truncate(self, event: ItemTruncate) -> list[str]:
        item = self._items.get(event.item_id)
        if item is None:
            raise WireError("item_not_found", f"item {event.item_id!r} does not exist", "item_id")
        if item.role != "assistant" or not item.turn_id:
            raise WireError("invalid_value", "item_id: only assistant audio items can be "
                            "truncated", "item_id")  # fmt: skip
        if event.content_index != 0:
            raise WireError("invalid_value", "content_index: the item has one content part (0)",
                            "content_index")  # fmt: skip
        if event.audio_end_ms > item.audio_ms + 0.5:
            raise WireError("invalid_value", f"audio_end_ms: {event.audio_end_ms} ms is longer "
                            f"than the item's audio ({int(item.audio_ms)} ms)", "audio_end_ms")  # fmt: skip
        self._dropped_turns.add(item.turn_id)
        item.audio_ms = float(event.audio_end_ms)
        self.engine.played(PlaybackProgress(item.turn_id, float(event.audio_end_ms), False))
        return [self._enc.event("conversation.item.truncated", item_id=item.id, content_index=0,
                                audio_end_ms=event.audio_end_ms)]  # fmt: skip

    def _delete(self, event: ItemDelete) -> list[str]:
        if event.item_id not in self._items:
            raise WireError("item_not_found", f"item {event.item_id!r} does not exist", "item_id")
        del self._items[event.item_id]
        self._order.remove(event.item_id)
        return [self._enc.event("conversation.item.deleted", item_id=event.item_id)]

    def _response_create(self, event: ResponseCreate) -> list[str]:
        if event.output_modalities not in (None, ("audio",)):
            raise WireError("unsupported_modalities", 'response.output_modalities: only ["audio"] '
                            "is supported", "response.output_modalities")  # fmt: skip
        metadata = dict(event.metadata) if event.metadata is not None else None
        if event.out_of_band:
            return self._out_of_band(event, metadata)
        if self._response is not None:
            raise WireError("conversation_already_has_active_response", "Conversation already "
                            f"has an active response in progress: {self._response.id}. Wait "
                            "until the response is finished before creating a new one.")  # fmt: skip
        if event.instructions:
            raise WireError("unsupported_response", "response.instructions: this server's engines "
                            "run a scripted flow, which per-response instructions cannot steer "
                            "(out of band, 'Say only: <text>' is spoken)",
                            "response.instructions")  # fmt: skip
        if event.input is not None:
            raise WireError("unsupported_response", "response.input: a context of its own is "
                            'supported only out of band (response.conversation "none"); in band '
                            "the flow answers the conversation", "response.input")  # fmt: skip
        out = self._open(True, metadata)
        resp = self._response
        assert resp is not None
        if self._conv is None:
            return out
        if self._transcribing:
            resp.awaiting_input = True
            return out
        return out + self._answer(resp)

    def _answer(self, resp: _Response) -> list[str]:
        """The engine speaks what is owed; with nothing owed and no speech to come, the
        response completes empty (manual turns; with turn detection the engine's next
        speech is the answer)."""
        assert self._conv is not None
        resp.awaiting_input = False
        reply = self._conv.respond()
        if reply.speech or reply.tool:
            resp.speech_owed = reply.speech
            return []
        if self._expect_speech or not self.manual_turns:
            return []
        return self._close("completed", "")

    def _out_of_band(self, event: ResponseCreate, metadata: dict[str, str] | None) -> list[str]:
        if self._conv is None:
            raise WireError("unsupported_response", f"response.conversation: the engine of "
                            f"{self.config.model!r} cannot answer out of band",
                            "response.conversation")  # fmt: skip
        said = _SAY_ONLY.fullmatch(event.instructions) if event.instructions else None
        if event.instructions and said is None:
            raise WireError("unsupported_response", "response.instructions: a scripted flow "
                            "cannot follow free instructions; out of band it answers the user "
                            "messages of response.input, or speaks 'Say only: <text>'",
                            "response.instructions")  # fmt: skip
        if said is not None and event.input:
            raise WireError("unsupported_response", "response: give 'Say only: <text>' "
                            "instructions or response.input, not both", "response.input")  # fmt: skip
        if said is not None:
            text = said.group(1).strip()
        else:
            text = self._conv.preview(self._input_texts(event.input or ()))
        resp = _Response(self._enc.new_id("resp"), True, metadata=metadata, out_of_band=True)
        out = [self._enc.event("response.created", response=self._response_json(resp,
                                                                              "in_progress"))]  # fmt: skip
        if not text:  # the flow has nothing to say to that (it waits for a tool, or has ended)
            return out + [self._enc.event("response.done", response=self._response_json(
                resp, "completed"))]  # fmt: skip
        self._side[resp.id] = resp
        future = self._conv.synthesize(text)
        future.add_done_callback(lambda f: self._side_spoken(resp, text, f))
        return out

    def _input_texts(self, items: Sequence[object]) -> list[str]:
        if not items:
            raise WireError("unsupported_response", "response.input: an out-of-band response of "
                            "this server's scripted flow answers the user messages given here; "
                            "give at least one", "response.input")  # fmt: skip
        texts: list[str] = []
        for i, it in enumerate(items):
            where = f"response.input[{i}]"
            if isinstance(it, ItemReference):
                ref = self._items.get(it.id)
                if ref is None:
                    raise WireError("item_not_found", f"item {it.id!r} does not exist",
                                    f"{where}.id")  # fmt: skip
                if ref.role == "user" and ref.kind == "message":
                    texts.append(ref.text)
                    continue
            elif isinstance(it, MessageItem) and it.role == "user":
                texts.append(it.text)
                continue
            raise WireError("unsupported_response", f"{where}: the flow answers user messages "
                            "only (system, assistant and tool items cannot steer it)", where)  # fmt: skip
        return texts

    def _side_spoken(self, resp: _Response, text: str, future: asyncio.Future[Pcm]) -> None:
        """An out-of-band response's speech is ready: all its events at once."""
        if self._side.pop(resp.id, None) is None or future.cancelled():
            return  # cancelled meanwhile
        exc = future.exception()
        if exc is not None:
            log.warning("out-of-band speech failed", exc_info=exc)
            self._pending.append(self._enc.event("response.done", response=self._response_json(
                resp, "failed", "", {"type": "server_error", "code": "tts_failed"})))  # fmt: skip
            self._wake()
            return
        item = _Item(self._enc.new_id("item"), "assistant", "message", text=text)
        resp.item = item
        resp.outputs.append(self._message_json(item, "in_progress"))
        where = self._where(resp)
        out = [self._enc.event("response.output_item.added", response_id=resp.id, output_index=0,
                               item=self._message_json(item, "in_progress")),
               self._enc.event("response.content_part.added",
                               part={"type": "audio", "transcript": ""}, **where)]  # fmt: skip
        samples = future.result().samples
        step = ENGINE_RATE * DELTA_MS // 1000
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step]
            item.audio_ms += 1000.0 * len(chunk) / ENGINE_RATE
            out.append(self._enc.event("response.output_audio.delta", delta=self._encode(chunk),
                                       **where))  # fmt: skip
        out.append(self._enc.event("response.output_audio_transcript.delta", delta=text, **where))
        done = self._message_json(item, "completed")
        resp.outputs[0] = done
        out += [
            self._enc.event("response.output_audio.done", **where),
            self._enc.event("response.output_audio_transcript.done", transcript=text, **where),
            self._enc.event("response.content_part.done",
                            part={"type": "audio", "transcript": text}, **where),
            self._enc.event("response.output_item.done", response_id=resp.id, output_index=0,
                            item=done),
            self._enc.event("response.done", response=self._response_json(resp, "completed")),
        ]  # fmt: skip
        self._pending += out
        self._wake()

    def _response_cancel(self, event: ResponseCancel) -> list[str]:
        side = self._side.pop(event.response_id, None) if event.response_id else None
        if side is not None:
            return [self._enc.event("response.done", response=self._response_json(
                side, "cancelled", "client_cancelled"))]  # fmt: skip
        resp = self._response
        if resp is None or (event.response_id and event.response_id != resp.id):
            raise WireError("response_cancel_not_active", "Cancellation failed: no active "
                            "response found", "response_id" if event.response_id else "")  # fmt: skip
        if resp.turn_id:
            self._dropped_turns.add(resp.turn_id)
            item = resp.item
            if item is not None:
                self.engine.played(PlaybackProgress(resp.turn_id, item.audio_ms, False))
        return self._close("cancelled", "client_cancelled")

    # ---- engine events --------------------------------------------------------------

    def on_engine(self, event: EngineEvent) -> list[str]:
        out, self._pending = self._pending, []
        if isinstance(event, UserTranscript):
            if event.final and self._conv is not None:
                self._conv.live_turn()
            out += self._user(event)
        elif isinstance(event, Interrupt):
            out += self._speech_started()
            if self._response is not None and self._response.turn_id == event.turn_id:
                self._dropped_turns.add(event.turn_id)
                out += self._close("cancelled", "turn_detected")
        elif isinstance(event, AgentAudio):
            out += self._audio(event)
        elif isinstance(event, AgentTextDelta):
            if event.turn_id not in self._dropped_turns:
                out += self._ensure_item(event.turn_id)
                resp = self._response
                assert resp is not None and resp.item is not None
                resp.item.text += event.text
                out.append(self._enc.event("response.output_audio_transcript.delta",
                                           delta=event.text, **self._where(resp)))  # fmt: skip
        elif isinstance(event, AgentTurnDone):
            resp = self._response
            if resp is not None and resp.turn_id == event.turn_id:
                item = resp.item
                if item is not None and not item.text and event.text:  # no deltas came
                    item.text = event.text
                    out.append(self._enc.event("response.output_audio_transcript.delta",
                                               delta=event.text, **self._where(resp)))  # fmt: skip
                out += self._close("completed", "")
            if self.manual_turns:
                # The engine's clock stands still without caller audio: this turn is over.
                ms = resp.item.audio_ms if resp is not None and resp.item is not None else 0.0
                self.engine.played(PlaybackProgress(event.turn_id, ms, True))
        elif isinstance(event, EndCall):
            self.closed_reason = event.reason or "call ended"
        return out

    def server_error(self, message: str) -> str:
        return self._enc.error(ErrorInfo("server_error", "engine_failure", message))

    def flush(self) -> list[str]:
        """Frames produced outside an engine event (a delegated tool call)."""
        out, self._pending = self._pending, []
        return out

    def _speech_started(self) -> list[str]:
        if self._user_item:
            return []
        self._user_item = self._new_item("user", "message").id
        self._speech_start_ms = self._fed_ms
        return [self._enc.event("input_audio_buffer.speech_started",
                                audio_start_ms=int(self._fed_ms), item_id=self._user_item)]  # fmt: skip

    def _user(self, event: UserTranscript) -> list[str]:
        out = self._speech_started()
        if not event.final:
            return out
        item = self._items[self._user_item]
        self._user_item = ""
        item.text = event.text
        end = int(event.end_ms) if event.end_ms else int(self._fed_ms)
        prev = self._previous(item.id)
        item_json = {"id": item.id, "object": "realtime.item", "type": "message",
                     "status": "completed", "role": "user",
                     "content": [{"type": "input_audio", "transcript": event.text}]}  # fmt: skip
        self._buffer_ms = 0.0
        return out + [
            self._enc.event("input_audio_buffer.speech_stopped", audio_end_ms=end, item_id=item.id),
            self._enc.event("input_audio_buffer.committed", item_id=item.id, previous_item_id=prev),
            self._enc.event("conversation.item.added", previous_item_id=prev, item=item_json),
            self._enc.event("conversation.item.done", previous_item_id=prev, item=item_json),
            self._enc.event("conversation.item.input_audio_transcription.completed",
                            item_id=item.id, content_index=0, transcript=event.text),
        ]  # fmt: skip

    def _audio(self, event: AgentAudio) -> list[str]:
        if event.turn_id in self._dropped_turns:
            return []
        out = self._ensure_item(event.turn_id)
        resp = self._response
        assert resp is not None and resp.item is not None
        self._audio_started = True
        samples = event.audio.samples
        if event.audio.rate != ENGINE_RATE:
            samples = make_resampler(event.audio.rate, ENGINE_RATE).process(samples)
        step = ENGINE_RATE * DELTA_MS // 1000
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step]
            resp.item.audio_ms += 1000.0 * len(chunk) / ENGINE_RATE
            out.append(self._enc.event("response.output_audio.delta", delta=self._encode(chunk),
                                       **self._where(resp)))  # fmt: skip
        return out

    def _ensure_item(self, turn_id: str) -> list[str]:
        """The open response carrying `turn_id`'s speech, opened if need be."""
        out: list[str] = []
        resp = self._response
        if resp is not None and resp.turn_id not in ("", turn_id):
            out += self._close("completed", "")  # the engine moved on to a new turn
            resp = None
        if resp is None:
            out += self._open(requested=False)
            resp = self._response
            assert resp is not None
        if resp.item is None:
            self._expect_speech = False
            out += self._start_item(resp, turn_id)
        return out

    def _encode(self, chunk: np.ndarray[Any, np.dtype[np.int16]]) -> str:
        if self._out_rs is not None:
            data = self._out_rs.process(chunk).astype("<i2").tobytes()
        elif self.config.output_format.type == "audio/pcma":
            data = pcm_to_alaw(chunk)
        else:
            data = pcm_to_ulaw(chunk)
        return base64.b64encode(data).decode("ascii")

    # ---- responses ------------------------------------------------------------------

    def _open(self, requested: bool, metadata: dict[str, str] | None = None) -> list[str]:
        resp = _Response(self._enc.new_id("resp"), requested, metadata=metadata)
        self._response = resp
        return [self._enc.event("response.created", response=self._response_json(resp,
                                                                               "in_progress"))]  # fmt: skip

    def _start_item(self, resp: _Response, turn_id: str) -> list[str]:
        item = self._new_item("assistant", "message", turn_id=turn_id)
        resp.turn_id = turn_id
        resp.item = item
        self._turn_items[turn_id] = item.id
        item_json = self._message_json(item, "in_progress")
        index = len(resp.outputs)
        resp.outputs.append(item_json)
        prev = self._previous(item.id)
        part = {"type": "audio", "transcript": ""}
        return [
            self._enc.event("response.output_item.added", response_id=resp.id,
                            output_index=index, item=item_json),
            self._enc.event("conversation.item.added", previous_item_id=prev, item=item_json),
            self._enc.event("response.content_part.added", part=part, **self._where(resp)),
        ]  # fmt: skip

    def _where(self, resp: _Response) -> dict[str, Any]:
        assert resp.item is not None
        return {"response_id": resp.id, "item_id": resp.item.id,
                "output_index": resp.outputs.index(next(o for o in resp.outputs
                                                        if o["id"] == resp.item.id)),
                "content_index": 0}  # fmt: skip

    def _close(self, status: str, reason: str) -> list[str]:
        resp = self._response
        if resp is None:
            return []
        self._response = None
        out: list[str] = []
        item = resp.item
        if item is not None:
            where = self._where(resp)
            item_status = "completed" if status == "completed" else "incomplete"
            item_json = self._message_json(item, item_status)
            resp.outputs[where["output_index"]] = item_json
            part = {"type": "audio", "transcript": item.text}
            out += [
                self._enc.event("response.output_audio.done", **where),
                self._enc.event("response.output_audio_transcript.done", transcript=item.text,
                                **where),
                self._enc.event("response.content_part.done", part=part, **where),
                self._enc.event("response.output_item.done", response_id=resp.id,
                                output_index=where["output_index"], item=item_json),
                self._enc.event("conversation.item.done", previous_item_id=self._previous(item.id),
                                item=item_json),
            ]  # fmt: skip
        out.append(self._enc.event("response.done", response=self._response_json(
            resp, status, reason)))  # fmt: skip
        return out

    def _response_json(self, resp: _Response, status: str, reason: str = "",
                       error: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
        details: dict[str, Any] | None = None
        if reason or error:
            details = {"type": status, "reason": reason or None, "error": error}
        # Out of band: in no conversation (null), as the protocol has it.
        conversation = None if resp.out_of_band else f"conv_{self.session_id}"
        return {"object": "realtime.response", "id": resp.id, "status": status,
                "status_details": details, "output": list(resp.outputs),
                "conversation_id": conversation,
                "output_modalities": list(self.config.output_modalities),
                "audio": {"output": {"format": self.config.output_format.json(),
                                     "voice": self.config.voice}},
                "usage": None, "metadata": resp.metadata}  # fmt: skip

    def _message_json(self, item: _Item, status: str) -> dict[str, Any]:
        return {"id": item.id, "object": "realtime.item", "type": "message", "status": status,
                "role": "assistant",
                "content": [{"type": "output_audio", "transcript": item.text}]}  # fmt: skip

    # ---- delegated tool calls ---------------------------------------------------------

    def _announce_call(self, call_id: str, name: str, arguments: str) -> None:
        """The engine called a client-declared tool: a function_call item in a response."""
        out: list[str] = []
        resp = self._response
        standalone = resp is None
        if resp is None:
            out += self._open(requested=False)
            resp = self._response
            assert resp is not None
        item = self._new_item("", "function_call")
        index = len(resp.outputs)
        base = {"id": item.id, "object": "realtime.item", "type": "function_call",
                "call_id": call_id, "name": name}  # fmt: skip
        pending = {**base, "status": "in_progress", "arguments": ""}
        done = {**base, "status": "completed", "arguments": arguments}
        resp.outputs.append(done)
        prev = self._previous(item.id)
        where = {"response_id": resp.id, "item_id": item.id, "output_index": index,
                 "call_id": call_id}  # fmt: skip
        out += [
            self._enc.event("response.output_item.added", response_id=resp.id,
                            output_index=index, item=pending),
            self._enc.event("conversation.item.added", previous_item_id=prev, item=pending),
            self._enc.event("response.function_call_arguments.delta", delta=arguments, **where),
            self._enc.event("response.function_call_arguments.done", name=name,
                            arguments=arguments, **where),
            self._enc.event("response.output_item.done", response_id=resp.id,
                            output_index=index, item=done),
            self._enc.event("conversation.item.done", previous_item_id=prev, item=done),
        ]  # fmt: skip
        if standalone or (resp.item is None and not resp.speech_owed):
            out += self._close("completed", "")
        self._pending += out
        self._wake()

    # ---- items ---------------------------------------------------------------------

    def _new_item(self, role: str, kind: str, *, item_id: str = "", turn_id: str = "") -> _Item:
        item = _Item(item_id or self._enc.new_id("item"), role, kind, turn_id)
        self._items[item.id] = item
        self._order.append(item.id)
        return item

    def _previous(self, item_id: str) -> str | None:
        i = self._order.index(item_id) if item_id in self._order else len(self._order)
        return self._order[i - 1] if i > 0 else None

