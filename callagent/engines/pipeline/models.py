"""Models shared by every pipeline call in a process: loaded once, passed explicitly.

- the piper voice (thread-safe; synthesis in `executor`, it releases the GIL),
  with each profile's fixed opening already synthesised into its cache;
- the Silero pool (one context per concurrent call);
- pocketsphinx resources (LM, digits grammar, cut-down dictionary) per profile;
- the order store the shipped tools use (in memory, one per process).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from callagent.agents.orders import OrderStore
from callagent.agents.profile import AgentProfile
from callagent.engines.pipeline.sentences import split_first_clause, split_sentences
from callagent.speech.lm import LmResources, build_resources
from callagent.speech.tts_piper import PiperTts
from callagent.speech.vad import SileroModel

__all__ = ["PipelineModels", "shared_models"]


@dataclass(frozen=True, slots=True)
class PipelineModels:
    tts: PiperTts
    silero: SileroModel
    resources: Mapping[str, LmResources]  # profile name -> STT resources
    executor: Executor  # TTS synthesis and decoder construction
    orders: OrderStore

    @classmethod
    def load(cls, profiles: Iterable[AgentProfile], work_dir: Path | None = None) -> PipelineModels:
        base = work_dir or Path(tempfile.gettempdir()) / "callagent-lm"
        resources: dict[str, LmResources] = {}
        for p in profiles:
            if "pipeline" not in {r.engine for r in p.routes}:
                continue
            phrases = p.expected_phrases()
            digest = hashlib.sha256("\n".join(phrases).encode()).hexdigest()[:12]
            resources[p.name] = build_resources(phrases, base / f"{p.name}-{digest}")
        tts = PiperTts(threads=1, cache_size=128)
        for p in profiles:
            if p.name in resources and p.flow is not None:
                _warm(tts, p)
        return cls(
            tts=tts,
            silero=SileroModel(),
            resources=resources,
            executor=ThreadPoolExecutor(max_workers=4, thread_name_prefix="pipeline"),
            orders=OrderStore.sample(),
        )


def _warm(tts: PiperTts, profile: AgentProfile) -> None:
    """Synthesise the fixed opening (disclosures, greeting) into the voice's
    cache, so every call starts speaking at once (~1-2 s of CPU per profile)."""
    assert profile.flow is not None
    for i, say in enumerate(profile.flow.opening):
        sentences = split_sentences(say.text)
        if i == 0 and sentences:
            sentences = split_first_clause(sentences[0]) + sentences[1:]
        for sentence in sentences:
            if "{" not in sentence:
                tts.prompt_8k(sentence)


_lock = threading.Lock()
_cache: dict[tuple[str, ...], PipelineModels] = {}


def shared_models(profiles: Mapping[str, AgentProfile]) -> PipelineModels:
    """One `PipelineModels` per process for a given set of profiles."""
    key = tuple(sorted(f"{p.name}:{p.path.resolve()}" for p in profiles.values()))
    with _lock:
        models = _cache.get(key)
        if models is None:
            models = _cache[key] = PipelineModels.load(profiles.values())
        return models
