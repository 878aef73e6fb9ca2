"""The tool runtime: declared tools, schema-checked arguments, HTTP tools, built-ins
acting on the live call (through the call guard and a local Twilio REST server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from callagent.agents.flow import ToolRequest, ToolStatus
from callagent.agents.orders import OrderStore
from callagent.agents.profile import ToolSpec
from callagent.engines.base import EngineEvent, ToolCallFinished
from callagent.engines.pipeline.tools import ToolOutcome, ToolRunner
from callagent.tools.builtins import builtin_handlers
from callagent.tools.http import HttpToolConfig
from callagent.tools.outcome import ToolFailure, ToolResult, ToolState
from callagent.tools.runtime import ToolRuntime
from tests.call.guard_env import answered_call, guard_env
from tests.tools.http_server import Reply, ToolEndpoint, json_reply

OBJ: dict[str, object] = {"type": "object", "properties": {}, "required": []}
ORDER = {"type": "object", "required": ["order_number"],
         "properties": {"order_number": {"type": "string", "pattern": "^[0-9]{5}$"}}}
TRANSFER = {"type": "object", "required": ["target"],
            "properties": {"target": {"type": "string"}, "warm": {"type": "boolean"},
                           "announce": {"type": "string"}}}
DIGITS = {"type": "object", "properties": {"max_len": {"type": "integer", "minimum": 1},
                                           "terminator": {"type": "string"},
                                           "secure": {"type": "boolean"}}}


@pytest.fixture
def endpoint() -> Iterator[ToolEndpoint]:
    server = ToolEndpoint()
    yield server
    server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def specs(endpoint: ToolEndpoint | None = None) -> list[ToolSpec]:
    out = [ToolSpec("lookup_order", "", ORDER), ToolSpec("end_call", "", OBJ),
           ToolSpec("transfer_to_human", "", TRANSFER), ToolSpec("collect_digits", "", DIGITS),
           ToolSpec("record_opt_out", "", OBJ), ToolSpec("stop_recording", "", OBJ),
           ToolSpec("not_built_in", "", OBJ)]
    if endpoint is not None:
        out.append(ToolSpec("order_api", "", ORDER, HttpToolConfig(
            endpoint.url("/orders"), retries=1, backoff_s=0.0, timeout_s=0.3)))
    return out


async def test_unknown_tools_and_bad_arguments_are_errors_before_any_call(
    endpoint: ToolEndpoint, http: httpx.AsyncClient
) -> None:
    rt = ToolRuntime(specs(endpoint), builtin_handlers(OrderStore.sample(), None), http, {})
    unknown = await rt.invoke("launch_rocket", "{}")
    assert unknown.state is ToolState.ERROR and "unknown tool 'launch_rocket'" in unknown.error
    bad = await rt.invoke("order_api", '{"order_number": "12"}')
    assert bad.state is ToolState.ERROR and "order_number: '12' does not match" in bad.error
    garbage = await rt.invoke("lookup_order", "{oops")
    assert "arguments are not JSON" in garbage.error
    missing = await rt.invoke("not_built_in", "{}")
    assert "has no [tools.http] and is not a built-in" in missing.error
    no_controls = await rt.invoke("end_call", "{}")  # no live call behind this runtime
    assert no_controls.state is ToolState.ERROR
    assert endpoint.seen == []


async def test_order_builtins_and_an_http_tool(endpoint: ToolEndpoint, http: httpx.AsyncClient) -> None:
    endpoint.add("/orders", Reply(500, b""), json_reply({"status": "shipped"}))
    rt = ToolRuntime(specs(endpoint), builtin_handlers(OrderStore.sample(), None), http, {})
    found = await rt.invoke("lookup_order", {"order_number": "45729"})
    assert found.state is ToolState.OK and found.data["order_number"] == "45729"
    assert (await rt.invoke("lookup_order", {"order_number": "00000"})).state is ToolState.NOT_FOUND
    remote = await rt.invoke("order_api", {"order_number": "45729"})
    assert remote.state is ToolState.OK and remote.attempts == 2 and remote.duration_ms > 0


async def test_a_builtin_that_breaks_gives_an_error_to_speak_around() -> None:
    async def broken(args: Mapping[str, object]) -> ToolResult:
        raise KeyError("boom")

    async def refuses(args: Mapping[str, object]) -> ToolResult:
        raise ToolFailure("the order system is closed")

    rt = ToolRuntime([ToolSpec("broken", "", OBJ), ToolSpec("refuses", "", OBJ)],
                     {"broken": broken, "refuses": refuses})
    assert (await rt.invoke("broken", "{}")).error == "the tool failed (KeyError)"
    assert (await rt.invoke("refuses", "{}")).error == "the order system is closed"


async def test_a_slow_tool_only_delays_its_own_task(endpoint: ToolEndpoint, http: httpx.AsyncClient) -> None:
    """The runner returns at once; the flow gets an error outcome after the timeout."""
    endpoint.add("/orders", Reply(hold=True), Reply(hold=True))
    rt = ToolRuntime(specs(endpoint), {}, http, {})
    events: list[EngineEvent] = []
    done: asyncio.Queue[tuple[str, ToolOutcome]] = asyncio.Queue()
    runner = ToolRunner(OrderStore.sample(), events.append, lambda i, o: done.put_nowait((i, o)),
                        runtime=rt)
    runner.run(ToolRequest("t1", "order_api", {"order_number": "45729"}))
    assert events == [] and done.empty()  # nothing ran on the caller's path
    request_id, outcome = await done.get()
    assert request_id == "t1" and outcome.status is ToolStatus.ERROR
    assert "did not answer within 0.3 s after 2 attempts" in outcome.error
    finished = events[-1]
    assert isinstance(finished, ToolCallFinished) and finished.status == "error"
    await runner.close()


async def test_call_control_builtins_act_on_the_live_call(sqlite_db_url: str, tmp_path: Path) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        sid = await answered_call(env)
        guard = env.guard(call_sid=sid, from_number="+14155550100")
        await guard.load()
        rt = ToolRuntime(specs(), builtin_handlers(None, guard))
        no_target = await rt.invoke("transfer_to_human", "{}")
        assert "'target' is a required property" in no_target.error
        moved = await rt.invoke("transfer_to_human", {"target": "queue:customer-service"})
        assert moved.state is ToolState.OK
        assert env.fake.by_sid[sid].updates[-1]["Twiml"][0].endswith(
            "<Response><Enqueue>customer-service</Enqueue></Response>")
        bad = await rt.invoke("transfer_to_human", {"target": "the boss"})
        assert bad.state is ToolState.ERROR and "expected +E.164" in bad.error
        stopped = await rt.invoke("stop_recording", "{}")
        assert stopped.data == {"recording": "stopped"}
        opted = await rt.invoke("record_opt_out", "{}")
        assert opted.data == {"opted_out": True, "number": "+14155550100"}
        ended = await rt.invoke("end_call", "{}")
        assert ended.state is ToolState.OK and env.fake.by_sid[sid].status == "completed"
        again = await rt.invoke("end_call", "{}")  # the call already ended: not an error
        assert again.state is ToolState.OK
        audit = await env.audit(guard.call.call_id)
    assert ("consent.refused", {"policy": "all-party", "how": "asked the agent"}) in audit


async def test_collect_digits_securely_returns_the_masked_form(sqlite_db_url: str, tmp_path: Path) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        guard = env.guard()
        await guard.load()
        rt = ToolRuntime(specs(), builtin_handlers(None, guard))
        task = asyncio.create_task(rt.invoke("collect_digits", {"secure": True, "terminator": "#"}))
        while not guard.secure:
            await asyncio.sleep(0)
        for d in "4111111111111111#":
            assert guard.dtmf(d)
        result = await task
        assert result.data == {"digits": "************1111", "secure": True}
        assert "4111111111111111" not in json.dumps(dict(result.data))
        plain = asyncio.create_task(rt.invoke("collect_digits", {"max_len": 5}))
        while guard._capture is None:
            await asyncio.sleep(0)
        for d in "45729":
            guard.dtmf(d)
        assert (await plain).data["digits"] == "45729"  # a plain collection, not card entry


async def test_a_runner_built_from_a_profiles_tools_validates_and_calls_http(
    endpoint: ToolEndpoint,
) -> None:
    endpoint.add("/orders", json_reply({"status": "shipped"}))
    done: asyncio.Queue[tuple[str, ToolOutcome]] = asyncio.Queue()
    runner = ToolRunner(OrderStore.sample(), lambda e: None, lambda i, o: done.put_nowait((i, o)),
                        tools=specs(endpoint))
    runner.run(ToolRequest("t1", "order_api", {"order_number": "45729"}))
    runner.run(ToolRequest("t2", "lookup_order", {"order_number": "4572"}))
    outcomes = dict([await done.get(), await done.get()])
    assert outcomes["t1"].status is ToolStatus.OK and outcomes["t1"].data == {"status": "shipped"}
    assert outcomes["t2"].status is ToolStatus.ERROR and "does not match" in outcomes["t2"].error
    await runner.close()
