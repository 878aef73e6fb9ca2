"""The background reasoner: a duplex backend's function calls, run beside the audio loop.

Each call is an asyncio task; the loop that moves audio never waits for it.
It emits `ToolCallStarted` at once and `ToolCallFinished` (with its duration)
when done or cancelled. If a call is still running `holding_after_ms` after it
began, `on_holding` fires once (the backend says a holding phrase). A new
caller question makes running calls stale: `cancel_all()` cancels them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping

from callagent.agents.flow import ToolStatus
from callagent.agents.orders import OrderStore
from callagent.engines.base import EngineEvent, ToolCallFinished, ToolCallStarted
from callagent.engines.pipeline.tools import call_order_tool

__all__ = ["BackgroundReasoner", "ToolFn", "order_tools"]

# (name, arguments JSON) -> output text for the provider (JSON).
ToolFn = Callable[[str, str], Awaitable[str]]


def order_tools(store: OrderStore) -> ToolFn:
    """The sample order store's tools, answering in the function_call_output convention:
    the result's fields (ok), `{}` (nothing found) or `{"error": ...}`."""

    async def run(name: str, arguments: str) -> str:
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            return json.dumps({"error": "the arguments are not valid JSON"})
        if not isinstance(args, Mapping):
            return json.dumps({"error": "the arguments must be a JSON object"})
        outcome = call_order_tool(store, name, args)
        if outcome.status is ToolStatus.NOT_FOUND:
            return "{}"
        if outcome.status is ToolStatus.ERROR:
            return json.dumps({"error": outcome.error or "the tool failed"})
        return json.dumps(dict(outcome.data))

    return run


class BackgroundReasoner:
    def __init__(
        self,
        tools: ToolFn,
        emit: Callable[[EngineEvent], None],
        done: Callable[[str, str], None],  # (call_id, output) when a call finishes
        *,
        holding_after_ms: int = 700,
        on_holding: Callable[[], None] = lambda: None,
    ) -> None:
        self._tools = tools
        self._emit = emit
        self._done = done
        self._holding_after_s = holding_after_ms / 1000.0
        self._on_holding = on_holding
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def running(self) -> int:
        return len(self._tasks)

    def run(self, call_id: str, name: str, arguments: str) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(call_id, name, arguments))
        self._tasks[call_id] = task

    def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    def cancel(self, call_ids: tuple[str, ...]) -> None:
        for call_id in call_ids:
            task = self._tasks.get(call_id)
            if task is not None:
                task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, call_id: str, name: str, arguments: str) -> None:
        self._emit(ToolCallStarted(call_id, name, arguments))
        t0 = time.perf_counter()
        holding = asyncio.get_running_loop().call_later(self._holding_after_s, self._on_holding)
        try:
            output = await self._tools(name, arguments)
        except asyncio.CancelledError:
            self._emit(ToolCallFinished(call_id, name, "cancelled", "{}",
                                        1000.0 * (time.perf_counter() - t0),
                                        "a newer caller question made it stale"))  # fmt: skip
            raise
        except Exception as exc:  # a broken tool must not end the call
            output = json.dumps({"error": f"the tool failed ({type(exc).__name__})"})
        finally:
            holding.cancel()
            self._tasks.pop(call_id, None)
        failed = output.startswith('{"error"')
        self._emit(ToolCallFinished(call_id, name, "error" if failed else "ok", output,
                                    1000.0 * (time.perf_counter() - t0),
                                    json.loads(output)["error"] if failed else ""))  # fmt: skip
        self._done(call_id, output)
