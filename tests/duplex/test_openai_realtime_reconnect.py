"""The OpenAI Realtime backend outliving its sessions: reconnect, re-seed, carry on.

The provider is our own /v1/realtime on a real service, reached through a
test-only relay (`realtime_proxy`) that records what each session received and
can close it with 1001 (as the vendor does at its 60-minute cap), hold a new
session at the handshake, refuse it, or drop it right after its session.update.
The test plays the call session's part, as in test_openai_realtime.py: caller
audio at about 4x real time, playback reported on the audio clock. Nothing is
timed: every wait is on a condition, with a generous guard.

Our endpoint feeds re-seeded items to the session's flow, so a new session
carries on where the call stood without greeting again, as a vendor's model
would (test_openai_realtime_reseed.py shows the flow continuing).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    Engine,
    EngineEvent,
    Interrupt,
    Metric,
    PlaybackProgress,
    ToolCallFinished,
    ToolCallStarted,
    UserTranscript,
)
from callagent.engines.duplex.fallback import FallbackEngine
from callagent.engines.duplex.openai_realtime import OpenAIRealtimeEngine, ProviderFailed
from callagent.engines.duplex.reasoner import order_tools
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import PipelineModels, shared_models
from tests.duplex.realtime_proxy import RealtimeProxy
from tests.e2e.conftest import LiveService
from tests.realtime.conftest import API_TOKEN, clip, silence

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 120.0
APOLOGY = "Sorry, I had a problem on my side. Let's carry on."


def profile() -> AgentProfile:
    return load_profiles(ROOT / "config" / "agents")["customer_service"]


def backend(proxy: RealtimeProxy, **settings: Any) -> OpenAIRealtimeEngine:
    s = dataclasses.replace(ProvidersSettings(), openai_base_url=proxy.base_url,
                            openai_model="customer_service", **settings)  # fmt: skip
    return OpenAIRealtimeEngine(profile(), s, order_tools(OrderStore.sample()), api_key=API_TOKEN)


async def until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_S):
        while not cond():
            await asyncio.sleep(0.01)


class Caller:
    """The call session's part: caller audio (then silence, for ever) from the first agent
    audio on, playback reported complete as the audio clock passes each finished turn."""

    def __init__(self, engine: Engine, audio: np.ndarray) -> None:
        self.engine = engine
        self.audio = audio
        self.events: list[EngineEvent] = []
        self.fed_ms = 0.0
        self.heard: dict[str, int] = {}  # turn id -> len(events) when heard to the end
        self._first_audio: dict[str, float] = {}
        self._audio_ms: dict[str, float] = {}
        self._finished: set[str] = set()
        self._feeder: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.engine.start(CallContext("c1", "inbound", "customer_service"))
        self._it = self.engine.events()

    async def until(self, stop: Callable[[EngineEvent], bool]) -> EngineEvent:
        while True:
            ev = await asyncio.wait_for(self._it.__anext__(), GUARD_S)
            self.events.append(ev)
            if self._feeder is None and isinstance(ev, AgentAudio):
                self._feeder = asyncio.create_task(self._feed())
            if isinstance(ev, AgentAudio):
                self._first_audio.setdefault(ev.turn_id, self.fed_ms)
                self._audio_ms[ev.turn_id] = self._audio_ms.get(ev.turn_id, 0.0) + ev.audio.duration_ms
            if isinstance(ev, AgentTurnDone) and ev.turn_id in self._first_audio:
                self._finished.add(ev.turn_id)
            if isinstance(ev, Interrupt):
                self._finished.discard(ev.turn_id)
                heard = self.fed_ms - self._first_audio.get(ev.turn_id, self.fed_ms)
                self.engine.played(PlaybackProgress(ev.turn_id, heard, False))
            self._marks()
            if stop(ev):
                return ev

    def index(self, pred: Callable[[EngineEvent], bool]) -> int:
        return next(i for i, e in enumerate(self.events) if pred(e))

    async def close(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)
        await self.engine.close()

    async def _feed(self) -> None:
        i = 0
        while True:
            chunk = self.audio[i : i + 160] if i < len(self.audio) else np.zeros(160, np.int16)
            self.engine.feed(Pcm(chunk, 8000))
            self.fed_ms += 20.0
            i += 160
            self._marks()
            if i % 800 == 0:
                await asyncio.sleep(0.025)  # about 4x real time

    def _marks(self) -> None:
        for turn_id in list(self._finished):
            if self.fed_ms >= self._first_audio[turn_id] + self._audio_ms[turn_id]:
                self.engine.played(PlaybackProgress(turn_id, self._audio_ms[turn_id], True))
                self._finished.discard(turn_id)
                self.heard[turn_id] = len(self.events)


def say(caller: Caller, speech: np.ndarray) -> None:
    """The caller says `speech` from now on (after the silence fed so far)."""
    at = int(caller.fed_ms * 8) + 1600  # 8 samples per ms, 200 ms ahead of the feed
    pad = np.zeros(max(0, at - len(caller.audio)), dtype=np.int16)
    caller.audio = np.concatenate([caller.audio, pad, speech])


def metric(name: str) -> Callable[[EngineEvent], bool]:
    return lambda e: isinstance(e, Metric) and e.name == name


def metrics(events: list[EngineEvent], name: str) -> list[Metric]:
    return [e for e in events if isinstance(e, Metric) and e.name == name]


def reseeded_messages(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(i["role"], i["content"][0]["type"], i["content"][0]["text"]) for i in items
            if i["type"] == "message"]  # fmt: skip


async def test_a_session_closed_with_1001_is_reconnected_re_seeded_and_the_call_goes_on(
    realtime_service: LiveService,
) -> None:
    async with RealtimeProxy(realtime_service.base_url) as proxy:
        engine = backend(proxy)
        caller = Caller(engine, np.concatenate([silence(16.0), clip("01_order_status")]))
        await caller.start()
        try:
            greeting = await caller.until(lambda e: isinstance(e, AgentTurnDone))
            assert isinstance(greeting, AgentTurnDone)
            first = proxy.sessions[0]
            proxy.hold = asyncio.Event()  # the next session waits at its handshake
            await proxy.drop(1001, "session cap reached")
            gap_from = caller.fed_ms
            await until(lambda: caller.fed_ms >= gap_from + 1000.0)  # the caller talks on
            proxy.hold.set()
            await caller.until(lambda e: isinstance(e, UserTranscript) and "status" in e.text)
            answer = await caller.until(lambda e: isinstance(e, AgentTurnDone))
            answer_at = len(caller.events) - 1
        finally:
            await caller.close()
    events = caller.events
    assert [m.value for m in metrics(events, "provider_reconnect_going_away")] == [1.0]
    assert engine.reconnects == 1 and engine.renewals == 0 and len(proxy.sessions) == 2
    second = proxy.sessions[1]
    # the same session.update, then the transcript so far, then the audio queued meanwhile
    assert second.received[0] == first.received[0] and first.received[0]["type"] == "session.update"
    kinds = second.types()
    n_items = len(second.items())
    assert kinds[1 : 1 + n_items] == ["conversation.item.create"] * n_items
    assert kinds[1 + n_items] == "input_audio_buffer.append"
    messages = reseeded_messages(second.items())
    assert messages[0][:2] == ("system", "input_text") and "do not greet" in messages[0][2]
    assert ("assistant", "output_text", greeting.text) in messages
    [queued] = metrics(events, "provider_reconnect_backlog_ms")
    assert queued.value >= 1000.0
    assert second.audio_ms() >= queued.value
    # the call went on: the new session heard the caller's question and answered
    reconnect = caller.index(metric("provider_reconnect_going_away"))
    question = caller.index(lambda e: isinstance(e, UserTranscript) and "status" in e.text)
    assert reconnect < question < answer_at
    assert isinstance(answer, AgentTurnDone) and answer.text and answer.text != greeting.text
    assert any(isinstance(e, AgentAudio) and e.turn_id == answer.turn_id for e in events)


async def test_a_planned_renewal_before_the_cap_waits_for_a_quiet_moment(
    realtime_service: LiveService,
) -> None:
    # renew from 2 s after a session opened, once quiet (forced only near 300 s: never here)
    async with RealtimeProxy(realtime_service.base_url) as proxy:
        engine = backend(proxy, openai_session_cap_s=300.0, openai_renew_margin_s=298.0,
                         openai_renew_force_s=1.0)  # fmt: skip
        caller = Caller(engine, silence(1.0))
        await caller.start()
        try:
            greeting = await caller.until(lambda e: isinstance(e, AgentTurnDone))
            await caller.until(metric("provider_reconnect_renew"))
            # the new session does not greet again: the caller asks, and is answered
            say(caller, clip("01_order_status"))
            later = await caller.until(lambda e: isinstance(e, AgentTurnDone))
            later_at = len(caller.events) - 1
        finally:
            await caller.close()
    events = caller.events
    assert isinstance(greeting, AgentTurnDone)
    assert not metrics(events, "provider_reconnect_renew_forced")
    renewal = caller.index(metric("provider_reconnect_renew"))
    # a quiet moment: the greeting was over and heard to the end, nobody was speaking
    assert events.index(greeting) < caller.heard[greeting.turn_id] <= renewal
    # (quiet again after the renewal, the backend may renew more than once)
    assert engine.renewals >= 1 and engine.reconnects == 0 and len(proxy.sessions) >= 2
    first, second = proxy.sessions[:2]
    assert first.client_close_code == 1000  # the backend closed the old session itself
    assert second.received[0] == first.received[0]
    messages = reseeded_messages(second.items())
    assert messages[0][0] == "system"
    assert messages[-1] == ("assistant", "output_text", greeting.text)
    # the call goes on where it stood: the caller's question gets the flow's next question
    assert later_at > renewal and isinstance(later, AgentTurnDone)
    assert later.turn_id != greeting.turn_id  # turn ids stay unique across sessions
    assert "order number" in later.text
    assert any(isinstance(e, AgentAudio) and e.turn_id == later.turn_id
               for e in events[renewal:])  # fmt: skip


async def test_a_renewal_is_forced_near_the_cap_when_no_quiet_moment_comes(
    realtime_service: LiveService,
) -> None:
    # the caller's playback is never reported heard: the agent may still be speaking
    async with RealtimeProxy(realtime_service.base_url) as proxy:
        engine = backend(proxy, openai_session_cap_s=4.0, openai_renew_margin_s=3.0,
                         openai_renew_force_s=2.0)  # fmt: skip
        await engine.start(CallContext("c1", "inbound", "customer_service"))
        events: list[EngineEvent] = []
        try:
            async for ev in engine.events():
                events.append(ev)
                if isinstance(ev, Metric) and ev.name.startswith("provider_reconnect"):
                    break
            await until(lambda: len(proxy.sessions) == 2 and proxy.sessions[1].updated.is_set())
        finally:
            await engine.close()
    assert metrics(events, "provider_reconnect_renew_forced")
    assert not metrics(events, "provider_reconnect_renew")
    assert engine.renewals == 1 and proxy.sessions[0].client_close_code == 1000
    assert proxy.sessions[1].received[0] == proxy.sessions[0].received[0]


async def test_a_tool_result_due_on_a_lost_session_reaches_the_new_one(
    realtime_service: LiveService,
) -> None:
    release = asyncio.Event()
    store_tools = order_tools(OrderStore.sample())

    async def slow_tools(name: str, arguments: str) -> str:
        await release.wait()  # still running when the session goes
        return await store_tools(name, arguments)

    async with RealtimeProxy(realtime_service.base_url) as proxy:
        s = dataclasses.replace(ProvidersSettings(), openai_base_url=proxy.base_url,
                                openai_model="customer_service", holding_phrase="")  # fmt: skip
        engine = OpenAIRealtimeEngine(profile(), s, slow_tools, api_key=API_TOKEN)
        caller = Caller(engine, np.concatenate([silence(16.0), clip("01_order_status"),
                                                silence(7.0), clip("02_account_number")]))  # fmt: skip
        await caller.start()
        try:
            await caller.until(lambda e: isinstance(e, ToolCallStarted))
            await proxy.drop(1001)
            await until(lambda: len(proxy.sessions) == 2 and proxy.sessions[1].updated.is_set())
            release.set()
            finished = await caller.until(lambda e: isinstance(e, ToolCallFinished))
            second = proxy.sessions[1]

            def answered() -> bool:
                kinds = second.types()
                return ("response.create" in kinds and any(
                    "Result of the function call lookup_order" in text
                    for _, _, text in reseeded_messages(second.items())))  # fmt: skip

            await until(answered)
        finally:
            await caller.close()
    assert isinstance(finished, ToolCallFinished) and finished.status == "ok"
    messages = reseeded_messages(second.items())
    # the caller's question was re-seeded; the result came as a system message (the call id
    # means nothing on a new session), then one response.create asked for the answer
    assert any(role == "user" and "status" in text for role, _, text in messages)
    [result] = [i for i, e in enumerate(second.received) if e["type"] == "conversation.item.create"
                and "Result of the function call" in e["item"]["content"][0]["text"]]  # fmt: skip
    assert second.received[result]["item"]["role"] == "system"
    assert '"45729"' in second.received[result]["item"]["content"][0]["text"]
    assert "response.create" in [e["type"] for e in second.received[result:]]
    assert not [e for e in second.received if e["type"] == "conversation.item.create"
                and e["item"]["type"] == "function_call_output"]  # fmt: skip


async def test_repeated_drops_end_in_the_failure_path_after_the_reconnect_limit(
    realtime_service: LiveService,
) -> None:
    async with RealtimeProxy(realtime_service.base_url) as proxy:
        engine = backend(proxy, openai_max_reconnects=2)
        caller = Caller(engine, silence(1.0))
        await caller.start()
        try:
            await caller.until(lambda e: isinstance(e, AgentTurnDone))
            proxy.drop_after_update = True  # every new session dies at once
            await proxy.drop(1001)
            with pytest.raises(ProviderFailed, match="after 2 reconnects"):
                await caller.until(lambda e: False)
        finally:
            await caller.close()
    assert len(metrics(caller.events, "provider_reconnect_going_away")) == 2
    assert engine.reconnects == 2 and len(proxy.sessions) == 3
    assert all(s.close_code == 1001 for s in proxy.sessions)


@pytest.fixture(scope="module")
def models() -> PipelineModels:
    return shared_models(load_profiles(ROOT / "config" / "agents"))


async def test_a_reconnect_that_fails_falls_back_to_the_pipeline(
    realtime_service: LiveService, models: PipelineModels
) -> None:
    async with RealtimeProxy(realtime_service.base_url) as proxy:
        primary = backend(proxy, connect_timeout_s=5.0)
        p = profile()

        async def apology() -> Pcm:
            return await asyncio.get_running_loop().run_in_executor(
                models.executor, models.tts.prompt_8k, APOLOGY)

        engine = FallbackEngine(primary, lambda: PipelineEngine(p, models), apology, APOLOGY)
        caller = Caller(engine, silence(1.0))
        await caller.start()
        try:
            await caller.until(lambda e: isinstance(e, AgentTurnDone))
            proxy.refuse = True  # the vendor is unreachable from now on
            await proxy.drop(1001)
            await caller.until(lambda e: isinstance(e, AgentTurnDone) and e.turn_id.startswith("a"))
        finally:
            await caller.close()
    events = caller.events
    reconnect = caller.index(metric("provider_reconnect_going_away"))
    assert reconnect < caller.index(metric("engine_fallback")) < caller.index(metric("engine.pipeline"))
    assert AgentTurnDone("fallback-apology", APOLOGY) in events
    assert primary.reconnects == 1 and len(proxy.sessions) == 1
    assert engine.name == "duplex:openai_realtime->pipeline"
