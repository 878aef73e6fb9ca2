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

__all__ = ["CALLER_CUES", "PipelineModels", "shared_models"]

# What callers say over the agent, whatever the agent: the recogniser must know
# these words, or a backchannel or a "wait, stop" comes out as some flow phrase
# ("that's all") and the barge-in policy cannot tell them apart.
CALLER_CUES: tuple[str, ...] = (
    "uh-huh", "mm-hm", "mhm", "yeah", "yes", "okay", "right", "sure", "hmm",
    "actually wait", "wait", "stop", "hold on", "sorry", "no wait", "wait stop",
    "actually wait stop", "excuse me", "hang on",
)  # fmt: skip


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
            phrases = (*p.expected_phrases(), *CALLER_CUES)
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
    """Synthesise every fixed sentence the agent can say (the opening, each
    node's prompt and re-prompt, the idle lines) into the voice's cache, as the
    engine cuts them (a turn's first sentence split at its first comma), so
    those replies start at once. Texts with {placeholders} are synthesised
    when said. A few seconds of CPU per profile, in the loader thread."""
    assert profile.flow is not None
    flow = profile.flow
    texts = [say.text for say in flow.opening] + [flow.idle.prompt, flow.idle.goodbye]
    texts += [t for node in flow.nodes.values() for t in _node_texts(node)]
    wanted: dict[str, None] = {}
    for text in texts:
        for sentence in split_sentences(text):
            for piece in (sentence, *split_first_clause(sentence)):
                if "{" not in piece:
                    wanted[piece] = None
    for sentence in list(wanted)[: max(0, tts.cache_size - 16)]:
        tts.prompt_8k(sentence)


def _node_texts(node: object) -> list[str]:
    return [t for name in ("say", "no_match") if isinstance(t := getattr(node, name, ""), str) and t]


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
