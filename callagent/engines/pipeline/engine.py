"""PipelineEngine: caller audio -> VAD -> STT -> end of turn -> flow -> TTS.

Threads and tasks of one call:
- `feed()` (event loop) queues 8 kHz frames for the call's `SpeechWorker`
  thread (VAD, STT, turn and barge-in policies) and drives the idle timer on
  the audio clock. It never blocks.
- Worker results come back with `call_soon_threadsafe` and drive the flow.
- A speaker task turns `Say`s into `AgentAudio`, one segment per sentence
  (`segment_end=True`: the session marks each), synthesised in the shared
  executor; Transfer/EndCall wait in the same queue, behind the speech.
- Tools run as tasks (`tools.ToolRunner`).

Agent speech is tracked on the audio clock: each segment's playout is
estimated from when it was emitted, and a completed mark (`played`) ends it
early. Barge-in uses that to know whether the agent is talking, and the
worker's echo canceller uses the same placement as its reference
(`speech.aec.ReferenceTimeline`, cut where an interruption clears playback).

Stages (`[stages.*]` of the profile): the brain is the scripted flow or an
LLM over Chat Completions (`llm.LlmBrain`, sentences spoken as they stream,
tools through the same `ToolRunner`); STT is pocketsphinx, or an
OpenAI-compatible server given each finished turn's audio (the local decoder
still gives the partials the turn and barge-in rules read); TTS is piper or
an OpenAI-compatible server. A provider that fails or stalls is retried
once; then the caller hears an apology (STT, LLM) or the local voice (TTS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from callagent.agents.flow import (
    Action,
    Flow,
    FlowError,
    FlowState,
    Hangup,
    ListenFor,
    Say,
    ToolRequest,
)
from callagent.agents.flow import Transfer as FlowTransfer
from callagent.agents.profile import AgentProfile
from callagent.audio.pcm import Pcm
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
    Transfer,
    UserTranscript,
)
from callagent.engines.hold import RepromptHold
from callagent.engines.resume import CutSpeech, resumption
from callagent.engines.room import OverlapWords, words_over_us
from callagent.engines.pipeline.bargein import (
    BargeInConfig,
    BargeInPolicy,
    Decision,
    says_nothing_yet,
)
from callagent.engines.pipeline.listener import (
    BargeIn,
    Final,
    Partial,
    SpeechStarted,
    SpeechWorker,
    WorkerEvent,
)
from callagent.engines.pipeline.llm import LlmBrain
from callagent.engines.pipeline.models import PipelineModels
from callagent.engines.pipeline.sentences import split_first_clause, split_sentences
from callagent.engines.pipeline.stages import NetworkStages, uses_llm
from callagent.engines.providers.errors import ProviderError
from callagent.engines.pipeline.tools import ToolOutcome, ToolRunner
from callagent.engines.pipeline.turns import HANGOVER_MS, TurnConfig, TurnDetector
from callagent.speech.aec import EchoCanceller, ReferenceTimeline
from callagent.speech.stt_pocketsphinx import PocketsphinxStt, Search
from callagent.speech.tts_piper import to_8k
from callagent.speech.vad import TwoStageVad

__all__ = ["PipelineEngine"]

log = logging.getLogger(__name__)
_IDLE_CHECK_MS = 200.0
STT_APOLOGY = "Sorry, I didn't catch that. Could you say it again?"


def _shifted(event: WorkerEvent, offset_ms: float) -> WorkerEvent:
    """A worker event with its times moved onto the engine's audio clock."""
    if not offset_ms:
        return event
    if isinstance(event, SpeechStarted):
        return SpeechStarted(event.start_ms + offset_ms)
    if isinstance(event, BargeIn):
        return BargeIn(event.decision, event.at_ms + offset_ms)
    if isinstance(event, Final):
        return dataclasses.replace(event, start_ms=event.start_ms + offset_ms,
                                   end_ms=event.end_ms + offset_ms)  # fmt: skip
    return event


@dataclass
class _Speech:
    turn_id: str
    sentences: list[tuple[str, bool]]  # (text, interruptible)


@dataclass(frozen=True, slots=True)
class _Control:
    event: EngineEvent


@dataclass
class _Segment:
    turn_id: str
    start_ms: float
    end_ms: float
    interruptible: bool
    index: int  # sentence index in its turn
    pcm: Pcm  # kept so that a resumed turn replays it without synthesis


@dataclass
class _TurnState:
    sentences: list[tuple[str, bool]]
    cancelled: bool = False
    # Audio already synthesized, by sentence index (a resumed turn's cut sentences).
    ready: dict[int, Pcm] = field(default_factory=dict)
    segments: list[_Segment] = field(default_factory=list)
    # An open turn grows while the LLM streams; the speaker waits for more.
    open: bool = False
    more: asyncio.Event = field(default_factory=asyncio.Event)


class PipelineEngine:
    name = "pipeline"
    input_rate = 8000

    def __init__(
        self,
        profile: AgentProfile,
        models: PipelineModels | Future[PipelineModels],
        *,
        turns: TurnConfig | None = None,
        bargein: BargeInConfig | None = None,
    ) -> None:
        if profile.flow is None and not uses_llm(profile):
            raise ValueError(
                f"profile {profile.name!r} has no brain: the pipeline needs brain = flow or llm"
            )
        self._profile = profile
        self._loading = models if isinstance(models, Future) else None
        self._models_ready = models if isinstance(models, PipelineModels) else None
        vad = profile.stages.vad.settings if profile.stages else {}
        self._turn_config = turns or TurnConfig(
            hangover_ms=min(int(vad.get("end_silence_ms", HANGOVER_MS)), HANGOVER_MS)
        )
        self._bargein_config = bargein or BargeInConfig()
        self._events: asyncio.Queue[EngineEvent | None] = asyncio.Queue()
        self._out: asyncio.Queue[_Speech | _Control] = asyncio.Queue()
        self._flow: Flow | None = None
        self._worker: SpeechWorker | None = None
        self._tools: ToolRunner | None = None
        self._speaker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fed_ms = 0.0
        self._next_idle_check = _IDLE_CHECK_MS
        self._last_input_ms = 0.0
        self._caller_talking = False
        self._overlapped = False  # the caller's utterance began over agent speech
        self._caller_answered = False  # the flow has had the caller's words (or keys)
        self._turn_seq = 0
        self._turns: dict[str, _TurnState] = {}
        self._segments: list[_Segment] = []  # emitted, possibly still playing
        self._speech_end_ms = 0.0  # when the agent's speech sent so far ends (idle baseline)
        self._cut: CutSpeech | None = None  # speech an interruption cut, to resume
        self._barge_in_at_ms = 0.0  # the latest interruption, on the speech worker's clock
        self._last_final: Final | None = None
        self._ended = False
        self._closed = False
        # What the caller heard of the agent, on the audio clock: the echo
        # canceller's reference (placed when sent, cut at an interruption).
        self._reference = ReferenceTimeline()
        self._net = NetworkStages()
        self._brain: LlmBrain | None = None
        self._brain_task: asyncio.Task[None] | None = None
        self._llm_tools: dict[str, asyncio.Future[ToolOutcome]] = {}
        self._idle_prompted = False  # the llm brain's idle prompt (the flow keeps its own)
        self._net_tasks: set[asyncio.Task[None]] = set()
        self._hold: RepromptHold[Final] = RepromptHold()  # words waiting for more (_on_text)
        self._worker_offset_ms = 0.0  # the worker's clock + this = the engine's audio clock

    # ---- Engine interface ----------------------------------------------------

    async def start(self, call: CallContext) -> None:
        self._loop = loop = asyncio.get_running_loop()
        if self._models_ready is None:
            assert self._loading is not None
            self._models_ready = await asyncio.wrap_future(self._loading)  # first call only
        models = self._models_ready
        resources = models.resources.get(self._profile.name)
        if resources is None:
            raise ValueError(f"no STT resources loaded for profile {self._profile.name!r}")
        self._net = NetworkStages.for_profile(self._profile)
        stt = await loop.run_in_executor(models.executor, PocketsphinxStt, resources)
        vad_settings = self._profile.stages.vad.settings if self._profile.stages else {}
        vad = TwoStageVad(
            models.silero,
            mode=int(vad_settings.get("mode", 3)),
            threshold=float(vad_settings.get("threshold", 0.5)),
        )

        # The worker counts its frames from 0; audio fed before it existed
        # (while models loaded) still counts on the call's audio clock.
        offset = self._worker_offset_ms = self._fed_ms

        def post(event: WorkerEvent) -> None:
            loop.call_soon_threadsafe(self._on_worker, _shifted(event, offset))

        echo = None
        if bool(vad_settings.get("echo_cancel", True)):
            reference = self._reference
            echo = (EchoCanceller(), lambda now_ms: reference.frame(now_ms + offset))

        self._worker = SpeechWorker(
            vad,
            stt,
            post,
            lambda now_ms: self.agent_state(now_ms + offset),
            TurnDetector(self._turn_config),
            BargeInPolicy(self._bargein_config),
            echo=echo,
            collect_audio=self._net.stt is not None,
            name=f"speech-{call.call_id}",
        )
        self._worker.start()
        # The profile's declared tools: schema-checked arguments, HTTP tools, built-ins.
        self._tools = ToolRunner(models.orders, self._emit, self._on_tool_done,
                                 tools=self._profile.tools)
        spec = self._profile.flow
        wanted = spec.fields if spec is not None else ()
        fields = {f: call.parameters.get(f, "") for f in wanted}
        if "caller_number" in wanted:
            fields["caller_number"] = call.parameters.get("caller_number") or call.from_number
        self._speaker = asyncio.create_task(self._speak_loop())
        if self._net.chat is not None:
            p = self._profile
            self._brain = LlmBrain(self._net.chat, p, fields=dict(call.parameters) | fields)
            self._brain.opening(p.greeting)
            opening = [Say(p.ai_disclosure, False), Say(p.recording_disclosure, False),
                       Say(p.greeting)]  # fmt: skip
            self._act([a for a in opening if a.text])
            return
        self._flow = self._profile.new_flow(fields)
        self._act(self._flow.start())

    def feed(self, chunk: Pcm) -> None:
        if chunk.rate != self.input_rate:
            raise ValueError(f"pipeline engine takes {self.input_rate} Hz audio, got {chunk.rate}")
        if self._worker is None or self._closed:
            self._fed_ms += 1000.0 * len(chunk.samples) / self.input_rate
            return
        if self._worker.error is not None:
            if not self._ended:
                self._ended = True
                log.error("speech worker failed", exc_info=self._worker.error)
                self._emit(EndCall("engine failure: speech worker"))
            return
        self._worker.feed(chunk.samples)
        self._fed_ms += 1000.0 * len(chunk.samples) / self.input_rate
        if self._hold.held is not None:
            self._release_held()
        if self._fed_ms >= self._next_idle_check:
            self._next_idle_check = self._fed_ms + _IDLE_CHECK_MS
            self._idle_tick()

    def dtmf(self, digit: str) -> None:
        if self._flow is None or self._ended:
            return
        self._last_input_ms = self._fed_ms
        self._hold.cancel()  # a key press answers instead
        self._caller_answered = True
        try:
            actions = self._flow.on_dtmf(digit)
        except FlowError:
            log.warning("ignored a key that is not a DTMF digit: %r", digit)
            return
        if actions:
            self._interrupt_current()
            self._act(actions)

    def played(self, progress: PlaybackProgress) -> None:
        if progress.complete:
            self._segments = [s for s in self._segments if s.turn_id != progress.turn_id]

    async def events(self) -> AsyncIterator[EngineEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._speaker is not None:
            self._speaker.cancel()
            await asyncio.gather(self._speaker, return_exceptions=True)
        tasks = [*self._net_tasks, *([self._brain_task] if self._brain_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._tools is not None:
            await self._tools.close()
        await self._net.aclose()
        if self._worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._worker.stop)
        self._events.put_nowait(None)

    # ---- agent speech state (read by the worker thread) ----------------------

    def agent_state(self, now_ms: float) -> tuple[bool, bool]:
        """(speaking, interruptible) at `now_ms` on the audio clock, as estimated
        from the segments sent; read by the worker thread."""
        for seg in list(self._segments):
            if seg.start_ms <= now_ms < seg.end_ms:
                return True, seg.interruptible
        return False, False

    def _speaking_turn(self) -> str | None:
        now = self._fed_ms
        live = [s for s in self._segments if s.end_ms > now]
        return live[0].turn_id if live else None

    def _playout_end_ms(self) -> float:
        return max((s.end_ms for s in self._segments), default=0.0)

    # ---- worker results ----------------------------------------------------

    def _on_worker(self, event: WorkerEvent) -> None:
        if self._closed:
            return
        if isinstance(event, SpeechStarted):
            self._caller_talking = True
            # Over our speech, or the speech an early onset cut us for (the
            # VAD hears it after the cut: `engines.onset`).
            since_cut = event.start_ms - self._barge_in_at_ms
            early = self._cut is not None and 0.0 <= since_cut <= self._bargein_config.onset.confirm_ms
            self._overlapped = self.agent_state(event.start_ms)[0] or early
            self._last_input_ms = self._fed_ms
        elif isinstance(event, Partial):
            self._last_input_ms = self._fed_ms
            self._emit(UserTranscript(event.text, final=False))
        elif isinstance(event, BargeIn):
            if event.decision is Decision.INTERRUPT:
                cut = self._speaking_turn() or ""
                self._interrupt_current()
                self._emit(Metric("barge_in_at_ms", event.at_ms, cut))
                self._barge_in_at_ms = event.at_ms
            elif event.decision is Decision.RESUME:
                self._resume_speech(event.at_ms)
        else:
            self._on_final(event)

    def _on_final(self, final: Final) -> None:
        self._caller_talking = False
        self._last_input_ms = self._fed_ms
        if self._net.stt is not None and final.audio is not None and not (final.resume or final.room):
            task = asyncio.get_running_loop().create_task(self._transcribe(final))
            self._net_tasks.add(task)
            task.add_done_callback(self._net_tasks.discard)
            return
        self._on_text(final, final.text)

    async def _transcribe(self, final: Final) -> None:
        """The network STT's words for the turn (one retry), else an apology."""
        assert self._net.stt is not None and final.audio is not None
        t0 = time.perf_counter()
        for attempt in (1, 2):
            try:
                text = await self._net.stt.transcribe(Pcm(final.audio, self.input_rate))
            except ValueError:
                text = ""  # too short to hold words: as if nothing was said
            except ProviderError as exc:
                log.warning("stt attempt %d failed: %s", attempt, exc)
                continue
            stt_ms = 1000.0 * (time.perf_counter() - t0)
            self._on_text(dataclasses.replace(final, stt_ms=stt_ms), text)
            return
        if not self._closed and not self._ended:
            self._act([Say(STT_APOLOGY)])

    def _on_text(self, final: Final, text: str) -> None:
        if self._closed:
            return
        overlapped, self._overlapped = self._overlapped, False
        over_us = None
        if overlapped:
            over_us = words_over_us(self._bargein_config.room, speech_ms=final.end_ms - final.start_ms,
                                    active_level_db=final.level_db,
                                    backchannel_max_ms=self._bargein_config.max_backchannel_ms)  # fmt: skip
        if final.room or over_us is OverlapWords.ROOMS:
            # Talk over ours no louder than the room's, or far below a talker's
            # (`engines.room`): a TV, someone across the room. Not the caller's
            # words: never answered, whatever they say (a TV's "goodbye" must
            # not end the call).
            self._emit(Metric("overlap_not_for_agent", 1.0))
            self._resume_speech(final.end_ms + final.hangover_ms)
            return
        text = text.strip()
        if text:
            self._idle_prompted = False
        decided_ms = final.end_ms + final.hangover_ms  # on the engine's audio clock
        if not text:
            if final.resume:
                self._resume_speech(decided_ms)
            return
        self._emit(UserTranscript(text, final=True, start_ms=final.start_ms, end_ms=final.end_ms))
        turn_id = f"a{self._turn_seq + 1}"  # the reply turn these figures lead to
        self._emit(Metric("stt_ms", final.stt_ms, turn_id))
        self._emit(Metric("endpoint_ms", final.hangover_ms, turn_id))
        if final.resume or (overlapped and says_nothing_yet(text)):
            self._resume_speech(decided_ms)
            return  # a backchannel over the agent: not an answer
        if self._brain is not None and not self._ended:
            self._cut = None
            self._last_final = final
            self._interrupt_current()
            if self._brain_task is not None:
                self._brain_task.cancel()
            self._brain_task = asyncio.get_running_loop().create_task(self._llm_reply(text, turn_id))
            return
        if self._flow is None or self._ended:
            return
        # Words the flow cannot use wait a moment (`engines.hold`): if the caller
        # goes on, one answer for the whole; if not, a re-prompt, or the cut speech.
        # Over our speech, words the flow cannot use are a re-prompt only from
        # a talker, at a talker's length (`engines.room.words_over_us`);
        # otherwise not meant for us. While we listen, before the caller has
        # said anything we could use, faint words are the room's too (as in
        # the duplex engine): background talk going on after our menu ended
        # must not draw "Sorry, I didn't catch that"; a quiet caller's usable
        # words are still answered.
        faint_first = (not overlapped and not self._caller_answered
                       and self._bargein_config.room.faint_turn(final.level_db))  # fmt: skip
        not_for_us = over_us is OverlapWords.UNSURE or faint_first
        answer = self._hold.words(text, decided_ms, final, words_end_ms=final.end_ms,
                                  overlapped=not_for_us, reprompt_only=self._flow.would_only_reprompt,
                                  ends_call=self._flow.would_end_call)  # fmt: skip
        if answer is None:
            return
        text, first = answer
        if first is not final:  # the held words began the turn
            final = dataclasses.replace(final, start_ms=first.start_ms)
        self._cut = None
        self._flow_reply(final, text, turn_id)

    def _flow_reply(self, final: Final, text: str, turn_id: str) -> None:
        assert self._flow is not None
        self._caller_answered = True
        t0 = time.perf_counter()
        actions = self._flow.on_user_text(text, True)
        self._emit(Metric("brain_ms", 1000.0 * (time.perf_counter() - t0), turn_id))
        self._last_final = final
        if actions:
            self._interrupt_current()
        self._act(actions)

    def _release_held(self) -> None:
        worker = self._worker
        if worker is None:
            return
        # On the speech thread's clock (see `engines.hold`), moved onto ours.
        now_ms = worker.now_ms + self._worker_offset_ms
        held = self._hold.release(now_ms, caller_talking=self._caller_talking)
        if held is None or self._flow is None or self._ended:
            return
        if held.overlapped:
            # Words over our speech the flow cannot use, and nothing usable
            # after them: not meant for us. Carry on as we were (picking up
            # speech they cut, if any), never a re-prompt over our own turn.
            self._emit(Metric("overlap_not_for_agent", 1.0))
            self._resume_speech(max(now_ms, held.release_ms))
            return
        self._cut = None
        self._flow_reply(held.first, held.text, f"a{self._turn_seq + 1}")

    # ---- flow actions --------------------------------------------------------

    def _act(self, actions: Sequence[Action]) -> None:
        says: list[tuple[str, bool]] = []
        for action in actions:
            if isinstance(action, Say):
                says += [(s, action.interruptible) for s in split_sentences(action.text)]
                continue
            if says:
                self._queue_speech(says)
                says = []
            if isinstance(action, ListenFor):
                search = Search.DIGITS if action.kind == "digits" else Search.DOMAIN
                if self._worker is not None:
                    self._worker.use_search(search)
            elif isinstance(action, ToolRequest):
                if self._tools is not None:
                    self._tools.run(action)
            elif isinstance(action, FlowTransfer):
                self._ended = True
                self._out.put_nowait(_Control(Transfer(action.target)))
                self._out.put_nowait(_Control(EndCall("transfer")))
            elif isinstance(action, Hangup):
                self._ended = True
                self._out.put_nowait(_Control(EndCall(action.reason)))
        if says:
            self._queue_speech(says)

    def _queue_speech(
        self, sentences: list[tuple[str, bool]], ready: dict[int, Pcm] | None = None
    ) -> None:
        ready = dict(ready or {})
        if 0 not in ready:  # the first clause alone goes to synthesis: it is heard sooner
            first, interruptible = sentences[0]
            clauses = [(c, interruptible) for c in split_first_clause(first)]
            sentences = clauses + sentences[1:]
            ready = {i + len(clauses) - 1: pcm for i, pcm in ready.items()}
        self._turn_seq += 1
        turn_id = f"a{self._turn_seq}"
        self._turns[turn_id] = _TurnState(sentences, ready=ready)
        self._out.put_nowait(_Speech(turn_id, sentences))

    def _on_tool_done(self, request_id: str, outcome: ToolOutcome) -> None:
        waiter = self._llm_tools.pop(request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
            return
        if self._flow is None or self._closed:
            return
        self._act(self._flow.tool_result(request_id, outcome.status, outcome.data))

    # ---- the llm brain ------------------------------------------------------

    async def _llm_reply(self, text: str, turn_id: str) -> None:
        assert self._brain is not None
        state: _TurnState | None = None

        def say(sentence: str) -> None:
            nonlocal state
            if state is None:
                self._turn_seq += 1
                state = self._turns[f"a{self._turn_seq}"] = _TurnState([], open=True)
                self._out.put_nowait(_Speech(f"a{self._turn_seq}", state.sentences))
            if not state.cancelled:
                state.sentences.append((sentence, True))
                state.more.set()

        t0 = time.perf_counter()
        try:
            await self._brain.reply(text, say, self._llm_tool)
        finally:
            self._emit(Metric("brain_ms", 1000.0 * (time.perf_counter() - t0), turn_id))
            if state is not None:
                state.open = False
                state.more.set()

    async def _llm_tool(self, call_id: str, name: str, arguments: str) -> str:
        if self._tools is None:
            return json.dumps({"error": "tools are not available"})
        args = json.loads(arguments)
        if not isinstance(args, dict):
            return json.dumps({"error": "arguments must be a JSON object"})
        waiter: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
        self._llm_tools[call_id] = waiter
        self._tools.run(ToolRequest(call_id, name, args))
        outcome = await waiter
        result: dict[str, object] = {"outcome": str(outcome.status), "data": dict(outcome.data)}
        if outcome.error:
            result["error"] = outcome.error
        return json.dumps(result)

    def _llm_idle(self, silence_s: float) -> list[Action]:
        idle = self._profile.idle
        if not self._idle_prompted and silence_s >= idle.prompt_after_s:
            self._idle_prompted = True
            return [Say(idle.prompt)]
        if self._idle_prompted and silence_s >= idle.hangup_after_s - idle.prompt_after_s:
            return [Say(idle.goodbye), Hangup("idle")]
        return []

    # ---- barge-in ------------------------------------------------------------

    def _interrupt_current(self) -> None:
        """Stop the interruptible speech that is playing or queued."""
        turn_id = self._speaking_turn()
        if turn_id is None:
            # Nothing audible: drop queued, not yet played interruptible speech only.
            for tid, state in self._turns.items():
                if not state.segments and all(i for _, i in state.sentences):
                    state.cancelled = True
            return
        state = self._turns[turn_id]
        now = self._fed_ms
        playing = [s for s in self._segments if s.turn_id == turn_id and s.end_ms > now]
        if any(not s.interruptible for s in playing):
            return  # disclosures play to the end
        first = playing[0].index if playing else len(state.sentences)
        self._cut = CutSpeech(now, state.sentences[first:], [s.pcm for s in playing],
                              now - playing[0].start_ms) if playing else None  # fmt: skip
        if self._brain is not None:
            self._brain.heard(" ".join(s for s, _ in state.sentences[:first]))
        state.cancelled = True
        self._segments = [s for s in self._segments if s.turn_id != turn_id]
        self._speech_end_ms = max([now, *(s.end_ms for s in self._segments)])
        self._reference.cut(now)  # the clear stops playback here
        self._emit(Interrupt(turn_id))

    def _resume_speech(self, decided_ms: float) -> None:
        """Pick up the cut speech; `decided_ms` (the audio clock of the speech
        thread's decision) measures how long the agent was cut."""
        cut, self._cut = self._cut, None
        if cut is not None and not self._ended:
            self._emit(Metric("barge_in_resumed_after_ms", decided_ms - self._barge_in_at_ms))
            resumed = resumption(cut, self._fed_ms)
            if resumed.sentences:
                self._queue_speech(resumed.sentences, resumed.ready)

    # ---- the speaker task --------------------------------------------------

    async def _speak_loop(self) -> None:
        models = self._models_ready
        assert models is not None  # set in start() before this task exists
        while True:
            item = await self._out.get()
            if isinstance(item, _Control):
                self._emit(item.event)
                continue
            state = self._turns[item.turn_id]
            said: list[str] = []
            index = -1
            while not state.cancelled:
                index += 1
                while index >= len(item.sentences) and state.open and not state.cancelled:
                    state.more.clear()
                    await state.more.wait()
                if index >= len(item.sentences) or state.cancelled:
                    break
                sentence, interruptible = item.sentences[index]
                t0 = time.perf_counter()
                pcm = state.ready.pop(index, None)
                if pcm is None:
                    pcm = await self._synthesize(sentence, models)
                if state.cancelled:
                    break
                if index == 0:
                    self._first_audio_metrics(item.turn_id, 1000.0 * (time.perf_counter() - t0))
                start = max(self._fed_ms, self._playout_end_ms())
                seg = _Segment(item.turn_id, start, start + 1000.0 * len(pcm) / pcm.rate,
                               interruptible, index, pcm)  # fmt: skip
                state.segments.append(seg)
                self._segments.append(seg)
                self._reference.add(seg.start_ms, pcm.samples)
                self._speech_end_ms = max(self._speech_end_ms, seg.end_ms)
                said.append(sentence)
                self._emit(AgentTextDelta(item.turn_id, (" " if index else "") + sentence))
                self._emit(AgentAudio(item.turn_id, pcm, segment_end=True,
                                      interruptible=interruptible))  # fmt: skip
            if said:
                self._emit(AgentTurnDone(item.turn_id, " ".join(said)))

    async def _synthesize(self, sentence: str, models: PipelineModels) -> Pcm:
        """8 kHz speech for a sentence: the network voice (one retry), else piper."""
        loop = asyncio.get_running_loop()
        if self._net.tts is not None:
            for attempt in (1, 2):
                try:
                    pcm = await self._net.tts.synthesize(sentence)
                    return await loop.run_in_executor(models.executor, to_8k, pcm)
                except ProviderError as exc:
                    log.warning("tts attempt %d failed: %s", attempt, exc)
            # The caller hears the words in the local voice rather than silence.
        return await loop.run_in_executor(models.executor, models.tts.prompt_8k, sentence)

    def _first_audio_metrics(self, turn_id: str, tts_ms: float) -> None:
        self._emit(Metric("tts_ms", tts_ms, turn_id))
        final, self._last_final = self._last_final, None
        if final is not None:
            waited = 1000.0 * (time.perf_counter() - final.decided_at)
            self._emit(Metric("eos_to_audio_ms", final.hangover_ms + waited, turn_id))

    # ---- idle ----------------------------------------------------------------

    def _idle_tick(self) -> None:
        flow = self._flow
        if self._ended or (flow is not None and flow.state is not FlowState.LISTENING):
            return
        if flow is None and (self._brain is None or self._net_tasks
                             or (self._brain_task is not None and not self._brain_task.done())):
            return  # fmt: skip
        if self._caller_talking or not self._out.empty() or self._speaking_turn() is not None:
            return
        since = max(self._last_input_ms, self._speech_end_ms)
        silence_s = max(0.0, self._fed_ms - since) / 1000.0
        actions = flow.on_silence(silence_s) if flow is not None else self._llm_idle(silence_s)
        if actions:
            self._act(actions)

    def _emit(self, event: EngineEvent) -> None:
        if not self._closed or isinstance(event, EndCall):
            self._events.put_nowait(event)
