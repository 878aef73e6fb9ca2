"""Runs a flow's `ToolRequest`s against the order store, in the background.

`ToolRunner.run(request)` returns at once; the tool runs as an asyncio task
and `emit` receives `ToolCallStarted`, then `ToolCallFinished`, and `done`
gets the flow's outcome (status, data). The order store is in memory and not
thread-safe, so tools run on the event loop (they take microseconds); a
slower back end would go to an executor here, behind the same interface.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from callagent.agents.flow import ToolRequest, ToolStatus
from callagent.agents.orders import AddressChangeRefused, OrderStore
from callagent.engines.base import EngineEvent, ToolCallFinished, ToolCallStarted

__all__ = ["ToolOutcome", "ToolRunner", "call_order_tool"]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    status: ToolStatus
    data: Mapping[str, object]
    error: str = ""


def call_order_tool(store: OrderStore, name: str, args: Mapping[str, object]) -> ToolOutcome:
    """One tool call against the store: pure apart from the store's own update."""
    if name == "lookup_order":
        order = store.get(str(args.get("order_number", "")))
        if order is None:
            return ToolOutcome(ToolStatus.NOT_FOUND, {})
        return ToolOutcome(ToolStatus.OK, order.fields())
    if name == "find_orders_by_phone":
        orders = store.by_phone(str(args.get("phone", "")))
        if not orders:
            return ToolOutcome(ToolStatus.NOT_FOUND, {})
        return ToolOutcome(ToolStatus.OK, orders[0].fields())
    if name == "change_address":
        number = str(args.get("order_number", ""))
        try:
            order = store.change_address(number, str(args.get("new_address", "")))
        except KeyError:
            return ToolOutcome(ToolStatus.NOT_FOUND, {"reason": "there is no such order"})
        except AddressChangeRefused as exc:
            return ToolOutcome(ToolStatus.ERROR, {"reason": exc.reason}, exc.reason)
        return ToolOutcome(ToolStatus.OK, order.fields())
    return ToolOutcome(ToolStatus.ERROR, {}, f"unknown tool {name!r}")


class ToolRunner:
    def __init__(
        self,
        store: OrderStore,
        emit: Callable[[EngineEvent], None],
        done: Callable[[str, ToolOutcome], None],
    ) -> None:
        self._store = store
        self._emit = emit
        self._done = done
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, request: ToolRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._run(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, request: ToolRequest) -> None:
        args = dict(request.args)
        self._emit(ToolCallStarted(request.id, request.name, json.dumps(args)))
        t0 = time.perf_counter()
        await asyncio.sleep(0)  # let the caller's turn bookkeeping finish first
        try:
            outcome = call_order_tool(self._store, request.name, args)
        except Exception as exc:  # a broken tool must not end the call
            outcome = ToolOutcome(ToolStatus.ERROR, {}, f"{type(exc).__name__}: {exc}")
        elapsed = 1000.0 * (time.perf_counter() - t0)
        status = "ok" if outcome.status is not ToolStatus.ERROR else "error"
        self._emit(
            ToolCallFinished(
                request.id, request.name, status, json.dumps(dict(outcome.data)), elapsed,
                outcome.error,
            )
        )
        self._done(request.id, outcome)
