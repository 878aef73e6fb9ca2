"""The network stages a pipeline profile selects in `[stages.*]`, built per call.

`kind = "openai"` for stt / tts and `kind = "llm"` for the brain speak the
OpenAI-compatible HTTP APIs (callagent/engines/providers/). Each call gets
one `httpx.AsyncClient` for all of them, closed with the call. The embedded
stages (pocketsphinx, piper, the scripted flow) need nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from callagent.agents.profile import AgentProfile
from callagent.engines.providers._http import Endpoint
from callagent.engines.providers.openai_chat import OpenAiChat
from callagent.engines.providers.openai_stt import OpenAiStt
from callagent.engines.providers.openai_tts import OpenAiTts

__all__ = ["NetworkStages", "uses_llm"]


def uses_llm(profile: AgentProfile) -> bool:
    return profile.stages is not None and profile.stages.brain.kind == "llm"


@dataclass
class NetworkStages:
    http: httpx.AsyncClient | None = None
    stt: OpenAiStt | None = None
    tts: OpenAiTts | None = None
    chat: OpenAiChat | None = None

    @classmethod
    def for_profile(cls, profile: AgentProfile) -> NetworkStages:
        """Raises ValueError naming the profile and stage for bad settings."""
        stages = profile.stages
        if stages is None:
            return cls()
        wanted = {"stt": stages.stt.kind == "openai", "tts": stages.tts.kind == "openai",
                  "brain": stages.brain.kind == "llm"}  # fmt: skip
        if not any(wanted.values()):
            return cls()
        try:
            stt = Endpoint.from_settings("stt", stages.stt.settings) if wanted["stt"] else None
            tts = Endpoint.from_settings("tts", stages.tts.settings) if wanted["tts"] else None
            llm = Endpoint.from_settings("llm", stages.brain.settings) if wanted["brain"] else None
        except ValueError as exc:
            raise ValueError(f"{profile.path}: stages.{exc}") from None
        http = httpx.AsyncClient()
        out = cls(http)
        if stt is not None:
            out.stt = OpenAiStt(http, stt, str(stages.stt.settings.get("language", "")))
        if tts is not None:
            s = stages.tts.settings
            out.tts = OpenAiTts(http, tts, str(s.get("voice", "alloy")),
                                str(s.get("response_format", "pcm")))  # fmt: skip
        if llm is not None:
            s = stages.brain.settings
            temperature = s.get("temperature")
            max_tokens = s.get("max_tokens")
            out.chat = OpenAiChat(
                http, llm,
                temperature=float(temperature) if temperature is not None else None,
                max_tokens=int(max_tokens) if max_tokens is not None else None,
            )  # fmt: skip
        return out

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
