"""The local duplex controller: every 20 ms frame, decide listen / answer / pause / resume / yield.

Pure: no clock (frames carry their time on the call's audio clock), no I/O,
no models. The local engine's worker thread feeds it one `FrameIn` per 20 ms
of caller audio (VAD decision, echo flag, level) plus the streaming partial
transcript, and the agent's playback state; it returns `Decision`s.
duplex-design.md section B is the specification; the defaults are its table.

States (`State`) and the moves between them (`_MOVES` is the whole table):

    LISTEN --speech start--> USER_TALKING --200 ms quiet--> USER_PAUSE
    USER_PAUSE --endpoint delay--> RESPONDING (Answer)      --speech--> USER_TALKING
    USER_PAUSE after a long stretch of the caller's speech, mid-thought: Backchannel
    LISTEN/RESPONDING --the caller goes on soon after the turn we answered-->
        USER_TALKING (Continued): our answer came in their pause; over our
        answer, what would yield or resume (but a backchannel) is Continued
    SPEAKING --speech start over us--> OVERLAP --soft_pause_ms--> PAUSED (Pause)
    OVERLAP/PAUSED --interruption--> USER_TALKING (Yield)
    OVERLAP/PAUSED --backchannel, side talk, short noise, then quiet--> SPEAKING (Resume)

Overlap classes (`Overlap`): echo and background speech (quieter than the
caller's own level by `background_margin_db`) never start an overlap; a
short run of backchannel words resumes; side talk ("honey", "one sec") with
no question to us resumes; anything long, wordy, a stop word or a question
is an interruption. Which words are backchannels or stop words, and the
bare "stop" rule: `engines.overlap_words` (vocabulary `DUPLEX`).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from callagent.engines.onset import OnsetConfig
from callagent.engines.overlap_words import DUPLEX, QUESTION_STARTS, bare_stop
from callagent.engines.phrase_ends import ends_mid_phrase
from callagent.engines.room import ActiveLevel, RoomConfig, RoomLevels

__all__ = [
    "Answer",
    "Backchannel",
    "Continued",
    "Decision",
    "FrameIn",
    "Overlap",
    "Pause",
    "PolicyConfig",
    "Resume",
    "State",
    "TurnPolicy",
    "Yield",
    "completeness",
]

FRAME_MS: Final = 20.0
SIDE_TALK: Final = frozenset({"honey", "sweetie", "kids", "mom", "dad", "sec", "second",
                              "minute", "later"})  # fmt: skip
# Beyond the shared mid-phrase endings (`engines.phrase_ends`).
INCOMPLETE_ENDS: Final = frozenset({"number"})
_WORD = re.compile(r"[a-z][a-z'-]*|[0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


DIGIT_WORDS: Final = frozenset({"zero", "oh", "one", "two", "three", "four", "five", "six",
                                "seven", "eight", "nine"})  # fmt: skip


def completeness(text: str, min_digits: int = 0) -> int:
    """-1: the partial ends mid-phrase (conjunction, article, filler) or a number
    shorter than the `min_digits` the agent asked for; +1: a question, a
    complete-looking request or a whole number; 0: cannot tell."""
    words = _words(text)
    if not words:
        return 0
    if min_digits:
        digits = sum(len(w) if w.isdigit() else w in DIGIT_WORDS for w in words)
        if digits >= min_digits:
            return 1
        return -1
    if ends_mid_phrase(words) or words[-1] in INCOMPLETE_ENDS:
        return -1
    if words[-1].isdigit() and len(words) < 3:
        return -1
    if words[0] in QUESTION_STARTS or len(words) >= 4:
        return 1
    return 0


class State(enum.Enum):
    LISTEN = "listen"
    USER_TALKING = "user_talking"
    USER_PAUSE = "user_pause"
    RESPONDING = "responding"  # answered; waiting for the agent's speech to start
    SPEAKING = "speaking"
    OVERLAP = "overlap"  # caller speech over ours, not yet paused
    PAUSED = "paused"  # our speech cleared at a known position, deciding


class Overlap(enum.Enum):
    INTERRUPTION = "interruption"
    BACKCHANNEL = "backchannel"
    SIDE_TALK = "side_talk"
    NOISE = "noise"  # too short to be anything


@dataclass(frozen=True, slots=True)
class FrameIn:
    t_ms: float  # start of the frame on the call's audio clock
    speech: bool  # the VAD's decision for this frame
    echo: bool = False  # the echo watchdog calls it our own voice
    level_db: float = -90.0  # frame level, dBFS


@dataclass(frozen=True, slots=True)
class Answer:
    """The caller's turn ended: answer it."""

    at_ms: float
    silence_ms: float
    rule: str  # which endpoint rule fired: complete | neutral | incomplete | cap
    level_db: float | None = None  # mean level of the turn's speech frames, dBFS
    speech_ms: float = 0.0  # the turn's speech
    active_level_db: float | None = None  # the power mean of its speech frames, dBFS


@dataclass(frozen=True, slots=True)
class Pause:
    """Clear our playback now, keeping the position (a soft pause)."""

    at_ms: float
    onset_ms: float


@dataclass(frozen=True, slots=True)
class Resume:
    """Not an interruption: resume from the cut clause."""

    at_ms: float
    kind: Overlap


@dataclass(frozen=True, slots=True)
class Yield:
    """A real interruption: drop the rest of our turn; the caller has the floor."""

    at_ms: float
    onset_ms: float
    reason: str


@dataclass(frozen=True, slots=True)
class Backchannel:
    """The caller is talking at length and pauses mid-thought: a short, quiet
    "mm-hm" from us (it does not take the floor)."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class Continued:
    """The caller went on within `continuation_ms` of the end of the turn we
    answered, before hearing `continuation_heard_ms` of our answer: it came
    in their pause. Drop it; their next words belong to the same turn."""

    at_ms: float
    onset_ms: float
    gap_ms: float  # from the answered words' end to this speech's onset


Decision = Answer | Backchannel | Continued | Pause | Resume | Yield


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    start_window: int = 10  # frames
    start_votes: int = 8  # speech frames in the window to start, over our speech
    # ... and while we listen just after answering (`continuation_ms`): a
    # caller going on after a pause ("up|date the shipping address") can have
    # 100 ms gaps between words, and the answer must stop before it talks
    # over them. A false start costs a wait for the endpoint.
    listen_start_votes: int = 5
    end_quiet_ms: float = 200.0
    endpoint_complete_ms: float = 250.0
    endpoint_neutral_ms: float = 600.0
    endpoint_incomplete_ms: float = 1200.0
    endpoint_cap_ms: float = 2500.0
    soft_pause_ms: float = 200.0  # confirmed overlap before we pause (stop <= 250 ms from onset)
    interrupt_ms: float = 600.0  # this much overlap speech is an interruption
    interrupt_words: int = 3
    backchannel_max_ms: float = 1000.0
    resume_quiet_ms: float = 800.0
    # A burst this short that proves no interruption resumes after only
    # quick_resume_quiet_ms of quiet: an "uh-huh" costs a pause of about
    # half a second, which Full-Duplex-Bench v1.5 does not count as a stop.
    quick_resume_speech_ms: float = 600.0
    quick_resume_quiet_ms: float = 100.0
    # Our backchannels: after backchannel_after_speech_ms of the caller's speech
    # in this turn, in a pause of backchannel_quiet_ms that does not look like
    # the end of the turn; at most one per backchannel_every_ms.
    backchannel_after_speech_ms: float = 2500.0
    backchannel_quiet_ms: float = 300.0
    backchannel_every_ms: float = 4000.0
    # The caller's speech starting this soon after the words we answered is
    # the same turn going on (a pause inside it ran past our endpoint), not a
    # new one: Full-Duplex-Bench's pauses are 0.4-1.0 s of audio, which the
    # VAD hears as up to ~1.3 s between the words.
    continuation_ms: float = 1500.0
    # ... unless the caller had heard this much of our answer: then they are
    # cutting in on it (a barge-in a second into our reply), not going on.
    continuation_heard_ms: float = 800.0
    # Levels: the caller's, faint overlaps before the caller has spoken (they
    # pause us on time, but only words make them an interruption), the room's
    # floor after faint talk with no words for us (`engines.room`).
    room: RoomConfig = RoomConfig()
    # Early onsets beside the controller (`engines.onset.EarlyStop`, run by the engine).
    onset: OnsetConfig = OnsetConfig()


_MOVES: Final[dict[State, frozenset[State]]] = {
    State.LISTEN: frozenset({State.USER_TALKING, State.SPEAKING}),
    State.USER_TALKING: frozenset({State.USER_PAUSE}),
    State.USER_PAUSE: frozenset({State.USER_TALKING, State.RESPONDING, State.SPEAKING}),
    State.RESPONDING: frozenset({State.SPEAKING, State.USER_TALKING, State.LISTEN}),
    State.SPEAKING: frozenset({State.OVERLAP, State.LISTEN, State.USER_TALKING}),
    State.OVERLAP: frozenset({State.PAUSED, State.SPEAKING, State.USER_TALKING, State.LISTEN}),
    State.PAUSED: frozenset({State.SPEAKING, State.USER_TALKING, State.LISTEN}),
}


class IllegalMove(RuntimeError):
    pass


@dataclass
class _Run:
    onset_ms: float
    speech_ms: float = 0.0
    last_speech_ms: float = 0.0
    text: str = ""
    level_sum_db: float = 0.0
    level_frames: int = 0
    active: ActiveLevel = field(default_factory=ActiveLevel)  # of the same frames
    continues: bool = False  # began within continuation_ms of the words we answered

    @property
    def level_db(self) -> float | None:
        return self.level_sum_db / self.level_frames if self.level_frames else None


@dataclass
class TurnPolicy:
    config: PolicyConfig = field(default_factory=PolicyConfig)
    state: State = State.LISTEN
    _window: deque[bool] = field(default_factory=lambda: deque(maxlen=10))
    _run: _Run | None = None
    _quiet_ms: float = 0.0
    _paused_at: float = 0.0
    _last_backchannel_ms: float = -1e9
    _backchannelled: bool = False  # in this pause already
    _answered_end_ms: float = -1e9  # where the words of the last turn we answered ended
    _now_ms: float = 0.0  # the end of the last frame
    _speaking_from_ms: float = 0.0  # when our audio last began playing
    levels: RoomLevels = field(init=False)
    min_digits: int = 0  # the agent asked for a number this long (0: not a number)

    def __post_init__(self) -> None:
        self.levels = RoomLevels(self.config.room)

    @property
    def caller_level_db(self) -> float | None:
        """An average over the caller's confirmed speech, once they have spoken."""
        return self.levels.caller_level_db

    def may_continue(self, t_ms: float) -> bool:
        """Could speech starting at `t_ms` still go on the turn we answered?"""
        return t_ms - self._answered_end_ms <= self.config.continuation_ms

    # ---- inputs --------------------------------------------------------------------

    def partial(self, text: str) -> None:
        if self._run is not None:
            self._run.text = text

    def agent_speaking(self, speaking: bool) -> None:
        """Our audio began (or finished) playing."""
        if speaking and self.state in (State.LISTEN, State.RESPONDING, State.USER_PAUSE):
            self._move(State.SPEAKING)
            self._speaking_from_ms = self._now_ms
        elif not speaking and self.state is State.SPEAKING:
            self._move(State.LISTEN)
        elif not speaking and self.state is State.RESPONDING:
            self._move(State.LISTEN)
        elif not speaking and self.state is State.OVERLAP:
            self._move(State.USER_TALKING)  # we finished first: the caller's run is a turn

    def frame(self, f: FrameIn) -> list[Decision]:
        c = self.config
        self._now_ms = f.t_ms + FRAME_MS
        self.levels.frame(f.speech)
        over_us = self.state in (State.SPEAKING, State.OVERLAP, State.PAUSED)
        counted = f.speech and not f.echo and not self.levels.background(f.level_db, over_us=over_us)
        self._window.append(counted)
        self._quiet_ms = 0.0 if counted else self._quiet_ms + FRAME_MS
        votes = sum(self._window)
        started = votes >= c.start_votes
        if self.state in (State.LISTEN, State.RESPONDING, State.USER_PAUSE):
            if self.state is not State.USER_PAUSE and self.may_continue(f.t_ms):
                started = votes >= c.listen_start_votes  # the caller may be going on
            if started:
                if self.state is State.USER_PAUSE and self._run is not None:
                    self._move(State.USER_TALKING)  # the caller went on after a pause
                    self._backchannelled = False
                else:
                    self._begin(f, State.USER_TALKING)
                    run = self._run
                    assert run is not None
                    if run.continues:  # before our answer is heard
                        return [self._continued(f, run)]
            elif self.state is State.USER_PAUSE:
                return self._endpoint(f)
            return []
        if self.state is State.USER_TALKING:
            self._count(f, counted)
            if self._quiet_ms >= c.end_quiet_ms:
                self._move(State.USER_PAUSE)
            return []
        if self.state is State.SPEAKING:
            if started:
                self._begin(f, State.OVERLAP)
            return []
        run = self._run
        assert run is not None
        self._count(f, counted)
        if self.state is State.OVERLAP:
            if not self.levels.faint(run.level_db) and self._is_interruption(run):
                return [self._yield_or_continued(f, run, paused=False)]
            if f.t_ms + FRAME_MS - run.onset_ms >= c.soft_pause_ms and self._quiet_ms == 0.0:
                self._move(State.PAUSED)
                self._paused_at = f.t_ms
                return [Pause(f.t_ms, run.onset_ms)]
            if self._quiet_ms >= c.end_quiet_ms:
                self._run = None
                self._move(State.SPEAKING)  # a blip: never stopped
            return []
        # PAUSED
        faint = self.levels.faint(run.level_db)
        decided = self._by_words(run) if faint else self._classify(run)
        if decided is Overlap.INTERRUPTION:
            return [self._yield_or_continued(f, run, paused=True)]
        if faint and f.t_ms - self._paused_at >= c.room.faint_resume_ms:
            # Faint talk with no words for us: the room's. Talk on over it.
            assert run.level_db is not None  # faint means it has a level
            self.levels.is_the_rooms(run.level_db)
            self._run = None
            self._move(State.SPEAKING)
            return [Resume(f.t_ms, Overlap.SIDE_TALK)]
        # Not over an answer the caller may be going on from: the recogniser
        # hears the start of a sentence as "right yes" often enough.
        quick = (run.speech_ms <= c.quick_resume_speech_ms and not run.continues
                 and self._quiet_ms >= c.quick_resume_quiet_ms
                 and self._says_nothing(run))  # fmt: skip
        if quick or self._quiet_ms >= c.resume_quiet_ms:
            kind = self._classify(run)
            if run.continues and not (_words(run.text) and self._says_nothing(run)):
                # Words (or sound) going on the turn we answered, not a backchannel
                # ("shipped yet" is one to `_classify`: short, few words).
                self._move(State.USER_TALKING)
                return [self._continued(f, run)]
            self._run = None
            self._move(State.SPEAKING)
            return [Resume(f.t_ms, kind)]
        return []

    # ---- inside --------------------------------------------------------------------

    def _begin(self, f: FrameIn, state: State) -> None:
        votes = sum(self._window)
        onset = f.t_ms - FRAME_MS * (votes - 1)
        self._run = _Run(onset, FRAME_MS * votes, f.t_ms)
        c = self.config
        heard_ms = onset - self._speaking_from_ms if state is State.OVERLAP else 0.0
        self._run.continues = (onset - self._answered_end_ms <= c.continuation_ms
                               and heard_ms <= c.continuation_heard_ms)  # fmt: skip
        self._move(state)

    def _continued(self, f: FrameIn, run: _Run) -> Continued:
        gap = run.onset_ms - self._answered_end_ms
        self._answered_end_ms = -1e9  # its own end is the next answer's
        return Continued(f.t_ms, run.onset_ms, gap)

    def _yield_or_continued(self, f: FrameIn, run: _Run, paused: bool) -> Decision:
        if run.continues:
            self._move(State.USER_TALKING)
            return self._continued(f, run)
        return self._yield(f, run, paused)

    def _count(self, f: FrameIn, counted: bool) -> None:
        if counted and self._run is not None:
            self._run.speech_ms += FRAME_MS
            self._run.last_speech_ms = f.t_ms
            self._run.level_sum_db += f.level_db
            self._run.level_frames += 1
            self._run.active.add(f.level_db)
            if self.state is State.USER_TALKING:
                self.levels.caller(f.level_db)

    def _is_interruption(self, run: _Run) -> bool:
        return self._classify(run) is Overlap.INTERRUPTION

    def _says_nothing(self, run: _Run) -> bool:
        """No words but backchannels, or a bare "stop". "Can I ..." in a short
        first burst is the start of a question: no quick resume."""
        words = _words(run.text)
        return DUPLEX.says_nothing(words) or bare_stop(
            words, run.speech_ms, self.config.quick_resume_speech_ms)  # fmt: skip

    def _by_words(self, run: _Run) -> Overlap | None:
        """What the words alone make of an overlap, if anything."""
        words = _words(run.text)
        stop = DUPLEX.has_stop_word(words) and not bare_stop(
            words, run.speech_ms, self.config.quick_resume_speech_ms)  # fmt: skip
        if stop or (words and words[0] in QUESTION_STARTS and len(words) >= 3):
            return Overlap.INTERRUPTION
        if any(w in SIDE_TALK for w in words):
            return Overlap.SIDE_TALK
        if len(DUPLEX.content(words)) >= self.config.interrupt_words:
            return Overlap.INTERRUPTION
        return None

    def _classify(self, run: _Run) -> Overlap:
        by_words = self._by_words(run)
        if by_words is not None:
            return by_words
        c = self.config
        words = _words(run.text)
        content = DUPLEX.content(words)
        if words and not content and run.speech_ms < c.backchannel_max_ms:
            return Overlap.BACKCHANNEL
        if run.speech_ms >= c.interrupt_ms and content:
            return Overlap.INTERRUPTION
        if run.speech_ms >= c.interrupt_ms * 2:
            return Overlap.INTERRUPTION  # long, even if the recogniser has no words yet
        return Overlap.NOISE if not words else Overlap.BACKCHANNEL

    def _yield(self, f: FrameIn, run: _Run, paused: bool) -> Yield:
        reason = "stop_word" if DUPLEX.has_stop_word(_words(run.text)) else "speech"
        self._move(State.USER_TALKING)
        return Yield(f.t_ms, run.onset_ms, reason if paused else reason + ":unpaused")

    def _endpoint(self, f: FrameIn) -> list[Decision]:
        c = self.config
        run = self._run
        assert run is not None
        silence = self._quiet_ms  # 0 when the caller is (maybe) speaking again
        score = completeness(run.text, self.min_digits)
        if (not self._backchannelled and score <= 0 and silence >= c.backchannel_quiet_ms
                and run.speech_ms >= c.backchannel_after_speech_ms
                and f.t_ms - self._last_backchannel_ms >= c.backchannel_every_ms):  # fmt: skip
            self._backchannelled = True
            self._last_backchannel_ms = f.t_ms
            return [Backchannel(f.t_ms)]
        wait, rule = {1: (c.endpoint_complete_ms, "complete"), 0: (c.endpoint_neutral_ms, "neutral"),
                      -1: (c.endpoint_incomplete_ms, "incomplete")}[score]  # fmt: skip
        if silence >= c.endpoint_cap_ms:
            wait, rule = c.endpoint_cap_ms, "cap"
        if silence < wait:
            return []
        self._run = None
        self._answered_end_ms = f.t_ms - silence + FRAME_MS
        self._move(State.RESPONDING)
        return [Answer(f.t_ms, silence, rule, run.level_db, run.speech_ms, run.active.db)]

    def _move(self, to: State) -> None:
        if to is not self.state and to not in _MOVES[self.state]:
            raise IllegalMove(f"{self.state.value} -> {to.value}")
        self.state = to
