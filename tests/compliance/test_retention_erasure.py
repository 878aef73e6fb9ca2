"""`callagent retention run` and `callagent erase --phone`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.call.apply import apply_all
from callagent.call.guard import number_digest
from callagent.call.records import (
    CallClosed,
    CallOpened,
    DncAdded,
    Record,
    RecordingSaved,
    ToolCallRecord,
    TurnRecord,
)
from callagent.compliance.commands import erase_main, retention_main
from callagent.compliance.erasure import BadPhone, erase_phone, parse_e164
from callagent.compliance.retention import PURGED, run_retention
from callagent.config import RetentionSettings
from callagent.store.models import AuditEvent, Call, Campaign, Contact, DncNumber, ToolCall, Turn
from callagent.store.queries import verify_audit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PHONE = "+14155550100"
OTHER = "+12125550100"
CARD = "4111111111111111"


async def add_call(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, call_id: str, *,
    age_days: int, caller: str,
) -> Path:
    at = NOW - timedelta(days=age_days)
    wav = tmp_path / "recordings" / f"{call_id}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    wav.write_bytes(b"RIFF....WAVE")
    records: list[Record] = [
        CallOpened(call_id, "inbound", "customer_service", "pipeline", caller, "+15005550001",
                   f"CA{call_id:0>32}", at),
        TurnRecord(call_id, 1, "caller", "my order is 45729", 0.0, 900.0),
        TurnRecord(call_id, 2, "agent", "It has shipped.", 1000.0, 2000.0),
        ToolCallRecord(call_id, "t1", "lookup_order", '{"order_number": "45729"}',
                       '{"status": "shipped"}', "ok", at, 12.5),
        RecordingSaved(call_id, str(wav), "one-party"),
        CallClosed(call_id, at + timedelta(minutes=3), "completed"),
    ]
    async with sessions.begin() as s:
        await apply_all(s, records, [None] * len(records))
    return wav


async def test_retention_purges_each_kind_by_its_own_age(
    db_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    old_wav = await add_call(db_sessions, tmp_path, "old", age_days=40, caller=PHONE)
    mid_wav = await add_call(db_sessions, tmp_path, "mid", age_days=20, caller=OTHER)
    settings = RetentionSettings(recordings_days=30, transcripts_days=10, tool_payloads_days=0)
    report = await run_retention(db_sessions, settings, NOW)
    assert report.counts() == {"recordings": 1, "transcripts": 4, "tool_payloads": 0}
    assert report.unremoved == [] and not old_wav.exists() and mid_wav.exists()
    async with db_sessions() as s:
        calls = {c.id: c for c in (await s.execute(select(Call))).scalars()}
        turns = (await s.execute(select(Turn))).scalars().all()
        tools = (await s.execute(select(ToolCall))).scalars().all()
        [event] = (await s.execute(select(AuditEvent))).scalars().all()
        assert (await verify_audit(s)).ok
    assert calls["old"].recording_path is None and calls["mid"].recording_path == str(mid_wav)
    assert turns == [] and all(t.arguments != PURGED for t in tools)  # 0 days: kept forever
    assert event.action == "retention.purged" and event.actor == "system:retention"
    assert json.loads(event.details)["recordings"] == 1
    again = await run_retention(db_sessions, RetentionSettings(tool_payloads_days=1), NOW)
    assert again.counts() == {"recordings": 0, "transcripts": 0, "tool_payloads": 2}
    async with db_sessions() as s:
        tools = (await s.execute(select(ToolCall))).scalars().all()
    assert {(t.arguments, t.result, t.name) for t in tools} == {(PURGED, PURGED, "lookup_order")}


async def test_erasure_removes_one_persons_data_and_keeps_a_redacted_audit_entry(
    db_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    wav = await add_call(db_sessions, tmp_path, "theirs", age_days=1, caller=PHONE)
    other_wav = await add_call(db_sessions, tmp_path, "others", age_days=1, caller=OTHER)
    async with db_sessions.begin() as s:
        s.add(Campaign(key="spring", name="Spring", agent_profile="appointment_reminder",
                       caller_id="+15005550006", state="running", max_concurrent_calls=1,
                       spec="{}", created_at=NOW))
        await s.flush()
        campaign_id = (await s.execute(select(Campaign.id))).scalar_one()
        for i, number in enumerate((PHONE, OTHER)):
            s.add(Contact(campaign_id=campaign_id, dedupe_key=f"k{i}", e164=number, name=f"Person {i}",
                          timezones='["America/Los_Angeles"]', consent_type="PEC", consent_at=NOW,
                          fields='{"note": "x"}', state="pending", attempts=0, next_attempt_at=NOW))
        await apply_all(s, [DncAdded(PHONE, NOW, "theirs")], [None])
    report = await erase_phone(db_sessions, " +1 415 555 0100 ", NOW)
    assert report.counts() == {"calls": 1, "turns": 2, "tool_calls": 1, "recordings": 1,
                               "contacts": 1, "attempts": 0, "dnc_kept": True}
    assert not wav.exists() and other_wav.exists()
    async with db_sessions() as s:
        calls = {c.id: c for c in (await s.execute(select(Call))).scalars()}
        turns = (await s.execute(select(Turn.call_id))).scalars().all()
        tools = {t.call_id: t for t in (await s.execute(select(ToolCall))).scalars()}
        contacts = {c.dedupe_key: c for c in (await s.execute(select(Contact))).scalars()}
        dnc = (await s.execute(select(DncNumber.e164))).scalars().all()
        events = (await s.execute(select(AuditEvent))).scalars().all()
        assert (await verify_audit(s)).ok
    assert calls["theirs"].from_number == "erased" and calls["theirs"].recording_path is None
    assert calls["others"].from_number == OTHER and set(turns) == {"others"}
    assert tools["theirs"].arguments == PURGED and tools["others"].arguments != PURGED
    assert (contacts["k0"].e164, contacts["k0"].name, contacts["k0"].state) == ("erased", "", "skipped")
    assert contacts["k1"].e164 == OTHER and contacts["k1"].name == "Person 1"
    assert dnc == [PHONE]  # an opt-out outlives the erasure
    [event] = events
    details = json.loads(event.details)
    assert event.action == "erasure.completed" and details["number"] == number_digest(PHONE)
    assert PHONE not in event.details and "4155550100" not in event.details


@pytest.mark.parametrize(
    ("phone", "expected"),
    [("4155550100", "must start with + and the country code"), ("+1 415", "not a possible number"),
     ("+abc", "expected an E.164 phone number"), ("", "must start with +")],
)
def test_a_bad_number_is_refused_precisely(phone: str, expected: str) -> None:
    with pytest.raises(BadPhone, match=re.escape(expected)):
        parse_e164(phone)


async def test_a_bad_number_changes_nothing(
    db_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    wav = await add_call(db_sessions, tmp_path, "c1", age_days=1, caller=PHONE)
    with pytest.raises(BadPhone):
        await erase_phone(db_sessions, "415-555-0100", NOW)
    async with db_sessions() as s:
        assert (await s.execute(select(AuditEvent))).first() is None
        assert len((await s.execute(select(Turn))).all()) == 2
    assert wav.exists()


def test_the_commands_exit_codes(sqlite_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert erase_main("12345", url=sqlite_db_url) == 2
    assert "--phone: expected an E.164 phone number" in capsys.readouterr().err
    assert erase_main(PHONE, url=sqlite_db_url) == 0
    assert "erased: 0 calls" in capsys.readouterr().out
    assert retention_main(url=sqlite_db_url) == 0
    assert "purged: 0 recordings" in capsys.readouterr().out
    assert retention_main(url="sqlite+aiosqlite:////nonexistent/dir/x.db") == 2
    assert "database error" in capsys.readouterr().err
