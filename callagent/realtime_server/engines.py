"""Engines behind /v1/realtime: a profile's pipeline engine, with client-declared tools delegated.

The profile's engine runs the conversation: the local duplex engine for a
profile whose main route is `duplex` / `local`, else its pipeline engine. When its flow calls a tool the client declared in
`session.tools`, the call goes to the client as a `function_call` and the flow
waits for the client's `function_call_output`; other tools run locally.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from callagent.agents.flow import ToolRequest, ToolStatus
from callagent.agents.profile import AgentProfile, load_profiles
from callagent.engines.base import CallContext, Engine, ToolCallFinished, ToolCallStarted
from callagent.engines.duplex.local import LocalDuplexEngine
from callagent.engines.fixture import FixtureEngine, FixtureScript
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import PipelineModels, shared_models
from callagent.engines.pipeline.tools import ToolOutcome, ToolRunner
from callagent.realtime_server.session import ToolDelegate

__all__ = ["client_outcome", "profile_engines"]

EngineBuilder = Callable[[str, ToolDelegate], Engine | None]


def _agents_dir() -> Path:
    here = Path("config/agents")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "config" / "agents"


class _DelegatingRunner(ToolRunner):
    """The pipeline's tool runner, but tools the client declared run at the client."""

    def __init__(self, base: ToolRunner, delegate: ToolDelegate) -> None:
        super().__init__(base._store, base._emit, base._done, runtime=base._runtime)
        self._delegate = delegate

    async def _run(self, request: ToolRequest) -> None:
        if not self._delegate.handles(request.name):
            await super()._run(request)
            return
        args = json.dumps(dict(request.args))
        self._emit(ToolCallStarted(request.id, request.name, args))
        t0 = time.perf_counter()
        output = await self._delegate.call(request.id, request.name, args)
        outcome = client_outcome(output)
        self._emit(ToolCallFinished(request.id, request.name,
                                    "error" if outcome.status is ToolStatus.ERROR else "ok",
                                    json.dumps(dict(outcome.data)),
                                    1000.0 * (time.perf_counter() - t0), outcome.error))  # fmt: skip
        self._done(request.id, outcome)


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
    def __init__(
        self, profile: AgentProfile, models: Future[PipelineModels], delegate: ToolDelegate
    ) -> None:
        super().__init__(profile, models)
        self._delegate = delegate

    async def start(self, call: CallContext) -> None:
        await super().start(call)
        if self._tools is not None:
            self._tools = _DelegatingRunner(self._tools, self._delegate)


class _RealtimeLocalDuplexEngine(LocalDuplexEngine):
    def __init__(
        self, profile: AgentProfile, models: Future[PipelineModels], delegate: ToolDelegate
    ) -> None:
        super().__init__(profile, models)
        self._delegate = delegate

    async def start(self, call: CallContext) -> None:
        await super().start(call)
        if self._tools is not None:
            self._tools = _DelegatingRunner(self._tools, self._delegate)


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
        if first.engine == "duplex" and (first.backend or getattr(profile.duplex, "kind", "")) == "local":
            return _RealtimeLocalDuplexEngine(profile, models(), delegate)
        return _RealtimePipelineEngine(profile, models(), delegate)

    return build
