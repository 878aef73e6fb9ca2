"""Do-not-call and recording-link records: journal round trip, idempotent replay, bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.call.apply import apply_all
from callagent.call.records import (
    CallOpened,
    DncAdded,
    RecordingSaved,
    record_from_json,
    record_to_json,
)
from callagent.store.models import Call, DncNumber
from callagent.store.queries import UnknownCall

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_the_records_survive_the_journal() -> None:
    for record in (DncAdded("+14155550100", NOW, "c1"), RecordingSaved("c1", "/r/c1.wav", "one-party")):
        assert record_from_json(record_to_json(record)) == record


async def test_replaying_an_opt_out_adds_one_entry_and_links_the_recording(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    batch = [CallOpened("c1", "inbound", "a", "pipeline", "+14155550100", "+15005550001", "", NOW),
             DncAdded("+14155550100", NOW, "c1"), RecordingSaved("c1", "/r/c1.wav", "all-party")]
    for _ in range(2):  # a journal replay writes the same batch again
        async with db_sessions.begin() as s:
            await apply_all(s, batch, [None] * len(batch))
    async with db_sessions() as s:
        assert (await s.execute(select(DncNumber.e164, DncNumber.source))).all() == [
            ("+14155550100", "internal")]
        call = await s.get(Call, "c1")
    assert call is not None and (call.recording_path, call.recording_policy) == ("/r/c1.wav", "all-party")


async def test_a_recording_for_an_unknown_call_is_refused(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(UnknownCall):
        async with db_sessions.begin() as s:
            await apply_all(s, [RecordingSaved("nope", "/r/x.wav", "one-party")], [None])
    with pytest.raises(ValueError, match="differ in length"):
        async with db_sessions.begin() as s:
            await apply_all(s, [DncAdded("+14155550100", NOW)], [])
