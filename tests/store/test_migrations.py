"""Migrations run on SQLite and PostgreSQL, up and down, and match the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from callagent.store.db import PROJECT_ROOT, alembic_config, sync_url, upgrade
from callagent.store.models import Base

TABLES = {"calls", "turns", "tool_calls", "call_metrics", "call_status_events", "audit_events"}


def _sync_engine(url: str) -> Engine:
    return create_engine(sync_url(url), poolclass=NullPool)


def _tables(url: str) -> set[str]:
    eng = _sync_engine(url)
    try:
        with eng.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        eng.dispose()


def _pg_triggers(url: str) -> set[str]:
    eng = _sync_engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(
                text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass "
                     "AND NOT tgisinternal")
            )
            return {r[0] for r in rows}
    finally:
        eng.dispose()


def test_upgrade_creates_the_schema_and_downgrade_removes_it(empty_db_url: str, db_kind: str) -> None:
    upgrade(empty_db_url)
    assert TABLES <= _tables(empty_db_url)
    if db_kind == "postgresql":
        assert _pg_triggers(empty_db_url) == {"audit_events_append_only", "audit_events_no_truncate"}

    command.downgrade(alembic_config(empty_db_url), "base")
    assert _tables(empty_db_url) == {"alembic_version"}

    upgrade(empty_db_url)  # and up again from empty
    assert TABLES <= _tables(empty_db_url)


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    # `alembic check`: autogenerate finds nothing to do against the migrated database
    command.check(alembic_config(db_url))


def test_constraints_have_convention_names(db_url: str) -> None:
    eng = _sync_engine(db_url)
    try:
        with eng.connect() as conn:
            insp = inspect(conn)
            assert insp.get_pk_constraint("calls")["name"] == "pk_calls"
            assert {u["name"] for u in insp.get_unique_constraints("turns")} == {"uq_turns_call_id_seq"}
            assert {u["name"] for u in insp.get_unique_constraints("call_status_events")} == {
                "uq_call_status_events_call_sid_sequence"
            }
            assert {f["name"] for f in insp.get_foreign_keys("turns")} == {"fk_turns_call_id_calls"}
            assert "ix_audit_events_call_id" in {i["name"] for i in insp.get_indexes("audit_events")}
    finally:
        eng.dispose()


def test_every_model_table_is_migrated(db_url: str) -> None:
    assert set(Base.metadata.tables) <= _tables(db_url)


def test_upgrade_works_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path}/elsewhere/callagent.db"
    upgrade(url)
    assert TABLES <= _tables(url)


def _alembic_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(PROJECT_ROOT / "alembic.ini"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_alembic_cli_takes_x_url_and_falls_back_to_the_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLAGENT_")}

    x_url = f"sqlite+aiosqlite:///{tmp_path}/x.db"
    done = _alembic_cli(["-x", f"url={x_url}", "upgrade", "head"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert TABLES <= _tables(x_url)

    settings_url = f"sqlite+aiosqlite:///{tmp_path}/from-settings.db"
    env |= {"CALLAGENT_DATABASE_URL": settings_url, "CALLAGENT_TWILIO_AUTH_TOKEN": "t"}
    done = _alembic_cli(["upgrade", "head"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert TABLES <= _tables(settings_url)
