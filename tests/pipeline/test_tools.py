"""The flow's tools against the sample order store, and the background runner."""

from __future__ import annotations

import asyncio
import json

from callagent.agents.flow import ToolRequest, ToolStatus
from callagent.agents.orders import OrderStore
from callagent.engines.base import EngineEvent, ToolCallFinished, ToolCallStarted
from callagent.engines.pipeline.tools import ToolOutcome, ToolRunner, call_order_tool


def test_lookup_order_finds_a_known_order_and_reports_an_unknown_one() -> None:
    store = OrderStore.sample()
    found = call_order_tool(store, "lookup_order", {"order_number": "45729"})
    assert found.status is ToolStatus.OK and found.data["order_number"] == "45729"
    assert call_order_tool(store, "lookup_order", {"order_number": "00000"}).status is ToolStatus.NOT_FOUND


def test_change_address_refusal_is_an_error_with_a_reason() -> None:
    store = OrderStore.sample()
    delivered = next(o for o in store if o.status.value == "delivered")
    out = call_order_tool(store, "change_address",
                          {"order_number": delivered.order_number, "new_address": "1 Elm Street"})  # fmt: skip
    assert out.status is ToolStatus.ERROR and "delivered" in str(out.data["reason"])


def test_unknown_tool_is_an_error() -> None:
    out = call_order_tool(OrderStore.sample(), "launch_rocket", {})
    assert out.status is ToolStatus.ERROR and "launch_rocket" in out.error


async def test_runner_emits_started_then_finished_and_reports_the_outcome() -> None:
    events: list[EngineEvent] = []
    outcomes: list[tuple[str, ToolOutcome]] = []
    runner = ToolRunner(OrderStore.sample(), events.append, lambda i, o: outcomes.append((i, o)))
    runner.run(ToolRequest("lookup-1", "lookup_order", {"order_number": "45729"}))
    assert events == []  # run() returns at once; the tool runs as a task
    for _ in range(5):
        await asyncio.sleep(0)
    started, finished = events
    assert isinstance(started, ToolCallStarted) and json.loads(started.arguments) == {"order_number": "45729"}
    assert isinstance(finished, ToolCallFinished) and finished.status == "ok"
    assert outcomes[0][0] == "lookup-1" and outcomes[0][1].status is ToolStatus.OK
    await runner.close()


async def test_the_profiles_declared_tools_check_arguments_against_their_schema() -> None:
    # The engines build their runner from the profile: lookup_order's order_number
    # must match ^[0-9]{5}$, so a bad argument is refused before the tool runs.
    from pathlib import Path

    from callagent.agents.profile import load_profiles

    profile = load_profiles(Path(__file__).resolve().parents[2] / "config" / "agents")["customer_service"]
    events: list[EngineEvent] = []
    outcomes: list[tuple[str, ToolOutcome]] = []
    runner = ToolRunner(OrderStore.sample(), events.append, lambda i, o: outcomes.append((i, o)),
                        tools=profile.tools)  # fmt: skip
    runner.run(ToolRequest("bad-1", "lookup_order", {"order_number": "4572"}))
    runner.run(ToolRequest("good-1", "lookup_order", {"order_number": "45729"}))
    for _ in range(50):
        if len(outcomes) == 2:
            break
        await asyncio.sleep(0.01)
    await runner.close()
    by_id = dict(outcomes)
    assert by_id["bad-1"].status is ToolStatus.ERROR and "order_number" in by_id["bad-1"].error
    assert by_id["good-1"].status is ToolStatus.OK and by_id["good-1"].data["order_number"] == "45729"
