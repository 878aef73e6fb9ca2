"""The audit hash chain: pure functions, then stored on both databases, tampered with."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.call.records import AuditRecord
from callagent.compliance.audit import (
    GENESIS,
    VerifyResult,
    canonical_content,
    canonical_details,
    event_hash,
    verify_chain,
)
from callagent.store import queries
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import AuditEvent
from tests.conftest import pg_conninfo

T0 = datetime(2026, 5, 4, 9, 0, 0, tzinfo=timezone.utc)
Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class Row:
    seq: int
    at: datetime
    actor: str
    action: str
    call_id: str | None
    details: str
    prev_hash: str
    hash: str


def chain(n: int) -> list[Row]:
    rows: list[Row] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        at, details = T0 + timedelta(seconds=seq), canonical_details({"n": seq})
        h = event_hash(prev, canonical_content(seq, at, "operator:7", "transcript.viewed", "c1", details))
        rows.append(Row(seq, at, "operator:7", "transcript.viewed", "c1", details, prev, h))
        prev = h
    return rows


def rehash(row: Row, prev_hash: str) -> Row:
    content = canonical_content(row.seq, row.at, row.actor, row.action, row.call_id, row.details)
    return replace(row, prev_hash=prev_hash, hash=event_hash(prev_hash, content))


# ---- pure ---------------------------------------------------------------------------


def test_canonical_content_sorts_keys_and_normalizes_time_to_utc() -> None:
    a = canonical_content(1, T0, "system", "x", None, {"b": 1, "a": {"d": 2, "c": "é"}})
    b = canonical_content(1, T0.astimezone(timezone(timedelta(hours=-5))), "system", "x", None,
                          '{"a": {"c": "é", "d": 2}, "b": 1}')
    assert a == b
    assert a == ('{"action":"x","actor":"system","at":"2026-05-04T09:00:00.000000+00:00",'
                 '"call_id":null,"details":{"a":{"c":"é","d":2},"b":1},"seq":1}')


def test_canonical_content_refuses_naive_times_and_non_objects() -> None:
    with pytest.raises(ValueError):
        canonical_content(1, datetime(2026, 1, 1), "s", "x", None, {})
    with pytest.raises(TypeError):
        canonical_details("[1, 2]")


def test_event_hash_is_sha256_of_prev_hash_and_content() -> None:
    assert event_hash(GENESIS, "{}") == hashlib.sha256((GENESIS + "{}").encode()).hexdigest()
    assert GENESIS == "0" * 64


def test_an_intact_chain_verifies() -> None:
    rows = chain(5)
    result = verify_chain(rows)
    assert result.ok and result.checked == 5
    assert (result.head_seq, result.head_hash) == (5, rows[-1].hash)
    assert verify_chain([]).ok


def test_chunked_verification_continues_from_a_start() -> None:
    rows = chain(6)
    first = verify_chain(rows[:3])
    assert first.head_seq is not None and first.head_hash is not None
    rest = verify_chain(rows[3:], start=(first.head_seq, first.head_hash))
    assert rest.ok and rest.head_hash == rows[-1].hash


def test_an_edited_row_is_named() -> None:
    rows = chain(5)
    rows[2] = replace(rows[2], details='{"n":999}')
    assert (verify_chain(rows).ok, verify_chain(rows).broken_seq) == (False, 3)


def test_an_edited_and_rehashed_row_breaks_the_next_link() -> None:
    rows = chain(5)
    rows[2] = rehash(replace(rows[2], actor="operator:1"), rows[1].hash)
    result = verify_chain(rows)
    assert (result.ok, result.broken_seq, result.head_seq) == (False, 4, 3)


def test_a_deleted_row_is_named() -> None:
    rows = chain(5)
    del rows[2]
    assert verify_chain(rows).broken_seq == 4
    assert verify_chain(chain(5)[1:]).broken_seq == 2  # the first one


def test_an_inserted_row_is_named() -> None:
    rows = chain(5)
    forged = rehash(replace(rows[2], action="consent.given"), rows[1].hash)
    renumbered = [rehash(replace(r, seq=r.seq + 1), r.prev_hash) for r in rows[2:]]
    result = verify_chain([*rows[:2], forged, *renumbered])
    assert (result.ok, result.broken_seq) == (False, 4)


def test_reordered_rows_are_named() -> None:
    rows = chain(5)
    swapped = [rows[0], replace(rows[2], seq=2), replace(rows[1], seq=3), *rows[3:]]
    assert verify_chain(swapped).broken_seq == 2
    assert verify_chain([rows[0], rows[2], rows[1], *rows[3:]]).broken_seq == 3  # given out of order


def test_truncation_needs_the_exported_head() -> None:
    rows = chain(5)
    head = (rows[-1].seq, rows[-1].hash)
    assert verify_chain(rows[:4]).ok  # a shorter chain is still a chain
    result = verify_chain(rows[:4], expected_head=head)
    assert (result.ok, result.broken_seq) == (False, 5)
    assert verify_chain(rows, expected_head=head).ok


# ---- stored ---------------------------------------------------------------------------


async def append(db_sessions: Sessions, n: int, *, start: int = 0) -> None:
    async with db_sessions.begin() as s:
        await queries.append_audit(
            s, [AuditRecord("transcript.viewed", "operator:7", T0 + timedelta(seconds=start + i),
                            "c1", {"n": start + i}) for i in range(n)])


async def verify(db_sessions: Sessions, **kw: Any) -> VerifyResult:
    async with db_sessions() as s:
        return await queries.verify_audit(s, **kw)


async def test_appends_build_one_valid_chain(db_sessions: Sessions) -> None:
    await append(db_sessions, 3)
    await append(db_sessions, 4, start=3)
    result = await verify(db_sessions, chunk_size=2)
    assert result.ok and result.checked == 7 and result.head_seq == 7
    async with db_sessions() as s:
        assert await queries.audit_head(s) == (7, result.head_hash)
        rows = (await s.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    assert [r.details for r in rows] == [f'{{"n":{i}}}' for i in range(7)]


def tamper(url: str, kind: str, statements: list[str]) -> None:
    """Change audit_events behind the application's back (as an attacker with DB access)."""
    if kind == "sqlite":
        path = make_url(url).database
        assert path
        lite = sqlite3.connect(path)
        with lite:  # commits on exit
            for sql in statements:
                lite.execute(sql)
        lite.close()
        return
    with psycopg.connect(pg_conninfo(url), autocommit=True) as pg:  # superuser
        with pg.transaction():
            pg.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
            for sql in statements:
                pg.execute(sql.encode())
            pg.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")


TAMPERING = {
    "edited": (["UPDATE audit_events SET details = '{\"n\":1000}' WHERE seq = 3"], 3),
    "deleted": (["DELETE FROM audit_events WHERE seq = 3"], 4),
    "deleted-first": (["DELETE FROM audit_events WHERE seq = 1"], 2),
    # a forged event slipped in at seq 3: later rows renumbered to make room
    "inserted": ([
        "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 3",
        "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1003",
        "INSERT INTO audit_events (seq, at, actor, action, call_id, details, prev_hash, hash) "
        "SELECT 3, at, actor, 'consent.given', call_id, details, hash, "
        "'forged0000000000000000000000000000000000000000000000000000000000' "
        "FROM audit_events WHERE seq = 2",
    ], 3),
    "reordered": ([
        "UPDATE audit_events SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 1000",
    ], 2),
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
async def test_tampering_is_detected(db_sessions: Sessions, db_url: str, db_kind: str, how: str) -> None:
    await append(db_sessions, 6)
    assert (await verify(db_sessions)).ok
    statements, broken_seq = TAMPERING[how]
    tamper(db_url, db_kind, statements)
    result = await verify(db_sessions, chunk_size=2)
    assert not result.ok
    assert result.broken_seq == broken_seq, result.reason


async def test_an_edited_and_rehashed_row_is_detected_in_the_database(
    db_sessions: Sessions, db_url: str, db_kind: str
) -> None:
    await append(db_sessions, 5)
    async with db_sessions() as s:
        row = (await s.scalars(select(AuditEvent).where(AuditEvent.seq == 3))).one()
    forged = event_hash(row.prev_hash, canonical_content(3, row.at, "operator:1", row.action,
                                                          row.call_id, row.details))
    tamper(db_url, db_kind, [f"UPDATE audit_events SET actor = 'operator:1', hash = '{forged}' "
                             "WHERE seq = 3"])
    result = await verify(db_sessions)
    assert (result.ok, result.broken_seq) == (False, 4)


async def test_truncating_the_log_is_caught_with_the_exported_head(
    db_sessions: Sessions, db_url: str, db_kind: str
) -> None:
    await append(db_sessions, 4)
    async with db_sessions() as s:
        head = await queries.audit_head(s)
    assert head is not None
    tamper(db_url, db_kind, ["DELETE FROM audit_events WHERE seq = 4"])
    assert (await verify(db_sessions)).ok
    result = await verify(db_sessions, expected_head=head)
    assert (result.ok, result.broken_seq) == (False, 4)


@pytest.mark.parametrize(
    "sql", ["UPDATE audit_events SET actor = 'x' WHERE seq = 1", "DELETE FROM audit_events WHERE seq = 2",
            "DELETE FROM audit_events", "TRUNCATE audit_events"]
)
async def test_postgres_refuses_to_change_audit_rows(pg_db_url: str, sql: str) -> None:
    engine = create_engine_for(pg_db_url)
    try:
        db_sessions = make_sessionmaker(engine)
        await append(db_sessions, 2)
        with pytest.raises(sa_exc.DBAPIError, match="append-only"):
            async with db_sessions.begin() as s:
                await s.execute(text(sql))
        assert (await verify(db_sessions)).checked == 2
    finally:
        await engine.dispose()


async def test_concurrent_appenders_keep_one_chain(db_url: str) -> None:
    """Several engines (as if several web processes), several tasks each, appending at once."""
    engines = [create_engine_for(db_url) for _ in range(4)]
    try:
        async def writer(db_sessions: Sessions, w: int) -> None:
            for b in range(8):
                async with db_sessions.begin() as s:
                    await queries.append_audit(s, [
                        AuditRecord("call.received", f"writer:{w}", T0, None, {"w": w, "b": b, "i": i})
                        for i in range(3)])
                await asyncio.sleep(0)

        await asyncio.gather(*(writer(make_sessionmaker(e), e_i * 5 + t)
                               for e_i, e in enumerate(engines) for t in range(5)))
        db_sessions = make_sessionmaker(engines[0])
        result = await verify(db_sessions)
        assert result.ok, result.reason
        assert result.checked == 4 * 5 * 8 * 3 == result.head_seq
        async with db_sessions() as s:
            details = (await s.scalars(select(AuditEvent.details))).all()
        assert len(set(details)) == len(details)
    finally:
        for e in engines:
            await e.dispose()
