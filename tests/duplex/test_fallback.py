"""Engine fallback: a provider backend that fails mid-call hands the call to the pipeline.

The provider is our own /v1/realtime endpoint on a real service; the failure is
real too: the service shuts down mid-call (close 1012), or nothing listens.
The fallback is the real PipelineEngine with the real models.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from callagent.agents.orders import OrderStore
from callagent.agents.profile import AgentProfile, load_profiles
from callagent.audio.pcm import Pcm
from callagent.config import ProvidersSettings
from callagent.engines.base import (
    AgentAudio,
    AgentTurnDone,
    CallContext,
    EngineEvent,
    Metric,
    UserTranscript,
)
from callagent.engines.duplex.fallback import FallbackEngine
from callagent.engines.duplex.openai_realtime import OpenAIRealtimeEngine
from callagent.engines.duplex.reasoner import order_tools
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import PipelineModels, shared_models
from tests.e2e.conftest import LiveService
from tests.realtime.conftest import API_TOKEN, clip, silence

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 120.0
APOLOGY = "Sorry, I had a problem on my side. Let's carry on."


@pytest.fixture(scope="module")
def profile() -> AgentProfile:
    return load_profiles(ROOT / "config" / "agents")["customer_service"]


@pytest.fixture(scope="module")
def models() -> PipelineModels:
    return shared_models(load_profiles(ROOT / "config" / "agents"))


def engine_for(base_url: str, profile: AgentProfile, models: PipelineModels) -> FallbackEngine:
    settings = dataclasses.replace(ProvidersSettings(), openai_base_url=base_url,
                                   openai_model="customer_service", connect_timeout_s=5.0)  # fmt: skip
    primary = OpenAIRealtimeEngine(profile, settings, order_tools(OrderStore.sample()),
                                   api_key=API_TOKEN)  # fmt: skip

    async def apology() -> Pcm:
        return await asyncio.get_running_loop().run_in_executor(
            models.executor, models.tts.prompt_8k, APOLOGY)

    return FallbackEngine(primary, lambda: PipelineEngine(profile, models), apology, APOLOGY)


async def drive(engine: FallbackEngine, audio: np.ndarray,
                on_event: Callable[[EngineEvent], bool]) -> list[EngineEvent]:  # fmt: skip
    events: list[EngineEvent] = []

    async def feed() -> None:
        for i in range(0, len(audio) - 159, 160):
            engine.feed(Pcm(audio[i : i + 160], 8000))
            if i % 800 == 0:
                await asyncio.sleep(0.025)

    await engine.start(CallContext("f1", "inbound", "customer_service"))
    feeder: asyncio.Task[None] | None = None
    it = engine.events()
    try:
        while True:
            ev = await asyncio.wait_for(it.__anext__(), GUARD_S)
            events.append(ev)
            if feeder is None and isinstance(ev, AgentAudio):  # the caller hears us begin
                feeder = asyncio.create_task(feed())
            if on_event(ev):
                break
    finally:
        if feeder is not None:
            feeder.cancel()
        await engine.close()
    return events


def names(events: list[EngineEvent]) -> list[str]:
    return [e.name for e in events if isinstance(e, Metric) and not e.name.endswith("_ms")]


async def test_a_provider_lost_mid_call_falls_back_to_the_pipeline_with_an_apology(
    realtime_service: LiveService, profile: AgentProfile, models: PipelineModels
) -> None:
    engine = engine_for(realtime_service.base_url + "/v1", profile, models)
    caller = np.concatenate([silence(30.0), clip("01_order_status"), silence(8.0)])

    def on_event(ev: EngineEvent) -> bool:
        if isinstance(ev, AgentTurnDone) and ev.turn_id.startswith("item_"):
            realtime_service.server.should_exit = True  # the provider goes away mid-call
        return isinstance(ev, UserTranscript) and ev.final and engine.switched

    events = await drive(engine, caller, on_event)
    assert names(events)[0] == "engine.duplex:openai_realtime"
    assert "engine_fallback" in names(events) and "engine.pipeline" in names(events)
    i = names(events).index("engine_fallback")
    apology = [e for e in events if isinstance(e, AgentAudio) and e.turn_id == "fallback-apology"]
    assert apology and not apology[0].interruptible
    assert AgentTurnDone("fallback-apology", APOLOGY) in events
    # the pipeline carried on: it spoke and heard the caller
    after = events[events.index(apology[0]) :]
    assert any(isinstance(e, AgentTurnDone) and e.turn_id.startswith("a") for e in after)
    final = [e for e in after if isinstance(e, UserTranscript) and e.final]
    assert final and "status" in final[0].text
    assert i >= 0 and engine.name == "duplex:openai_realtime->pipeline"


async def test_a_provider_that_cannot_be_reached_falls_back_at_once(
    profile: AgentProfile, models: PipelineModels
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = engine_for(f"http://127.0.0.1:{port}/v1", profile, models)
    events = await drive(engine, silence(2.0),
                         lambda e: isinstance(e, AgentTurnDone) and e.turn_id.startswith("a"))
    assert names(events)[:3] == ["engine.duplex:openai_realtime", "engine_fallback",
                                 "engine.pipeline"]  # fmt: skip
    assert any(isinstance(e, AgentTurnDone) and e.text == APOLOGY for e in events)
