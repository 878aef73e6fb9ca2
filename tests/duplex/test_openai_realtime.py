"""The OpenAI Realtime backend against our own /v1/realtime endpoint (a real service).

The endpoint speaks the GA protocol and runs the customer_service profile's
real engine; the backend is the duplex engine's provider client. The test
plays the call session's part: it feeds 8 kHz caller audio (about 4x real
time), reads engine events, and after an `Interrupt` reports the
milliseconds played, as call/session.py does. Nothing is timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from callagent.agents.orders import OrderStore
from callagent.agents.profile import AgentProfile, load_profiles
from callagent.audio.pcm import Pcm
from callagent.config import ProvidersSettings
from callagent.engines.base import (
    AgentAudio,
    AgentTurnDone,
    CallContext,
    EngineEvent,
    Interrupt,
    Metric,
    PlaybackProgress,
    ToolCallFinished,
    ToolCallStarted,
    UserTranscript,
)
from callagent.engines.duplex.openai_realtime import OpenAIRealtimeEngine, realtime_url
from callagent.engines.duplex.reasoner import order_tools
from tests.e2e.conftest import LiveService
from tests.realtime.conftest import API_TOKEN, clip, silence

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 120.0


def profile() -> AgentProfile:
    return load_profiles(ROOT / "config" / "agents")["customer_service"]


def backend(live: LiveService, truncate: bool = True) -> OpenAIRealtimeEngine:
    settings = dataclasses.replace(ProvidersSettings(), openai_base_url=live.base_url + "/v1",
                                   openai_model="customer_service",
                                   openai_truncate=truncate)  # fmt: skip
    return OpenAIRealtimeEngine(profile(), settings, order_tools(OrderStore.sample()),
                                api_key=API_TOKEN)  # fmt: skip


async def run_call(engine: OpenAIRealtimeEngine, audio: np.ndarray,
                   stop: Callable[[EngineEvent], bool]) -> list[EngineEvent]:  # fmt: skip
    """Feed `audio` while collecting events until `stop(event)`."""
    events: list[EngineEvent] = []
    fed = {"ms": 0.0}
    first_audio: dict[str, float] = {}

    async def feed() -> None:
        for i in range(0, len(audio), 160):
            engine.feed(Pcm(audio[i : i + 160], 8000))
            fed["ms"] += 20.0
            marks()
            if i % 800 == 0:
                await asyncio.sleep(0.025)  # about 4x real time

    audio_ms: dict[str, float] = {}
    finished: set[str] = set()

    def marks() -> None:
        """Marks echo as the caller's playback clock passes the end of each finished turn."""
        for turn_id in finished - {"reported"}:
            if fed["ms"] >= first_audio[turn_id] + audio_ms[turn_id]:
                engine.played(PlaybackProgress(turn_id, audio_ms[turn_id], True))
                finished.discard(turn_id)

    await engine.start(CallContext("c1", "inbound", "customer_service"))
    events_iter = engine.events()
    feeder: asyncio.Task[None] | None = None
    try:
        while True:
            ev = await asyncio.wait_for(events_iter.__anext__(), GUARD_S)
            events.append(ev)
            if feeder is None and isinstance(ev, AgentAudio):
                feeder = asyncio.create_task(feed())  # the caller hears the greeting begin
            marks()
            if isinstance(ev, AgentAudio):
                first_audio.setdefault(ev.turn_id, fed["ms"])
                audio_ms[ev.turn_id] = audio_ms.get(ev.turn_id, 0.0) + ev.audio.duration_ms
            if isinstance(ev, AgentTurnDone) and ev.turn_id in first_audio:
                finished.add(ev.turn_id)
            if isinstance(ev, Interrupt):
                finished.discard(ev.turn_id)
                # the caller heard the turn from its first audio until now, on the audio clock
                heard = fed["ms"] - first_audio.get(ev.turn_id, fed["ms"])
                engine.played(PlaybackProgress(ev.turn_id, heard, False))
            if stop(ev):
                break
    finally:
        if feeder is not None:
            feeder.cancel()
        await engine.close()
    return events


def of(events: list[EngineEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def test_the_url_follows_the_sdk_rule() -> None:
    assert realtime_url("https://api.openai.com/v1", "gpt-realtime") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime")
    assert realtime_url("http://127.0.0.1:9/v1/", "m") == "ws://127.0.0.1:9/v1/realtime?model=m"


async def test_function_calls_run_in_the_background_reasoner(realtime_service: LiveService) -> None:
    caller = np.concatenate([silence(16.0), clip("01_order_status"), silence(7.0),
                             clip("02_account_number"), silence(12.0)])  # fmt: skip
    events = await run_call(backend(realtime_service), caller,
                            lambda e: isinstance(e, AgentTurnDone) and "4 5 7 2 9" in e.text)
    done = of(events, AgentTurnDone)
    assert done[0].text.startswith("Hi, you've reached Acme Supplies")
    heard = [e.text for e in of(events, UserTranscript)]
    assert "status" in heard[0] and "4" not in heard[0]
    [started] = of(events, ToolCallStarted)
    [finished] = of(events, ToolCallFinished)
    assert (started.name, json.loads(started.arguments)) == ("lookup_order", {"order_number": "45729"})
    assert finished.tool_call_id == started.tool_call_id and finished.status == "ok"
    assert json.loads(finished.result)["order_number"] == "45729" and finished.duration_ms >= 0
    # the answer came from the server after our function_call_output and response.create
    assert events.index(finished) < events.index(done[-1])
    assert "4 5 7 2 9" in done[-1].text
    # the provider's mu-law arrived as 8 kHz audio, one segment per delta
    audio = of(events, AgentAudio)
    assert all(a.audio.rate == 8000 and a.segment_end for a in audio)


async def test_barge_in_interrupts_and_truncates_at_the_ms_played(
    realtime_service: LiveService,
) -> None:
    # the caller starts the order number while the agent is still asking for it
    caller = np.concatenate([silence(16.0), clip("01_order_status"), silence(2.0),
                             clip("02_account_number"), silence(10.0)])  # fmt: skip
    events = await run_call(backend(realtime_service), caller,
                            lambda e: isinstance(e, Metric) and e.name == "truncated_at_ms")
    [interrupt] = of(events, Interrupt)
    played = next(e for e in events if isinstance(e, Metric) and e.name == "played_ms_at_barge_in")
    truncated = next(e for e in events if isinstance(e, Metric) and e.name == "truncated_at_ms")
    assert played.turn_id == truncated.turn_id == interrupt.turn_id
    assert truncated.value == played.value > 0
    # nothing of the interrupted item reaches the caller after the interrupt
    after = events[events.index(interrupt) + 1 :]
    assert not [e for e in after if isinstance(e, AgentAudio) and e.turn_id == interrupt.turn_id]


async def test_a_vendor_without_truncate_still_gets_barge_in(realtime_service: LiveService) -> None:
    # providers.openai_truncate = false (e.g. xAI): clear and drop audio, never send truncate
    caller = np.concatenate([silence(16.0), clip("01_order_status"), silence(2.0),
                             clip("02_account_number"), silence(10.0)])  # fmt: skip
    events = await run_call(backend(realtime_service, truncate=False), caller,
                            lambda e: isinstance(e, ToolCallFinished))
    interrupts = of(events, Interrupt)
    played = [e for e in events if isinstance(e, Metric) and e.name == "played_ms_at_barge_in"]
    assert interrupts and [p.turn_id for p in played] == [i.turn_id for i in interrupts]
    assert not [e for e in events if isinstance(e, Metric) and e.name == "truncated_at_ms"]
    for i in interrupts:  # the rest of an interrupted item never reaches the caller
        after = events[events.index(i) + 1 :]
        assert not [e for e in after if isinstance(e, AgentAudio) and e.turn_id == i.turn_id]
