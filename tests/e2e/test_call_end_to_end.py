"""A simulated phone call against the real service on loopback, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callagent.audio.wavfile import read_wav
from callagent.sim.caller import SimulatedCall, run_simulated_call
from callagent.store.db import make_sessionmaker
from callagent.store.models import AuditEvent, Call, CallMetric, Turn
from callagent.store.queries import verify_audit
from tests.e2e.conftest import SHARED_AUDIO, TOKEN, LiveService


async def wait_closed(db: AsyncEngine, call_id: str, timeout: float = 15.0) -> Call:
    sessions = make_sessionmaker(db)
    for _ in range(int(timeout / 0.1)):
        async with sessions() as s:
            call = await s.get(Call, call_id)
            metrics = (
                await s.execute(select(CallMetric).where(CallMetric.call_id == call_id))
            ).scalars().all()
            if call is not None and call.ended_at is not None and metrics:
                return call
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} was not closed in the database within {timeout} s")


def simulated(live: LiveService, tmp_path: Path, **kwargs: object) -> SimulatedCall:
    return SimulatedCall(
        base_url=live.base_url,
        public_origin=live.settings.server.public_origin,
        auth_token=TOKEN,
        heard_wav=tmp_path / "heard.wav",
        **kwargs,  # type: ignore[arg-type]
    )


async def test_call_with_barge_in_leaves_a_complete_record(
    live: LiveService, tmp_path: Path
) -> None:
    # The caller starts talking 0.6 s into the 2.4 s greeting: a barge-in.
    call = simulated(live, tmp_path, wav=SHARED_AUDIO / "05_barge_in_change_address.wav",
                     lead_s=0.6, tail_s=4.5)
    result = await run_simulated_call(call)
    assert result.completed, result.error
    assert result.clears == 1
    assert result.playout.dropped_ms > 0

    row = await wait_closed(live.db, result.call_id)
    assert row.twilio_call_sid == result.call_sid
    assert row.direction == "inbound" and row.agent == "fixture"
    assert row.answered_at is not None and row.end_reason == "caller hung up"

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
        actions = [
            a.action
            for a in (
                await s.execute(
                    select(AuditEvent).where(AuditEvent.call_id == result.call_id).order_by(AuditEvent.seq)
                )
            ).scalars()
        ]
        chain = await verify_audit(s)

    greeting, caller, reply = turns[0], turns[1], turns[2]
    assert greeting.speaker == "agent" and greeting.interrupted
    assert greeting.heard_ms is not None and 0 < greeting.heard_ms < 2400
    assert greeting.heard_text is not None
    assert len(greeting.heard_text) < len(greeting.text)
    assert caller.speaker == "caller" and caller.start_ms < caller.end_ms
    assert reply.speaker == "agent" and not reply.interrupted
    assert reply.heard_text == reply.text
    assert reply.response_latency_ms is not None and reply.response_latency_ms > 0
    assert metrics["frames_in"] > 200 and metrics["frames_out"] > 100
    assert metrics["rejected_messages"] == 0
    assert actions == ["call.received", "call.answered", "call.ended"]
    assert chain.ok

    # What the caller heard: the interrupted greeting, then the whole reply.
    heard = read_wav(tmp_path / "heard.wav")
    assert heard.rate == 8000
    spans = result.playout.speech_intervals()
    assert len(spans) == 2
    assert spans[0][1] - spans[0][0] < 2.4
    assert abs((spans[1][1] - spans[1][0]) - 3.03) < 0.1


async def test_caller_status_callback_closes_the_call(live: LiveService, tmp_path: Path) -> None:
    result = await run_simulated_call(simulated(live, tmp_path, silence_s=0.5, lead_s=0.2, tail_s=0.5))
    assert result.completed, result.error
    row: Call | None = await wait_closed(live.db, result.call_id)
    for _ in range(50):
        async with make_sessionmaker(live.db)() as s:
            row = await s.get(Call, result.call_id)
        assert row is not None
        if row.status == "completed":
            break
        await asyncio.sleep(0.1)
    assert row is not None and row.status == "completed"
    assert row.duration_s is not None
