"""Transcript search over the word index, on SQLite and PostgreSQL: indexing catches up,
both query strategies (rare-word postings, common-word walk) agree, keyset paging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.console.call_filters import CallFilter
from callagent.console.call_queries import list_calls
from callagent.console.search_index import RESCAN, add_terms, unindexed
from callagent.store.operators import TranscriptTerm
from callagent.store.queries import apply_records
from tests.console.conftest import call_records


async def seed(sessions: async_sessionmaker[AsyncSession], texts: list[str]) -> list[str]:
    now = datetime.now(UTC)
    ids = []
    async with sessions.begin() as s:
        for i, text in enumerate(texts):
            call_id = str(uuid.uuid4())
            ids.append(call_id)
            await apply_records(s, call_records(call_id, now - timedelta(minutes=i),
                                                caller_says=text, n=i))
    return ids  # newest first


async def index_all(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s:
        turns = await unindexed(s, limit=100_000)
    async with sessions.begin() as s:
        await add_terms(s, turns)


async def search(sessions: async_sessionmaker[AsyncSession], q: str, common: int,
                 **params: str) -> list[str]:
    f = CallFilter.from_params({"q": q, **params}, page_size=50)
    async with sessions() as s:
        return [c.id for c in (await list_calls(s, f, common_postings=common)).calls]


async def test_both_strategies_find_the_same_calls(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await seed(db_sessions, ["where is my parcel", "my order is late", "parcel damaged",
                                   "nothing to say", "my parcel is late"])
    await index_all(db_sessions)
    for q, expected in [("parcel", [ids[0], ids[2], ids[4]]), ("my late", [ids[1], ids[4]]),
                        ("Parcel LATE", [ids[4]]), ("unicorn", []), ("parcel unicorn", [])]:
        assert await search(db_sessions, q, common=10**6) == expected, q   # postings first
        assert await search(db_sessions, q, common=1) == expected, q       # walk calls
    assert await search(db_sessions, "parcel", 1, direction="outbound") == []


async def test_indexing_catches_up_and_fills_gaps(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(db_sessions, ["first call words"])
    await index_all(db_sessions)
    async with db_sessions() as s:
        assert await unindexed(s, rescan=RESCAN) == []
        count = await s.scalar(select(func.count()).select_from(TranscriptTerm))
    await seed(db_sessions, ["second call words"])
    async with db_sessions() as s:
        fresh = await unindexed(s)
    assert [t[2] for t in fresh][:1] == ["second call words"]
    await index_all(db_sessions)
    async with db_sessions.begin() as s:  # lose one turn's rows: the rescan finds it again
        full = await s.scalar(select(func.count()).select_from(TranscriptTerm))
        newest = await s.scalar(select(func.max(TranscriptTerm.turn_id)))
        victim = int(newest or 0) - 2
        await s.execute(delete(TranscriptTerm).where(TranscriptTerm.turn_id == victim))
    async with db_sessions() as s:
        assert await unindexed(s) == []
        gap = await unindexed(s, rescan=RESCAN)
    assert [t[0] for t in gap] == [victim]
    async with db_sessions.begin() as s:
        await add_terms(s, gap)
        await add_terms(s, gap)  # again: nothing twice
        assert await s.scalar(select(func.count()).select_from(TranscriptTerm)) == full
    assert (count or 0) < (full or 0)
