"""The app's engine builder: the engine each call's agent profile names."""

from __future__ import annotations

from callagent.app import default_engines
from callagent.config import Settings
from callagent.engines.base import CallContext
from callagent.engines.fixture import FixtureEngine
from callagent.engines.pipeline.engine import PipelineEngine


def call(agent: str) -> CallContext:
    return CallContext("c1", "inbound", agent, from_number="+15005550006")


def test_each_call_gets_the_engine_its_profile_names() -> None:
    build = default_engines(Settings())
    assert isinstance(build(call("fixture")), FixtureEngine)
    first, second = build(call("customer_service")), build(call("customer_service"))
    assert isinstance(first, PipelineEngine) and isinstance(second, PipelineEngine)
    assert first is not second  # one engine per call, models shared


async def test_a_pipeline_call_waits_for_the_models_without_blocking_the_loop() -> None:
    build = default_engines(Settings())  # the default profile is the fixture: lazy load
    engine = build(call("customer_service"))
    assert isinstance(engine, PipelineEngine)
    await engine.start(call("customer_service"))  # awaits the (shared) models
    await engine.close()


def test_an_unknown_agent_gets_the_default_profile() -> None:
    build = default_engines(Settings())  # default_profile = "fixture"
    assert isinstance(build(call("no_such_agent")), FixtureEngine)
