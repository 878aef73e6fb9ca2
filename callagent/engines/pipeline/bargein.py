"""Barge-in policy: pure, frame by frame, on the audio clock.

Caller speech over interruptible agent speech interrupts the agent after
`onset_ms` of confirmed speech (default 140 ms: with the VAD's 40-80 ms onset
latency, inside the 250 ms budget),
unless the words recognised by then are only backchannel ("uh-huh", "yeah",
"okay", "mm-hm", "right"): those let the agent talk on. Shorter bursts are
noise and never interrupt; neither does anything over a segment marked
non-interruptible. The words and how they are read: `engines.overlap_words`
(vocabulary `PIPELINE`).

An interruption is provisional: the policy says `RESUME` and the agent picks
up again where it was cut when
- the caller's speech was backchannel-short (at most `quick_resume_speech_ms`)
  and has been followed by `resume_silence_ms` of silence, with no words,
  only backchannel words or a bare "stop" (`overlap_words.bare_stop`)
  recognised: an "uh-huh" or a "yes" over the agent costs it a pause of about half
  a second, not its place (Full-Duplex-Bench v1.5 merges an agent's gaps of
  up to 0.5 s into one utterance: such a pause is not a stop);
- or no words came within `resume_ms` (~1 s) of its onset;
- or the caller's utterance ends with nothing but backchannel or floor-taking
  words ("wait", "stop": nothing said yet).
The first rule cannot wait for the utterance's final words: the end-of-turn
hangover alone would make the pause too long. If words come after all, the
final transcript interrupts the resumed speech again.
A stop word still clears playback at once (the stop latency matters more).

Levels (`engines.room`, shared with the duplex controller): before the caller
has spoken, a faint overlap (a TV, someone across the room, or a quiet caller)
still cuts the agent on time, but only words make it an interruption (a stop
word, a question, three words or more); with none within `faint_resume_ms` of
the cut, the agent picks up again and talk no louder than it is the room's.
Once the caller has spoken, speech far below their level over ours is not
theirs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from callagent.engines.onset import OnsetConfig
from callagent.engines.overlap_words import PIPELINE, QUESTION_STARTS, bare_stop
from callagent.engines.room import RoomConfig, RoomLevels

__all__ = [
    "BargeInConfig",
    "BargeInPolicy",
    "Decision",
    "is_backchannel",
    "says_nothing_yet",
]

FRAME_MS = 20


def _words(text: str) -> list[str]:
    return [w for w in (t.strip(".,?!").lower() for t in text.split()) if w]


def is_backchannel(text: str) -> bool:
    """True when every word is a backchannel token (and there is at least one)."""
    words = _words(text)
    return bool(words) and not PIPELINE.content(words)


def says_nothing_yet(text: str) -> bool:
    """No words, or only backchannels and floor-taking words ("wait", "stop").
    A lone "i" counts as nothing yet: it is the recogniser's first guess at
    almost any onset."""
    return PIPELINE.says_nothing_yet(_words(text))


class Decision(enum.Enum):
    NONE = "none"
    INTERRUPT = "interrupt"  # clear playback, stop synthesis
    RESUME = "resume"  # the interruption was not one: the agent picks up again


class _State(enum.Enum):
    IDLE = 1  # no overlap
    OVERLAP = 2  # caller speech while the agent speaks, not yet an interruption
    INTERRUPTED = 3  # provisional: waiting for words
    YIELDED = 4  # the caller has the floor (words came)


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    onset_ms: int = 140
    resume_ms: int = 1000
    max_backchannel_ms: int = 1200  # a "backchannel" longer than this interrupts
    # A burst of at most this much speech, then this much silence with nothing
    # said: resume at once (see the module docstring).
    quick_resume_speech_ms: int = 600
    resume_silence_ms: int = 100  # the VAD's own speech end already lags ~150 ms
    # The run's level here counts from the VAD's first speech frame, loud
    # onsets included: the e2e clip's background 16 dB below the caller read
    # -29 at the cut and -33 to -35 later, so -35 (the duplex controller's,
    # counted from its vote) let it through in some calls; -32 did not.
    room: RoomConfig = RoomConfig(faint_level_db=-32.0)
    # Early onsets beside the policy (`engines.onset.EarlyStop`, run by the speech worker).
    onset: OnsetConfig = OnsetConfig()

    def __post_init__(self) -> None:
        if not 0 < self.onset_ms <= 250:
            raise ValueError("onset_ms must be in (0, 250]")
        if not 0 < self.resume_silence_ms < self.resume_ms:
            raise ValueError("resume_silence_ms must be in (0, resume_ms)")


class BargeInPolicy:
    """One call's barge-in decisions. Feed every frame; tell it when a turn ends."""

    def __init__(self, config: BargeInConfig = BargeInConfig()) -> None:
        self.config = config
        self._state = _State.IDLE
        self._now = 0.0
        self._onset: float | None = None  # start of the current speech run
        self._speech_ms = 0.0
        self._silence_ms = 0.0  # since the last speech frame
        self._cut_at = 0.0
        self._faint_run = False  # this run has been faint since the cut
        self._level_sum = 0.0  # over the current run's speech frames
        self._level_frames = 0
        self.levels = RoomLevels(config.room)
        self.heard_room = False  # the last frame's speech was someone else's (`levels`)

    @property
    def idle(self) -> bool:
        """No speech over ours being judged, no interruption pending."""
        return self._state is _State.IDLE

    @property
    def overlapping(self) -> bool:
        """Speech over ours is being judged (not yet an interruption)."""
        return self._state is _State.OVERLAP

    @property
    def interrupted(self) -> bool:
        """An interruption is pending confirmation (words) or resumption."""
        return self._state is _State.INTERRUPTED

    def frame(
        self,
        *,
        speech: bool,
        agent_speaking: bool,
        interruptible: bool,
        partial: str = "",
        level_db: float = -20.0,
    ) -> Decision:
        self._now += FRAME_MS
        self.levels.frame(speech)
        self.heard_room = speech and self.levels.background(level_db, over_us=agent_speaking)
        if self.heard_room:
            speech = False  # the room's, or far below the caller: not theirs
        if speech and not agent_speaking and self._state in (_State.IDLE, _State.YIELDED):
            self.levels.caller(level_db)  # the caller's own turn
        if speech:
            if self._onset is None:
                self._onset = self._now - FRAME_MS
                self._speech_ms = 0.0
                self._level_sum, self._level_frames = 0.0, 0
                self._faint_run = False
            self._speech_ms += FRAME_MS
            self._silence_ms = 0.0
            self._level_sum += level_db
            self._level_frames += 1
        else:
            self._silence_ms += FRAME_MS
            if self._state in (_State.IDLE, _State.OVERLAP):
                self._onset = None
                self._state = _State.IDLE
        if self._state is _State.INTERRUPTED:
            return self._interrupted(speech, partial)
        if self._state is _State.YIELDED:
            return Decision.NONE
        if not (speech and agent_speaking and interruptible):
            return Decision.NONE
        self._state = _State.OVERLAP
        # A faint overlap cuts us as soon, but only its words can take the floor.
        faint = self.levels.faint(self._run_level())
        yielded = self._words_interrupt(partial) if faint else not says_nothing_yet(partial)
        if PIPELINE.has_stop_word(_words(partial)):
            return self._interrupt(yielded=yielded)
        if self._speech_ms < self.config.onset_ms:
            return Decision.NONE
        if is_backchannel(partial) and self._speech_ms < self.config.max_backchannel_ms:
            return Decision.NONE
        return self._interrupt(yielded=yielded)

    def _run_level(self) -> float | None:
        return self._level_sum / self._level_frames if self._level_frames else None

    def _words_interrupt(self, partial: str) -> bool:
        """The words alone make an interruption: something said beyond floor
        words ("wait", `says_nothing_yet`), and that is a question, three words
        beyond backchannels, or comes with a stop word ("no, the other one")."""
        words = _words(partial)
        if PIPELINE.says_nothing_yet(words):
            return False
        content = PIPELINE.content(words)
        if PIPELINE.has_stop_word(words):
            return not bare_stop(content, self._speech_ms, self.config.quick_resume_speech_ms)
        question = len(words) >= 3 and words[0] in QUESTION_STARTS
        return question or len(content) >= 3

    def _interrupted(self, speech: bool, partial: str) -> Decision:
        """After a provisional interruption: resume, yield, or wait."""
        assert self._onset is not None
        level = self._run_level()
        # A run's level settles as it goes (onsets are loud, a distant talker's
        # reverberant tail is not): once faint after the cut, faint for good.
        self._faint_run = self._faint_run or self.levels.faint(level)
        if self._faint_run:
            return self._faint(speech, partial, level)
        if self._words_interrupt(partial):
            self._state = _State.YIELDED
            return Decision.NONE
        if speech and self._now - self._cut_at < self.config.room.faint_resume_ms:
            return Decision.NONE  # other words wait: the level may yet prove it faint
        short = self._speech_ms <= self.config.quick_resume_speech_ms
        if speech:
            # The recogniser's first guesses over a short burst ("the", "are")
            # are noise: only words in longer speech take the floor now.
            if not short and not says_nothing_yet(partial):
                self._state = _State.YIELDED
            return Decision.NONE
        if self._silence_ms < self.config.resume_silence_ms:
            return Decision.NONE
        words = _words(partial)
        if short and PIPELINE.says_nothing(words):
            return self._resume()
        if bare_stop(PIPELINE.content(words), self._speech_ms, self.config.quick_resume_speech_ms):
            return self._resume()  # an "uh-huh" heard as "stop"
        if not PIPELINE.says_nothing_yet(words):
            self._state = _State.YIELDED
            return Decision.NONE
        if PIPELINE.says_nothing(words) and self._now - self._onset >= self.config.resume_ms:
            return self._resume()  # a longer sound that brought no words (a cough)
        return Decision.NONE  # "wait", "actually": the utterance's end decides

    def _faint(self, speech: bool, partial: str, level: float | None) -> Decision:
        """A faint overlap cut us: only words make it an interruption."""
        if self._words_interrupt(partial):
            self._state = _State.YIELDED
            return Decision.NONE
        if self._now - self._cut_at >= self.config.room.faint_resume_ms:
            assert level is not None  # faint means it has a level
            self.levels.is_the_rooms(level)
            return self._resume()
        quiet = not speech and self._silence_ms >= self.config.resume_silence_ms
        short = self._speech_ms <= self.config.quick_resume_speech_ms
        if quiet and short and PIPELINE.says_nothing(_words(partial)):
            return self._resume()
        return Decision.NONE

    def turn_ended(self, final_text: str) -> Decision:
        """The caller's utterance ended with `final_text` (may be empty)."""
        faint = self._faint_run or self.levels.faint(self._run_level())
        self._onset = None
        state, self._state = self._state, _State.IDLE
        if state is _State.INTERRUPTED and (says_nothing_yet(final_text) or faint
                                            and not self._words_interrupt(final_text)):  # fmt: skip
            return Decision.RESUME
        return Decision.NONE

    def agent_started(self) -> None:
        """A new agent turn began: earlier interruptions are settled."""
        if self._state is _State.YIELDED:
            self._state = _State.IDLE

    def _interrupt(self, *, yielded: bool) -> Decision:
        self._state = _State.YIELDED if yielded else _State.INTERRUPTED
        self._cut_at = self._now
        return Decision.INTERRUPT

    def _resume(self) -> Decision:
        self._state = _State.IDLE
        self._onset = None
        return Decision.RESUME
