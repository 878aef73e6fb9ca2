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

- Session cap (60 min, closed with 1001; no renewal): the backend opens a new
  session itself. From `openai_session_cap_s - openai_renew_margin_s` it waits
  for a quiet moment (no response running, caller not speaking, our audio heard
  to the end, no tool call or answer pending); at `cap - openai_renew_force_s`
  it renews anyway. A connection lost mid-call (1001, a network drop) is
  reconnected too, up to `openai_max_reconnects` times per call. Either way the
  new session gets the same `session.update`, then the transcript so far (a
  note and the last `openai_reseed_turns` turns, `reseed_events`); caller audio
  fed meanwhile is queued (bounded) and sent once the session is up. A tool
  result the old session never got goes to the new one as a system message
  (its call id means nothing there), then one `response.create`.
  `Metric("provider_reconnect_<reason>")`: `renew`, `renew_forced`,
  `going_away` (1001), `lost`.

`connect(url, headers)` is injected (tests aim it at our own /v1/realtime).
A connection that cannot be re-established makes `events()` raise
`ProviderFailed`, which the fallback wrapper (`duplex.fallback`) turns into a
switch to the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
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
    HistoryTurn,
    InputTranscript,
    ItemTruncated,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionConfig,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TurnDetection,
    WireError,
    encode_append,
    encode_function_output,
    encode_message,
    encode_response_create,
    encode_session_update,
    encode_truncate,
    parse_server_event,
    reseed_events,
    tool_result_text,
)

__all__ = ["Connect", "OpenAIRealtimeEngine", "ProviderFailed", "realtime_url", "session_for"]

log = logging.getLogger(__name__)

Connect = Callable[[str, dict[str, str]], AbstractAsyncContextManager[ClientConnection]]

MAX_BACKLOG_MS = 15_000.0  # caller audio kept while reconnecting; beyond it the oldest goes
CONNECT_ATTEMPTS = 2  # per reconnect, within connect_timeout_s each
RETRY_DELAY_S = 0.5


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
        self._key = api_key or settings.openai_api_key
        self._connect = connect
        self._config = session_for(profile, settings)
        self._events: asyncio.Queue[EngineEvent | BaseException | None] = asyncio.Queue()
        # (event, audio ms): audio appends have ms > 0, control events 0
        self._out: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self._sending: tuple[str, float] | None = None
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
        self._history: deque[HistoryTurn] = deque(maxlen=max(settings.openai_reseed_turns, 1))
        self._session = 0  # generation: +1 per (re)connection
        self._reconnecting = False
        self._backlog: deque[tuple[str, float]] = deque()
        self._backlog_ms = 0.0
        self._backlog_dropped_ms = 0.0
        self._tick = asyncio.Event()  # state changed: the renewal timer re-checks
        self._task: asyncio.Task[None] | None = None
        self._stack: contextlib.AsyncExitStack | None = None  # the live session's socket
        self._old: list[asyncio.Task[None]] = []  # old sockets closing
        self._closed = False
        self.reconnects = 0  # unplanned (connection lost); limited per call
        self.renewals = 0  # planned (session cap)

    # ---- Engine interface ---------------------------------------------------------

    async def start(self, call: CallContext) -> None:
        ws, stack = await self._open()
        self._session = 1
        self._send(encode_session_update(self._config))
        self._send(encode_response_create())  # the opening: disclosure and greeting
        self._task = asyncio.create_task(self._run(ws, stack))

    def feed(self, chunk: Pcm) -> None:
        if chunk.rate != self.input_rate:
            raise ValueError(f"{self.name} takes {self.input_rate} Hz audio, got {chunk.rate}")
        if self._closed:
            return
        item = (encode_append(pcm_to_ulaw(chunk.samples)), chunk.duration_ms)
        if self._reconnecting:
            self._keep(item)
        else:
            self._out.put_nowait(item)

    def dtmf(self, digit: str) -> None:
        pass  # the provider has no DTMF input; keypad flows belong to the pipeline

    def played(self, progress: PlaybackProgress) -> None:
        turn = self._turns.get(progress.turn_id)
        if turn is None:
            return
        self._tick.set()
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
        if self._settings.openai_truncate and turn.session == self._session:
            self._send(encode_truncate(turn.item_id, heard))
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
        await self._reasoner.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._stack is not None:  # never served (closed at once after start)
            await self._stack.aclose()
        await asyncio.gather(*self._old, return_exceptions=True)
        self._events.put_nowait(None)

    # ---- connection -------------------------------------------------------------------

    async def _open(self) -> tuple[ClientConnection, contextlib.AsyncExitStack]:
        """A connected session: the handshake done and its first server event read."""
        url = realtime_url(self._settings.openai_base_url, self._settings.openai_model)
        headers = {"Authorization": f"Bearer {self._key}"}
        stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                ws = await stack.enter_async_context(self._connect(url, headers))
                first = parse_server_event(await ws.recv())
        except (OSError, TimeoutError, websockets.WebSocketException, WireError) as exc:
            await stack.aclose()
            raise ProviderFailed(f"cannot connect to {url}: {exc}") from exc
        except BaseException:  # cancelled (the call closed meanwhile)
            await stack.aclose()
            raise
        if isinstance(first, ServerError):
            await stack.aclose()
            raise ProviderFailed(f"{url} refused the session: {first.error.code} "
                                 f"{first.error.message}")  # fmt: skip
        self._on_server(first)
        self._stack = stack
        return ws, stack

    async def _run(self, ws: ClientConnection, stack: contextlib.AsyncExitStack) -> None:
        """One session after another until the call ends or a reconnect fails."""
        try:
            while (reason := await self._serve(ws, stack)) and not self._closed:
                planned = reason.startswith("renew")
                if not planned and self.reconnects >= self._settings.openai_max_reconnects:
                    raise ProviderFailed(f"provider connection lost ({reason}) after "
                                         f"{self.reconnects} reconnects")  # fmt: skip
                if planned:
                    self.renewals += 1
                else:
                    self.reconnects += 1
                log.info("openai realtime: reconnecting (%s) after session %d", reason,
                         self._session)  # fmt: skip
                self._emit(Metric(f"provider_reconnect_{reason}", 1.0))
                self._begin_reconnect()
                ws, stack = await self._reopen()
                self._resume()
        except ProviderFailed as exc:
            log.warning("openai realtime: %s", exc)
            self._events.put_nowait(exc)
        except Exception as exc:  # a bug must still end in the failure path, not a hang
            log.exception("openai realtime: the connection supervisor failed")
            self._events.put_nowait(ProviderFailed(f"connection supervisor failed: {exc!r}"))

    async def _serve(self, ws: ClientConnection, stack: contextlib.AsyncExitStack) -> str:
        """Run one session; the reason to reconnect, or "" if the call is over."""
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read(ws))
        writer = asyncio.create_task(self._write(ws))
        timer = asyncio.create_task(self._renewal_due(loop.time()))
        try:
            await asyncio.wait((reader, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer, timer):
                task.cancel()
            await asyncio.gather(reader, writer, timer, return_exceptions=True)
            self._old.append(asyncio.create_task(stack.aclose()))  # closes with 1000
        if self._closed:
            return ""
        if not reader.cancelled():  # the connection closed (the timer, if it fired, lost)
            reader.result()  # a bug in the reader surfaces here
            code = ws.close_code
            if code == 1000:  # a normal close: the far end ended the conversation
                self._emit(EndCall(ws.close_reason or "the provider ended the session"))
                return ""
            return "going_away" if code == 1001 else "lost"
        return timer.result()

    async def _reopen(self) -> tuple[ClientConnection, contextlib.AsyncExitStack]:
        failure: ProviderFailed | None = None
        for attempt in range(CONNECT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_DELAY_S)
            try:
                return await self._open()
            except ProviderFailed as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _begin_reconnect(self) -> None:
        """The old session is gone: queue caller audio, settle what it left open."""
        self._reconnecting = True
        self._session += 1
        pending = [self._sending] if self._sending is not None else []
        self._sending = None
        while not self._out.empty():
            pending.append(self._out.get_nowait())
        for item in pending:  # unsent audio waits for the new session; control events die
            if item[1] > 0:
                self._keep(item)
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

    def _resume(self) -> None:
        """The new session is up: settings, the transcript so far, then the queued audio."""
        self._send(encode_session_update(self._config), force=True)
        for event in reseed_events(self._history, last=self._settings.openai_reseed_turns):
            self._send(event, force=True)
        queued_ms = self._backlog_ms
        while self._backlog:
            self._out.put_nowait(self._backlog.popleft())
        self._backlog_ms = 0.0
        self._reconnecting = False
        self._emit(Metric("provider_reconnect_backlog_ms", queued_ms))
        if self._backlog_dropped_ms:
            self._emit(Metric("provider_reconnect_dropped_ms", self._backlog_dropped_ms))
            self._backlog_dropped_ms = 0.0
        self._maybe_respond()

    def _keep(self, item: tuple[str, float]) -> None:
        self._backlog.append(item)
        self._backlog_ms += item[1]
        while self._backlog_ms > MAX_BACKLOG_MS and len(self._backlog) > 1:
            _, ms = self._backlog.popleft()
            self._backlog_ms -= ms
            self._backlog_dropped_ms += ms

    def _quiet(self) -> bool:
        """Nobody speaking and nothing pending: a new session costs the caller nothing."""
        return not (self._active or self._caller_speaking or self._playing or self._calls
                    or self._owed or self._answer or self._reask)  # fmt: skip

    async def _renewal_due(self, opened: float) -> str:
        s = self._settings
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, opened + s.openai_session_cap_s - s.openai_renew_margin_s
                                - loop.time()))  # fmt: skip
        force_at = opened + s.openai_session_cap_s - s.openai_renew_force_s
        while not self._quiet():
            left = force_at - loop.time()
            if left <= 0:
                return "renew_forced"
            self._tick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), left)
        return "renew"

    # ---- socket tasks ---------------------------------------------------------------

    def _send(self, text: str, *, force: bool = False) -> None:
        """A control event for the live session; dropped while none is (see `_resume`)."""
        if force or not self._reconnecting:
            self._out.put_nowait((text, 0.0))

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            self._sending = await self._out.get()
            await ws.send(self._sending[0])
            self._sending = None

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

    # ---- server events --------------------------------------------------------------

    def _on_server(self, event: Any) -> None:
        self._tick.set()
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
                self._history.append(HistoryTurn("user", event.text))
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
                self._calls[event.call_id] = _Call(event.name, event.arguments, self._session)
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
            turn_id = event.item_id if self._session == 1 else f"s{self._session}_{event.item_id}"
            self._items[event.item_id] = turn_id
            self._turns[turn_id] = _Turn(turn_id, event.item_id, event.response_id, self._session)
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
            if (turn.response_id == event.response_id and turn.session == self._session
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
        line = HistoryTurn("assistant", text)
        at = next((i for i, t in enumerate(self._history) if t is turn.said), None)
        if at is None:
            self._history.append(line)
        else:
            self._history[at] = line
        turn.said = line

    # ---- function calls ---------------------------------------------------------------

    def _tool_done(self, call_id: str, output: str) -> None:
        self._tick.set()
        call = self._calls.pop(call_id, None)
        if call is None:
            return  # stale: cancelled by a newer caller question
        text = tool_result_text(call.name, call.arguments, output)
        self._history.append(HistoryTurn("system", text))
        if call.session != self._session:
            # asked on a session that is gone: the new one never saw the call id
            self._reask = True
            self._send(encode_message("system", text))  # or in the re-seed, if reconnecting
            self._maybe_respond()
            return
        self._send(encode_function_output(call_id, output))
        for resp in self._responses.values():
            if call_id in resp.calls:
                resp.calls.discard(call_id)
                if not resp.calls:
                    self._owed.append(resp.id)
        self._maybe_respond()

    def _maybe_respond(self) -> None:
        """One response.create once every output of a finished response is sent."""
        if self._active or self._reconnecting:
            return
        ready = [r for r in self._owed if self._responses.get(r, _Response(r)).done]
        if ready:
            self._owed = [r for r in self._owed if r not in ready]
            for r in ready:
                self._responses.pop(r, None)
        elif not (self._reask and all(c.session == self._session for c in self._calls.values())):
            return
        self._reask = False
        self._answer = "requested"
        self._send(encode_response_create())

    def _holding(self) -> None:
        if not self._active and self._settings.holding_phrase:
            self._send(encode_response_create(f"Say only: {self._settings.holding_phrase}"))

    def _emit(self, event: EngineEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)
