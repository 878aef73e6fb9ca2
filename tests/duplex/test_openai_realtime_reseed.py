"""Re-seeding a new OpenAI Realtime session, sans I/O: the events the backend sends after a
reconnect, checked against our own parser of client events (the GA shapes), no sockets."""

from __future__ import annotations

import json
from pathlib import Path

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
