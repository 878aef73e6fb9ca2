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
- Each output audio item is one agent turn (`turn_id` = the item id, prefixed
  `s<n>_` on the n-th session: providers' ids may repeat); each delta is one
  segment, so the session's marks track playback per delta.
- The connection (`duplex.openai_connection`) renews the session before the
  vendor's cap and reconnects after a drop, re-seeding the transcript
  (`history`). When the old session goes, this engine settles what it left
  open (`_session_lost`: responses cut short are done, tool outputs it got but
  never answered are asked again); a tool result it never got goes to the new
  session as a system message, then one `response.create`.

`connect(url, headers)` is injected (tests aim it at our own /v1/realtime).
A connection that cannot be re-established makes `events()` raise
`ProviderFailed`, which the fallback wrapper (`duplex.fallback`) turns into a
switch to the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

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
from callagent.engines.duplex.openai_connection import (
    Connect,
    ProviderFailed,
    RealtimeConnection,
    default_connect,
    realtime_url,
)
from callagent.engines.duplex.reasoner import BackgroundReasoner, ToolFn
from callagent.engines.providers.openai_realtime_wire import (
    AudioDelta,
    FunctionCallDone,
    FunctionTool,
    HistoryTurn,
    InputTranscript,
    ItemTruncated,
    ResponseCreated,
    ResponseDone,
    ServerError,
    ServerEvent,
    SessionConfig,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TurnDetection,
    encode_append,
    encode_response_create,
    encode_truncate,
)

# Connect, ProviderFailed, default_connect and realtime_url are the
# connection's, still importable from here (gemini_live and the tests do).
__all__ = ["Connect", "OpenAIRealtimeEngine", "ProviderFailed", "default_connect", "realtime_url",
           "session_for"]  # fmt: skip

log = logging.getLogger(__name__)


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
    turn_id: str  # ours: provider ids repeat across sessions (per-session counters)
    item_id: str  # the provider's, on its session
    response_id: str
    session: int  # the session (generation) that produced it
    sent_ms: float = 0.0
    text: str = ""
    done: bool = False
    said: HistoryTurn | None = None  # its line in the history, once recorded


@dataclass
class _Response:
    id: str
    calls: set[str] = field(default_factory=set)  # function calls still running
    done: bool = False


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    arguments: str
    session: int


def _heard_text(text: str, heard_ms: float, sent_ms: float) -> str:
    """The part of a turn's transcript the caller heard, by the share of its audio played."""
    if sent_ms <= 0 or heard_ms >= sent_ms:
        return text
    cut = text[: int(len(text) * max(heard_ms, 0.0) / sent_ms)]
    return cut.rsplit(" ", 1)[0] if " " in cut else ""


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
        self._events: asyncio.Queue[EngineEvent | BaseException | None] = asyncio.Queue()
        self._conn = RealtimeConnection(settings, session_for(profile, settings),
                                        api_key=api_key or settings.openai_api_key,
                                        connect=connect, on_event=self._on_server,
                                        quiet=self._quiet, on_lost=self._session_lost,
                                        on_resumed=self._maybe_respond, emit=self._emit,
                                        fail=self._events.put_nowait)  # fmt: skip
        self._reasoner = BackgroundReasoner(tools, self._emit, self._tool_done,
                                            holding_after_ms=settings.holding_after_ms,
                                            on_holding=self._holding)  # fmt: skip
        self._turns: dict[str, _Turn] = {}  # by turn id
        self._items: dict[str, str] = {}  # the live session's item ids -> turn ids
        self._dropped: set[str] = set()  # turn ids
        self._responses: dict[str, _Response] = {}
        self._active: str = ""  # the response in progress
        self._owed: list[str] = []  # responses whose tool outputs are all sent
        self._playing: str = ""  # the turn the caller may be hearing
        self._caller_speaking = False
        self._calls: dict[str, _Call] = {}  # function calls running
        self._answer = ""  # "requested" or the response answering tool outputs
        self._reask = False  # a tool result reached a new session: one response.create owed
        self._closed = False

    @property
    def reconnects(self) -> int:
        """Unplanned reconnections (connection lost) so far; limited per call."""
        return self._conn.reconnects

    @property
    def renewals(self) -> int:
        """Planned new sessions (session cap) so far."""
        return self._conn.renewals

    # ---- Engine interface ---------------------------------------------------------

    async def start(self, call: CallContext) -> None:
        await self._conn.start()
        self._conn.send(encode_response_create())  # the opening: disclosure and greeting

    def feed(self, chunk: Pcm) -> None:
        if chunk.rate != self.input_rate:
            raise ValueError(f"{self.name} takes {self.input_rate} Hz audio, got {chunk.rate}")
        if self._closed:
            return
        self._conn.send_audio(encode_append(pcm_to_ulaw(chunk.samples)), chunk.duration_ms)

    def dtmf(self, digit: str) -> None:
        pass  # the provider has no DTMF input; keypad flows belong to the pipeline

    def played(self, progress: PlaybackProgress) -> None:
        turn = self._turns.get(progress.turn_id)
        if turn is None:
            return
        self._conn.tick()
        if progress.complete:
            if self._playing == turn.turn_id:
                self._playing = ""  # heard to the end: a later speech_started is a new turn
            return
        heard = int(min(progress.heard_ms, turn.sent_ms))
        self._dropped.add(turn.turn_id)
        if self._playing == turn.turn_id:
            self._playing = ""
        self._remember(turn, _heard_text(turn.text, heard, turn.sent_ms))
        # an item of an earlier session does not exist on this one: nothing to truncate
        if self._settings.openai_truncate and turn.session == self._conn.session:
            self._conn.send(encode_truncate(turn.item_id, heard))
        self._emit(Metric("played_ms_at_barge_in", float(heard), turn.turn_id))

    async def events(self) -> AsyncIterator[EngineEvent]:
        while (event := await self._events.get()) is not None:
            if isinstance(event, BaseException):
                raise event
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._conn.close()
        await self._reasoner.close()
        self._events.put_nowait(None)

    # ---- the connection's callbacks -------------------------------------------------

    def _session_lost(self) -> None:
        """The old session is gone: settle what it left open."""
        for turn in self._turns.values():  # responses cut short: the caller heard this much
            if not turn.done:
                turn.done = True
                if turn.turn_id not in self._dropped:
                    self._emit(AgentTurnDone(turn.turn_id, turn.text))
                    self._remember(turn, turn.text)
        self._turns = {k: t for k, t in self._turns.items() if k == self._playing}
        self._items.clear()
        # tool outputs the old session got but never answered: ask again on the new one
        self._reask = self._reask or bool(self._owed) or bool(self._answer)
        self._responses.clear()
        self._owed.clear()
        self._active = self._answer = ""
        self._caller_speaking = False

    def _quiet(self) -> bool:
        """Nobody speaking and nothing pending: a new session costs the caller nothing."""
        return not (self._active or self._caller_speaking or self._playing or self._calls
                    or self._owed or self._answer or self._reask)  # fmt: skip

    # ---- server events --------------------------------------------------------------

    def _on_server(self, event: ServerEvent) -> None:
        if isinstance(event, AudioDelta):
            self._audio(event)
        elif isinstance(event, TranscriptDelta):
            turn = self._turns.get(self._items.get(event.item_id, ""))
            if turn is None or turn.turn_id in self._dropped:
                return
            if event.done:
                turn.text = event.delta
            else:
                turn.text += event.delta
                self._emit(AgentTextDelta(turn.turn_id, event.delta))
        elif isinstance(event, SpeechStarted):
            self._caller_speaking = True
            self._barge_in()
        elif isinstance(event, SpeechStopped):
            self._caller_speaking = False
        elif isinstance(event, InputTranscript):
            if event.text:
                self._conn.history.append(HistoryTurn("user", event.text))
                self._emit(UserTranscript(event.text, final=True))
        elif isinstance(event, ResponseCreated):
            self._active = event.response_id
            self._responses[event.response_id] = _Response(event.response_id)
            if self._answer == "requested":
                self._answer = event.response_id
        elif isinstance(event, FunctionCallDone):
            if event.status == "completed":
                resp = self._responses.setdefault(event.response_id, _Response(event.response_id))
                resp.calls.add(event.call_id)
                self._calls[event.call_id] = _Call(event.name, event.arguments, self._conn.session)
                self._reasoner.run(event.call_id, event.name, event.arguments)
        elif isinstance(event, ResponseDone):
            self._response_done(event)
        elif isinstance(event, ItemTruncated):
            self._emit(Metric("truncated_at_ms", float(event.audio_end_ms),
                              self._items.get(event.item_id, event.item_id)))  # fmt: skip
        elif isinstance(event, ServerError):
            err = event.error
            if err.code != "conversation_already_has_active_response":
                log.warning("openai realtime error %s: %s (event %s)", err.code, err.message,
                            err.event_id)  # fmt: skip
            self._emit(Metric("provider_error", 1.0))
        elif isinstance(event, SessionUpdated) and not event.created:
            self._emit(Metric("provider_session_updated", 1.0))

    def _audio(self, event: AudioDelta) -> None:
        turn_id = self._items.get(event.item_id)
        if turn_id is None:  # a new item: session 1 keeps the provider's id as the turn id
            session = self._conn.session
            turn_id = event.item_id if session == 1 else f"s{session}_{event.item_id}"
            self._items[event.item_id] = turn_id
            self._turns[turn_id] = _Turn(turn_id, event.item_id, event.response_id, session)
        if turn_id in self._dropped:
            return
        turn = self._turns[turn_id]
        pcm = Pcm(ulaw_to_pcm(event.audio), 8000)
        turn.sent_ms += pcm.duration_ms
        self._playing = turn.turn_id
        self._emit(AgentAudio(turn.turn_id, pcm, segment_end=True))

    def _barge_in(self) -> None:
        self._reasoner.cancel_all()  # a new caller question: pending answers are stale
        self._calls.clear()
        turn = self._turns.get(self._playing)
        if turn is not None and turn.turn_id not in self._dropped:
            self._emit(Interrupt(turn.turn_id))  # the session clears, then calls played()

    def _response_done(self, event: ResponseDone) -> None:
        if self._active == event.response_id:
            self._active = ""
        if self._answer == event.response_id:
            self._answer = ""
        resp = self._responses.get(event.response_id)
        for turn in self._turns.values():
            if (turn.response_id == event.response_id and turn.session == self._conn.session
                    and not turn.done):  # fmt: skip
                turn.done = True
                if turn.turn_id not in self._dropped:
                    self._remember(turn, turn.text)
                    self._emit(AgentTurnDone(turn.turn_id, turn.text))
        if resp is not None:
            resp.done = True
            if not resp.calls:
                self._responses.pop(resp.id, None)
        self._maybe_respond()

    def _remember(self, turn: _Turn, text: str) -> None:
        """The turn's line in the history (re-seeded on a new session): what was heard."""
        history = self._conn.history
        line = HistoryTurn("assistant", text)
        at = next((i for i, t in enumerate(history) if t is turn.said), None)
        if at is None:
            history.append(line)
        else:
            history[at] = line
        turn.said = line

    # ---- function calls ---------------------------------------------------------------

    def _tool_done(self, call_id: str, output: str) -> None:
        self._conn.tick()
        call = self._calls.pop(call_id, None)
        if call is None:
            return  # stale: cancelled by a newer caller question
        if self._conn.tool_result(call_id, call.session, call.name, call.arguments, output):
            # asked on a session that is gone: carried to the new one as a system message
            self._reask = True
            self._maybe_respond()
            return
        for resp in self._responses.values():
            if call_id in resp.calls:
                resp.calls.discard(call_id)
                if not resp.calls:
                    self._owed.append(resp.id)
        self._maybe_respond()

    def _maybe_respond(self) -> None:
        """One response.create once every output of a finished response is sent."""
        if self._active or self._conn.reconnecting:
            return
        ready = [r for r in self._owed if self._responses.get(r, _Response(r)).done]
        if ready:
            self._owed = [r for r in self._owed if r not in ready]
            for r in ready:
                self._responses.pop(r, None)
        elif not (self._reask and all(c.session == self._conn.session
                                      for c in self._calls.values())):  # fmt: skip
            return
        self._reask = False
        self._answer = "requested"
        self._conn.send(encode_response_create())

    def _holding(self) -> None:
        if not self._active and self._settings.holding_phrase:
            self._conn.send(encode_response_create(f"Say only: {self._settings.holding_phrase}"))

    def _emit(self, event: EngineEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)
