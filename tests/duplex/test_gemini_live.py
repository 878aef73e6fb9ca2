"""The Gemini Live backend against a local server speaking BidiGenerateContent (gemini_server.py).

Protocol pieces alone first (sans-I/O), then the engine over loopback: 16 kHz
in, 24 kHz out, `interrupted` -> Interrupt, toolCall -> background reasoner ->
toolResponse, goAway -> reconnect with the session resumption handle.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
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
    Interrupt,
    Metric,
    ToolCallFinished,
    ToolCallStarted,
)
from callagent.engines.duplex.gemini_live import GeminiLiveEngine, live_url
from callagent.engines.duplex.reasoner import order_tools
from callagent.engines.pipeline.models import PipelineModels, shared_models
from callagent.engines.providers.gemini_live_wire import (
    ClientAudio,
    GeminiWireError,
    GoAway,
    Interrupted,
    ModelAudio,
    ResumptionUpdate,
    Setup,
    ToolCall,
    encode_audio,
    encode_setup,
    parse_client_message,
    parse_server_message,
)
from tests.duplex.gemini_server import GeminiLiveServer
from tests.realtime.conftest import clip, silence

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 120.0


# ---- the wire alone ----------------------------------------------------------------


def test_setup_round_trips_with_tools_and_a_resumption_handle() -> None:
    text = encode_setup(Setup("models/x", "be brief", (), resume_handle="h1"))
    data = json.loads(text)
    assert list(data) == ["setup"] and data["setup"]["sessionResumption"] == {"handle": "h1"}
    parsed = parse_client_message(text)
    assert isinstance(parsed, Setup) and parsed.resume_handle == "h1"
    assert parsed.instructions == "be brief"


def test_audio_is_16k_pcm_with_its_mime_type() -> None:
    msg = json.loads(encode_audio(b"\x01\x00\x02\x00"))
    assert msg["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000"
    assert parse_client_message(json.dumps(msg)) == ClientAudio(b"\x01\x00\x02\x00")


@pytest.mark.parametrize(
    "text",
    ['{"setup": {"model": "gpt"}}', '{"a": {}, "b": {}}', "[]", "nope",
     '{"realtimeInput": {"audio": {"data": "AA==", "mimeType": "audio/pcm;rate=8000"}}}',
     '{"toolResponse": {"functionResponses": [{"name": "x"}]}}'],
)  # fmt: skip
def test_bad_client_messages_are_protocol_errors(text: str) -> None:
    with pytest.raises(GeminiWireError):
        parse_client_message(text)


def test_server_messages_parse() -> None:
    audio = base64.b64encode(b"\x00\x01").decode()
    msgs = parse_server_message(json.dumps({"serverContent": {
        "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                "data": audio}}]},
        "interrupted": True}}))  # fmt: skip
    assert msgs == [ModelAudio(b"\x00\x01"), Interrupted()]
    assert parse_server_message('{"goAway": {"timeLeft": "57s"}}') == [GoAway(57.0)]
    assert parse_server_message('{"sessionResumptionUpdate": {"newHandle": "h",'
                                ' "resumable": true}}') == [ResumptionUpdate("h", True)]  # fmt: skip
    [call] = parse_server_message('{"toolCall": {"functionCalls": [{"id": "1", "name": "f",'
                                  ' "args": {"a": 1}}]}}')  # fmt: skip
    assert isinstance(call, ToolCall) and call.calls[0].args == {"a": 1}


def test_the_url_is_the_bidi_endpoint() -> None:
    assert live_url("https://generativelanguage.googleapis.com") == (
        "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta."
        "GenerativeService.BidiGenerateContent")


# ---- the engine over loopback ----------------------------------------------------------


@pytest.fixture(scope="module")
def profile() -> AgentProfile:
    return load_profiles(ROOT / "config" / "agents")["customer_service_duplex"]


@pytest.fixture(scope="module")
def models() -> PipelineModels:
    return shared_models(load_profiles(ROOT / "config" / "agents"))


def engine_for(server: GeminiLiveServer, profile: AgentProfile) -> GeminiLiveEngine:
    settings = dataclasses.replace(ProvidersSettings(), gemini_base_url=server.base_url)
    return GeminiLiveEngine(profile, settings, order_tools(OrderStore.sample()), api_key="k")


async def drive(engine: GeminiLiveEngine, audio: np.ndarray,
                stop: Callable[[EngineEvent], bool]) -> list[EngineEvent]:  # fmt: skip
    events: list[EngineEvent] = []
    await engine.start(CallContext("g1", "inbound", "customer_service_duplex"))

    async def feed() -> None:
        for i in range(0, len(audio) - 159, 160):
            engine.feed(Pcm(audio[i : i + 160], 8000))
            if i % 800 == 0:
                await asyncio.sleep(0.025)

    feeder = asyncio.create_task(feed())
    it = engine.events()
    try:
        while True:
            ev = await asyncio.wait_for(it.__anext__(), GUARD_S)
            events.append(ev)
            if stop(ev):
                break
    finally:
        feeder.cancel()
        await engine.close()
    return events


async def test_a_call_with_a_tool_and_a_reconnect_on_go_away(
    profile: AgentProfile, models: PipelineModels
) -> None:
    script = {1: ("lookup_order", {"order_number": "45729"})}
    async with GeminiLiveServer(models.tts, script, go_away_after_turns=1) as server:
        caller = np.concatenate([silence(18.0), clip("01_order_status"), silence(10.0)])
        engine = engine_for(server, profile)
        events = await drive(engine, caller, lambda e: isinstance(e, AgentTurnDone)
                             and e.text.startswith("Order 45729"))  # fmt: skip
    # the opening the profile asks for: 24 kHz from the model, 8 kHz to the call
    first = next(e for e in events if isinstance(e, AgentTurnDone))
    assert first.text.startswith("Hi, you've reached Acme Supplies")
    audio = [e for e in events if isinstance(e, AgentAudio) and e.turn_id == "g1"]
    assert audio and all(a.audio.rate == 8000 for a in audio)
    total_ms = sum(a.audio.duration_ms for a in audio)
    # the whole opening arrived, its end included, which the resampler holds back
    # until the turn completes (Piper's durations vary run to run: compare with
    # what the server synthesised, not a fresh synthesis)
    sent = server.turn_audio_ms[0]
    assert abs(total_ms - sent) <= 0.25
    # the answer after the reconnect: its own audio, whole, none of the opening's
    answer = [e for e in events if isinstance(e, AgentAudio) and e.turn_id == events[-1].turn_id]
    assert abs(sum(a.audio.duration_ms for a in answer) - server.turn_audio_ms[1]) <= 0.25
    # the server said goAway after the opening: the backend came back with the handle
    assert server.connections == 2 and engine.reconnects == 1
    assert server.setups[1].resume_handle == "handle-1"
    assert any(isinstance(e, Metric) and e.name == "provider_reconnect_go_away" for e in events)
    # the tool ran in the reasoner and its real result went back as a toolResponse
    [started] = [e for e in events if isinstance(e, ToolCallStarted)]
    [finished] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert (started.name, json.loads(started.arguments)) == ("lookup_order", {"order_number": "45729"})
    assert finished.status == "ok"
    [response] = server.tool_responses
    assert response.responses[0][0] == started.tool_call_id
    assert response.responses[0][2]["status_text"].startswith("has shipped")
    # 16 kHz went up: the server heard the caller (it called the tool after the utterance)


async def test_caller_speech_over_the_model_is_an_interrupt(
    profile: AgentProfile, models: PipelineModels
) -> None:
    script = {1: ("lookup_order", {"order_number": "45729"})}
    async with GeminiLiveServer(models.tts, script, speed=1.0) as server:
        # the caller talks over the opening, 2 s in; the model answers after
        caller = np.concatenate([silence(2.0), clip("05_barge_in_change_address"), silence(8.0)])
        events = await drive(engine_for(server, profile), caller, lambda e: isinstance(
            e, AgentTurnDone) and e.text.startswith("Order 45729"))  # fmt: skip
    [interrupt] = [e for e in events if isinstance(e, Interrupt)]
    assert server.interruptions == 1
    assert any(isinstance(e, AgentAudio) and e.turn_id == interrupt.turn_id for e in events)
    # the interrupted turn's held-back end was dropped, not played at the start of
    # the answer: the answer is exactly what the server sent for it
    answer = events[-1].turn_id
    assert answer != interrupt.turn_id
    total_ms = sum(e.audio.duration_ms for e in events
                   if isinstance(e, AgentAudio) and e.turn_id == answer)  # fmt: skip
    assert abs(total_ms - server.turn_audio_ms[-1]) <= 0.25
