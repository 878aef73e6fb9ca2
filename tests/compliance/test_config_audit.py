"""Configuration changes are audited at each start, secrets never in clear."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from callagent.app import create_app
from callagent.compliance.config_audit import config_event, config_snapshot
from callagent.config import (
    DatabaseSettings,
    RecorderSettings,
    RedactionSettings,
    Settings,
    TwilioSettings,
    validate,
)
from callagent.engines.base import CallContext, Engine
from callagent.engines.fixture import FixtureEngine, FixtureScript
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import AuditEvent

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TOKEN = "f" * 32


def fixture_engines(settings: Settings) -> Callable[[CallContext], Engine]:
    script = FixtureScript.packaged()
    return lambda call: FixtureEngine(script)


def test_the_snapshot_holds_every_setting_and_no_secret(tmp_path: Path) -> None:
    (tmp_path / "sales.toml").write_text('name = "sales"\n')
    snap = config_snapshot(Settings(twilio=TwilioSettings(auth_token=TOKEN)), tmp_path)
    assert snap["redaction.email"] == "false"
    assert snap["database.url"].startswith("sqlite")
    assert snap["twilio.auth_token"].startswith("sha256:") and TOKEN not in json.dumps(snap)
    assert snap["audit.checkpoint_key"] == "unset"
    assert snap["agents/sales.toml"].startswith("sha256:")


def test_first_start_unchanged_and_changed() -> None:
    before = config_snapshot(Settings())
    first = config_event(None, before, now=NOW)
    assert (first.action, first.details["first"]) == ("config.loaded", True)
    assert config_event(before, before, now=NOW).action == "config.loaded"

    after = config_snapshot(Settings(redaction=RedactionSettings(email=True),
                                     twilio=TwilioSettings(auth_token=TOKEN)))  # fmt: skip
    changed = config_event(before, after, now=NOW)
    assert changed.action == "config.changed"
    assert changed.details["changes"]["redaction.email"] == ["false", "true"]
    # A rotated secret shows as changed fingerprints, never as its value.
    old, new = changed.details["changes"]["twilio.auth_token"]
    assert old == "unset" and new.startswith("sha256:") and TOKEN not in json.dumps(changed.details)


async def test_each_start_of_the_service_is_audited(db_url: str, tmp_path: Path) -> None:
    base = Settings(
        twilio=TwilioSettings(auth_token=TOKEN),
        database=DatabaseSettings(url=db_url),
        recorder=RecorderSettings(journal_dir=str(tmp_path / "journal"), flush_interval_ms=50),
    )
    validate(base)
    emailing = dataclasses.replace(base, redaction=RedactionSettings(email=True))
    for settings in (base, base, emailing):
        app = create_app(settings, fixture_engines)
        async with app.router.lifespan_context(app):
            pass  # the recorder flushes on close

    db = create_engine_for(db_url)
    try:
        async with make_sessionmaker(db)() as s:
            rows = (
                await s.execute(select(AuditEvent).where(AuditEvent.action.like("config.%"))
                                .order_by(AuditEvent.seq))  # fmt: skip
            ).scalars().all()
    finally:
        await db.dispose()
    assert [r.action for r in rows] == ["config.loaded", "config.loaded", "config.changed"]
    assert json.loads(rows[2].details)["changes"] == {"redaction.email": ["false", "true"]}
