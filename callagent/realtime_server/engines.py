"""Engines behind /v1/realtime: a profile's pipeline engine, with client-declared tools delegated.

The profile's engine runs the conversation: the local duplex engine for a
profile whose main route is `duplex` / `local`, else its pipeline engine. When its flow calls a tool the client declared in
`session.tools`, the call goes to the client as a `function_call` and the flow
waits for the client's `function_call_output`; other tools run locally.

Both also take the conversation as text (`conversation.TextConversation`, on
the engine's flow through `conversation.FlowTurns`): committed audio is
transcribed by the embedded recogniser (pocketsphinx, the profile's language
model, the grammar the flow listens with) on a decoder of its own, and
out-of-band answers are spoken by the engine's voice (piper), both in the
shared executor. An engine whose brain is not a scripted flow (the pipeline's
LLM brain) takes no text turns: `text_turns` is False.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from callagent.agents.flow import Action, AskNode, Flow, ToolRequest
from callagent.agents.profile import AgentProfile, load_profiles
from callagent.audio.pcm import Pcm, Samples
from callagent.audio.resample import make_resampler
from callagent.engines.base import CallContext, Engine
from callagent.engines.duplex.local import LocalDuplexEngine
from callagent.engines.fixture import FixtureEngine, FixtureScript
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import PipelineModels, shared_models
from callagent.engines.pipeline.stages import uses_llm
from callagent.engines.pipeline.tools import RemoteTools, ToolOutcome
from callagent.realtime_server.conversation import FlowTurns, TextReply, client_result
from callagent.realtime_server.session import ToolDelegate
from callagent.speech.stt_pocketsphinx import CHUNK_SAMPLES, PocketsphinxStt, Search

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
    """A client's function_call_output as the flow's tool outcome (`conversation.client_result`)."""
    result = client_result(output)
    return ToolOutcome(result.status, result.data, result.error)


def _decode(stt: PocketsphinxStt, samples: Samples, search: Search) -> str:
    """One utterance's words: 8 kHz audio up to the model's 16 kHz, in 20 ms chunks."""
    stt.use_search(search)
    rs = make_resampler(8000, 16000)
    up = np.concatenate([rs.process(samples), rs.flush()]).astype(np.int16)
    up = np.concatenate([up, np.zeros(-len(up) % CHUNK_SAMPLES, dtype=np.int16)])
    for i in range(0, len(up), CHUNK_SAMPLES):
        stt.process(up[i : i + CHUNK_SAMPLES])
    return stt.end_utterance().text


class _TextTurns:
    """`TextConversation` for a flow engine; the engine class supplies the four hooks."""

    _profile: AgentProfile

    def _init_text(self) -> None:
        self._text = FlowTurns()
        self._text_waiting: list[Callable[[Flow], object]] = []  # before the flow exists
        self._text_stt: PocketsphinxStt | None = None
        self._text_stt_lock = asyncio.Lock()

    # hooks
    def _text_flow(self) -> Flow | None:
        raise NotImplementedError

    def _text_act(self, actions: Sequence[Action]) -> None:
        raise NotImplementedError

    def _text_models(self) -> Awaitable[PipelineModels]:
        raise NotImplementedError

    def _drop_unheard(self) -> None:
        """Cancel the speech queued and not yet heard (the opening of a re-seeded session)."""
        raise NotImplementedError

    # TextConversation
    @property
    def text_turns(self) -> bool:
        return self._profile.flow is not None

    def add_user_text(self, text: str) -> None:
        self._text_with_flow(lambda flow: self._text_seed(lambda: self._text.user_text(
            flow, text, self._text_act)))  # fmt: skip

    def add_assistant_text(self, text: str) -> None:
        self._text_with_flow(lambda flow: self._text_seed(self._text.assistant_text))

    def add_system_text(self, text: str) -> bool:
        flow = self._text_flow()
        if flow is None:
            self._text_waiting.append(lambda f: self._text.system_text(f, text, self._text_act))
            return False
        return self._text.system_text(flow, text, self._text_act)

    def respond(self) -> TextReply:
        flow = self._text_flow()
        if flow is None:  # still starting: answer once the messages before are in the flow
            self._text_waiting.append(lambda f: self._text.respond(self._text_act, f))
            return TextReply(speech=True, tool=False)
        return self._text.respond(self._text_act, flow)

    def live_turn(self) -> None:
        self._text.live_turn()

    def preview(self, texts: Sequence[str]) -> str:
        flow = self._text_flow()
        return FlowTurns.preview(flow, texts) if flow is not None else ""

    def transcribe(self, audio: Pcm) -> asyncio.Future[str]:
        return asyncio.ensure_future(self._transcribe_text(audio))

    def synthesize(self, text: str) -> asyncio.Future[Pcm]:
        return asyncio.ensure_future(self._synthesize_text(text))

    # inside
    def _text_apply_waiting(self) -> None:
        flow = self._text_flow()
        waiting, self._text_waiting = self._text_waiting, []
        if flow is not None:
            for step in waiting:
                step(flow)

    def _text_with_flow(self, step: Callable[[Flow], object]) -> None:
        flow = self._text_flow()
        if flow is None:
            self._text_waiting.append(step)
        else:
            step(flow)

    def _text_seed(self, step: Callable[[], object]) -> None:
        if not self._text.seeded:
            self._drop_unheard()
        step()

    def _text_search(self) -> Search:
        flow, spec = self._text_flow(), self._profile.flow
        if flow is None or spec is None:
            return Search.DOMAIN
        node = spec.nodes.get(flow.node)
        return Search.DIGITS if isinstance(node, AskNode) and node.digits else Search.DOMAIN

    async def _transcribe_text(self, audio: Pcm) -> str:
        async with self._text_stt_lock:  # one decoder, one utterance at a time
            models = await self._text_models()
            loop = asyncio.get_running_loop()
            if self._text_stt is None:
                resources = models.resources[self._profile.name]
                self._text_stt = await loop.run_in_executor(models.executor, PocketsphinxStt, resources)
            stt, search = self._text_stt, self._text_search()
            return await loop.run_in_executor(models.executor, _decode, stt, audio.samples, search)

    async def _synthesize_text(self, text: str) -> Pcm:
        models = await self._text_models()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(models.executor, models.tts.prompt_8k, text)


async def _ready(models: PipelineModels | None, loading: Future[PipelineModels] | None
                 ) -> PipelineModels:  # fmt: skip
    if models is not None:
        return models
    assert loading is not None
    return await asyncio.wrap_future(loading)


class _RealtimePipelineEngine(_TextTurns, PipelineEngine):
    client_tools: RemoteTools  # set by `profile_engines`

    def __init__(self, profile: AgentProfile, models: Future[PipelineModels]) -> None:
        super().__init__(profile, models)
        self._init_text()

    async def start(self, call: CallContext) -> None:
        await super().start(call)
        if self._tools is not None:
            self._tools.run_remotely(self.client_tools)
        self._text_apply_waiting()  # before the speaker task runs: a re-seed drops the opening

    @property
    def text_turns(self) -> bool:
        return self._profile.flow is not None and not uses_llm(self._profile)

    def _text_flow(self) -> Flow | None:
        return self._flow

    def _text_act(self, actions: Sequence[Action]) -> None:
        self._act(actions)

    def _text_models(self) -> Awaitable[PipelineModels]:
        return _ready(self._models_ready, self._loading)

    def _drop_unheard(self) -> None:
        for state in self._turns.values():
            if not state.segments:
                state.cancelled = True


class _RealtimeLocalDuplexEngine(_TextTurns, LocalDuplexEngine):
    client_tools: RemoteTools  # set by `profile_engines`

    def __init__(self, profile: AgentProfile, models: Future[PipelineModels]) -> None:
        super().__init__(profile, models)
        self._init_text()

    async def start(self, call: CallContext) -> None:
        await super().start(call)
        if self._tools is not None:
            self._tools.run_remotely(self.client_tools)
        self._text_apply_waiting()

    def _text_flow(self) -> Flow | None:
        return self._flow

    def _text_act(self, actions: Sequence[Action]) -> None:
        self._act(actions)

    def _text_models(self) -> Awaitable[PipelineModels]:
        loading = self._models_arg if isinstance(self._models_arg, Future) else None
        return _ready(self._models, loading)

    def _drop_unheard(self) -> None:
        for turn in self._turns.values():
            if not turn.segments:
                turn.cancelled = True


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
