"""Chat Completions with streaming and tool calls: `POST {base_url}/chat/completions`.

The request is `{model, messages, stream: true, tools?, temperature?,
max_tokens?}`; the answer is server-sent events, each `data:` a
`chat.completion.chunk` whose `choices[0].delta` carries `content` text and
`tool_calls` fragments (`index`, then `id` and `function.name` once,
`function.arguments` in pieces), then a chunk with `finish_reason`, then
`data: [DONE]`. Served by OpenAI, vLLM, llama.cpp server, Ollama (`/v1`), ...

`ChatStreamDecoder` is the sans-I/O core (SSE data in, `ChatEvent`s out);
`OpenAiChat.stream()` is the shell. A stream that stops sending for
`timeout_s` raises `ProviderStalled`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from callagent.engines.providers._http import Endpoint, map_errors, raise_for_status
from callagent.engines.providers.errors import BadResponse
from callagent.engines.providers.sse import SseParser

__all__ = ["ChatEvent", "ChatStreamDecoder", "Finished", "OpenAiChat", "TextDelta", "ToolCall"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str  # "stop", "tool_calls", "length", ...


ChatEvent = TextDelta | ToolCall | Finished


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStreamDecoder:
    """Decodes the `data` of each SSE event. Tool calls come out whole, in
    index order, just before `Finished`."""

    def __init__(self, stage: str = "llm") -> None:
        self._stage = stage
        self._calls: dict[int, _PartialCall] = {}
        self._reason = ""
        self.done = False

    def feed(self, data: str) -> list[ChatEvent]:
        if self.done:
            return []
        if data.strip() == "[DONE]":
            return self._finish()
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise BadResponse(self._stage, f"stream event is not JSON: {data[:120]!r}") from exc
        if not isinstance(chunk, dict):
            raise BadResponse(self._stage, f"stream event is not an object: {data[:120]!r}")
        if "error" in chunk:
            raise BadResponse(self._stage, f"error in stream: {str(chunk['error'])[:200]}")
        out: list[ChatEvent] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(TextDelta(content))
            for frag in delta.get("tool_calls") or []:
                self._add_fragment(frag)
            if choice.get("finish_reason"):
                self._reason = str(choice["finish_reason"])
        return out

    def close(self) -> list[ChatEvent]:
        """The stream ended (with or without `[DONE]`)."""
        return [] if self.done else self._finish()

    def _add_fragment(self, frag: Any) -> None:
        if not isinstance(frag, dict) or not isinstance(frag.get("index", 0), int):
            raise BadResponse(self._stage, f"bad tool_calls fragment: {str(frag)[:120]}")
        call = self._calls.setdefault(frag.get("index", 0), _PartialCall())
        if frag.get("id"):
            call.id = str(frag["id"])
        fn = frag.get("function") or {}
        if fn.get("name"):
            call.name += str(fn["name"])
        if fn.get("arguments"):
            call.arguments.append(str(fn["arguments"]))

    def _finish(self) -> list[ChatEvent]:
        self.done = True
        out: list[ChatEvent] = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.name:
                raise BadResponse(self._stage, f"tool call {index} has no function name")
            out.append(ToolCall(call.id or f"call_{index}", call.name, "".join(call.arguments) or "{}"))
        reason = self._reason or ("tool_calls" if self._calls else "stop")
        out.append(Finished(reason))
        return out


class OpenAiChat:
    def __init__(self, http: httpx.AsyncClient, endpoint: Endpoint, *,
                 temperature: float | None = None, max_tokens: int | None = None) -> None:  # fmt: skip
        self._http = http
        self._endpoint = endpoint
        self._temperature = temperature
        self._max_tokens = max_tokens

    def request_body(self, messages: Sequence[Mapping[str, Any]],
                     tools: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:  # fmt: skip
        body: dict[str, Any] = {"model": self._endpoint.model, "messages": list(messages),
                                "stream": True}  # fmt: skip
        if tools:
            body["tools"] = list(tools)
        if self._temperature is not None:
            body["temperature"] = self._temperature
        if self._max_tokens is not None:
            body["max_tokens"] = self._max_tokens
        return body

    async def stream(self, messages: Sequence[Mapping[str, Any]],
                     tools: Sequence[Mapping[str, Any]] = ()) -> AsyncIterator[ChatEvent]:  # fmt: skip
        ep = self._endpoint
        decoder, sse = ChatStreamDecoder(ep.stage), SseParser()
        with map_errors(ep.stage):
            async with self._http.stream(
                "POST", ep.url("chat/completions"), json=self.request_body(messages, tools),
                headers={**ep.headers(), "Accept": "text/event-stream"}, timeout=ep.timeout_s,
            ) as response:
                if response.status_code >= 400:
                    raise_for_status(ep.stage, response, await response.aread())
                async for chunk in response.aiter_bytes():
                    for data in sse.feed(chunk):
                        for event in decoder.feed(data):
                            yield event
                        if decoder.done:
                            return
                for data in sse.close():
                    for event in decoder.feed(data):
                        yield event
        for event in decoder.close():
            yield event
