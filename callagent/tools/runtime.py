"""The tool runtime: declared tools, arguments validated, invoked, timed.

``ToolRuntime.invoke(name, arguments)`` never raises for a tool's failure: an
unknown tool, arguments that break the schema, an HTTP endpoint that times
out or answers garbage, or a built-in that fails all come back as an error
``ToolResult`` whose ``error`` the agent can speak around. Callers run it as
a task, off the audio path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import httpx

from callagent.agents.profile import ToolSpec
from callagent.tools.arguments import BadArguments, check_arguments
from callagent.tools.builtins import Handler
from callagent.tools.http import call_http_tool
from callagent.tools.outcome import ToolFailure, ToolResult, ToolState

__all__ = ["ToolRuntime"]


class ToolRuntime:
    def __init__(
        self,
        specs: Sequence[ToolSpec],
        handlers: Mapping[str, Handler],
        http: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._handlers = dict(handlers)
        self._http = http
        self._environ = os.environ if environ is None else environ

    def declared(self, name: str) -> bool:
        return name in self._specs

    async def invoke(self, name: str, arguments: str | Mapping[str, object]) -> ToolResult:
        t0 = time.perf_counter()
        result = await self._invoke(name, arguments)
        return replace(result, duration_ms=1000.0 * (time.perf_counter() - t0))

    async def _invoke(self, name: str, arguments: str | Mapping[str, object]) -> ToolResult:
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(self._specs) or "(none)"
            return ToolResult(ToolState.ERROR, error=f"unknown tool {name!r}; declared: {known}",
                              attempts=0)
        try:
            args = check_arguments(spec.parameters, arguments)
        except BadArguments as exc:
            return ToolResult(ToolState.ERROR, error=str(exc), attempts=0)
        if spec.http is not None:
            if self._http is None:
                return ToolResult(ToolState.ERROR, error="HTTP tools are not available here",
                                  attempts=0)
            return await call_http_tool(self._http, spec.http, args, self._environ)
        handler = self._handlers.get(name)
        if handler is None:
            return ToolResult(ToolState.ERROR, attempts=0,
                              error=f"tool {name!r} has no [tools.http] and is not a built-in")
        try:
            return await handler(args)
        except ToolFailure as exc:
            return ToolResult(ToolState.ERROR, error=str(exc))
        except Exception as exc:  # a broken tool must not end the call
            return ToolResult(ToolState.ERROR, error=f"the tool failed ({type(exc).__name__})")
