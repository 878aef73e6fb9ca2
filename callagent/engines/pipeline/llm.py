"""The LLM brain: one conversation over a streaming Chat Completions provider.

`LlmBrain.reply(text, say, call_tool)` adds the caller's words, streams the
model's answer and hands each finished sentence to `say` as soon as it is
complete (so synthesis starts before the model is done). Tool calls the
model makes go to `call_tool(id, name, arguments) -> result JSON`, and their
results go back to the model, for at most `max_rounds` rounds.

Failures never end the call: a provider error or stall before anything was
said is retried once; after that (or once words were already spoken) the
brain says `apology`, drops the unanswered exchange from its history and
returns. `heard(text)` trims the last answer to what the caller heard when
they interrupted it, so the model's context matches the call.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from callagent.agents.profile import AgentProfile
from callagent.engines.providers.errors import ProviderError
from callagent.engines.providers.openai_chat import OpenAiChat, TextDelta, ToolCall

__all__ = ["APOLOGY", "LlmBrain", "tool_schemas"]

log = logging.getLogger(__name__)

APOLOGY = "Sorry, I'm having trouble right now. Could you say that again?"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

Say = Callable[[str], None]
CallTool = Callable[[str, str, str], Awaitable[str]]


def tool_schemas(profile: AgentProfile) -> list[dict[str, Any]]:
    """The profile's declared tools in the Chat Completions `tools` format."""
    return [
        {"type": "function",
         "function": {"name": t.name, "description": t.description,
                      "parameters": dict(t.parameters)}}
        for t in profile.tools
    ]  # fmt: skip


class LlmBrain:
    def __init__(
        self,
        chat: OpenAiChat,
        profile: AgentProfile,
        *,
        fields: Mapping[str, str] | None = None,
        max_rounds: int = 4,
        apology: str = APOLOGY,
    ) -> None:
        system = profile.prompt
        known = {k: v for k, v in (fields or {}).items() if v}
        if known:
            system += "\n\nWhat we know about this call: " + json.dumps(known)
        self._chat = chat
        self._tools = tool_schemas(profile)
        self._messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        self._max_rounds = max_rounds
        self.apology = apology

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self._messages)

    def opening(self, text: str) -> None:
        """Record what the agent said before the caller spoke (the greeting)."""
        if text.strip():
            self._messages.append({"role": "assistant", "content": text})

    def heard(self, text: str) -> None:
        """The caller interrupted the last answer: keep only what they heard."""
        for message in reversed(self._messages):
            if message["role"] == "assistant" and message.get("content"):
                message["content"] = text
                return

    async def reply(self, text: str, say: Say, call_tool: CallTool) -> None:
        if not text.strip():
            raise ValueError("the caller's text is empty: nothing to reply to")
        mark = len(self._messages)
        self._messages.append({"role": "user", "content": text})
        spoken: list[str] = []

        def speak(sentence: str) -> None:
            spoken.append(sentence)
            say(sentence)

        for attempt in (1, 2):
            try:
                await self._rounds(speak, call_tool)
                return
            except ProviderError as exc:
                log.warning("llm attempt %d failed: %s", attempt, exc)
                del self._messages[mark + 1 :]
                if spoken:
                    break  # words are out: a silent retry would repeat them
        del self._messages[mark:]
        say(self.apology)

    async def _rounds(self, speak: Say, call_tool: CallTool) -> None:
        for _ in range(self._max_rounds):
            buffer, text, calls = "", "", []
            async for event in self._chat.stream(self._messages, self._tools):
                if isinstance(event, TextDelta):
                    buffer += event.text
                    text += event.text
                    *done, buffer = _SENTENCE_END.split(buffer)
                    for sentence in done:
                        if sentence.strip():
                            speak(sentence.strip())
                elif isinstance(event, ToolCall):
                    calls.append(event)
            if buffer.strip():
                speak(buffer.strip())
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments}}
                    for c in calls
                ]  # fmt: skip
            self._messages.append(message)
            if not calls:
                return
            for c in calls:
                result = await self._call(c, call_tool)
                self._messages.append({"role": "tool", "tool_call_id": c.id, "content": result})
        raise ProviderError("llm", f"no answer after {self._max_rounds} rounds of tool calls")

    async def _call(self, call: ToolCall, call_tool: CallTool) -> str:
        try:
            json.loads(call.arguments)
        except ValueError:
            return json.dumps({"error": "arguments are not valid JSON"})
        return await call_tool(call.id, call.name, call.arguments)
