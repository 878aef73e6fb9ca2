"""One call through the live service on the duplex engine's local backend (real models).

The app's own engine builder picks the engine from the profile's routing
(customer_service_duplex: duplex / local). The caller (the Twilio-speaking
simulator) waits through the opening, asks for the status of an order and
hangs up after the reply. The database holds the caller's words, the reply,
and the metric naming the engine that served the call.
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
from callagent.store.models import Call, Turn
from tests.e2e.conftest import SHARED_AUDIO, TOKEN, running_service
from tests.e2e.test_call_end_to_end import wait_closed

ROOT = Path(__file__).resolve().parents[2]


def duplex_engines(settings: Settings) -> Callable[[CallContext], Engine]:
    shared_models(load_profiles(ROOT / "config" / "agents"))  # loaded first, as at startup
    build = default_engines(settings)
    return lambda call: build(dataclasses.replace(call, agent="customer_service_duplex"))


async def test_duplex_call_records_the_callers_words_the_reply_and_the_engine(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with running_service(sqlite_db_url, tmp_path, engines=duplex_engines) as live:
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
            row = await s.get(Call, result.call_id)

    speakers = [t.speaker for t in turns]
    assert speakers[:4] == ["agent", "caller", "agent"], [(t.speaker, t.text[:60], t.interrupted) for t in turns]
    greeting, caller, reply = turns[:3]
    assert greeting.text.startswith("Hi, you've reached Acme Supplies")
    assert "status" in caller.text and "order" in caller.text
    assert "order number" in reply.text and not reply.interrupted
    # The call row names the engine and backend that actually served it.
    assert row is not None and row.engine == "duplex:local", row and row.engine
