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

TABLES = {"calls", "turns", "tool_calls", "call_metrics", "call_status_events", "audit_events",
          "amd_verdicts"}


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


def test_0006_moves_turn_metrics_and_amd_verdicts_and_back(empty_db_url: str) -> None:
    """Rows of the old shapes ("<name>@<turn id>" metrics, sequence -1 status events)
    land in the new ones on upgrade and return on downgrade."""
    cfg = alembic_config(empty_db_url)
    command.upgrade(cfg, "0005")
    sid = "CA" + "a" * 32
    eng = _sync_engine(empty_db_url)
    try:
        with eng.begin() as conn:
            conn.execute(text(
                "INSERT INTO calls (id, twilio_call_sid, direction, from_number, to_number, "
                "agent, engine, status, started_at) VALUES ('c1', :sid, 'outbound', '+1', '+2', "
                "'a', 'pipeline', 'completed', '2026-11-27 10:00:00')"), {"sid": sid})
            conn.execute(text(
                "INSERT INTO call_metrics (call_id, name, value) VALUES "
                "('c1', 'eos_to_audio_ms', 2.0), ('c1', 'eos_to_audio_ms@t1', 1.0), "
                "('c1', 'eos_to_audio_ms@t2', 2.0), ('c1', 'frames_in', 300.0)"))
            conn.execute(text(
                "INSERT INTO call_status_events (call_sid, sequence, status, at, answered_by) "
                "VALUES (:sid, -1, 'in-progress', '2026-11-27 10:00:05', 'machine_end_beep'), "
                "(:sid, 3, 'completed', '2026-11-27 10:01:00', NULL)"), {"sid": sid})
        command.upgrade(cfg, "0006")
        with eng.connect() as conn:
            metrics = conn.execute(text(
                "SELECT name, turn_id, value FROM call_metrics ORDER BY name, turn_id")).all()
            verdicts = conn.execute(text(
                "SELECT call_sid, answered_by, detection_ms FROM amd_verdicts")).all()
            sequences = conn.execute(text("SELECT sequence FROM call_status_events")).all()
        assert [tuple(r) for r in metrics] == [
            ("eos_to_audio_ms", "", 2.0), ("eos_to_audio_ms", "t1", 1.0),
            ("eos_to_audio_ms", "t2", 2.0), ("frames_in", "", 300.0)]
        assert [tuple(r) for r in verdicts] == [(sid, "machine_end_beep", None)]
        assert [r[0] for r in sequences] == [3]

        command.downgrade(cfg, "0005")
        with eng.connect() as conn:
            names = conn.execute(text("SELECT name FROM call_metrics ORDER BY name")).all()
            events = conn.execute(text(
                "SELECT sequence, status, answered_by FROM call_status_events "
                "ORDER BY sequence")).all()
        assert [r[0] for r in names] == [
            "eos_to_audio_ms", "eos_to_audio_ms@t1", "eos_to_audio_ms@t2", "frames_in"]
        assert [tuple(r) for r in events] == [
            (-1, "in-progress", "machine_end_beep"), (3, "completed", None)]
    finally:
        eng.dispose()


def test_call_metrics_are_unique_per_call_name_and_turn(db_url: str) -> None:
    eng = _sync_engine(db_url)
    try:
        with eng.connect() as conn:
            insp = inspect(conn)
            assert {u["name"] for u in insp.get_unique_constraints("call_metrics")} == {
                "uq_call_metrics_call_id_name_turn_id"}
            assert {u["name"] for u in insp.get_unique_constraints("amd_verdicts")} == {
                "uq_amd_verdicts_call_sid"}
    finally:
        eng.dispose()
