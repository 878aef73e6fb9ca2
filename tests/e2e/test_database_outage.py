"""The database stops in the middle of a call: the call goes on and nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from callagent.call.recorder import Recorder
from callagent.sim.caller import SimulatedCall, run_simulated_call
from callagent.store.db import make_sessionmaker
from callagent.store.models import AuditEvent, CallMetric, Turn
from callagent.store.queries import verify_audit
from tests.e2e.conftest import SHARED_AUDIO, TOKEN, running_service
from tests.e2e.test_call_end_to_end import wait_closed
from tests.outage import Outage


async def test_database_stops_mid_call_and_every_record_arrives(
    outage: Outage, tmp_path: Path
) -> None:
    async with running_service(outage.url, tmp_path, read_db_url=outage.direct_url) as live:
        call = SimulatedCall(
            base_url=live.base_url,
            public_origin=live.settings.server.public_origin,
            auth_token=TOKEN,
            wav=SHARED_AUDIO / "05_barge_in_change_address.wav",
            lead_s=0.6,
            tail_s=4.5,
        )
        running = asyncio.create_task(run_simulated_call(call))
        await asyncio.sleep(1.0)  # the call is answered and the greeting playing
        await outage.down()
        result = await running  # the call is unaffected by the outage
        assert result.completed, result.error
        assert result.clears == 1
        recorder = live.services.recorder
        assert isinstance(recorder, Recorder)
        assert recorder.journaled > 0 and recorder.journal_pending
        await outage.up()

        row = await wait_closed(live.db, result.call_id, timeout=30)
        assert row.end_reason == "caller hung up"
        async with make_sessionmaker(live.db)() as s:
            turns = (
                await s.execute(select(Turn).where(Turn.call_id == result.call_id).order_by(Turn.seq))
            ).scalars().all()
            metrics = (
                await s.execute(
                    select(func.count()).select_from(CallMetric).where(CallMetric.call_id == result.call_id)
                )
            ).scalar_one()
            actions = (
                await s.execute(
                    select(AuditEvent.action).where(AuditEvent.call_id == result.call_id).order_by(AuditEvent.seq)
                )
            ).scalars().all()
            chain = await verify_audit(s)
        assert [t.speaker for t in turns] == ["agent", "caller", "agent"]
        assert turns[0].interrupted
        assert metrics >= 4
        assert list(actions) == ["call.received", "call.answered", "call.ended"]
        assert chain.ok
        for _ in range(100):
            if not recorder.journal_pending:
                break
            await asyncio.sleep(0.1)
        assert not recorder.journal_pending
        assert recorder.replayed > 0
