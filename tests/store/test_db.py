"""Engines: SQLite pragmas and BEGIN IMMEDIATE, aware UTC timestamps, URLs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.config import DatabaseSettings, Settings
from callagent.store.db import create_engine_for, make_sessionmaker, sqlite_path, sync_url
from callagent.store.models import Call

CEST = timezone(timedelta(hours=2))


def _call(call_id: str, started_at: datetime) -> Call:
    return Call(
        id=call_id, direction="inbound", from_number="+15550001", to_number="+15550002",
        agent="fixture", engine="fixture", status="initiated", started_at=started_at,
    )


async def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(sqlite_db_url: str) -> None:
    engine = create_engine_for(sqlite_db_url, sqlite_busy_timeout_ms=1234)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 1234
    finally:
        await engine.dispose()


async def test_sqlite_transactions_take_the_write_lock_at_begin(sqlite_db_url: str) -> None:
    """BEGIN IMMEDIATE: a second writer waits (then fails) at BEGIN, not mid-transaction;
    a reader that asks for a deferred BEGIN is not blocked."""
    first = create_engine_for(sqlite_db_url)
    second = create_engine_for(sqlite_db_url, sqlite_busy_timeout_ms=50)
    try:
        async with first.begin() as holder:
            await holder.execute(text("SELECT 1"))  # no write yet, lock held anyway
            with pytest.raises(sa_exc.OperationalError, match="locked"):
                async with second.begin() as conn:
                    await conn.execute(text("SELECT 1"))
            reader = second.execution_options(sqlite_begin="DEFERRED")
            async with reader.begin() as conn:
                assert (await conn.execute(text("SELECT count(*) FROM calls"))).scalar() == 0
    finally:
        await first.dispose()
        await second.dispose()


async def test_timestamps_are_stored_utc_and_come_back_aware(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    local = datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=CEST)
    async with db_sessions.begin() as s:
        s.add(_call("c1", local))
    async with db_sessions() as s:
        back = (await s.scalars(select(Call))).one().started_at
    assert back == local
    assert back.tzinfo is not None and back.utcoffset() == timedelta(0)
    assert (back.hour, back.microsecond) == (12, 123456)


async def test_naive_timestamps_are_refused(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(sa_exc.StatementError, match="naive datetime"):
        async with db_sessions.begin() as s:
            s.add(_call("c1", datetime(2026, 3, 1, 12, 0)))


async def test_sessions_do_not_expire_on_commit(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db_sessions.begin() as s:
        call = _call("c1", datetime(2026, 3, 1, tzinfo=timezone.utc))
        s.add(call)
    assert call.status == "initiated"  # no lazy reload after commit


async def test_create_engine_for_takes_settings(db_url: str) -> None:
    engine = create_engine_for(Settings(database=DatabaseSettings(url=db_url)))
    try:
        async with make_sessionmaker(engine)() as s:
            assert (await s.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_sync_url_derives_the_migration_driver() -> None:
    assert sync_url("sqlite+aiosqlite:///var/x.db").drivername == "sqlite"
    assert sync_url("sqlite:///var/x.db").drivername == "sqlite"
    assert sync_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert sync_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError):
        sync_url("mysql://u@h/db")


def test_sqlite_path() -> None:
    assert str(sqlite_path("sqlite+aiosqlite:///var/callagent.db")) == "var/callagent.db"
    assert sqlite_path("sqlite+aiosqlite://") is None
    assert sqlite_path("postgresql+psycopg://u@h/db") is None


def test_public_names_are_pinned() -> None:
    from callagent.call import recorder
    from callagent.compliance import audit
    from callagent.store import db, models, queries

    assert sorted(db.__all__) == sorted([
        "PROJECT_ROOT", "alembic_config", "create_engine_for", "make_sessionmaker", "sqlite_path",
        "sync_url", "upgrade"])
    assert sorted(queries.__all__) == sorted([
        "AUDIT_LOCK_KEY", "TERMINAL_STATUSES", "UnknownCall", "append_audit", "apply_records",
        "audit_head", "verify_audit"])
    assert sorted(audit.__all__) == sorted([
        "GENESIS", "AuditRow", "VerifyResult", "canonical_content", "canonical_details",
        "event_hash", "verify_chain"])
    assert sorted(recorder.__all__) == ["Recorder", "RecorderClosed", "is_unavailable"]
    assert sorted(models.__all__) == sorted([
        "NAMING_CONVENTION", "AmdVerdict", "AuditCheckpoint", "AuditEvent", "Base", "Call",
        "CallMetric", "CallStatusEvent", "ToolCall", "Turn", "UTCDateTime", "Campaign", "Contact", "CallAttempt", "DncNumber"])
    for module in (db, queries, audit, recorder, models):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
