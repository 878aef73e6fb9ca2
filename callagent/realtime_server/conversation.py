"""The conversation as text: what /v1/realtime asks of its engine beyond `Engine`.

OpenAI Realtime clients also converse in text: `conversation.item.create`
messages (a transcript re-seeded after a reconnect), manual turns
(`turn_detection: null`: the server transcribes committed audio) and
`response.create` (answer now). Our engines run a scripted flow, so this is
what the flow can honestly do with them (`FlowTurns`, pure):

- a user message advances the flow as if the caller had said it. The reply it
  draws is owed, not spoken: `response.create` speaks it; a later message drops
  it (the history went on without it).
- an assistant message is speech already given: it drops the owed reply. The
  first user or assistant message also drops the engine's opening if none of
  it was heard yet: a re-seeded session does not greet again.
- a system message of our backend's tool-result form (`tool_result_text`) is
  the result of the tool the flow waits for; the flow's reply to it is owed.
  Other system text (notes, instructions) cannot steer a scripted flow.
- a tool the flow calls on a user message is not run then (a re-seeded
  history's tool already ran, and its result comes as such a system message);
  `response.create` runs it if no result came.
- out of band (`preview`): what the flow would say to some user texts, on a
  copy of the flow (the call's state is untouched), up to its first tool call
  (tools are not run out of band).

Limits: the flow hears messages in the order they arrive (`previous_item_id`
places an item in the item list, not in the flow's past), and deleting or
truncating an item does not rewind it.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from callagent.agents.flow import Action, Flow, FlowState, ListenFor, Say, ToolRequest, ToolStatus
from callagent.audio.pcm import Pcm
from callagent.engines.providers.openai_realtime_wire import parse_tool_result_text

__all__ = ["FlowTurns", "TextConversation", "TextReply", "ToolResult", "client_result"]


@dataclass(frozen=True, slots=True)
class TextReply:
    """What `respond()` set going: the session keeps the response open for it."""

    speech: bool  # the engine will speak (engine events follow)
    tool: bool  # the flow called a tool; its reply follows the result


@dataclass(frozen=True, slots=True)
class ToolResult:
    status: ToolStatus
    data: dict[str, str]
    error: str = ""


def client_result(output: str) -> ToolResult:
    """A client's tool output (a `function_call_output`, or the output in a tool-result message).

    A JSON object is the result's fields (ok); `{}`, `null` or `""` means
    nothing was found; an object whose only key is `"error"` is a failure.
    Any other JSON value, or plain text, is ok with the value as `result`.
    """
    try:
        value = json.loads(output) if output.strip() else None
    except ValueError:
        value = output
    if value is None or value == {}:
        return ToolResult(ToolStatus.NOT_FOUND, {})
    if isinstance(value, dict) and set(value) == {"error"}:
        return ToolResult(ToolStatus.ERROR, {}, str(value["error"]))
    data = value if isinstance(value, dict) else {"result": value}
    return ToolResult(ToolStatus.OK, {str(k): v if isinstance(v, str) else json.dumps(v)
                                      for k, v in data.items()})  # fmt: skip


@runtime_checkable
class TextConversation(Protocol):
    """An engine that takes the conversation as text too. Methods never block."""

    @property
    def text_turns(self) -> bool:
        """False: this engine's brain cannot take text turns (not a scripted flow)."""
        ...

    def add_user_text(self, text: str) -> None: ...

    def add_assistant_text(self, text: str) -> None: ...

    def add_system_text(self, text: str) -> bool:
        """True if the flow took it (a tool result): a reply is owed."""
        ...

    def respond(self) -> TextReply: ...

    def live_turn(self) -> None:
        """The engine answered the caller's speech itself: owed replies are stale."""
        ...

    def preview(self, texts: Sequence[str]) -> str: ...

    def transcribe(self, audio: Pcm) -> asyncio.Future[str]: ...

    def synthesize(self, text: str) -> asyncio.Future[Pcm]: ...


class FlowTurns:
    """Text turns on a scripted flow: the owed reply and the owed tool call (see module doc)."""

    def __init__(self) -> None:
        self._owed: list[Action] = []
        self._tool: ToolRequest | None = None
        self.seeded = False  # a user or assistant message came: the opening is history

    def user_text(self, flow: Flow, text: str, act: Callable[[Sequence[Action]], None]) -> None:
        self.seeded = True
        self._take(flow, flow.on_user_text(text, True), act)

    def assistant_text(self) -> None:
        self.seeded = True
        self._owed = []

    def system_text(self, flow: Flow, text: str, act: Callable[[Sequence[Action]], None]) -> bool:
        parsed = parse_tool_result_text(text)
        tool = self._tool
        if parsed is None or tool is None or parsed[0] != tool.name:
            return False
        if flow.state is not FlowState.WAITING_TOOL:
            self._tool = None
            return False
        self._tool = None
        result = client_result(parsed[2])
        self._take(flow, flow.tool_result(tool.id, result.status, result.data), act)
        return True

    def respond(self, act: Callable[[Sequence[Action]], None], flow: Flow) -> TextReply:
        actions = self._owed
        tool = self._tool if flow.state is FlowState.WAITING_TOOL else None
        self._owed, self._tool = [], None
        if tool is not None:
            actions = [*actions, tool]
        act(actions)
        return TextReply(speech=any(isinstance(a, Say) for a in actions), tool=tool is not None)

    def live_turn(self) -> None:
        self._owed = []

    @staticmethod
    def preview(flow: Flow, texts: Sequence[str]) -> str:
        probe = copy.deepcopy(flow)
        said: list[str] = []
        for text in texts:
            said = []
            for action in probe.on_user_text(text, True):
                if isinstance(action, ToolRequest):
                    break
                if isinstance(action, Say):
                    said.append(action.text)
        return " ".join(said)

    def _take(self, flow: Flow, actions: Sequence[Action],
              act: Callable[[Sequence[Action]], None]) -> None:  # fmt: skip
        # What to listen for applies now (the live recogniser's grammar); the
        # rest waits for response.create, and replaces any reply still owed.
        act([a for a in actions if isinstance(a, ListenFor)])
        self._owed = [a for a in actions if not isinstance(a, ListenFor | ToolRequest)]
        tools = [a for a in actions if isinstance(a, ToolRequest)]
        if tools:
            self._tool = tools[-1]
