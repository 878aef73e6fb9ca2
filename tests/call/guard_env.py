"""A real recorder on a real database, a local Twilio REST server, and a CallGuard on them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callagent.call.guard import CallGuard
from callagent.call.recorder import Recorder
from callagent.call.records import CallOpened
from callagent.config import RecorderSettings, RecordingSettings, Settings, TwilioSettings
from callagent.engines.base import CallContext, Engine
from callagent.services import Services
from callagent.sim.twilio_rest import FakeTwilioRest
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import AuditEvent

TOKEN = "guard-test-token"


def no_engine(call: CallContext) -> Engine:
    raise AssertionError("the guard never builds an engine")


@dataclass
class GuardEnv:
    services: Services
    recorder: Recorder
    db: AsyncEngine
    fake: FakeTwilioRest
    tmp: Path
    clock_ms: list[float]

    def guard(self, *, from_number: str = "+14155550100", to_number: str = "+15005550001",
              agent: str = "customer_service", call_sid: str = "",
              direction: str = "inbound") -> CallGuard:  # fmt: skip
        call_id = f"call-{len(self.clock_ms)}-{datetime.now(UTC).timestamp():.6f}".replace(".", "")
        self.clock_ms.append(0.0)
        self.recorder.submit(CallOpened(call_id, direction, agent, "pipeline", from_number,
                                        to_number, call_sid, self.services.now()))  # fmt: skip
        call = CallContext(call_id, direction, agent, from_number, to_number, call_sid)
        return CallGuard(self.services, call, lambda: self.clock_ms[-1])

    def tick(self, ms: float) -> None:
        self.clock_ms[-1] += ms

    async def flush(self) -> None:
        """Everything submitted so far is in the database."""
        await self.recorder.close()
        self.recorder = Recorder(make_sessionmaker(self.db), self.services.settings.recorder)
        self.recorder.start()
        self.services.recorder = self.recorder

    async def audit(self, call_id: str) -> list[tuple[str, dict[str, Any]]]:
        await self.flush()
        async with make_sessionmaker(self.db)() as s:
            rows = (await s.execute(select(AuditEvent).where(AuditEvent.call_id == call_id)
                                    .order_by(AuditEvent.seq))).scalars().all()  # fmt: skip
        return [(r.action, json.loads(r.details)) for r in rows]


@contextlib.asynccontextmanager
async def guard_env(db_url: str, tmp_path: Path, **recording: Any) -> AsyncIterator[GuardEnv]:
    fake = FakeTwilioRest(auth_token=TOKEN, duration_s=(4.0, 4.0), message_s=30.0)
    fake.start()
    settings = Settings(
        twilio=TwilioSettings(auth_token=TOKEN, api_base_url=fake.base_url),
        recorder=RecorderSettings(journal_dir=str(tmp_path / "journal"), flush_interval_ms=10),
        recording=RecordingSettings(directory=str(tmp_path / "recordings"), **recording),
    )
    db = create_engine_for(db_url)
    recorder = Recorder(make_sessionmaker(db), settings.recorder)
    recorder.start()
    services = Services(settings=settings, recorder=recorder, engines=no_engine)
    env = GuardEnv(services, recorder, db, fake, tmp_path, [])
    try:
        yield env
    finally:
        await env.recorder.close()
        await db.dispose()
        fake.close()


async def answered_call(env: GuardEnv) -> str:
    """A call Twilio has in progress (placed on the local REST server, then answered)."""
    from callagent.telephony.twilio.rest import TwilioRest

    t = env.services.settings.twilio
    async with TwilioRest(t.account_sid, t.auth_token, base_url=t.api_base_url) as rest:
        placed = await rest.place_call(to="+14155550100", from_="+15005550006",
                                       url="http://127.0.0.1:9/twilio/voice",
                                       status_callback="http://127.0.0.1:9/twilio/status",
                                       machine_detection=None)  # fmt: skip
        while (await rest.fetch_call(placed.sid)).status != "in-progress":
            await asyncio.sleep(0.05)
    return placed.sid
