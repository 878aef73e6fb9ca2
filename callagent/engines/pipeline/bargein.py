"""Barge-in policy: pure, frame by frame, on the audio clock.

Caller speech over interruptible agent speech interrupts the agent after
`onset_ms` of confirmed speech (default 140 ms: with the VAD's 40-80 ms onset
latency, inside the 250 ms budget),
unless the words recognised by then are only backchannel ("uh-huh", "yeah",
"okay", "mm-hm", "right"): those let the agent talk on. Shorter bursts are
noise and never interrupt; neither does anything over a segment marked
non-interruptible.

An interruption is provisional: if it brings no words within `resume_ms`
(~1 s) of its onset, or the caller's utterance ends with nothing but
backchannel or floor-taking words ("wait", "stop": nothing said yet), the
policy says `RESUME` and the agent picks up again from the cut sentence.
A stop word still clears playback at once (the stop latency matters more).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "BACKCHANNEL",
    "BargeInConfig",
    "BargeInPolicy",
    "Decision",
    "is_backchannel",
    "says_nothing_yet",
]

FRAME_MS = 20

BACKCHANNEL = frozenset(
    "uh-huh uh huh mm-hm mm hm mhm hmm yeah yes yep ok okay right sure alright oh ah up".split()
)
_BACKCHANNEL_PAIRS = frozenset({("i", "see"), ("got", "it")})
# Words that interrupt at once whatever else was said (the caller wants the floor).
_STOP_WORDS = frozenset("stop wait no sorry actually agent human representative".split())
# Words that only take the floor: an utterance of nothing else says nothing yet.
# (pocketsphinx also hears a bare "uh-huh" as "stop", so such an utterance is
# resumed over, like a backchannel.)
_FLOOR = frozenset("stop wait hold hang on actually sorry excuse me".split())


def _words(text: str) -> list[str]:
    return [w for w in (t.strip(".,?!").lower() for t in text.split()) if w]


def _content(words: list[str]) -> list[str]:
    """The words left once backchannels ("yeah", "i see", "got it") are removed."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if tuple(words[i : i + 2]) in _BACKCHANNEL_PAIRS:
            i += 2
            continue
        if words[i] not in BACKCHANNEL:
            out.append(words[i])
        i += 1
    return out


def is_backchannel(text: str) -> bool:
    """True when every word is a backchannel token (and there is at least one)."""
    words = _words(text)
    return bool(words) and not _content(words)


def says_nothing_yet(text: str) -> bool:
    """No words, or only backchannels and floor-taking words ("wait", "stop").
    A lone "i" counts as nothing yet: it is the recogniser's first guess at
    almost any onset."""
    rest = _content(_words(text))
    return all(w in _FLOOR for w in rest) or rest == ["i"]


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

    def __post_init__(self) -> None:
        if not 0 < self.onset_ms <= 250:
            raise ValueError("onset_ms must be in (0, 250]")


class BargeInPolicy:
    """One call's barge-in decisions. Feed every frame; tell it when a turn ends."""

    def __init__(self, config: BargeInConfig = BargeInConfig()) -> None:
        self.config = config
        self._state = _State.IDLE
        self._now = 0.0
        self._onset: float | None = None  # start of the current speech run
        self._speech_ms = 0.0

    @property
    def interrupted(self) -> bool:
        """An interruption is pending confirmation (words) or resumption."""
        return self._state is _State.INTERRUPTED

    def frame(
        self, *, speech: bool, agent_speaking: bool, interruptible: bool, partial: str = ""
    ) -> Decision:
        self._now += FRAME_MS
        if speech:
            if self._onset is None:
                self._onset = self._now - FRAME_MS
                self._speech_ms = 0.0
            self._speech_ms += FRAME_MS
        elif self._state in (_State.IDLE, _State.OVERLAP):
            self._onset = None
            self._state = _State.IDLE
        if self._state is _State.INTERRUPTED:
            if not says_nothing_yet(partial):
                self._state = _State.YIELDED
                return Decision.NONE
            assert self._onset is not None
            if self._now - self._onset >= self.config.resume_ms and not speech:
                return self._resume()
            return Decision.NONE
        if self._state is _State.YIELDED:
            return Decision.NONE
        if not (speech and agent_speaking and interruptible):
            return Decision.NONE
        self._state = _State.OVERLAP
        words = _words(partial)
        if any(w in _STOP_WORDS for w in words):
            return self._interrupt(yielded=not says_nothing_yet(partial))
        if self._speech_ms < self.config.onset_ms:
            return Decision.NONE
        if is_backchannel(partial) and self._speech_ms < self.config.max_backchannel_ms:
            return Decision.NONE
        return self._interrupt(yielded=not says_nothing_yet(partial))

    def turn_ended(self, final_text: str) -> Decision:
        """The caller's utterance ended with `final_text` (may be empty)."""
        self._onset = None
        state, self._state = self._state, _State.IDLE
        if state is _State.INTERRUPTED and says_nothing_yet(final_text):
            return Decision.RESUME
        return Decision.NONE

    def agent_started(self) -> None:
        """A new agent turn began: earlier interruptions are settled."""
        if self._state is _State.YIELDED:
            self._state = _State.IDLE

    def _interrupt(self, *, yielded: bool) -> Decision:
        self._state = _State.YIELDED if yielded else _State.INTERRUPTED
        return Decision.INTERRUPT

    def _resume(self) -> Decision:
        self._state = _State.IDLE
        self._onset = None
        return Decision.RESUME
