"""A test fixture engine: greets, then answers every caller utterance with prepared audio.

It is not a conversational engine (those are the pipeline and duplex engines).
It exists so the foundation (transport, pacing, marks, barge-in bookkeeping,
records) carries a real call end to end. Utterances are found with a plain
energy gate; a caller who keeps talking over the agent interrupts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from callagent.audio.codec import pcm_rms
from callagent.audio.pcm import Pcm
from callagent.audio.wavfile import read_wav
from callagent.engines.base import (
    AgentAudio,
    AgentTurnDone,
    CallContext,
    EndCall,
    EngineEvent,
    Interrupt,
    PlaybackProgress,
    UserTranscript,
)

FRAME = 160  # 20 ms at 8 kHz


@dataclass(frozen=True, slots=True)
class PreparedReply:
    text: str
    audio: Pcm


def packaged_audio(name: str) -> Pcm:
    ref = resources.files("callagent.engines") / "fixture_audio" / name
    with resources.as_file(ref) as path:
        return read_wav(Path(path))


@dataclass(frozen=True, slots=True)
class FixtureScript:
    greeting: PreparedReply
    reply: PreparedReply
    # An energy gate, not a VAD: frames above this RMS count as speech.
    speech_rms: float = 400.0
    onset_frames: int = 3  # 60 ms of speech starts an utterance
    end_silence_ms: int = 600
    barge_in_ms: int = 200
    # Hang up after this many replies (0: never).
    max_replies: int = 0

    @classmethod
    def packaged(cls) -> FixtureScript:
        return cls(
            greeting=PreparedReply(
                "Thank you for calling. How can I help you today?", packaged_audio("greeting.wav")
            ),
            reply=PreparedReply(
                "Thanks, I have noted that. Is there anything else?", packaged_audio("reply.wav")
            ),
        )


class FixtureEngine:
    name = "fixture"
    input_rate = 8000

    def __init__(self, script: FixtureScript) -> None:
        self._script = script
        self._events: asyncio.Queue[EngineEvent | None] = asyncio.Queue()
        self._pending = np.zeros(0, dtype=np.int16)
        self._fed_ms = 0.0
        self._speech_frames = 0
        self._silence_ms = 0.0
        self._utterance_start: float | None = None
        self._speaking_turn: str | None = None
        self._turns = 0
        self._replies = 0

    async def start(self, call: CallContext) -> None:
        self._say(self._script.greeting)

    def feed(self, chunk: Pcm) -> None:
        if chunk.rate != self.input_rate:
            raise ValueError(f"fixture engine takes {self.input_rate} Hz audio, got {chunk.rate}")
        samples = chunk.samples
        if len(self._pending):
            samples = np.concatenate([self._pending, samples])
        whole = len(samples) - len(samples) % FRAME
        for start in range(0, whole, FRAME):
            self._frame(samples[start : start + FRAME])
        self._pending = samples[whole:]

    def dtmf(self, digit: str) -> None:
        pass

    def played(self, progress: PlaybackProgress) -> None:
        if progress.complete and progress.turn_id == self._speaking_turn:
            self._speaking_turn = None
            if self._script.max_replies and self._replies >= self._script.max_replies:
                self._events.put_nowait(EndCall("agent finished"))

    async def events(self) -> AsyncIterator[EngineEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        self._events.put_nowait(None)

    # -- inside ---------------------------------------------------------------

    def _say(self, reply: PreparedReply) -> None:
        self._turns += 1
        turn_id = f"a{self._turns}"
        self._speaking_turn = turn_id
        self._events.put_nowait(AgentAudio(turn_id, reply.audio, segment_end=True))
        self._events.put_nowait(AgentTurnDone(turn_id, reply.text))

    def _frame(self, frame: np.ndarray) -> None:
        rms = pcm_rms(frame)
        now = self._fed_ms
        self._fed_ms += 20.0
        if rms >= self._script.speech_rms:
            self._speech_frames += 1
            self._silence_ms = 0.0
            if self._utterance_start is None and self._speech_frames >= self._script.onset_frames:
                self._utterance_start = now - 20.0 * (self._speech_frames - 1)
            if (
                self._utterance_start is not None
                and self._speaking_turn is not None
                and now - self._utterance_start >= self._script.barge_in_ms
            ):
                self._events.put_nowait(Interrupt(self._speaking_turn))
                self._speaking_turn = None
            return
        self._speech_frames = 0
        if self._utterance_start is None:
            return
        self._silence_ms += 20.0
        if self._silence_ms >= self._script.end_silence_ms:
            end = now + 20.0 - self._silence_ms
            self._events.put_nowait(
                UserTranscript("(untranscribed)", final=True, start_ms=self._utterance_start, end_ms=end)
            )
            self._utterance_start = None
            self._replies += 1
            self._say(self._script.reply)
