"""A pipeline call whose STT, brain and TTS are network providers.

The profile selects `[stages.stt] kind = "openai"`, `[stages.brain] kind =
"llm"` and `[stages.tts] kind = "openai"`, all pointed at a local server
speaking the OpenAI wire protocols (pocketsphinx, a rule-reading chat
"model" with streamed tool calls, piper). The engine still runs the local
VAD, end of turn and barge-in; providers that fail or stall end in a retry,
a spoken apology or the local voice, never in silence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callagent.agents.profile import AgentProfile, load_profile, load_profiles
from callagent.engines.base import AgentAudio, AgentTurnDone, ToolCallFinished, UserTranscript
from callagent.engines.pipeline.engine import STT_APOLOGY, PipelineEngine
from callagent.engines.pipeline.llm import APOLOGY
from callagent.engines.pipeline.models import PipelineModels
from callagent.speech.lm import LmResources, build_resources
from callagent.speech.tts_piper import PiperTts
from tests.pipeline.openai_server import FakeOpenAi, server_phrases, serving
from tests.pipeline.test_engine import ROOT, clip, run_call, silence

PROFILE = """
name = "net_agent"
engine = "pipeline"
ai_disclosure = "Hi, this is Acme's automated assistant."
greeting = "How can I help?"
prompt = "You help Acme Supplies customers with their orders. Use the tools."

[stages.stt]
kind = "openai"
base_url = "{url}"
model = "whisper-1"
timeout_s = {timeout}

[stages.tts]
kind = "openai"
base_url = "{url}"
model = "tts-1"
voice = "alloy"
response_format = "{fmt}"
timeout_s = {timeout}

[stages.brain]
kind = "llm"
base_url = "{url}"
model = "rules"
api_key_env = "CALLAGENT_TEST_LLM_KEY"
timeout_s = {timeout}

[[tools]]
name = "lookup_order"
description = "Find an order by its five-digit number."
[tools.parameters]
type = "object"
required = ["order_number"]
[tools.parameters.properties.order_number]
type = "string"
"""


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LmResources:
    cs = load_profiles(ROOT / "config" / "agents")["customer_service"]
    return build_resources(server_phrases(cs), tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def piper() -> PiperTts:
    return PiperTts(threads=1)


@pytest.fixture
async def fake(piper: PiperTts, lm: LmResources) -> AsyncIterator[tuple[FakeOpenAi, str]]:
    server = FakeOpenAi(piper, lm)
    async with serving(server) as url:
        yield server, url


def network_profile(tmp_path: Path, url: str, fmt: str = "pcm", timeout: float = 4.0) -> AgentProfile:
    """Timeouts far above the providers' speed here, and below the fake's stalls."""
    path = tmp_path / "net_agent.toml"
    path.write_text(PROFILE.format(url=url, fmt=fmt, timeout=timeout))
    return load_profile(path)


async def test_a_call_over_network_stt_llm_and_tts(
    fake: tuple[FakeOpenAi, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = fake
    monkeypatch.setenv("CALLAGENT_TEST_LLM_KEY", "sk-llm")
    profile = network_profile(tmp_path, url, "wav")
    models = PipelineModels.load([profile], tmp_path / "lm")
    audio = np.concatenate([silence(5.0), clip("01_order_status"), silence(6.0),
                            clip("02_account_number"), silence(16.0)])  # fmt: skip
    run = await run_call(PipelineEngine(profile, models), audio)

    finals = [e.text for e in run.of(UserTranscript) if e.final]
    assert len(finals) == 2 and "order" in finals[0] and "four five seven" in finals[1], finals
    done = [d.text for d in run.of(AgentTurnDone)]
    assert done[0] == "Hi, this is Acme's automated assistant. How can I help?"
    assert any("order number" in d for d in done[1:])
    [tool] = run.of(ToolCallFinished)
    assert tool.name == "lookup_order" and tool.status == "ok" and "45729" in tool.result
    assert any("45729" in d and "Anything else?" in d for d in done)
    # Every reply was spoken with the network voice, and the key was sent.
    spoken = [r for k, r in server.requests if k == "tts"]
    assert len(spoken) >= 4 and all(r["response_format"] == "wav" for r in spoken)
    assert all(r["auth"] == "Bearer sk-llm" for k, r in server.requests if k == "llm")
    assert run.metric("brain_ms") and run.metric("stt_ms")


async def test_failing_providers_end_in_apologies_and_the_local_voice(
    fake: tuple[FakeOpenAi, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = fake
    monkeypatch.setenv("CALLAGENT_TEST_LLM_KEY", "sk-llm")
    profile = network_profile(tmp_path, url)
    models = PipelineModels.load([profile], tmp_path / "lm")
    # The voice fails twice on the greeting (the local voice says it), the
    # recogniser twice on the first turn (an apology), the model twice on
    # the second (an apology); the third turn goes through.
    server.faults = {"tts": ["500", "stall"], "stt": ["500", "garbage"], "llm": ["500", "stall"]}
    audio = np.concatenate([silence(4.0), clip("01_order_status"), silence(20.0),
                            clip("01_order_status"), silence(30.0),
                            clip("01_order_status"), silence(12.0)])  # fmt: skip
    run = await run_call(PipelineEngine(profile, models), audio)

    done = [d.text for d in run.of(AgentTurnDone)]
    assert done[0].startswith("Hi, this is Acme's automated assistant.")
    # (An apology may be cut short by the caller's next words: its start was said.)
    assert any(d and STT_APOLOGY.startswith(d) for d in done), done
    assert any(d and APOLOGY.startswith(d) for d in done), done
    assert "Sure. What is your five digit order number?" in done
    # The greeting's first sentence was still spoken (local voice), not skipped.
    first = [e for e in run.of(AgentAudio) if e.turn_id == "a1"]
    assert len(first) == 2 and all(len(e.audio.samples) > 4000 for e in first)
    assert server.faults == {"tts": [], "stt": [], "llm": []}  # every failure was met


@pytest.mark.parametrize(("line", "bad", "key", "reason"), [
    ('response_format = "{fmt}"', 'response_format = "mp3"', "stages.tts.response_format", "pcm, wav"),
    ('base_url = "{url}"\nmodel = "rules"', 'base_url = "localhost:8000"\nmodel = "rules"',
     "stages.brain.base_url", "http(s) URL"),
    ('kind = "llm"', 'kind = "gpt"', "stages.brain.kind", "flow, llm"),
])  # fmt: skip
def test_a_bad_network_stage_fails_at_load_naming_file_and_key(
    tmp_path: Path, line: str, bad: str, key: str, reason: str
) -> None:
    from callagent.agents.profile import ProfileError

    path = tmp_path / "net_agent.toml"
    path.write_text(PROFILE.replace(line, bad).format(url="http://127.0.0.1:1/v1", fmt="pcm", timeout=4.0))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.file == path and info.value.key == key and reason in info.value.reason
