"""The background reasoner: tools as tasks beside the audio loop."""

from __future__ import annotations

import asyncio
import json

from callagent.agents.orders import OrderStore
from callagent.engines.base import EngineEvent, ToolCallFinished, ToolCallStarted
from callagent.engines.duplex.reasoner import BackgroundReasoner, order_tools


async def test_order_tools_answer_in_the_function_output_convention() -> None:
    tools = order_tools(OrderStore.sample())
    found = json.loads(await tools("lookup_order", '{"order_number": "45729"}'))
    assert found["order_number"] == "45729"
    assert await tools("lookup_order", '{"order_number": "00000"}') == "{}"
    assert "error" in json.loads(await tools("no_such_tool", "{}"))
    assert "error" in json.loads(await tools("lookup_order", "not json"))


async def test_a_slow_tool_gets_a_holding_phrase_and_a_new_question_cancels_it() -> None:
    events: list[EngineEvent] = []
    done: list[tuple[str, str]] = []
    holding: list[str] = []
    release = asyncio.Event()

    async def slow(name: str, arguments: str) -> str:  # a tool waiting on its back end
        await release.wait()
        return '{"ok": "yes"}'

    reasoner = BackgroundReasoner(slow, events.append, lambda c, o: done.append((c, o)),
                                  holding_after_ms=0, on_holding=lambda: holding.append("x"))  # fmt: skip
    reasoner.run("c1", "lookup_order", "{}")
    while not holding:
        await asyncio.sleep(0)
    assert reasoner.running == 1 and isinstance(events[0], ToolCallStarted)
    reasoner.cancel_all()  # the caller asked something new
    while reasoner.running:
        await asyncio.sleep(0)
    [finished] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert finished.status == "cancelled" and done == []
    # a call that finishes reports its output and no holding phrase is owed
    release.set()
    holding.clear()
    quick = BackgroundReasoner(slow, events.append, lambda c, o: done.append((c, o)),
                               holding_after_ms=10_000, on_holding=lambda: holding.append("x"))  # fmt: skip
    quick.run("c2", "lookup_order", "{}")
    while not done:
        await asyncio.sleep(0)
    assert done == [("c2", '{"ok": "yes"}')] and holding == []
    await quick.close()
    await reasoner.close()
