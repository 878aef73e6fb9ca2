"""What happened in one benchmark call, on one clock (seconds since the stream started).

Plain frozen dataclasses: the measures (``measures.py``) are pure functions over
these, so they are tested on hand-built timelines with known answers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["AgentSpeech", "AgentTurnText", "CallTimeline", "Scenario", "Span"]


class Scenario(enum.StrEnum):
    SMOOTH = "smooth_turn_taking"
    PAUSE = "pause_handling"
    INTERRUPTION = "user_interruption"
    BACKCHANNEL = "user_backchannel"
    TALK_TO_OTHERS = "talking_to_others"
    BACKGROUND = "background_speech"
    ECHO = "speakerphone_echo"

    @property
    def is_overlap(self) -> bool:
        return self not in (Scenario.SMOOTH, Scenario.PAUSE)


@dataclass(frozen=True, slots=True)
class Span:
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"span ends before it starts: {self.start} > {self.end}")

    @property
    def duration(self) -> float:
        return self.end - self.start

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class AgentSpeech:
    """One run of agent speech the caller heard (VAD segments merged over short gaps).

    ``words``: how many words the embedded STT found in it (-1: not transcribed,
    used only where the measure needs no words). ``turn``: the agent turn the
    audio belonged to (from the session's marks), "" if unknown.
    """

    span: Span
    words: int = -1
    turn: str = ""


@dataclass(frozen=True, slots=True)
class AgentTurnText:
    """What the agent said in one turn, from its own records."""

    turn: str
    text: str


@dataclass(frozen=True, slots=True)
class CallTimeline:
    """One sample's call: the caller's ground truth and what the caller heard.

    ``caller_turn``: the caller's (addressed) turn, for the smooth and pause
    scenarios. ``pause``: the silence inside it (pause handling). ``overlap``:
    the overlapping caller audio (overlap scenarios). ``agent``: heard agent
    speech in time order. ``turns``: the agent's records, by turn id.
    """

    scenario: Scenario
    agent: tuple[AgentSpeech, ...]
    caller_turn: Span | None = None
    pause: Span | None = None
    overlap: Span | None = None
    turns: tuple[AgentTurnText, ...] = ()
    clears: tuple[float, ...] = ()  # when the service sent Twilio `clear`

    def text_of(self, turn: str) -> str | None:
        for t in self.turns:
            if t.turn == turn:
                return t.text
        return None
