"""The per-call speech worker: VAD, STT, end of turn and barge-in, off the event loop.

One small thread per call. `feed()` (called on the event loop) only puts the
frame on a queue; the thread runs TwoStageVad (~1 ms per frame while the gate
is open), pocketsphinx (`process_raw` ~1 ms per 20 ms, `end_utt` ~2 ms with
fwdflat off) and the pure turn and barge-in policies, and hands its results
back with `post` (e.g. `loop.call_soon_threadsafe`). pocketsphinx holds the
GIL inside its native calls, so every native call is kept to one 20 ms chunk:
the loop then waits at most a couple of milliseconds for the GIL.

With an echo canceller (`echo=`), each caller frame is first cleaned of the
agent's own voice (WebRTC AEC3 against the reference audio that played at the
same time on the audio clock); the VAD, the policies and STT see the cleaned
audio, and the canceller's energy watchdog may veto the start of a speech run.

STT only runs inside a turn: a 300 ms pre-roll of 16 kHz audio is kept and fed
first when the VAD opens, so word onsets are not lost and idle lines cost only
the VAD's cheap first stage.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

from callagent.engines.onset import EarlyAction, EarlyStop
from callagent.engines.pipeline.bargein import BargeInPolicy, Decision
from callagent.engines.room import ActiveLevel, frame_dbfs
from callagent.engines.pipeline.turns import (
    Completeness,
    TurnDetector,
    TurnEnded,
    TurnStarted,
)
from callagent.speech.aec import EchoCanceller
from callagent.speech.stt_pocketsphinx import CHUNK_SAMPLES, PocketsphinxStt, Search
from callagent.speech.vad import FRAME_SAMPLES, TwoStageVad

__all__ = ["AgentState", "BargeIn", "Final", "Partial", "SpeechStarted", "SpeechWorker"]

_PREROLL_CHUNKS = 15  # 300 ms of 16 kHz audio
_ROOM_SHARE = 0.8  # of a turn's speech frames the room's: the turn is not the caller's


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    start_ms: float


@dataclass(frozen=True, slots=True)
class Partial:
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    text: str
    start_ms: float
    end_ms: float
    stt_ms: float  # end_utt
    rule: Completeness
    hangover_ms: float  # silence waited after the end of speech
    decided_at: float  # perf_counter when the turn end was decided
    resume: bool  # the barge-in policy says this utterance was no interruption
    audio: npt.NDArray[np.int16] | None = None  # the turn at 8 kHz (collect_audio=True)
    # Most of its speech was the room's over the agent (`engines.room`): a TV,
    # someone across the room. Not the caller's words.
    room: bool = False
    # The active level (dBFS) of its speech frames, None without any: far below
    # a talker's (`engines.room`), words over ours are not meant for us.
    level_db: float | None = None


@dataclass(frozen=True, slots=True)
class BargeIn:
    decision: Decision
    at_ms: float


WorkerEvent = SpeechStarted | Partial | Final | BargeIn
# (agent speaking, interruptible) at a time on the audio clock
AgentState = Callable[[float], tuple[bool, bool]]
# The agent audio (8 kHz, 20 ms) that played from a time on the audio clock.
Reference = Callable[[float], npt.NDArray[np.int16]]


class SpeechWorker:
    def __init__(
        self,
        vad: TwoStageVad,
        stt: PocketsphinxStt,
        post: Callable[[WorkerEvent], None],
        agent_state: AgentState,
        turns: TurnDetector,
        bargein: BargeInPolicy,
        *,
        echo: tuple[EchoCanceller, Reference] | None = None,
        collect_audio: bool = False,
        name: str = "speech-worker",
    ) -> None:
        self._vad = vad
        self._stt = stt
        self._post = post
        self._agent_state = agent_state
        self._turns = turns
        self._bargein = bargein
        self._early = EarlyStop(bargein.config.onset)  # early onsets, beside the barge-in policy
        self._queue: queue.SimpleQueue[npt.NDArray[np.int16] | Callable[[], None] | None] = (
            queue.SimpleQueue()
        )
        self._up = soxr.ResampleStream(8_000, 16_000, 1, dtype="int16", quality="QQ")
        self._pending8 = np.zeros(0, dtype=np.int16)
        self._pending16 = np.zeros(0, dtype=np.int16)
        self._preroll: collections.deque[npt.NDArray[np.int16]] = collections.deque(
            maxlen=_PREROLL_CHUNKS
        )
        self._partial = ""
        self._turn_level = ActiveLevel()  # this turn's speech frames
        self._turn_room = 0  # of them, the room's
        self._echo = echo
        self._in_speech = False
        # With collect_audio, each turn's (cleaned) 8 kHz audio, from 300 ms
        # before its onset, goes out with its Final (for a network STT).
        self._collect = collect_audio
        self._preroll8: collections.deque[npt.NDArray[np.int16]] = collections.deque(
            maxlen=_PREROLL_CHUNKS
        )
        self._turn_audio: list[npt.NDArray[np.int16]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.busy_s = 0.0  # CPU-side time spent on frames (for metrics)
        self.frames = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def feed(self, samples: npt.NDArray[np.int16]) -> None:
        """Never blocks: the frame is queued for the thread."""
        self._queue.put(samples)

    @property
    def now_ms(self) -> float:
        """How far the thread has got on its audio clock (it may lag the feed)."""
        return self._turns.now_ms

    def use_search(self, search: Search) -> None:
        self._queue.put(lambda: self._stt.use_search(search))

    def stop(self, timeout: float = 2.0) -> None:
        """Blocking: call from a thread or executor, not the loop."""
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if callable(item):
                    item()
                    continue
                t0 = time.perf_counter()
                self._pending8 = np.concatenate((self._pending8, item))
                while len(self._pending8) >= FRAME_SAMPLES:
                    frame = self._pending8[:FRAME_SAMPLES]
                    self._pending8 = self._pending8[FRAME_SAMPLES:]
                    self._frame(frame)
                self.busy_s += time.perf_counter() - t0
        except BaseException as exc:  # surfaced by the engine, never lost
            self.error = exc
        finally:
            self._vad.close()

    def _frame(self, frame: npt.NDArray[np.int16]) -> None:
        self.frames += 1
        echo = False
        if self._echo is not None:
            canceller, reference = self._echo
            cleaned = canceller.process(frame, reference(self._turns.now_ms), self._in_speech)
            frame, up, echo = cleaned.clean_8k, cleaned.clean_16k, cleaned.echo
        else:
            up = self._up.resample_chunk(frame)
        vad = self._vad.process(frame)
        # The echo watchdog may only veto the start of a speech run: inside one
        # (the caller talking over our echo) quiet syllables are the caller's.
        speech = vad.is_speech and (self._in_speech or not echo)
        self._in_speech = speech
        self._pending16 = np.concatenate((self._pending16, up))
        chunks: list[npt.NDArray[np.int16]] = []
        while len(self._pending16) >= CHUNK_SAMPLES:
            chunks.append(self._pending16[:CHUNK_SAMPLES].copy())
            self._pending16 = self._pending16[CHUNK_SAMPLES:]
        event = self._turns.frame(speech, self._partial)
        now = self._turns.now_ms
        if self._collect:
            if self._turns.in_turn and not isinstance(event, TurnStarted):
                self._turn_audio.append(frame)
            else:
                self._preroll8.append(frame)
        if isinstance(event, TurnStarted):
            self._partial = ""
            self._turn_level, self._turn_room = ActiveLevel(), 0
            self._post(SpeechStarted(event.start_ms))
            chunks = [*self._preroll, *chunks]
            self._preroll.clear()
            if self._collect:
                self._turn_audio = list(self._preroll8)
                self._preroll8.clear()
        if self._turns.in_turn or isinstance(event, TurnEnded):
            for chunk in chunks:
                hyp = self._stt.process(chunk)
                if hyp is not None and hyp.text != self._partial:
                    self._partial = hyp.text
                    self._post(Partial(hyp.text))
        else:
            self._preroll.extend(chunks)
        speaking, interruptible = self._agent_state(now)
        level_db = frame_dbfs(frame)
        onset = self._early.onset(voiced=vad.webrtc, level_db=level_db, echo=echo)
        # While an early stop is pending the policy hears as if we spoke on
        # (`engines.onset`): it judges the sound by its own rules.
        pending = self._early.pending
        undecided = self._bargein.idle or self._bargein.overlapping  # not yet stopped us
        decision = self._bargein.frame(
            speech=speech,
            agent_speaking=speaking or pending,
            interruptible=interruptible or pending,
            partial=self._partial,
            level_db=level_db,
        )
        if speech and (self._turns.in_turn or isinstance(event, TurnEnded)):
            self._turn_level.add(level_db)
            self._turn_room += self._bargein.heard_room
        may_stop = (speaking and interruptible and undecided
                    and not self._bargein.levels.background(level_db, over_us=True))  # fmt: skip
        early = self._early.step(now, onset=onset, may_stop=may_stop,
                                stopped=decision is Decision.INTERRUPT,
                                busy=self._bargein.overlapping)  # fmt: skip
        if decision is Decision.INTERRUPT:
            self._turns.took_floor()
            if early is EarlyAction.CONFIRMED:
                decision = Decision.NONE  # the early stop already cut us
        elif early is EarlyAction.STOP:
            decision = Decision.INTERRUPT
        elif early is EarlyAction.TAKE_BACK:
            decision = Decision.RESUME
        if decision is not Decision.NONE:
            self._post(BargeIn(decision, now))
        if isinstance(event, TurnEnded):
            self._end_turn(event, now)

    def _end_turn(self, event: TurnEnded, now: float) -> None:
        decided = time.perf_counter()
        t0 = time.perf_counter()
        final = self._stt.end_utterance()
        stt_ms = 1000.0 * (time.perf_counter() - t0)
        self._partial = ""
        text = "" if event.noise else final.text
        speech = self._turn_level.frames
        room = speech > 0 and self._turn_room >= _ROOM_SHARE * speech
        level_db = self._turn_level.db
        resume = self._bargein.turn_ended(text) is Decision.RESUME
        audio = None
        if self._collect:
            audio = np.concatenate(self._turn_audio) if self._turn_audio else None
            self._turn_audio = []
            if event.noise:
                audio = None
        self._post(
            Final(text, event.start_ms, event.end_ms, stt_ms, event.rule, now - event.end_ms,
                  decided, resume, audio, room, level_db)
        )  # fmt: skip
