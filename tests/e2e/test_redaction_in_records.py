"""Card numbers never reach the database: transcripts are redacted before they are recorded."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from callagent.audio.pcm import Pcm
from callagent.engines.base import (
    AgentAudio,
    AgentTurnDone,
    EngineEvent,
    ToolCallFinished,
    ToolCallStarted,
    UserTranscript,
)
from callagent.sim.caller import SimulatedCall, run_simulated_call
from callagent.store.db import make_sessionmaker
from callagent.store.models import AuditEvent, ToolCall, Turn
from tests.e2e.conftest import TOKEN, running_service
from tests.e2e.scripted_engine import scripted_engines
from tests.e2e.test_call_end_to_end import wait_closed

CARD_DIGITS = "4532015112830366"


# A scripted conversation in which the caller reads a card number over two turns.
SCRIPT: list[EngineEvent] = [
    AgentAudio("a1", Pcm.silence(200, 8000), segment_end=True),
    AgentTurnDone("a1", "What is your card number?"),
    UserTranscript("my card number is four five three two zero one five one", True, 300, 2000),
    UserTranscript("one two eight three zero three six six", True, 2500, 4000),
    ToolCallStarted("t1", "take_payment", json.dumps({"card": CARD_DIGITS, "cvv": "123"})),
    ToolCallFinished("t1", "take_payment", "ok", json.dumps({"charged": "12.50"}), 42.0),
    AgentAudio("a2", Pcm.silence(200, 8000), segment_end=True),
    AgentTurnDone("a2", "Thanks, I have 4532 0151 1283 0366 on file."),
]
card_engines = scripted_engines("scripted-card", SCRIPT)


async def test_a_card_number_said_over_two_turns_is_stored_masked(db_url: str, tmp_path: Path) -> None:
    async with running_service(db_url, tmp_path, engines=card_engines) as live:
        call = SimulatedCall(
            base_url=live.base_url,
            public_origin=live.settings.server.public_origin,
            auth_token=TOKEN,
            silence_s=1.0,
            lead_s=0.2,
            tail_s=0.5,
        )
        result = await run_simulated_call(call)
        assert result.completed, result.error
        await wait_closed(live.db, result.call_id)
        async with make_sessionmaker(live.db)() as s:
            turns = (
                await s.execute(select(Turn).where(Turn.call_id == result.call_id).order_by(Turn.seq))
            ).scalars().all()
            audits = (
                await s.execute(select(AuditEvent).where(AuditEvent.action == "redaction.applied"))
            ).scalars().all()
            tools = (
                await s.execute(select(ToolCall).where(ToolCall.call_id == result.call_id))
            ).scalars().all()
            tool_audits = (
                await s.execute(select(AuditEvent).where(AuditEvent.action == "tool.called"))
            ).scalars().all()

    texts = [t.text for t in turns]
    assert texts[1] == "my card number is [card ending 0366]"
    assert texts[2] == "[card ending 0366, continued]"
    assert texts[3] == "Thanks, I have [card ending 0366] on file."
    stored = " ".join(f"{t.text} {t.heard_text or ''}" for t in turns)
    assert "4532" not in stored and "five one" not in stored
    # Each redaction is audited with its kind and place, never the value.
    assert {json.loads(a.details)["kind"] for a in audits} == {"pan", "cvv"}
    assert len(audits) >= 5
    [tool] = tools
    assert tool.name == "take_payment" and tool.status == "ok" and tool.duration_ms == 42.0
    assert CARD_DIGITS not in tool.arguments and "123" not in tool.arguments
    assert json.loads(tool.result) == {"charged": "12.50"}
    assert len(tool_audits) == 1
    assert all(CARD_DIGITS[:6] not in a.details and "four five" not in a.details for a in audits)
