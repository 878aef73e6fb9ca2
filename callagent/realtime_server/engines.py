"""Engines behind /v1/realtime: a profile's pipeline engine, with client-declared tools delegated.

The profile's engine runs the conversation: the local duplex engine for a
profile whose main route is `duplex` / `local`, else its pipeline engine. When its flow calls a tool the client declared in
`session.tools`, the call goes to the client as a `function_call` and the flow
waits for the client's `function_call_output`; other tools run locally.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from callagent.agents.flow import ToolRequest, ToolStatus
from callagent.agents.profile import load_profiles
from callagent.engines.base import CallContext, Engine
from callagent.engines.duplex.local import LocalDuplexEngine
from callagent.engines.fixture import FixtureEngine, FixtureScript
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import PipelineModels, shared_models
from callagent.engines.pipeline.tools import RemoteTools, ToolOutcome
from callagent.realtime_server.session import ToolDelegate

__all__ = ["client_outcome", "profile_engines"]

EngineBuilder = Callable[[str, ToolDelegate], Engine | None]


def _agents_dir() -> Path:
    here = Path("config/agents")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "config" / "agents"


class _ClientTools:
    """The tools the client declared in `session.tools`, called at the client (`RemoteTools`)."""

    def __init__(self, delegate: ToolDelegate) -> None:
        self._delegate = delegate

    def handles(self, name: str) -> bool:
        return self._delegate.handles(name)

    async def call(self, request: ToolRequest) -> ToolOutcome:
        args = json.dumps(dict(request.args))
        return client_outcome(await self._delegate.call(request.id, request.name, args))


def client_outcome(output: str) -> ToolOutcome:
    """A client's function_call_output as the flow's tool outcome.

    A JSON object is the result's fields (ok); `{}`, `null` or `""` means
    nothing was found; an object whose only key is `"error"` is a failure.
    Any other JSON value, or plain text, is ok with the value as `result`.
    """
    try:
        value = json.loads(output) if output.strip() else None
    except ValueError:
        value = output
    if value is None or value == {}:
        return ToolOutcome(ToolStatus.NOT_FOUND, {})
    if isinstance(value, dict) and set(value) == {"error"}:
        return ToolOutcome(ToolStatus.ERROR, {}, str(value["error"]))
    data = value if isinstance(value, dict) else {"result": value}
    return ToolOutcome(ToolStatus.OK, {str(k): v if isinstance(v, str) else json.dumps(v)
                                       for k, v in data.items()})  # fmt: skip


class _RealtimePipelineEngine(PipelineEngine):
    client_tools: RemoteTools  # set by `profile_engines`

    async def start(self, call: CallContext) -> None:
        await super().start(call)
        if self._tools is not None:
            self._tools.run_remotely(self.client_tools)


class _RealtimeLocalDuplexEngine(LocalDuplexEngine):
    client_tools: RemoteTools  # set by `profile_engines`

    async def start(self, call: CallContext) -> None:
        await super().start(call)
        if self._tools is not None:
            self._tools.run_remotely(self.client_tools)


def profile_engines(directory: Path | None = None) -> EngineBuilder:
    """Engines for the profiles in config/agents, with the process-wide pipeline models."""
    profiles = load_profiles(directory or _agents_dir())
    loading: list[Future[PipelineModels]] = []

    def models() -> Future[PipelineModels]:
        if not loading:
            loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-models")
            loading.append(loader.submit(shared_models, profiles))
            loader.shutdown(wait=False)
        return loading[0]

    def build(name: str, delegate: ToolDelegate) -> Engine | None:
        profile = profiles.get(name)
        if profile is None:
            return None
        if profile.engine == "fixture":
            return FixtureEngine(FixtureScript.packaged())
        if profile.flow is None:
            return None
        first = max(profile.routes, key=lambda r: r.percent)
        local = first.engine == "duplex" and (first.backend or getattr(profile.duplex, "kind", "")) == "local"
        engine = (_RealtimeLocalDuplexEngine if local else _RealtimePipelineEngine)(profile, models())
        engine.client_tools = _ClientTools(delegate)
        return engine

    return build
