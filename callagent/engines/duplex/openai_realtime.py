"""The OpenAI Realtime (GA) backend of the duplex engine, over websockets.

- Twilio's mu-law is passed through as `audio/pcmu` both ways: no resampling.
- Turn taking is the provider's (`server_vad` or `semantic_vad`, from settings).
- Barge-in: `input_audio_buffer.speech_started` while our audio plays ->
  `Interrupt` (the session clears Twilio's buffer, then reports the heard
  milliseconds via `played()`) -> `conversation.item.truncate` with
  `audio_end_ms` = what was actually played, and later deltas of that item are
  dropped. Vendors without truncate (`providers.openai_truncate = false`) only
  drop the audio; the heard text is kept by the session.
- Function calls go to the `BackgroundReasoner` (tasks beside the loop);
  outputs go back as `function_call_output`, then one `response.create` once
  the response that asked is done. A new caller question cancels stale calls.
- Each output audio item is one agent turn (`turn_id` = the item id); each
  delta is one segment, so the session's marks track playback per delta.

`connect(url, headers)` is injected (tests aim it at our own /v1/realtime).
A connection lost mid-call makes `events()` raise `ProviderFailed`, which the
fallback wrapper (`duplex.fallback`) turns into a switch to the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from callagent.agents.profile import AgentProfile
from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.audio.pcm import Pcm
from callagent.config import ProvidersSettings
from callagent.engines.base import (
    AgentAudio,
    AgentTextDelta,
    AgentTurnDone,
    CallContext,
    EndCall,
    EngineEvent,
    Interrupt,
    Metric,
    PlaybackProgress,
    UserTranscript,
)
from callagent.engines.duplex.reasoner import BackgroundReasoner, ToolFn
from callagent.engines.providers.openai_realtime_wire import (
    AudioDelta,
    FunctionCallDone,
    FunctionTool,
    InputTranscript,
    ItemTruncated,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionConfig,
    SessionUpdated,
    SpeechStarted,
    TranscriptDelta,
    TurnDetection,
    WireError,
    encode_append,
    encode_function_output,
    encode_response_create,
    encode_session_update,
    encode_truncate,
    parse_server_event,
)

__all__ = ["Connect", "OpenAIRealtimeEngine", "ProviderFailed", "realtime_url", "session_for"]

log = logging.getLogger(__name__)

Connect = Callable[[str, dict[str, str]], AbstractAsyncContextManager[ClientConnection]]


class ProviderFailed(RuntimeError):
    """The provider's connection failed or closed abnormally mid-call."""


def default_connect(url: str, headers: dict[str, str]) -> AbstractAsyncContextManager[ClientConnection]:
    return websockets.connect(url, additional_headers=headers, max_size=16 * 1024 * 1024)


def realtime_url(base_url: str, model: str) -> str:
    """The SDK's rule: base URL (http->ws, https->wss) + /realtime + ?model=."""
    base = base_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    sep = "&" if "?" in base else "?"
    return f"{base}/realtime{sep}model={model}"


def session_for(profile: AgentProfile, settings: ProvidersSettings) -> SessionConfig:
    opening = " ".join(x for x in (profile.ai_disclosure, profile.recording_disclosure,
                                   profile.greeting) if x)  # fmt: skip
    instructions = profile.prompt
    if opening:
        instructions += f"\n\nBegin the call by saying exactly: {opening}"
    if settings.openai_turn_detection == "semantic_vad":
        td = TurnDetection(type="semantic_vad", eagerness=settings.openai_eagerness)
    else:
        td = TurnDetection(threshold=settings.openai_vad_threshold,
                           silence_duration_ms=settings.openai_silence_ms)  # fmt: skip
    return SessionConfig(
        model=settings.openai_model,
        instructions=instructions,
        turn_detection=td,
        voice=settings.openai_voice,
        tools=tuple(FunctionTool(t.name, t.description, t.parameters) for t in profile.tools),
    )


@dataclass
class _Turn:
    item_id: str
    response_id: str
    sent_ms: float = 0.0
    text: str = ""
    done: bool = False


@dataclass
class _Response:
    id: str
    calls: set[str] = field(default_factory=set)  # function calls still running
    done: bool = False


class OpenAIRealtimeEngine:
    name = "duplex:openai_realtime"
    input_rate = 8000

    def __init__(
        self,
        profile: AgentProfile,
        settings: ProvidersSettings,
        tools: ToolFn,
        *,
        api_key: str = "",
        connect: Connect = default_connect,
    ) -> None:
        self._profile = profile
        self._settings = settings
        self._key = api_key or settings.openai_api_key
        self._connect = connect
        self._config = session_for(profile, settings)
        self._events: asyncio.Queue[EngineEvent | BaseException | None] = asyncio.Queue()
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self._reasoner = BackgroundReasoner(tools, self._emit, self._tool_done,
                                            holding_after_ms=settings.holding_after_ms,
                                            on_holding=self._holding)  # fmt: skip
        self._turns: dict[str, _Turn] = {}
        self._dropped: set[str] = set()
        self._responses: dict[str, _Response] = {}
        self._active: str = ""  # the response in progress
        self._owed: list[str] = []  # responses whose tool outputs are all sent
        self._playing: str = ""  # item id of the turn the caller may be hearing
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # ---- Engine interface ---------------------------------------------------------

    async def start(self, call: CallContext) -> None:
        url = realtime_url(self._settings.openai_base_url, self._settings.openai_model)
        headers = {"Authorization": f"Bearer {self._key}"}
        self._stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                ws = await self._stack.enter_async_context(self._connect(url, headers))
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            await self._stack.aclose()
            raise ProviderFailed(f"cannot connect to {url}: {exc}") from exc
        self._send(encode_session_update(self._config))
        self._send(encode_response_create())  # the opening: disclosure and greeting
        self._tasks = [asyncio.create_task(self._read(ws)), asyncio.create_task(self._write(ws))]

    def feed(self, chunk: Pcm) -> None:
        if chunk.rate != self.input_rate:
            raise ValueError(f"{self.name} takes {self.input_rate} Hz audio, got {chunk.rate}")
        if not self._closed:
            self._send(encode_append(pcm_to_ulaw(chunk.samples)))

    def dtmf(self, digit: str) -> None:
        pass  # the provider has no DTMF input; keypad flows belong to the pipeline

    def played(self, progress: PlaybackProgress) -> None:
        turn = self._turns.get(progress.turn_id)
        if turn is None:
            return
        if progress.complete:
            if self._playing == turn.item_id:
                self._playing = ""  # heard to the end: a later speech_started is a new turn
            return
        heard = int(min(progress.heard_ms, turn.sent_ms))
        self._dropped.add(turn.item_id)
        if self._settings.openai_truncate:
            self._send(encode_truncate(turn.item_id, heard))
        self._emit(Metric("played_ms_at_barge_in", float(heard), turn.item_id))

    async def events(self) -> AsyncIterator[EngineEvent]:
        while (event := await self._events.get()) is not None:
            if isinstance(event, BaseException):
                raise event
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._reasoner.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stack is not None:
            await self._stack.aclose()
        self._events.put_nowait(None)

    # ---- socket tasks ---------------------------------------------------------------

    def _send(self, text: str) -> None:
        self._out.put_nowait(text)

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            await ws.send(await self._out.get())

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                try:
                    event = parse_server_event(message)
                except WireError as exc:
                    log.warning("openai realtime: bad server event: %s", exc)
                    continue
                self._on_server(event)
        except websockets.ConnectionClosed:
            pass
        if self._closed:
            return
        code = ws.close_code
        if code == 1000:  # a normal close: the far end ended the conversation
            self._emit(EndCall(ws.close_reason or "the provider ended the session"))
        else:
            self._events.put_nowait(ProviderFailed(f"provider connection lost ({code})"))

    # ---- server events --------------------------------------------------------------

    def _on_server(self, event: Any) -> None:
        if isinstance(event, AudioDelta):
            self._audio(event)
        elif isinstance(event, TranscriptDelta):
            turn = self._turns.get(event.item_id)
            if turn is None or event.item_id in self._dropped:
                return
            if event.done:
                turn.text = event.delta
            else:
                turn.text += event.delta
                self._emit(AgentTextDelta(turn.item_id, event.delta))
        elif isinstance(event, SpeechStarted):
            self._barge_in()
        elif isinstance(event, InputTranscript):
            if event.text:
                self._emit(UserTranscript(event.text, final=True))
        elif isinstance(event, ResponseCreated):
            self._active = event.response_id
            self._responses[event.response_id] = _Response(event.response_id)
        elif isinstance(event, FunctionCallDone):
            if event.status == "completed":
                resp = self._responses.setdefault(event.response_id, _Response(event.response_id))
                resp.calls.add(event.call_id)
                self._reasoner.run(event.call_id, event.name, event.arguments)
        elif isinstance(event, ResponseDone):
            self._response_done(event)
        elif isinstance(event, ItemTruncated):
            self._emit(Metric("truncated_at_ms", float(event.audio_end_ms), event.item_id))
        elif isinstance(event, ServerError):
            err = event.error
            if err.code != "conversation_already_has_active_response":
                log.warning("openai realtime error %s: %s (event %s)", err.code, err.message,
                            err.event_id)  # fmt: skip
            self._emit(Metric("provider_error", 1.0))
        elif isinstance(event, SessionUpdated) and not event.created:
            self._emit(Metric("provider_session_updated", 1.0))

    def _audio(self, event: AudioDelta) -> None:
        if event.item_id in self._dropped:
            return
        turn = self._turns.get(event.item_id)
        if turn is None:
            turn = self._turns[event.item_id] = _Turn(event.item_id, event.response_id)
        pcm = Pcm(ulaw_to_pcm(event.audio), 8000)
        turn.sent_ms += pcm.duration_ms
        self._playing = turn.item_id
        self._emit(AgentAudio(turn.item_id, pcm, segment_end=True))

    def _barge_in(self) -> None:
        self._reasoner.cancel_all()  # a new caller question: pending answers are stale
        turn = self._turns.get(self._playing)
        if turn is not None and turn.item_id not in self._dropped:
            self._emit(Interrupt(turn.item_id))  # the session clears, then calls played()

    def _response_done(self, event: ResponseDone) -> None:
        if self._active == event.response_id:
            self._active = ""
        resp = self._responses.get(event.response_id)
        for turn in self._turns.values():
            if turn.response_id == event.response_id and not turn.done:
                turn.done = True
                if turn.item_id not in self._dropped:
                    self._emit(AgentTurnDone(turn.item_id, turn.text))
        if resp is not None:
            resp.done = True
            if not resp.calls:
                self._responses.pop(resp.id, None)
        self._maybe_respond()

    # ---- function calls ---------------------------------------------------------------

    def _tool_done(self, call_id: str, output: str) -> None:
        self._send(encode_function_output(call_id, output))
        for resp in self._responses.values():
            if call_id in resp.calls:
                resp.calls.discard(call_id)
                if not resp.calls:
                    self._owed.append(resp.id)
        self._maybe_respond()

    def _maybe_respond(self) -> None:
        """One response.create once every output of a finished response is sent."""
        if self._active:
            return
        ready = [r for r in self._owed if self._responses.get(r, _Response(r)).done]
        if ready:
            self._owed = [r for r in self._owed if r not in ready]
            for r in ready:
                self._responses.pop(r, None)
            self._send(encode_response_create())

    def _holding(self) -> None:
        if not self._active and self._settings.holding_phrase:
            self._send(encode_response_create(f"Say only: {self._settings.holding_phrase}"))

    def _emit(self, event: EngineEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)
