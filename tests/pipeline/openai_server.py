"""A local server speaking the OpenAI-compatible wire protocols, for tests.

- `POST /v1/audio/transcriptions` (multipart: file, model, response_format):
  transcribes the WAV with pocketsphinx (the real offline recogniser) and
  answers `{"text": ...}`.
- `POST /v1/audio/speech` (JSON: model, input, voice, response_format pcm|wav):
  synthesises with piper (the real offline voice) at 24 kHz.
- `POST /v1/chat/completions` with `stream: true`: answers as server-sent
  `chat.completion.chunk` events. The "model" is a small deterministic
  reader of the conversation (no LLM runs here): a five-digit number in the
  last user message -> a `lookup_order` tool call; a tool result -> a reply
  made from its JSON; a question about an order without a number -> asking
  for it; anything else -> asking how it can help. It streams its text in
  small pieces and its tool-call arguments in fragments, as real servers do.

`faults` injects failures per endpoint: "500" (an error status), "stall"
(no answer for longer than the client's timeout), "garbage" (not the
protocol's format); each entry is used once. `requests` records every
request body (auth header included) for the tests to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import socket
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from callagent.agents.profile import AgentProfile
from callagent.engines.pipeline.models import CALLER_CUES
from callagent.speech.lm import LmResources
from callagent.speech.stt_pocketsphinx import PocketsphinxStt
from callagent.speech.tts_piper import PiperTts

STALL_S = 6.0


def server_phrases(profile: AgentProfile) -> tuple[str, ...]:
    """The recogniser's language model: what the agent expects, the caller
    cues, and how callers give numbers (not the numbers themselves)."""
    digits = "zero one two three four five six seven eight nine".split()
    pairs = [f"{a} {b}" for a in digits for b in digits]  # any digit may follow any digit
    return (*profile.expected_phrases(), *CALLER_CUES, "my account number is",
            "my order number is", *pairs)


@dataclass
class FakeOpenAi:
    tts: PiperTts
    stt: LmResources
    faults: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def fault(self, endpoint: str) -> str:
        queue = self.faults.get(endpoint, [])
        return queue.pop(0) if queue else ""

    # ---- endpoints ---------------------------------------------------------

    async def transcriptions(self, request: Request) -> Response:
        async with request.form() as form:
            upload = form["file"]
            assert not isinstance(upload, str)
            audio = await upload.read()
            model = form.get("model")
        self.requests.append(("stt", {"model": model, "bytes": len(audio),
                                      "auth": request.headers.get("authorization", "")}))  # fmt: skip
        fault = self.fault("stt")
        if fault == "500":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
        if fault == "stall":
            await asyncio.sleep(STALL_S)
        if fault == "garbage":
            return Response("<html>gateway</html>", media_type="text/html")
        with wave.open(io.BytesIO(audio), "rb") as w:
            rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
        text = await asyncio.get_running_loop().run_in_executor(None, self._recognise, rate, samples)
        return JSONResponse({"text": text})

    def _recognise(self, rate: int, samples: np.ndarray) -> str:
        # As the engine's own decoder hears it: soxr QQ to 16 kHz, 20 ms at a time.
        up = soxr.ResampleStream(rate, 16_000, 1, dtype="int16", quality="QQ")
        x = np.concatenate([np.zeros(rate // 4, np.int16), samples.astype(np.int16)])
        step = rate // 50
        pcm16 = np.concatenate([up.resample_chunk(x[i : i + step]) for i in range(0, len(x), step)])
        stt = PocketsphinxStt(self.stt)
        for i in range(0, len(pcm16) - 319, 320):
            stt.process(pcm16[i : i + 320])
        return stt.end_utterance().text

    async def speech(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(("tts", {**body, "auth": request.headers.get("authorization", "")}))
        fault = self.fault("tts")
        if fault == "500":
            return JSONResponse({"error": {"message": "voice unavailable"}}, status_code=503)
        if fault == "stall":
            await asyncio.sleep(STALL_S)
        if fault == "garbage":
            return Response(b"RIFFnope", media_type="audio/wav")
        pcm = await asyncio.get_running_loop().run_in_executor(None, self.tts.prompt_8k, body["input"])
        samples = soxr.resample(pcm.samples, pcm.rate, 24_000).astype("<i2")
        if body.get("response_format") == "wav":
            out = io.BytesIO()
            with wave.open(out, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(24_000)
                w.writeframes(samples.tobytes())
            return Response(out.getvalue(), media_type="audio/wav")
        return Response(samples.tobytes(), media_type="audio/pcm")

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(("llm", {**body, "auth": request.headers.get("authorization", "")}))
        fault = self.fault("llm")
        if fault == "500":
            return JSONResponse({"error": {"message": "model overloaded"}}, status_code=500)
        if fault == "garbage":
            return Response("data: {not json\n\n", media_type="text/event-stream")
        assert body.get("stream") is True
        chunks = _answer(body["messages"], [t["function"]["name"] for t in body.get("tools", [])])
        stall_mid = fault == "stall"

        async def events() -> AsyncIterator[bytes]:
            for i, chunk in enumerate(chunks):
                if stall_mid and i == 2:
                    await asyncio.sleep(STALL_S)
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", self.speech, methods=["POST"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
        ])  # fmt: skip


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "rules",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip


def _text_chunks(text: str) -> list[dict[str, Any]]:
    words = text.split(" ")
    out = [_chunk({"role": "assistant", "content": ""})]
    out += [_chunk({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
    return [*out, _chunk({}, "stop")]


_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}  # fmt: skip


def _answer(messages: list[dict[str, Any]], tools: list[str]) -> list[dict[str, Any]]:
    last = messages[-1]
    if last["role"] == "tool":
        result = json.loads(last["content"])
        if result.get("outcome") == "ok":
            data = result.get("data", {})
            return _text_chunks(f"Order {data.get('order_number')} {data.get('status_text', '')}. "
                                "Anything else?")  # fmt: skip
        return _text_chunks("I couldn't find that order. Could you say the number again?")
    text = str(last.get("content") or "").lower()
    digits = "".join(_DIGIT_WORDS.get(w, w if w.isdigit() else "") for w in re.findall(r"[a-z]+|\d", text))
    if len(digits) >= 5 and "lookup_order" in tools:
        args = json.dumps({"order_number": digits[-5:]})
        call = [_chunk({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "lookup_order", "arguments": ""}}]})]  # fmt: skip
        for i in range(0, len(args), 7):
            call.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 7]}}]}))
        return [*call, _chunk({}, "tool_calls")]
    if "order" in text:
        return _text_chunks("Sure. What is your five digit order number?")
    return _text_chunks("I can check an order for you. How can I help?")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(fake: FakeOpenAi) -> AsyncIterator[str]:
    """Run the fake on 127.0.0.1; yields its base URL (".../v1")."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task
