"""One call through the live service with the embedded pipeline engine (real models).

The caller (the Twilio-speaking simulator) waits through the disclosures and
menu, asks for the status of an order (clip 01), and hangs up after the
agent's reply. The database must hold the caller's recognised words as a
caller turn and the agent's reply as the next agent turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from callagent.agents.profile import load_profiles
from callagent.app import default_engines
from callagent.config import Settings
from callagent.engines.base import CallContext, Engine
from callagent.engines.pipeline.models import shared_models
from callagent.sim.caller import SimulatedCall, run_simulated_call
from callagent.store.db import make_sessionmaker
from callagent.store.models import CallMetric, Turn
from tests.e2e.conftest import SHARED_AUDIO, TOKEN, running_service
from tests.e2e.test_call_end_to_end import wait_closed

ROOT = Path(__file__).resolve().parents[2]


def customer_service_engines(settings: Settings) -> Callable[[CallContext], Engine]:
    """The app's own engine builder, with every call on the customer_service agent.

    The models are loaded first (once per process), as a service whose default
    profile is a pipeline one does at startup: the caller times its words to
    the greeting."""
    shared_models(load_profiles(ROOT / "config" / "agents"))
    build = default_engines(settings)
    return lambda call: build(dataclasses.replace(call, agent="customer_service"))


async def test_pipeline_call_records_the_callers_words_and_the_reply(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with running_service(sqlite_db_url, tmp_path, engines=customer_service_engines) as live:
        call = SimulatedCall(
            base_url=live.base_url,
            public_origin=live.settings.server.public_origin,
            auth_token=TOKEN,
            wav=SHARED_AUDIO / "01_order_status.wav",
            lead_s=13.0,  # the disclosures and the menu take ~11 s
            tail_s=6.5,
        )
        result = await run_simulated_call(call)
        assert result.completed, result.error
        await wait_closed(live.db, result.call_id, timeout=20)
        async with make_sessionmaker(live.db)() as s:
            turns = (
                await s.execute(select(Turn).where(Turn.call_id == result.call_id).order_by(Turn.seq))
            ).scalars().all()
            metrics = {
                m.name: m.value
                for m in (
                    await s.execute(select(CallMetric).where(CallMetric.call_id == result.call_id,
                                                             CallMetric.turn_id == ""))  # call-level
                ).scalars()
            }

    speakers = [t.speaker for t in turns]
    assert speakers[:3] == ["agent", "caller", "agent"], [(t.speaker, t.text) for t in turns]
    greeting, caller, reply = turns[:3]
    assert greeting.text.startswith("Hi, you've reached Acme Supplies")
    assert "status" in caller.text and "order" in caller.text
    assert 12_000 < caller.start_ms < caller.end_ms
    assert "order number" in reply.text and not reply.interrupted
    assert reply.response_latency_ms is not None and 0 < reply.response_latency_ms < 2500
    print(f"caller heard as {caller.text!r}; reply latency {reply.response_latency_ms:.0f} ms; "
          f"eos->audio {metrics.get('eos_to_audio_ms')}")  # fmt: skip
