"""A turn-tagged engine metric is stored twice: as the call's latest value (turn_id "")
and as its turn's own row; untagged metrics are call-level only. A real service on
loopback with a scripted engine, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from callagent.audio.pcm import Pcm
from callagent.engines.base import (
    AgentAudio,
    AgentTurnDone,
    EngineEvent,
    Metric,
)
from callagent.sim.caller import SimulatedCall, run_simulated_call
from callagent.store.db import make_sessionmaker
from callagent.store.models import CallMetric
from tests.e2e.conftest import TOKEN, running_service
from tests.e2e.scripted_engine import scripted_engines
from tests.e2e.test_call_end_to_end import wait_closed


# Two agent turns, each with its own eos_to_audio_ms, and one call-wide figure.
SCRIPT: list[EngineEvent] = [
    AgentAudio("a1", Pcm.silence(200, 8000), segment_end=True),
    Metric("eos_to_audio_ms", 610.0, "a1"),
    AgentTurnDone("a1", "Hello."),
    AgentAudio("a2", Pcm.silence(200, 8000), segment_end=True),
    Metric("eos_to_audio_ms", 480.0, "a2"),
    Metric("provider_session_updated", 1.0),
    AgentTurnDone("a2", "Goodbye."),
]
measuring_engines = scripted_engines("scripted-metrics", SCRIPT)


async def test_turn_metrics_are_rows_of_their_turn_beside_the_calls_latest(
    db_url: str, tmp_path: Path
) -> None:
    async with running_service(db_url, tmp_path, engines=measuring_engines) as live:
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
            rows = (
                await s.execute(
                    select(CallMetric.name, CallMetric.turn_id, CallMetric.value).where(
                        CallMetric.call_id == result.call_id,
                        CallMetric.name.in_(["eos_to_audio_ms", "provider_session_updated"]),
                    )
                )
            ).all()

    assert sorted(tuple(r) for r in rows) == [
        ("eos_to_audio_ms", "", 480.0),         # the call's latest
        ("eos_to_audio_ms", "a1", 610.0),
        ("eos_to_audio_ms", "a2", 480.0),
        ("provider_session_updated", "", 1.0),
    ]
