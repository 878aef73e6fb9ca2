"""Which engine a duplex route gets (callagent.engines.duplex.factory and app.default_engines)."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from pathlib import Path

import pytest

from callagent.agents.profile import AgentProfile, load_profiles
from callagent.app import default_engines
from callagent.config import ProvidersSettings, Settings
from callagent.engines.base import CallContext
from callagent.engines.duplex.factory import build_duplex
from callagent.engines.duplex.fallback import FallbackEngine
from callagent.engines.duplex.local import LocalDuplexEngine
from callagent.engines.duplex.openai_realtime import OpenAIRealtimeEngine
from callagent.engines.pipeline.models import PipelineModels

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def profile() -> AgentProfile:
    return load_profiles(ROOT / "config" / "agents")["customer_service_duplex"]


def never() -> Future[PipelineModels]:
    return Future()  # the engines under test are only built, not started


def test_each_backend_gets_its_engine(profile: AgentProfile) -> None:
    settings = Settings()
    assert isinstance(build_duplex(profile, "local", settings, never), LocalDuplexEngine)
    wrapped = build_duplex(profile, "openai_realtime", settings, never)
    assert isinstance(wrapped, FallbackEngine) and wrapped.name == "duplex:openai_realtime"
    gemini = build_duplex(profile, "gemini_live", settings, never)
    assert isinstance(gemini, FallbackEngine) and gemini.name == "duplex:gemini_live"
    assert build_duplex(profile, "moshi", settings, never) is None


def test_fallback_can_be_turned_off(profile: AgentProfile) -> None:
    settings = dataclasses.replace(Settings(), providers=dataclasses.replace(
        ProvidersSettings(), fallback_to_pipeline=False))  # fmt: skip
    assert isinstance(build_duplex(profile, "openai_realtime", settings, never),
                      OpenAIRealtimeEngine)  # fmt: skip


def test_the_app_routes_a_duplex_profile_to_the_local_backend() -> None:
    build = default_engines(Settings())
    engine = build(CallContext("c-1", "inbound", "customer_service_duplex"))
    assert isinstance(engine, LocalDuplexEngine)
