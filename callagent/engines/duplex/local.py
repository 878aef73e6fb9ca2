"""LocalDuplexEngine: the duplex engine's local backend, all on this machine's CPU.

Every 20 ms caller frame, in the call's speech thread (`_Worker`):
echo cancellation against what we played (`speech.aec`: AEC3 + watchdog) ->
two-stage VAD -> streaming pocketsphinx partials (pushed to the controller
every 200 ms chunk) -> `TurnPolicy.frame()`, which decides listen / answer /
pause / resume / yield. Decisions come back to the event loop, which runs the
scripted flow (the profile's, as in the pipeline), speaks through piper in the
shared executor, and runs tools as background tasks (the pipeline's
`ToolRunner`).

Overlaps: a caller who talks over us for `soft_pause_ms` is a soft pause:
`Interrupt` clears Twilio's buffer at once (we keep the position); if the
overlap proves a backchannel, side talk or noise, the rest of the turn is
resumed as a new turn, from just before the cut if the pause was short,
else from the cut sentence ("As I was saying": `engines.resume`); if it is
an interruption we yield and answer the caller. A caller who goes on soon
after the turn we answered (`Continued`: our answer came in their pause) gets
that answer taken back: it stops, the flow is as it was before it, and their
words are answered with the earlier ones. Echo of our own voice never counts (the
reference timeline is what we sent, placed on the audio clock at its
estimated playout). Non-interruptible speech (disclosures) is never paused.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from callagent.agents.flow import (
    Action,
    Flow,
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
from callagent.engines.duplex.policy import (
    Answer,
    Backchannel,
    Continued,
    FRAME_MS,
    Decision,
    FrameIn,
    Overlap,
    Pause,
    PolicyConfig,
    Resume,
    State,
    TurnPolicy,
    Yield,
)
from callagent.engines.pipeline.models import PipelineModels
from callagent.engines.pipeline.sentences import split_sentences
from callagent.engines.pipeline.tools import ToolOutcome, ToolRunner
from callagent.engines.hold import RepromptHold
from callagent.engines.onset import EarlyAction, EarlyStop
from callagent.engines.resume import CutSpeech, resumption
from callagent.engines.room import OverlapWords, frame_dbfs, words_over_us
from callagent.speech.aec import EchoCanceller, ReferenceTimeline
from callagent.speech.stt_pocketsphinx import PocketsphinxStt, Search
from callagent.speech.vad import TwoStageVad

__all__ = ["LocalDuplexEngine"]

log = logging.getLogger(__name__)
FRAME = 160  # 20 ms at 8 kHz
CHUNK_FRAMES = 10  # the 200 ms chunk: partials reach the controller this often
PREROLL_FRAMES = 10
_IDLE_CHECK_MS = 200.0
# What we say as a backchannel while the caller talks at length (in turn).
BACKCHANNEL_WORDS = ("Mhm.", "Okay.", "I see.", "Right.")  # each under 0.6 s in piper's voice


@dataclass(frozen=True, slots=True)
class _Answered:
    """The last caller turn the flow answered, while the answer can be taken back."""

    text: str
    flow: Flow  # as it was before the answer
    search: tuple[Search, int]  # the recogniser's search then


@dataclass(frozen=True, slots=True)
class _Partial:
    text: str


@dataclass(frozen=True, slots=True)
class _Decided:
    decision: Decision
    text: str  # the final transcript for an Answer, the partial otherwise


_Post = Callable[[_Partial | _Decided], None]


def _aside(pcm: Pcm) -> Pcm:
    """`pcm` without its silent edges and 6 dB down: a backchannel is short and quiet."""
    loud = np.flatnonzero(np.abs(pcm.samples.astype(np.int32)) > 300)
    samples = pcm.samples[loud[0] : loud[-1] + 1] if len(loud) else pcm.samples
    return Pcm((samples // 2).astype(np.int16), pcm.rate)


class _Worker(threading.Thread):
    """The call's speech thread: echo, VAD, STT and the controller, frame by frame."""

    def __init__(self, vad: TwoStageVad, stt: PocketsphinxStt, aec: EchoCanceller,
                 reference: ReferenceTimeline, policy: TurnPolicy, post: _Post,
                 start_ms: float, name: str) -> None:  # fmt: skip
        super().__init__(name=name, daemon=True)
        self._vad, self._stt, self._aec = vad, stt, aec
        self._reference = reference
        self.policy = policy
        self._post = post
        self._t = start_ms
        self._early = EarlyStop(policy.config.onset)  # early onsets, beside the controller
        self._q: queue.SimpleQueue[npt.NDArray[np.int16] | tuple[Search, int] | None] = (
            queue.SimpleQueue())  # fmt: skip
        self._preroll: list[npt.NDArray[np.int16]] = []
        self._in_utt = False
        self._frames_in_utt = 0
        self._sent_partial = ""
        self._latest = ""
        # A new search (the flow now listens for digits, say) waits while the
        # caller may still go on with the turn it answered (`Continued`): those
        # words belong to the question before, and are decoded as such.
        self._next_search: tuple[Search, int] | None = None
        self.error: BaseException | None = None

    def feed(self, frame: npt.NDArray[np.int16]) -> None:
        self._q.put(frame)

    @property
    def now_ms(self) -> float:
        """How far the thread has got on the audio clock (it may lag the feed)."""
        return self._t

    def use_search(self, search: Search, min_digits: int = 0) -> None:
        self._q.put((search, min_digits))

    def stop(self) -> None:
        self._q.put(None)
        self.join()

    def run(self) -> None:
        try:
            while (item := self._q.get()) is not None:
                if isinstance(item, tuple):
                    self._next_search = item  # see _frame
                else:
                    self._frame(item)
        except BaseException as exc:  # surfaced by the engine on the next feed
            self.error = exc
        finally:
            self._vad.close()

    def _frame(self, frame: npt.NDArray[np.int16]) -> None:
        t = self._t
        self._t += 20.0
        policy = self.policy
        if self._next_search is not None and not policy.may_continue(t):
            (search, policy.min_digits), self._next_search = self._next_search, None
            self._stt.use_search(search)
        speaking = t < self._reference.end_ms()
        # While an early stop is pending the controller hears as if we spoke on
        # (`engines.onset`): it judges the sound by its own rules.
        policy.agent_speaking(speaking or self._early.pending)
        echo = self._aec.process(frame, self._reference.frame(t))
        vad = self._vad.process(echo.clean_8k)
        before = policy.state
        heard_db = frame_dbfs(echo.clean_8k)  # our echo left out
        onset = self._early.onset(voiced=vad.webrtc, level_db=heard_db, echo=echo.echo)
        decisions = policy.frame(FrameIn(t, vad.is_speech, echo.echo, frame_dbfs(frame)))
        decisions = self._early_stop(t, onset, speaking, before, heard_db, decisions)
        if any(isinstance(d, Continued) for d in decisions):
            self._next_search = None  # the answer that asked for it is taken back
        in_run = policy.state in (State.USER_TALKING, State.USER_PAUSE, State.OVERLAP,
                                  State.PAUSED)  # fmt: skip
        if in_run and not self._in_utt:
            for old in self._preroll:
                self._hear(old)
            self._preroll.clear()
            self._in_utt, self._frames_in_utt, self._sent_partial = True, 0, ""
            self._latest = ""
        if self._in_utt:
            self._hear(echo.clean_16k)
            self._frames_in_utt += 1
            if self._frames_in_utt % CHUNK_FRAMES == 0:
                self._push_partial()
        else:
            self._preroll = [*self._preroll[1 - PREROLL_FRAMES :], echo.clean_16k]
        for d in decisions:
            if isinstance(d, Answer):
                final = self._stt.end_utterance().text if self._in_utt else ""
                self._in_utt = False
                self._post(_Decided(d, final))
            else:
                self._post(_Decided(d, self._sent_partial))
        if self._in_utt and not in_run and before is not State.USER_PAUSE:
            self._stt.end_utterance()  # a resumed overlap or a blip: not a turn
            self._in_utt = False

    def _early_stop(self, t: float, onset: bool, speaking: bool, before: State, heard_db: float,
                    decisions: list[Decision]) -> list[Decision]:  # fmt: skip
        """The controller's decisions for this frame, with the early stop's."""
        policy = self.policy
        state = policy.state
        may_stop = (speaking and before in (State.SPEAKING, State.OVERLAP)
                    and not policy.levels.background(heard_db, over_us=True))  # fmt: skip
        action = self._early.step(t, onset=onset, may_stop=may_stop,
                                 stopped=state not in (State.SPEAKING, State.OVERLAP),
                                 busy=state is State.OVERLAP)  # fmt: skip
        if action is EarlyAction.STOP:
            onset_ms = t - FRAME_MS * (self._early.config.voiced_frames - 1)
            return [*decisions, Pause(t, onset_ms)]
        if action is EarlyAction.CONFIRMED:  # already paused: the rest is the controller's
            return [d for d in decisions if not isinstance(d, Pause)]
        if action is EarlyAction.TAKE_BACK:
            return [*decisions, Resume(t, Overlap.NOISE)]
        return decisions

    def _hear(self, chunk_16k: npt.NDArray[np.int16]) -> None:
        heard = self._stt.process(chunk_16k)
        if heard is not None:
            self._latest = heard.text

    def _push_partial(self) -> None:
        text = self._latest
        if text != self._sent_partial:
            self._sent_partial = text
            self.policy.partial(text)
            self._post(_Partial(text))


@dataclass
class _Segment:
    turn_id: str
    index: int
    start_ms: float
    end_ms: float
    interruptible: bool
    pcm: Pcm  # kept so that a resumed turn replays it without synthesis


@dataclass
class _Turn:
    sentences: list[tuple[str, bool]]
    cancelled: bool = False
    segments: list[_Segment] = field(default_factory=list)
    ready: dict[int, Pcm] = field(default_factory=dict)  # already synthesized, by index


class LocalDuplexEngine:
    name = "duplex:local"
    input_rate = 8000

    def __init__(
        self,
        profile: AgentProfile,
        models: PipelineModels | Future[PipelineModels],
        policy: PolicyConfig | None = None,
    ) -> None:
        if profile.flow is None:
            raise ValueError(f"profile {profile.name!r} has no flow: the local duplex backend "
                             "runs the profile's scripted flow")  # fmt: skip
        self._profile = profile
        self._models_arg = models
        self._models: PipelineModels | None = models if isinstance(models, PipelineModels) else None
        self._policy_config = policy or PolicyConfig()
        self._events: asyncio.Queue[EngineEvent | None] = asyncio.Queue()
        self._out: asyncio.Queue[str | EngineEvent] = asyncio.Queue()
        self._reference = ReferenceTimeline()
        self._worker: _Worker | None = None
        self._flow: Flow | None = None
        self._tools: ToolRunner | None = None
        self._speaker: asyncio.Task[None] | None = None
        self._turns: dict[str, _Turn] = {}
        self._segments: list[_Segment] = []
        self._cut: CutSpeech | None = None  # speech a soft pause cut, to resume
        self._hold: RepromptHold[None] = RepromptHold()  # words waiting for more: see _answer
        self._caller_answered = False  # the flow has had the caller's words (or keys)
        self._answered: _Answered | None = None  # see _continued
        self._going_on = ""  # the words of an answer taken back: the caller went on
        self._search: tuple[Search, int] = (Search.DOMAIN, 0)
        self._seq = 0
        self._backchannels: list[tuple[str, Pcm]] = []  # synthesized at start, -6 dB
        self._backchannel_count = 0
        self._fed_ms = 0.0
        self._speech_end_ms = 0.0  # when the speech sent so far ends (idle baseline)
        self._last_input_ms = 0.0
        self._next_idle = _IDLE_CHECK_MS
        self._ended = False
        self._closed = False

    # ---- Engine interface ---------------------------------------------------------

    async def start(self, call: CallContext) -> None:
        loop = asyncio.get_running_loop()
        if self._models is None:
            assert isinstance(self._models_arg, Future)
            self._models = await asyncio.wrap_future(self._models_arg)
        models = self._models
        resources = models.resources.get(self._profile.name)
        if resources is None:
            raise ValueError(f"no STT resources loaded for profile {self._profile.name!r}")
        stt = await loop.run_in_executor(models.executor, PocketsphinxStt, resources)
        aec = await loop.run_in_executor(models.executor, EchoCanceller)
        for text in BACKCHANNEL_WORDS:
            pcm = await loop.run_in_executor(models.executor, models.tts.prompt_8k, text)
            self._backchannels.append((text, _aside(pcm)))
        vad = TwoStageVad(models.silero)

        def post(item: _Partial | _Decided) -> None:
            loop.call_soon_threadsafe(self._on_worker, item)

        self._worker = _Worker(vad, stt, aec, self._reference, TurnPolicy(self._policy_config),
                               post, self._fed_ms, f"duplex-{call.call_id}")  # fmt: skip
        self._worker.start()
        # The profile's declared tools: schema-checked arguments, HTTP tools, built-ins.
        self._tools = ToolRunner(models.orders, self._emit, self._on_tool_done,
                                 tools=self._profile.tools)
        spec = self._profile.flow
        fields = {f: call.parameters.get(f, "") for f in (spec.fields if spec else ())}
        if "caller_number" in fields:
            fields["caller_number"] = call.parameters.get("caller_number") or call.from_number
        self._flow = self._profile.new_flow(fields)
        self._speaker = asyncio.create_task(self._speak_loop())
        self._emit(Metric(f"engine.{self.name}", 1.0))  # which engine served the call
        self._act(self._flow.start())

    def feed(self, chunk: Pcm) -> None:
        if chunk.rate != self.input_rate:
            raise ValueError(f"{self.name} takes {self.input_rate} Hz audio, got {chunk.rate}")
        worker = self._worker
        samples = chunk.samples
        if worker is not None and worker.error is not None and not self._ended:
            self._ended = True
            log.error("duplex speech worker failed", exc_info=worker.error)
            self._emit(EndCall("engine failure: speech worker"))
        usable = len(samples) - len(samples) % FRAME
        for i in range(0, usable, FRAME):
            if worker is not None and not self._closed:
                worker.feed(samples[i : i + FRAME])
            self._fed_ms += 20.0
        if self._hold.held is not None:
            self._release_held()
        if self._fed_ms >= self._next_idle:
            self._next_idle = self._fed_ms + _IDLE_CHECK_MS
            self._idle_tick()

    def dtmf(self, digit: str) -> None:
        if self._flow is None or self._ended:
            return
        self._last_input_ms = self._fed_ms
        self._hold.cancel()  # a key press answers instead
        self._answered, self._going_on = None, ""
        self._caller_answered = True
        actions = self._flow.on_dtmf(digit)
        if actions:
            self._stop_speech(drop=True)
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
        if self._tools is not None:
            await self._tools.close()
        if self._worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._worker.stop)
        self._events.put_nowait(None)

    # ---- controller decisions ---------------------------------------------------------

    def _on_worker(self, item: _Partial | _Decided) -> None:
        if self._closed:
            return
        self._last_input_ms = self._fed_ms
        if isinstance(item, _Partial):
            self._emit(UserTranscript(item.text, final=False))
            return
        d = item.decision
        if isinstance(d, Pause):
            if self._stop_speech(drop=False):
                self._emit(Metric("duplex_pause_after_onset_ms", d.at_ms + 20.0 - d.onset_ms))
        elif isinstance(d, Resume):
            self._emit(Metric(f"duplex_resume_{d.kind.value}", 1.0))
            self._resume_cut()
        elif isinstance(d, Backchannel):
            self._backchannel()
        elif isinstance(d, Continued):
            self._continued(d)
        elif isinstance(d, Yield):
            # The cut speech is kept until the caller's words are known: words
            # the flow cannot use (side talk, someone in the room) give the
            # floor back to it (`_release_held`), anything else drops it.
            self._stop_speech(drop=False)  # (or keeps what an earlier pause cut)
            self._emit(Metric("duplex_yield_after_onset_ms", d.at_ms + 20.0 - d.onset_ms))
        else:
            self._answer(d, item.text.strip())

    def _backchannel(self) -> None:
        """A short, quiet "mm-hm" while the caller pauses mid-thought: it goes
        into the echo reference as an aside, so it neither counts as our
        speech for the controller nor comes back as the caller's."""
        busy = not self._out.empty() or any(s.end_ms > self._fed_ms for s in self._segments)
        if self._ended or busy or not self._backchannels:
            return
        text, pcm = self._backchannels[self._backchannel_count % len(self._backchannels)]
        self._backchannel_count += 1
        turn_id = f"b{self._backchannel_count}"
        self._reference.add(self._fed_ms, pcm.samples, holds_floor=False)
        self._emit(AgentTextDelta(turn_id, text))
        self._emit(AgentAudio(turn_id, pcm, segment_end=True, interruptible=True))
        self._emit(AgentTurnDone(turn_id, text))
        self._emit(Metric("duplex_backchannels", float(self._backchannel_count)))

    def _continued(self, d: Continued) -> None:
        """The caller went on soon after the turn we answered: the answer came
        in their pause. Take it back (stop it, restore the flow) and answer
        their words with the earlier ones. An answer that ran a tool, ended
        the call or said something that must play out stands."""
        answered, self._answered = self._answered, None
        if answered is None or self._ended:
            # Nothing to take back (held words, a tool ran): the caller has the floor.
            self._stop_speech(drop=False)
            return
        self._emit(Metric("duplex_answer_taken_back_gap_ms", d.gap_ms))
        self._stop_speech(drop=True)  # queued sentences never start either
        self._cut = None
        self._flow = answered.flow
        self._going_on = answered.text
        if answered.search != self._search and self._worker is not None:
            self._search = answered.search
            self._worker.use_search(*answered.search)

    def _answer(self, d: Answer, text: str) -> None:
        self._emit(Metric(f"duplex_endpoint_{d.rule}_ms", d.silence_ms))
        going_on, self._going_on = self._going_on, ""
        self._answered = None
        if self._flow is None or self._ended:
            return
        if not text and not going_on:  # sound over the agent with no words in it: carry on
            self._resume_cut()
            return
        worker = self._worker
        over_us = None
        if self._cut is not None and worker is not None:
            over_us = words_over_us(worker.policy.config.room, speech_ms=d.speech_ms,
                                    active_level_db=d.active_level_db,
                                    backchannel_max_ms=worker.policy.config.backchannel_max_ms)  # fmt: skip
        if over_us is OverlapWords.ROOMS:
            # Faint words that cut us (`engines.room`, as in the pipeline): the
            # room's, never transcribed or answered, whatever they say (side
            # talk heard as "don't call" must not opt the caller out).
            self._emit(Metric("overlap_not_for_agent", 1.0))
            self._resume_cut()
            return
        if text:
            self._emit(UserTranscript(text, final=True, end_ms=d.at_ms - d.silence_ms))
        if going_on:  # the flow hears the whole turn; the transcript has each part
            text = f"{going_on} {text}".rstrip()
        # Likely the start of a sentence ("hi, ..."), or, over our speech, words
        # not meant for us: wait before re-prompting (`engines.hold`); if the
        # caller goes on, one answer for the whole.
        # Words that cut us are a re-prompt only from a talker, at a talker's
        # length (`engines.room.words_over_us`, as in the pipeline); faint
        # words before the caller has said anything we could use are the
        # room's (`_quiet`): if the flow cannot use them, neither is answered.
        not_for_us = over_us is OverlapWords.UNSURE or (
            self._quiet(d) and (self._cut is not None or not self._caller_answered))
        answer = self._hold.words(text, d.at_ms, None,  # on the worker's clock
                                  words_end_ms=d.at_ms - d.silence_ms, overlapped=not_for_us,
                                  reprompt_only=self._flow.would_only_reprompt,
                                  ends_call=self._flow.would_end_call)  # fmt: skip
        if answer is not None:
            self._cut = None
            self._reply(answer[0])

    def _quiet(self, d: Answer) -> bool:
        """Words far below a talker's level (`engines.room`'s `faint_level_db`):
        turned away from the phone, or someone else in the room. Loud words we
        cannot use are an interruption we did not understand: re-prompted."""
        worker = self._worker
        return worker is not None and worker.policy.config.room.below_talker(d.level_db)

    def _release_held(self) -> None:
        worker = self._worker
        if worker is None or self._ended:
            return
        # On the speech thread's clock (see `engines.hold`).
        held = self._hold.release(worker.now_ms,
                                  caller_talking=worker.policy.state is not State.LISTEN)
        if held is None:
            return
        if held.overlapped:
            # Words not for us that the flow cannot use: carry on as we were.
            self._emit(Metric("overlap_not_for_agent", 1.0))
            self._resume_cut()
            return
        self._cut = None
        self._reply(held.text)

    def _resume_cut(self) -> None:
        """Pick up the speech an overlap cut (`engines.resume`), if any."""
        cut, self._cut = self._cut, None
        if cut is not None and not self._ended:
            resumed = resumption(cut, self._fed_ms)
            if resumed.sentences:
                self._queue(resumed.sentences, resumed.ready)

    def _reply(self, text: str) -> None:
        assert self._flow is not None
        self._caller_answered = True
        before = copy.deepcopy(self._flow)
        search = self._search
        actions = self._flow.on_user_text(text, True)
        if actions:
            self._stop_speech(drop=True)
        self._act(actions)
        # Only speech that may be cut can be taken back (`_continued`); an
        # answer of nothing has nothing to take back, and must not cut what plays.
        if actions and all(isinstance(a, ListenFor) or (isinstance(a, Say) and a.interruptible)
                           for a in actions):  # fmt: skip
            self._answered = _Answered(text, before, search)

    def _stop_speech(self, *, drop: bool) -> bool:
        """Clear the interruptible speech playing now; keep the rest unless `drop`."""
        now = self._fed_ms
        playing = [s for s in self._segments if s.end_ms > now]
        for state in self._turns.values():
            if not state.segments and all(i for _, i in state.sentences):
                state.cancelled = True  # queued, not yet audible
        if not playing:
            return False
        if any(not s.interruptible for s in playing):
            return False  # disclosures play to the end
        turn_id = playing[0].turn_id
        state = self._turns[turn_id]
        state.cancelled = True
        self._cut = None if drop else CutSpeech(
            now, state.sentences[playing[0].index :], [s.pcm for s in playing],
            now - playing[0].start_ms)  # fmt: skip
        self._segments = [s for s in self._segments if s.turn_id != turn_id]
        self._speech_end_ms = max([now, *(s.end_ms for s in self._segments)])
        self._reference.cut(now)
        self._emit(Interrupt(turn_id))
        return True

    # ---- flow and speech ------------------------------------------------------------

    def _act(self, actions: Sequence[Action]) -> None:
        says: list[tuple[str, bool]] = []
        for action in actions:
            if isinstance(action, Say):
                says += [(s, action.interruptible) for s in split_sentences(action.text)]
                continue
            if says:
                self._queue(says)
                says = []
            if isinstance(action, ListenFor) and self._worker is not None:
                if action.kind == "digits":
                    spec = action.digits
                    self._search = (Search.DIGITS, spec.min_len if spec else 1)
                else:
                    self._search = (Search.DOMAIN, 0)
                self._worker.use_search(*self._search)
            elif isinstance(action, ToolRequest) and self._tools is not None:
                self._tools.run(action)
            elif isinstance(action, FlowTransfer):
                self._ended = True
                self._out.put_nowait(Transfer(action.target))
                self._out.put_nowait(EndCall("transfer"))
            elif isinstance(action, Hangup):
                self._ended = True
                self._out.put_nowait(EndCall(action.reason))
        if says:
            self._queue(says)

    def _queue(self, sentences: list[tuple[str, bool]], ready: dict[int, Pcm] | None = None) -> None:
        self._seq += 1
        turn_id = f"d{self._seq}"
        self._turns[turn_id] = _Turn(sentences, ready=dict(ready or {}))
        self._out.put_nowait(turn_id)

    def _on_tool_done(self, request_id: str, outcome: ToolOutcome) -> None:
        if self._flow is not None and not self._closed:
            self._act(self._flow.tool_result(request_id, outcome.status, outcome.data))

    async def _speak_loop(self) -> None:
        loop = asyncio.get_running_loop()
        models = self._models
        assert models is not None
        while True:
            item = await self._out.get()
            if not isinstance(item, str):
                self._emit(item)
                continue
            state = self._turns[item]
            said: list[str] = []
            for index, (sentence, interruptible) in enumerate(state.sentences):
                if state.cancelled:
                    break
                t0 = time.perf_counter()
                pcm = state.ready.pop(index, None)
                if pcm is None:
                    pcm = await loop.run_in_executor(models.executor, models.tts.prompt_8k, sentence)
                if state.cancelled:
                    break
                if index == 0:
                    self._emit(Metric("tts_ms", 1000.0 * (time.perf_counter() - t0), item))
                start = max([self._fed_ms, *(s.end_ms for s in self._segments)])
                seg = _Segment(item, index, start, start + pcm.duration_ms, interruptible, pcm)
                state.segments.append(seg)
                self._segments.append(seg)
                self._reference.add(start, pcm.samples)
                self._speech_end_ms = max(self._speech_end_ms, seg.end_ms)
                said.append(sentence)
                self._emit(AgentTextDelta(item, (" " if index else "") + sentence))
                self._emit(AgentAudio(item, pcm, segment_end=True, interruptible=interruptible))
            if said:
                self._emit(AgentTurnDone(item, " ".join(said)))

    def _idle_tick(self) -> None:
        flow = self._flow
        if flow is None or self._ended or flow.state is not FlowState.LISTENING:
            return
        worker = self._worker
        if worker is not None and worker.policy.state is not State.LISTEN:
            return
        if not self._out.empty() or any(s.end_ms > self._fed_ms for s in self._segments):
            return
        end = max(self._last_input_ms, self._speech_end_ms)
        actions = flow.on_silence(max(0.0, self._fed_ms - end) / 1000.0)
        if actions:
            self._act(actions)

    def _emit(self, event: EngineEvent) -> None:
        if not self._closed or isinstance(event, EndCall):
            self._events.put_nowait(event)
