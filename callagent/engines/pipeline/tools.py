"""Runs a flow's `ToolRequest`s in the background.

`ToolRunner.run(request)` returns at once; the tool runs as an asyncio task
and `emit` receives `ToolCallStarted`, then `ToolCallFinished`, and `done`
gets the flow's outcome (status, data). Without a `runtime` the tools are the
sample order store's (in memory, microseconds, on the event loop). With a
`callagent.tools.runtime.ToolRuntime` (the profile's declared tools: schema
checked arguments, HTTP tools with timeouts and retries, built-ins) a slow
or failing tool only delays its own task: the flow gets an error outcome it
can speak around.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from callagent.agents.flow import ToolRequest, ToolStatus
from callagent.agents.orders import AddressChangeRefused, OrderStore
from callagent.agents.profile import ToolSpec
from callagent.engines.base import EngineEvent, ToolCallFinished, ToolCallStarted
from callagent.tools.builtins import builtin_handlers
from callagent.tools.outcome import ToolState
from callagent.tools.runtime import ToolRuntime

__all__ = ["RemoteTools", "ToolOutcome", "ToolRunner", "call_order_tool"]


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


class RemoteTools(Protocol):
    """Tools that run somewhere else (the realtime endpoint's client); ``handles`` picks them."""

    def handles(self, name: str) -> bool: ...

    async def call(self, request: ToolRequest) -> ToolOutcome: ...


_STATUS = {ToolState.OK: ToolStatus.OK, ToolState.NOT_FOUND: ToolStatus.NOT_FOUND,
           ToolState.ERROR: ToolStatus.ERROR}  # fmt: skip


class ToolRunner:
    def __init__(
        self,
        store: OrderStore,
        emit: Callable[[EngineEvent], None],
        done: Callable[[str, ToolOutcome], None],
        *,
        runtime: ToolRuntime | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        """``tools`` (a profile's declared tools) builds the runtime: arguments checked
        against their schemas, HTTP tools on a client this runner owns, the order
        built-ins on ``store``. ``runtime`` gives one ready-made instead."""
        self._store = store
        self._http: httpx.AsyncClient | None = None
        if runtime is None and tools:
            if any(t.http is not None for t in tools):
                self._http = httpx.AsyncClient()
            runtime = ToolRuntime(tools, builtin_handlers(store, None), self._http)
        self._runtime = runtime
        self._emit = emit
        self._done = done
        self._tasks: set[asyncio.Task[None]] = set()
        self._remote: RemoteTools | None = None

    def run_remotely(self, remote: RemoteTools) -> None:
        """From now on the tools ``remote`` handles run there, reported like local ones."""
        self._remote = remote

    def run(self, request: ToolRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._run(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run(self, request: ToolRequest) -> None:
        args = dict(request.args)
        self._emit(ToolCallStarted(request.id, request.name, json.dumps(args)))
        t0 = time.perf_counter()
        await asyncio.sleep(0)  # let the caller's turn bookkeeping finish first
        if self._remote is not None and self._remote.handles(request.name):
            outcome = await self._remote.call(request)
        elif self._runtime is not None:
            result = await self._runtime.invoke(request.name, args)
            outcome = ToolOutcome(_STATUS[result.state], result.data, result.error)
        else:
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
