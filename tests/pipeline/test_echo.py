"""The agent's own voice echoed into the caller's channel, through the real engine.

A line model plays the agent audio the engine emits (queued like Twilio's
playback buffer, dropped at an `Interrupt`) and sends it back into the
caller's channel 150-250 ms late and 20-30 dB down, through the mu-law round
trip, mixed with whatever the caller says. The engine must not take its echo
for the caller (no barge-in, no transcript), and must still hear the caller
who talks over it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from callagent.agents.profile import AgentProfile, load_profiles
from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.audio.pcm import Pcm
from callagent.engines.base import (
    AgentAudio,
    CallContext,
    EngineEvent,
    Interrupt,
    UserTranscript,
)
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import PipelineModels, shared_models
from tests.pipeline.test_engine import ROOT, clip, speech_onset_ms

RATE = 8000
FRAME = 160
SPEED = 4.0


@pytest.fixture(scope="module")
def profile() -> AgentProfile:
    return load_profiles(ROOT / "config" / "agents")["customer_service"]


@pytest.fixture(scope="module")
def models() -> PipelineModels:
    return shared_models(load_profiles(ROOT / "config" / "agents"))


@dataclass
class EchoLine:
    """What the caller's phone plays, and the part of it that comes back."""

    delay_ms: int
    gain_db: float
    played: np.ndarray = field(default_factory=lambda: np.zeros(120 * RATE))
    end: int = 0  # where queued agent audio ends (samples on the audio clock)
    seen: int = 0

    def update(self, events: list[EngineEvent], now: int) -> None:
        for event in events[self.seen :]:
            if isinstance(event, AgentAudio):
                start = max(now, self.end)
                samples = event.audio.samples
                self.played[start : start + len(samples)] = samples
                self.end = start + len(samples)
            elif isinstance(event, Interrupt):
                self.played[now:] = 0.0
                self.end = now
        self.seen = len(events)

    def echo(self, at: int) -> np.ndarray:
        d = self.delay_ms * RATE // 1000
        if at < d:
            return np.zeros(FRAME)
        return self.played[at - d : at - d + FRAME] * 10 ** (self.gain_db / 20)


async def call_over_echo(
    engine: PipelineEngine, line: EchoLine, seconds: float, words: np.ndarray | None = None
) -> list[EngineEvent]:
    """`seconds` of caller audio: our echo, plus `words` once the menu plays."""
    events: list[EngineEvent] = []
    await engine.start(CallContext("t-echo", "inbound", "customer_service"))

    async def collect() -> None:
        async for event in engine.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    onset = speech_onset_ms(words) if words is not None else 0.0
    said_from: int | None = None
    t0 = time.perf_counter()
    for n in range(int(seconds * RATE) // FRAME):
        at = n * FRAME
        line.update(events, at)
        caller = line.echo(at)
        if words is not None and said_from is None and all(
            engine.agent_state(at / 8 + onset + dt) == (True, True) for dt in (0, 500, 1000)
        ):
            said_from = at
        if said_from is not None and words is not None:
            part = words[at - said_from : at - said_from + FRAME].astype(np.float64)
            caller = caller + np.pad(part, (0, FRAME - len(part)))
        frame = ulaw_to_pcm(pcm_to_ulaw(np.clip(caller, -32768, 32767).astype(np.int16)))
        engine.feed(Pcm(frame, RATE))
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 / SPEED - time.perf_counter()))
    await asyncio.sleep(0.5)
    await engine.close()
    await collector
    return events


@pytest.mark.parametrize(("delay_ms", "gain_db"), [(150, -20), (250, -30)])
async def test_our_own_echo_never_barges_in_nor_is_answered(
    profile: AgentProfile, models: PipelineModels, delay_ms: int, gain_db: float
) -> None:
    line = EchoLine(delay_ms, gain_db)
    events = await call_over_echo(PipelineEngine(profile, models), line, 16.0)
    assert any(isinstance(e, AgentAudio) for e in events)
    assert line.played[: 11 * RATE].any()  # the opening and the menu did play (and echo)
    assert [e for e in events if isinstance(e, Interrupt)] == []
    assert [e for e in events if isinstance(e, UserTranscript) and e.final] == []


async def test_the_caller_is_heard_over_our_echo_and_interrupts(
    profile: AgentProfile, models: PipelineModels
) -> None:
    line = EchoLine(200, -20)
    words = clip("05_barge_in_change_address")
    events = await call_over_echo(PipelineEngine(profile, models), line, 22.0, words)
    assert [e.turn_id for e in events if isinstance(e, Interrupt)] == ["a1"]
    finals = [e for e in events if isinstance(e, UserTranscript) and e.final]
    assert len(finals) == 1 and "address" in finals[0].text, finals
