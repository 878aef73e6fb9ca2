"""Which duplex engine serves a call: the profile's route names the backend.

`build_duplex(profile, backend, settings, models)` returns the engine for a
route with `engine = "duplex"`:

- `openai_realtime`: `OpenAIRealtimeEngine` (base URL, model, key and VAD from
  `[providers]`), its tools answered by the background reasoner over the order
  store, wrapped in `FallbackEngine` (the pipeline, with an apology) when
  `providers.fallback_to_pipeline` is on and the profile has a flow;
- `gemini_live`: `GeminiLiveEngine`, wrapped the same way;
- `local`: the local duplex engine (`duplex.local`) over the pipeline's models;
- anything else -> `None`: the caller logs it and uses the pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future

from callagent.agents.orders import OrderStore
from callagent.agents.profile import AgentProfile
from callagent.audio.pcm import Pcm
from callagent.config import Settings
from callagent.engines.base import Engine
from callagent.engines.duplex.fallback import FallbackEngine
from callagent.engines.duplex.gemini_live import GeminiLiveEngine
from callagent.engines.duplex.openai_realtime import OpenAIRealtimeEngine
from callagent.engines.duplex.reasoner import order_tools
from callagent.engines.pipeline.models import PipelineModels

__all__ = ["BACKENDS", "build_duplex"]

BACKENDS = ("openai_realtime", "gemini_live", "local")


def build_duplex(
    profile: AgentProfile,
    backend: str,
    settings: Settings,
    models: Callable[[], Future[PipelineModels]],
) -> Engine | None:
    backend = backend or (profile.duplex.kind if profile.duplex else "")
    if backend == "local":
        from callagent.engines.duplex.local import LocalDuplexEngine

        if profile.flow is None:
            return None
        return LocalDuplexEngine(profile, models())
    store = OrderStore.sample()
    primary: Engine
    if backend == "openai_realtime":
        primary = OpenAIRealtimeEngine(profile, settings.providers, order_tools(store))
    elif backend == "gemini_live":
        primary = GeminiLiveEngine(profile, settings.providers, order_tools(store))
    else:
        return None
    p = settings.providers
    if not p.fallback_to_pipeline or profile.flow is None:
        return primary
    from callagent.engines.pipeline.engine import PipelineEngine

    async def apology() -> Pcm:
        loaded = await asyncio.wrap_future(models())
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(loaded.executor, loaded.tts.prompt_8k,
                                          p.fallback_apology)  # fmt: skip

    return FallbackEngine(primary, lambda: PipelineEngine(profile, models()), apology,
                          p.fallback_apology)  # fmt: skip
