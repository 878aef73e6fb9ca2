"""The Gemini Live backend of the duplex engine (BidiGenerateContent over websockets).

- Caller audio: 8 kHz from Twilio, resampled to 16 kHz PCM16 for the model;
  the model's 24 kHz PCM16 is resampled to 8 kHz by one streaming resampler
  per call (each delta is a segment: no filter seams between them).
- Barge-in: `serverContent.interrupted` -> `Interrupt` (the session clears
  Twilio's buffer). Gemini has no truncate: what the caller heard is ours to
  keep (the session records it); `played()` only logs it.
- Tools: `toolCall.functionCalls` run in the `BackgroundReasoner`; outputs go
  back as one `toolResponse`; `toolCallCancellation` cancels those tasks.
- Connection limits: `sessionResumption` is on; the latest resumable
  `sessionResumptionUpdate.newHandle` is kept. On `goAway` (or a connection
  lost) the backend reconnects with that handle and carries on; audio fed
  meanwhile is queued. A failed reconnect makes `events()` raise
  `ProviderFailed` (the fallback wrapper takes over).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from callagent.agents.profile import AgentProfile
from callagent.audio.pcm import Pcm
from callagent.audio.resample import make_resampler
from callagent.config import ProvidersSettings
from callagent.engines.base import (
    AgentAudio,
    AgentTextDelta,
    AgentTurnDone,
    CallContext,
    EngineEvent,
    Interrupt,
    Metric,
    PlaybackProgress,
    UserTranscript,
)
from callagent.engines.duplex.openai_connection import Connect, ProviderFailed, default_connect
from callagent.engines.duplex.reasoner import BackgroundReasoner, ToolFn
from callagent.engines.providers.gemini_live_wire import (
    FunctionDecl,
    GeminiWireError,
    GoAway,
    InputTranscription,
    Interrupted,
    ModelAudio,
    OutputTranscription,
    ResumptionUpdate,
    Setup,
    SetupComplete,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    encode_audio,
    encode_setup,
    encode_tool_response,
    parse_server_message,
)

__all__ = ["GeminiLiveEngine", "live_url"]

log = logging.getLogger(__name__)
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
MAX_RECONNECTS = 5


def live_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    return base + PATH


class GeminiLiveEngine:
    name = "duplex:gemini_live"
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
        self._key = api_key or settings.gemini_api_key
        self._connect = connect
        opening = " ".join(x for x in (profile.ai_disclosure, profile.recording_disclosure,
                                       profile.greeting) if x)  # fmt: skip
        self._setup = Setup(
            model=settings.gemini_model,
            instructions=profile.prompt + (f"\n\nBegin by saying exactly: {opening}" if opening
                                           else ""),  # fmt: skip
            functions=tuple(FunctionDecl(t.name, t.description, t.parameters)
                            for t in profile.tools),  # fmt: skip
        )
        self._events: asyncio.Queue[EngineEvent | BaseException | None] = asyncio.Queue()
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self._up = make_resampler(8000, 16000)
        self._down = make_resampler(24000, 8000)
        self._reasoner = BackgroundReasoner(tools, self._emit, self._tool_done,
                                            holding_after_ms=settings.holding_after_ms)  # fmt: skip
        self._names: dict[str, str] = {}
        self._handle = ""
        self._turn_seq = 0
        self._turn = ""
        self._turn_text = ""
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closed = False
        self.reconnects = 0

    # ---- Engine interface ---------------------------------------------------------

    async def start(self, call: CallContext) -> None:
        ws, stack = await self._open()
        self._task = asyncio.create_task(self._run(ws, stack))

    def feed(self, chunk: Pcm) -> None:
        if chunk.rate != self.input_rate:
            raise ValueError(f"{self.name} takes {self.input_rate} Hz audio, got {chunk.rate}")
        if not self._closed:
            pcm16 = self._up.process(chunk.samples)
            if len(pcm16):
                self._out.put_nowait(encode_audio(pcm16.astype("<i2").tobytes()))

    def dtmf(self, digit: str) -> None:
        pass

    def played(self, progress: PlaybackProgress) -> None:
        if not progress.complete:
            self._emit(Metric("played_ms_at_barge_in", progress.heard_ms, progress.turn_id))

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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._events.put_nowait(None)

    # ---- connection -------------------------------------------------------------------

    async def _open(self) -> tuple[ClientConnection, contextlib.AsyncExitStack]:
        url = live_url(self._settings.gemini_base_url)
        stack = contextlib.AsyncExitStack()
        setup = Setup(self._setup.model, self._setup.instructions, self._setup.functions,
                      resume_handle=self._handle)  # fmt: skip
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                ws = await stack.enter_async_context(
                    self._connect(url, {"x-goog-api-key": self._key}))
                await ws.send(encode_setup(setup))
                first = parse_server_message(await ws.recv())
        except (OSError, TimeoutError, websockets.WebSocketException, GeminiWireError) as exc:
            await stack.aclose()
            raise ProviderFailed(f"cannot open a Gemini Live session at {url}: {exc}") from exc
        if not any(isinstance(m, SetupComplete) for m in first):
            await stack.aclose()
            raise ProviderFailed("Gemini Live: the first server message was not setupComplete")
        return ws, stack

    async def _run(self, ws: ClientConnection, stack: contextlib.AsyncExitStack) -> None:
        while True:
            writer = asyncio.create_task(self._write(ws))
            reason = "closed"
            try:
                async for message in ws:
                    try:
                        msgs = parse_server_message(message)
                    except GeminiWireError as exc:
                        log.warning("gemini live: bad server message: %s", exc)
                        continue
                    if any(isinstance(m, GoAway) for m in msgs):
                        reason = "go_away"
                        break
                    for m in msgs:
                        self._on_server(m)
            except websockets.ConnectionClosed:
                reason = "lost"
            finally:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                await stack.aclose()
            if self._closed:
                return
            if not self._handle or self.reconnects >= MAX_RECONNECTS:
                self._events.put_nowait(ProviderFailed(f"Gemini Live session {reason}; "
                                                       "no resumption handle"))  # fmt: skip
                return
            self.reconnects += 1
            self._emit(Metric(f"provider_reconnect_{reason}", 1.0))
            try:
                ws, stack = await self._open()
            except ProviderFailed as exc:
                self._events.put_nowait(exc)
                return

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            text = await self._out.get()
            try:
                await ws.send(text)
            except websockets.ConnectionClosed:
                self._out.put_nowait(text)  # not lost: goes out on the resumed session
                raise

    # ---- server messages ----------------------------------------------------------------

    def _on_server(self, m: Any) -> None:
        if isinstance(m, ModelAudio):
            if not self._turn:
                self._turn_seq += 1
                self._turn, self._turn_text = f"g{self._turn_seq}", ""
            samples = np.frombuffer(m.pcm24k, dtype="<i2").astype(np.int16)
            # one streaming resampler for the whole call: no seams between deltas
            self._emit(AgentAudio(self._turn, Pcm(self._down.process(samples), 8000),
                                  segment_end=True))  # fmt: skip
        elif isinstance(m, OutputTranscription):
            if self._turn:
                self._turn_text += m.text
                self._emit(AgentTextDelta(self._turn, m.text))
        elif isinstance(m, InputTranscription):
            if m.text.strip():
                self._emit(UserTranscript(m.text.strip(), final=True))
        elif isinstance(m, Interrupted):
            self._reasoner.cancel_all()
            self._down.reset()  # what the resampler held back was never heard: drop it
            if self._turn:
                self._emit(Interrupt(self._turn))
                self._emit(AgentTurnDone(self._turn, self._turn_text))
                self._turn = ""
        elif isinstance(m, TurnComplete):
            if self._turn:
                # the resampler holds up to ~73 ms of the turn's end: it belongs to
                # this turn, not to the start of the next one
                tail = self._down.flush()
                if len(tail):
                    self._emit(AgentAudio(self._turn, Pcm(tail, 8000), segment_end=True))
                self._emit(AgentTurnDone(self._turn, self._turn_text))
                self._turn = ""
        elif isinstance(m, ToolCall):
            for call in m.calls:
                self._names[call.id] = call.name
                self._reasoner.run(call.id, call.name, json.dumps(dict(call.args)))
        elif isinstance(m, ToolCallCancellation):
            self._reasoner.cancel(m.ids)
        elif isinstance(m, ResumptionUpdate):
            if m.resumable and m.handle:
                self._handle = m.handle

    def _tool_done(self, call_id: str, output: str) -> None:
        try:
            value = json.loads(output)
        except ValueError:
            value = {"result": output}
        response = value if isinstance(value, dict) else {"result": value}
        self._out.put_nowait(encode_tool_response([(call_id, self._names.get(call_id, ""),
                                                    response)]))  # fmt: skip

    def _emit(self, event: EngineEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)
