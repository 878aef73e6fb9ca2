"""Re-seeding a new OpenAI Realtime session: the events the backend sends after a reconnect,
checked against our own parser of client events (the GA shapes), no sockets; then once end to
end, the backend against our own /v1/realtime (through the test relay), where the new session's
flow continues from the re-seeded transcript."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from callagent.config import ConfigError, ProvidersSettings, load_settings
from callagent.engines.providers.openai_realtime_wire import (
    RESEED_NOTE,
    HistoryTurn,
    ItemCreate,
    MessageItem,
    encode_message,
    parse_client_event,
    reseed_events,
    tool_result_text,
)
from callagent.engines.base import AgentTurnDone, ToolCallStarted, UserTranscript
from tests.duplex.realtime_proxy import RealtimeProxy
from tests.duplex.test_openai_realtime_reconnect import Caller, backend, metric, say, until
from tests.e2e.conftest import LiveService
from tests.realtime.conftest import clip, silence

HISTORY = [
    HistoryTurn("assistant", "Hi, you've reached Acme Supplies. How can I help?"),
    HistoryTurn("user", "I'd like the status of my order."),
    HistoryTurn("assistant", "Sure, what's the order number?"),
    HistoryTurn("user", "4 5 7 2 9"),
    HistoryTurn("system", tool_result_text("lookup_order", '{"order_number": "45729"}',
                                           '{"status": "shipped"}')),  # fmt: skip
    HistoryTurn("assistant", ""),  # a turn cut before any transcript: nothing to re-send
]


def messages(events: list[str]) -> list[MessageItem]:
    items = []
    for text in events:
        event = parse_client_event(text)
        assert isinstance(event, ItemCreate), event
        assert isinstance(event.item, MessageItem)
        items.append(event.item)
    return items


def test_reseed_is_a_note_then_the_last_turns_in_order() -> None:
    items = messages(reseed_events(HISTORY, last=3))
    assert [(m.role, m.text) for m in items] == [
        ("system", RESEED_NOTE),
        ("assistant", "Sure, what's the order number?"),
        ("user", "4 5 7 2 9"),
        ("system", 'Result of the function call lookup_order({"order_number": "45729"}): '
                   '{"status": "shipped"}'),
    ]  # fmt: skip


def test_reseed_uses_the_ga_content_types() -> None:
    events = [json.loads(e) for e in reseed_events(HISTORY, last=10)]
    assert all(e["type"] == "conversation.item.create" for e in events)
    parts = {(e["item"]["role"], e["item"]["content"][0]["type"]) for e in events}
    assert parts == {("system", "input_text"), ("user", "input_text"),
                     ("assistant", "output_text")}  # fmt: skip
    assert all(e["item"]["type"] == "message" and "id" not in e["item"] for e in events)


def test_reseed_without_turns_is_only_the_note() -> None:
    assert [m.text for m in messages(reseed_events(HISTORY, last=0))] == [RESEED_NOTE]
    assert [m.text for m in messages(reseed_events([], last=20, note="n"))] == ["n"]


def test_a_message_role_outside_the_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        encode_message("tool", "x")


def test_renewal_settings_must_be_ordered(tmp_path: Path) -> None:
    assert ProvidersSettings().openai_session_cap_s == 3600.0
    path = tmp_path / "callagent.toml"
    path.write_text("[providers]\nopenai_session_cap_s = 60.0\nopenai_renew_margin_s = 90.0\n")
    with pytest.raises(ConfigError, match="force < margin < cap"):
        load_settings(path, {"CALLAGENT_TWILIO_AUTH_TOKEN": "secret"})
    path.write_text("[providers]\nopenai_session_cap_s = 3.0\nopenai_renew_margin_s = 1.0\n"
                    "openai_renew_force_s = 0.5\nopenai_max_reconnects = 5\n")  # fmt: skip
    settings = load_settings(path, {"CALLAGENT_TWILIO_AUTH_TOKEN": "secret"})
    p = settings.providers
    assert (p.openai_session_cap_s, p.openai_renew_margin_s, p.openai_renew_force_s,
            p.openai_max_reconnects, p.openai_reseed_turns) == (3.0, 1.0, 0.5, 5, 20)  # fmt: skip


async def test_after_a_reconnect_the_new_session_continues_the_flow_from_the_transcript(
    realtime_service: LiveService,
) -> None:
    async with RealtimeProxy(realtime_service.base_url) as proxy:
        engine = backend(proxy)
        caller = Caller(engine, np.concatenate([silence(16.0), clip("01_order_status")]))
        await caller.start()
        try:
            greeting = await caller.until(lambda e: isinstance(e, AgentTurnDone))
            await caller.until(lambda e: isinstance(e, UserTranscript) and "status" in e.text)
            asked = await caller.until(lambda e: isinstance(e, AgentTurnDone))
            assert isinstance(asked, AgentTurnDone) and "order number" in asked.text
            await until(lambda: asked.turn_id in caller.heard)
            await proxy.drop(1001, "session cap reached")
            await caller.until(metric("provider_reconnect_going_away"))
            await until(lambda: len(proxy.sessions) == 2 and proxy.sessions[1].updated.is_set())
            reconnect_at = len(caller.events)
            say(caller, np.concatenate([clip("02_account_number"), silence(1.0)]))
            answer = await caller.until(lambda e: isinstance(e, AgentTurnDone)
                                        and "4 5 7 2 9" in e.text)  # fmt: skip
        finally:
            await caller.close()
    assert isinstance(greeting, AgentTurnDone) and isinstance(answer, AgentTurnDone)
    after = caller.events[reconnect_at:]
    said_after = [e.text for e in after if isinstance(e, AgentTurnDone)]
    # the new session neither greeted again nor went back to its first question...
    assert not [t for t in said_after if "Acme" in t or "How can I help" in t], said_after
    # ...it took the number as the answer to the question the old session asked: its flow
    # looked the order up (the backend's tools) and read out the order's status
    assert any(isinstance(e, ToolCallStarted) and e.name == "lookup_order" for e in after)
    assert answer.text.startswith("Order 4 5 7 2 9")
    messages = [(m["role"], m["content"][0]["text"]) for m in proxy.sessions[1].items()
                if m["type"] == "message"]
    assert ("assistant", asked.text) in messages
    assert any(role == "user" and "status" in text for role, text in messages)
