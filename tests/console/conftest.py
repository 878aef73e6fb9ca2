"""A live service with a seeded call, operators of every role, and an HTTP client.

Calls are written through the recorder's own write path (``store.queries.apply_records``)
into the migrated SQLite or PostgreSQL database of the ``db_url`` fixture.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from callagent.call.records import (
    AuditRecord,
    CallClosed,
    CallOpened,
    CallStreamStarted,
    Record,
    ToolCallRecord,
    TurnRecord,
)
from callagent.console.operator_store import add_operator
from callagent.console.roles import Role
from callagent.store.db import make_sessionmaker
from callagent.store.models import AuditEvent
from callagent.store.queries import apply_records
from tests.e2e.conftest import LiveService, running_service

PASSWORD = "correct horse battery"
PHRASE = "my parcel never arrived"


@dataclass(frozen=True)
class Seeded:
    call_id: str
    other_call_id: str


def call_records(call_id: str, started: datetime, *, caller_says: str, n: int = 0) -> list[Record]:
    """One inbound call: caller asks, agent answers with a tool call, caller barges in."""
    sid = "CA" + uuid.uuid4().hex
    return [
        CallOpened(call_id, "inbound", "customer_service", "fixture", f"+1415555{n:04d}",
                   "+15005550001", sid, started),
        CallStreamStarted(call_id, "MZ" + uuid.uuid4().hex, started + timedelta(seconds=1)),
        AuditRecord("call.started", "system", started, call_id, {"direction": "inbound"}),
        TurnRecord(call_id, 1, "caller", caller_says, 500.0, 2600.0),
        ToolCallRecord(call_id, "tc1", "order_status", '{"order_id": "A1001"}',
                       '{"status": "shipped"}', "ok", started + timedelta(seconds=3), 42.0),
        TurnRecord(call_id, 2, "agent", "I am sorry to hear that. Your order A1001 shipped on "
                   "Monday and should arrive tomorrow morning", 3300.0, 4700.0, interrupted=True,
                   heard_text="I am sorry to hear that. Your order", heard_ms=1400.0,
                   response_latency_ms=700.0),
        TurnRecord(call_id, 3, "caller", "can you send me the tracking link", 4400.0, 6000.0),
        TurnRecord(call_id, 4, "agent", "Yes, I have sent it by text message.", 6650.0, 8500.0,
                   heard_text="Yes, I have sent it by text message.", heard_ms=1850.0,
                   response_latency_ms=650.0),
        CallClosed(call_id, started + timedelta(seconds=10), "caller hung up"),
    ]


async def seed_calls(db_url: str) -> Seeded:
    from callagent.store.db import create_engine_for

    engine = create_engine_for(db_url)
    try:
        sessions = make_sessionmaker(engine)
        now = datetime.now(UTC)
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        async with sessions.begin() as s:
            await apply_records(s, call_records(second, now - timedelta(minutes=30),
                                                caller_says="I want to change my address", n=2))
            await apply_records(s, call_records(first, now - timedelta(minutes=10),
                                                caller_says=f"Hello, {PHRASE} yesterday", n=1))
            for role in Role:
                await add_operator(s, role.value, PASSWORD, role, now=now)
        return Seeded(first, second)
    finally:
        await engine.dispose()


@pytest.fixture
async def console(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[LiveService, Seeded]]:
    seeded = await seed_calls(db_url)
    async with running_service(db_url, tmp_path) as service:
        yield service, seeded


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/console/login")
    return await client.post("/console/login", data={
        "username": username, "password": password, "csrf_token": csrf_of(page.text),
        "next": "/console/"})


@contextlib.asynccontextmanager
async def logged_in(service: LiveService, username: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        response = await login(client, username)
        assert response.status_code == 303, response.text
        yield client


async def audit_actions(service: LiveService) -> list[tuple[str, str, str | None]]:
    async with make_sessionmaker(service.db)() as s:
        rows = await s.execute(select(AuditEvent.actor, AuditEvent.action, AuditEvent.call_id)
                               .order_by(AuditEvent.seq))
        return [(a, b, c) for a, b, c in rows.all()]
