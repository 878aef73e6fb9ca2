"""The OpenAI-compatible providers against a local server speaking their wire protocols.

The server (tests/pipeline/openai_server.py) transcribes with pocketsphinx,
speaks with piper and streams chat completions (text and tool calls) over
real HTTP on 127.0.0.1. Failures are injected per request: error statuses,
stalls longer than the client's timeout, answers in the wrong format.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from callagent.agents.profile import load_profiles
from callagent.audio.pcm import Pcm
from callagent.audio.wavfile import read_wav
from callagent.engines.pipeline.llm import APOLOGY, LlmBrain
from callagent.engines.providers._http import Endpoint
from callagent.engines.providers.errors import BadResponse, ProviderStalled, ProviderUnavailable
from callagent.engines.providers.openai_chat import (
    ChatStreamDecoder,
    Finished,
    OpenAiChat,
    TextDelta,
    ToolCall,
)
from callagent.engines.providers.openai_stt import OpenAiStt
from callagent.engines.providers.openai_tts import OpenAiTts
from callagent.engines.providers.sse import SseParser
from callagent.speech.lm import LmResources, build_resources
from callagent.speech.tts_piper import PiperTts
from tests.pipeline.openai_server import FakeOpenAi, server_phrases, serving

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT.parent / "shared" / "audio"


@pytest.fixture(scope="module")
def piper() -> PiperTts:
    return PiperTts(threads=1)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LmResources:
    profile = load_profiles(ROOT / "config" / "agents")["customer_service"]
    return build_resources(server_phrases(profile), tmp_path_factory.mktemp("lm"))


@pytest.fixture
async def server(piper: PiperTts, lm: LmResources) -> AsyncIterator[tuple[FakeOpenAi, str]]:
    fake = FakeOpenAi(piper, lm)
    async with serving(fake) as url:
        yield fake, url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def endpoint(stage: str, url: str, **kw: object) -> Endpoint:
    return Endpoint.from_settings(stage, {"base_url": url, "model": "m", "timeout_s": 4.0, **kw})


# ---- sans-I/O cores -----------------------------------------------------------


def test_sse_events_are_cut_at_blank_lines_whatever_the_chunking() -> None:
    stream = b': keep-alive\r\ndata: {"a":1}\r\n\r\ndata: line one\ndata: line two\n\nevent: x\ndata: [DONE]\n\n'
    whole = SseParser().feed(stream)
    assert whole == ['{"a":1}', "line one\nline two", "[DONE]"]
    parser = SseParser()
    pieces = [parser.feed(stream[i : i + 3]) for i in range(0, len(stream), 3)]
    assert [e for p in pieces for e in p] == whole
    tail = SseParser()
    assert tail.feed(b"data: last") == [] and tail.close() == ["last"]


def test_tool_call_fragments_are_assembled_by_index() -> None:
    d = ChatStreamDecoder()
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Let me check."}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"name": "lookup_order", "arguments": '{"order_'}},
            {"index": 1, "id": "c2", "function": {"name": "find_orders_by_phone", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": 'number": "45729"}'}},
            {"index": 1, "function": {"arguments": '{"phone": "+1"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]  # fmt: skip
    events = [e for c in chunks for e in d.feed(json.dumps(c))] + d.feed("[DONE]")
    assert events == [
        TextDelta("Let me check."),
        ToolCall("c1", "lookup_order", '{"order_number": "45729"}'),
        ToolCall("c2", "find_orders_by_phone", '{"phone": "+1"}'),
        Finished("tool_calls"),
    ]
    assert d.feed("[DONE]") == [] and d.close() == []


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", '{"error": {"message": "rate limited"}}',
                                  '{"choices": [{"index": 0, "delta": {"tool_calls": ["x"]}}]}'])  # fmt: skip
def test_a_malformed_stream_event_is_a_bad_response(data: str) -> None:
    with pytest.raises(BadResponse):
        ChatStreamDecoder().feed(data)


def test_endpoint_settings_are_checked_and_the_key_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="base_url"):
        Endpoint.from_settings("llm", {"base_url": "api.openai.com", "model": "m"})
    with pytest.raises(ValueError, match="model"):
        Endpoint.from_settings("llm", {"base_url": "http://x/v1"})
    ep = Endpoint.from_settings("llm", {"base_url": "http://x/v1/", "model": "m",
                                        "api_key_env": "CALLAGENT_TEST_KEY"})  # fmt: skip
    assert ep.url("chat/completions") == "http://x/v1/chat/completions"
    monkeypatch.delenv("CALLAGENT_TEST_KEY", raising=False)
    with pytest.raises(ProviderUnavailable, match="CALLAGENT_TEST_KEY"):
        ep.headers()
    monkeypatch.setenv("CALLAGENT_TEST_KEY", "sk-test")
    assert ep.headers() == {"Authorization": "Bearer sk-test"}


# ---- speech to text ------------------------------------------------------------


async def test_stt_sends_the_utterance_as_multipart_wav_and_reads_the_text(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = server
    monkeypatch.setenv("CALLAGENT_TEST_KEY", "sk-stt")
    stt = OpenAiStt(http, endpoint("stt", url, api_key_env="CALLAGENT_TEST_KEY"))
    text = await stt.transcribe(read_wav(AUDIO / "06_human_please.wav"))
    assert "human" in text
    (kind, req), = fake.requests
    assert kind == "stt" and req["model"] == "m" and req["auth"] == "Bearer sk-stt"


async def test_stt_refuses_empty_audio_before_sending(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient
) -> None:
    fake, url = server
    with pytest.raises(ValueError, match="too short"):
        await OpenAiStt(http, endpoint("stt", url)).transcribe(Pcm(np.zeros(0, np.int16), 8000))
    assert fake.requests == []


@pytest.mark.parametrize(("fault", "error"), [("500", ProviderUnavailable), ("stall", ProviderStalled),
                                              ("garbage", BadResponse)])  # fmt: skip
async def test_stt_failures_are_provider_errors(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient, fault: str, error: type[Exception]
) -> None:
    fake, url = server
    fake.faults["stt"] = [fault]
    with pytest.raises(error):
        await OpenAiStt(http, endpoint("stt", url)).transcribe(read_wav(AUDIO / "04_yes.wav"))


async def test_stt_server_down_is_unavailable(http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderUnavailable):
        await OpenAiStt(http, endpoint("stt", "http://127.0.0.1:9/v1")).transcribe(
            read_wav(AUDIO / "04_yes.wav"))  # fmt: skip


# ---- text to speech ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
async def test_tts_reads_pcm_or_wav_at_24_khz(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient, fmt: str
) -> None:
    fake, url = server
    pcm = await OpenAiTts(http, endpoint("tts", url), "alloy", fmt).synthesize("Your order has shipped.")
    assert pcm.rate == 24_000 and 0.8 < len(pcm.samples) / 24_000 < 4.0
    assert np.abs(pcm.samples.astype(np.int32)).max() > 1000  # speech, not silence
    assert fake.requests[0][1]["response_format"] == fmt and fake.requests[0][1]["voice"] == "alloy"


async def test_tts_rejects_bad_input_and_bad_answers(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient
) -> None:
    fake, url = server
    with pytest.raises(ValueError, match="response_format"):
        OpenAiTts(http, endpoint("tts", url), "alloy", "mp3")
    tts = OpenAiTts(http, endpoint("tts", url), "alloy", "wav")
    with pytest.raises(ValueError, match="empty"):
        await tts.synthesize("  ")
    fake.faults["tts"] = ["garbage", "500", "stall"]
    for error in (BadResponse, ProviderUnavailable, ProviderStalled):
        with pytest.raises(error):
            await tts.synthesize("Hello.")


# ---- chat completions and the LLM brain ------------------------------------------


async def test_chat_streams_text_in_pieces(server: tuple[FakeOpenAi, str], http: httpx.AsyncClient) -> None:
    _, url = server
    chat = OpenAiChat(http, endpoint("llm", url), temperature=0.2, max_tokens=50)
    events = [e async for e in chat.stream([{"role": "user", "content": "hello"}])]
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(texts) > 3 and "".join(texts) == "I can check an order for you. How can I help?"
    assert events[-1] == Finished("stop")


def brain_for(url: str, http: httpx.AsyncClient) -> LlmBrain:
    profile = load_profiles(ROOT / "config" / "agents")["customer_service"]
    return LlmBrain(OpenAiChat(http, endpoint("llm", url)), profile)


async def test_the_brain_speaks_sentence_by_sentence_and_runs_the_tools_the_model_calls(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient
) -> None:
    fake, url = server
    brain = brain_for(url, http)
    said: list[str] = []
    calls: list[tuple[str, str]] = []

    async def tool(call_id: str, name: str, arguments: str) -> str:
        calls.append((name, arguments))
        return json.dumps({"outcome": "ok", "data": {"order_number": "45729", "status_text": "has shipped"}})

    await brain.reply("where is my order", said.append, tool)
    assert said == ["Sure.", "What is your five digit order number?"]
    await brain.reply("four five seven two nine", said.append, tool)
    assert calls == [("lookup_order", '{"order_number": "45729"}')]
    assert said[2:] == ["Order 45729 has shipped.", "Anything else?"]
    # The model saw the tools, and the tool result went back to it.
    last = fake.requests[-1][1]
    assert {t["function"]["name"] for t in last["tools"]} == {
        "lookup_order", "find_orders_by_phone", "change_address"}  # fmt: skip
    assert last["messages"][-1]["role"] == "tool" and last["messages"][-2]["tool_calls"]
    assert last["messages"][0]["role"] == "system"


async def test_a_failed_or_stalled_model_is_retried_once(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient
) -> None:
    fake, url = server
    for fault in ("500", "garbage", "stall"):
        fake.faults["llm"] = [fault]
        said: list[str] = []
        await brain_for(url, http).reply("hello", said.append, _no_tool)
        assert said == ["I can check an order for you.", "How can I help?"], fault


async def test_a_model_that_keeps_failing_ends_in_a_spoken_apology_not_a_dead_call(
    server: tuple[FakeOpenAi, str], http: httpx.AsyncClient
) -> None:
    fake, url = server
    brain = brain_for(url, http)
    fake.faults["llm"] = ["500", "500"]
    said: list[str] = []
    await brain.reply("hello", said.append, _no_tool)
    assert said == [APOLOGY]
    assert [m["role"] for m in brain.messages] == ["system"]  # the failed exchange is dropped
    # Stalled mid-answer (twice): still an apology, and the call goes on.
    fake.faults["llm"] = ["stall", "stall"]
    said.clear()
    await brain.reply("hello", said.append, _no_tool)
    assert said == [APOLOGY]
    await brain.reply("where is my order", said.append, _no_tool)
    assert said[1:] == ["Sure.", "What is your five digit order number?"]


async def test_the_brain_refuses_empty_text(server: tuple[FakeOpenAi, str], http: httpx.AsyncClient) -> None:
    _, url = server
    with pytest.raises(ValueError, match="empty"):
        await brain_for(url, http).reply("  ", print, _no_tool)


async def _no_tool(call_id: str, name: str, arguments: str) -> str:
    raise AssertionError("no tool expected")
