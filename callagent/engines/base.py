"""The engine interface shared by the modular pipeline and the duplex engine.

The session owns the transport and playback; the engine owns the conversation.
An engine never touches the socket or the database: it takes caller audio,
digits and playback progress in, and yields typed events out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from callagent.audio.pcm import Pcm


@dataclass(frozen=True, slots=True)
class CallContext:
    call_id: str
    direction: str  # "inbound" | "outbound"
    agent: str
    from_number: str = ""
    to_number: str = ""
    call_sid: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlaybackProgress:
    """How much of an agent turn the caller has heard (from mark echoes)."""

    turn_id: str
    heard_ms: float
    complete: bool


def split_heard(text: str, heard_ms: float, total_ms: float) -> tuple[str, str]:
    """``text`` split into the words the caller heard and the rest, the words
    spread evenly over the audio: an approximation for speech with no word
    timings. The session records the heard part; an engine that resumes a
    cut sentence says the rest."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return text, ""
    words = text.split()
    k = int(len(words) * max(0.0, heard_ms) / total_ms)
    return " ".join(words[:k]), " ".join(words[k:])


# ---- events an engine yields ----------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentAudio:
    turn_id: str
    audio: Pcm
    # The end of one speech segment: the session sends a mark after it.
    segment_end: bool = False
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class AgentTextDelta:
    turn_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AgentTurnDone:
    turn_id: str
    text: str


@dataclass(frozen=True, slots=True)
class UserTranscript:
    text: str
    final: bool
    start_ms: float = 0.0
    end_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Clear playback now: the caller took the floor."""

    turn_id: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    tool_call_id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    tool_call_id: str
    name: str
    status: str  # "ok" | "error" | "cancelled"
    result: str  # JSON text
    duration_ms: float
    error: str = ""


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str
    warm: bool = False


@dataclass(frozen=True, slots=True)
class EndCall:
    reason: str


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: float
    turn_id: str = ""


EngineEvent = (
    AgentAudio
    | AgentTextDelta
    | AgentTurnDone
    | UserTranscript
    | Interrupt
    | ToolCallStarted
    | ToolCallFinished
    | Transfer
    | EndCall
    | Metric
)


class Engine(Protocol):
    """One conversation. Methods other than start/close never block."""

    name: str
    input_rate: int  # rate of the caller audio fed to the engine

    async def start(self, call: CallContext) -> None: ...

    def feed(self, chunk: Pcm) -> None: ...

    def dtmf(self, digit: str) -> None: ...

    def played(self, progress: PlaybackProgress) -> None: ...

    def events(self) -> AsyncIterator[EngineEvent]: ...

    async def close(self) -> None: ...
