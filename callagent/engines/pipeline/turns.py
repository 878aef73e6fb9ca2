"""End-of-turn detection: pure, frame by frame, on the audio clock.

Input per 20 ms frame: is it speech (the VAD's decision) and the streaming
partial transcript so far. Output: `TurnStarted` when an utterance begins,
`TurnEnded` when the caller has finished it.

The silence hangover before a turn ends depends on how the partial ends:
- complete-looking text: `hangover_ms` (default 200 ms: a complete-looking
  request is answered about a third of a second after its last word);
- a trailing conjunction, preposition, article, possessive or filler
  ("and", "to", "the", "my", "um"), or a verb that wants its object ("I want
  to track", `engines.phrase_ends`): `incomplete_ms`;
- digits being spelled out ("four five ..."), or a carrier phrase before a
  number ("my order number is"): `digits_ms`, since callers pause between
  digit groups;
- a floor-taking word ("wait", "stop", "actually", "sorry", "hold on"): a
  preamble, more is coming, so `incomplete_ms`.
After the caller has barged in on the agent (`took_floor()`), the turn needs
at least `after_barge_in_ms` of silence whatever the words: people who cut in
say "actually wait, stop, I need ..." with pauses between the pieces, and a
reply in such a pause would be cut off by the rest of the sentence. Every rule
runs on the frame count (the audio clock), so the same audio always gives the
same turns, however the threads are scheduled.
A turn that never brought a single frame of confirmed speech longer than
`min_speech_ms` is dropped as noise (`TurnEnded.noise`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from callagent.engines.phrase_ends import ends_mid_phrase

__all__ = [
    "HANGOVER_MS",
    "Completeness",
    "TurnConfig",
    "TurnDetector",
    "TurnEnded",
    "TurnStarted",
    "completeness",
]

FRAME_MS = 20

# Beyond the shared mid-phrase endings (`engines.phrase_ends`): a pronoun or
# auxiliary at the end ("it's", "i'm", "we") and "well" start more words.
_OPENERS = frozenset("are was were be am it's i'm i'd i i'll we you well".split())
_DIGITS = frozenset("zero oh one two three four five six seven eight nine".split())
# Words a caller takes the floor with before saying what they want.
_PREAMBLE = frozenset("wait stop actually sorry hold hang excuse listen hey".split())


class Completeness(enum.Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"  # ends on a conjunction, function word or filler
    DIGITS = "digits"  # a number is being spelled out or announced


def completeness(partial: str) -> Completeness:
    """How finished the caller's words look (empty text counts as complete)."""
    words = [w.strip(".,?!").lower() for w in partial.split()]
    words = [w for w in words if w]
    if not words:
        return Completeness.COMPLETE
    last = words[-1]
    announced = last == "number" or (last == "is" and "number" in words[-3:-1])
    if last in _DIGITS or last.isdigit() or announced:
        return Completeness.DIGITS
    if ends_mid_phrase(words) or last in _OPENERS or last in _PREAMBLE:
        return Completeness.INCOMPLETE
    return Completeness.COMPLETE


HANGOVER_MS = 200  # the default; a profile's vad end_silence_ms may only shorten it


@dataclass(frozen=True, slots=True)
class TurnConfig:
    hangover_ms: int = HANGOVER_MS
    incomplete_ms: int = 900
    digits_ms: int = 1200
    min_speech_ms: int = 80  # shorter bursts are noise
    max_turn_ms: int = 30_000  # a turn is cut here even if speech continues
    after_barge_in_ms: int = 600  # least silence ending a turn that cut the agent off

    def __post_init__(self) -> None:
        if not 0 < self.hangover_ms <= self.incomplete_ms and self.hangover_ms <= self.digits_ms:
            raise ValueError("need 0 < hangover_ms <= incomplete_ms, digits_ms")
        if self.after_barge_in_ms < self.hangover_ms:
            raise ValueError("need after_barge_in_ms >= hangover_ms")

    def silence_needed_ms(self, partial: str) -> int:
        kind = completeness(partial)
        if kind is Completeness.DIGITS:
            return self.digits_ms
        if kind is Completeness.INCOMPLETE:
            return self.incomplete_ms
        return self.hangover_ms


@dataclass(frozen=True, slots=True)
class TurnStarted:
    start_ms: float


@dataclass(frozen=True, slots=True)
class TurnEnded:
    start_ms: float
    end_ms: float  # end of the last speech frame
    rule: Completeness  # which hangover fired
    noise: bool = False  # too little speech to be a turn


TurnEvent = TurnStarted | TurnEnded


class TurnDetector:
    """Streaming end-of-turn detector for one call. Time is the frame count."""

    def __init__(self, config: TurnConfig = TurnConfig()) -> None:
        self.config = config
        self._now = 0.0  # ms at the end of the last frame
        self._start: float | None = None
        self._last_speech_end = 0.0
        self._speech_ms = 0.0
        self._took_floor = False

    def took_floor(self) -> None:
        """The current turn cut the agent off: it ends after a longer silence."""
        if self._start is not None:
            self._took_floor = True

    @property
    def in_turn(self) -> bool:
        return self._start is not None

    @property
    def now_ms(self) -> float:
        return self._now

    def frame(self, speech: bool, partial: str = "") -> TurnEvent | None:
        start_of_frame = self._now
        self._now += FRAME_MS
        if self._start is None:
            if not speech:
                return None
            self._start = start_of_frame
            self._last_speech_end = self._now
            self._speech_ms = FRAME_MS
            return TurnStarted(start_of_frame)
        if speech:
            self._last_speech_end = self._now
            self._speech_ms += FRAME_MS
            if self._now - self._start >= self.config.max_turn_ms:
                return self._end(Completeness.COMPLETE)
            return None
        silence = self._now - self._last_speech_end
        needed = self.config.silence_needed_ms(partial)
        if self._took_floor:
            needed = max(needed, self.config.after_barge_in_ms)
        if silence >= needed:
            return self._end(completeness(partial))
        return None

    def _end(self, rule: Completeness) -> TurnEnded:
        assert self._start is not None
        ended = TurnEnded(
            self._start,
            self._last_speech_end,
            rule,
            noise=self._speech_ms < self.config.min_speech_ms,
        )
        self._start = None
        self._speech_ms = 0.0
        self._took_floor = False
        return ended
