"""`callagent audit verify` names the first broken row or the missing tail, on both databases.

Logs are built with the real chain functions and bulk-inserted; tampering goes
behind the application's back (on PostgreSQL as superuser, triggers disabled).
The CLI runs in-process through ``callagent.cli.main`` (exit codes 0/1/2).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from callagent import cli
from callagent.compliance.audit import (
    GENESIS,
    canonical_content,
    canonical_details,
    event_hash,
)
from callagent.compliance.checkpoint import sign
from tests.conftest import pg_conninfo
from tests.store.test_audit import Row

T0 = datetime(2026, 5, 4, 9, 0, 0, tzinfo=timezone.utc)
KEY = "test-checkpoint-key-0123456789abcdef"
OTHER_KEY = "another-checkpoint-key-0123456789abcdef"
COLUMNS = ("seq", "at", "actor", "action", "call_id", "details", "prev_hash", "hash")


def build_chain(n: int, *, first: int = 1, prev: str = GENESIS, tag: str = "") -> list[Row]:
    """``n`` events hashed exactly as ``store.queries.append_audit`` hashes them."""
    rows: list[Row] = []
    for seq in range(first, first + n):
        at = T0 + timedelta(milliseconds=7 * seq)
        actor = f"operator:{seq % 13}" if seq % 3 else "system"
        action = ("transcript.viewed", "recording.played", "call.received")[seq % 3]
        call_id = None if seq % 11 == 0 else f"call-{seq // 8}"
        details = canonical_details({"n": seq, "ip": "10.0.0.7", "tag": tag})
        digest = event_hash(prev, canonical_content(seq, at, actor, action, call_id, details))
        rows.append(Row(seq, at, actor, action, call_id, details, prev, digest))
        prev = digest
    return rows


def insert_rows(url: str, kind: str, rows: list[Row]) -> None:
    """Bulk insert in one statement per database (executemany / COPY)."""
    if kind == "sqlite":
        lite = sqlite3.connect(_sqlite_path(url))
        with lite:
            lite.executemany(
                f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.seq, r.at.strftime("%Y-%m-%d %H:%M:%S.%f"), r.actor, r.action, r.call_id,
                  r.details, r.prev_hash, r.hash) for r in rows],
            )
        lite.close()
        return
    with psycopg.connect(pg_conninfo(url)) as pg:
        with pg.cursor().copy(f"COPY audit_events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r.seq, r.at, r.actor, r.action, r.call_id, r.details,
                                r.prev_hash, r.hash))


def _sqlite_path(url: str) -> str:
    path = make_url(url).database
    assert path
    return path


def tamper(url: str, kind: str, statements: list[str]) -> None:
    """Change the audit tables as an attacker with database access would."""
    if kind == "sqlite":
        lite = sqlite3.connect(_sqlite_path(url))
        with lite:
            for sql in statements:
                lite.execute(sql)
        lite.close()
        return
    with psycopg.connect(pg_conninfo(url), autocommit=True) as pg:  # superuser
        with pg.transaction():
            for table in ("audit_events", "audit_checkpoints"):
                pg.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER".encode())
            for sql in statements:
                pg.execute(sql.encode())
            for table in ("audit_events", "audit_checkpoints"):
                pg.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER".encode())


@pytest.fixture
def audit_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> Path:
    """Settings for the CLI: this test's database and checkpoint dir, the test key."""
    for name in [n for n in os.environ if n.startswith("CALLAGENT_")]:
        if name != "CALLAGENT_TEST_PG_URL":
            monkeypatch.delenv(name)
    config = tmp_path / "callagent.toml"
    config.write_text("")
    checkpoint_dir = tmp_path / "audit"
    monkeypatch.setenv("CALLAGENT_CONFIG", str(config))
    monkeypatch.setenv("CALLAGENT_DATABASE_URL", db_url)
    monkeypatch.setenv("CALLAGENT_AUDIT_CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.setenv("CALLAGENT_AUDIT_CHECKPOINT_KEY", KEY)
    return checkpoint_dir


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["audit", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def checkpoint_now(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "checkpoint")
    assert code == 0, err
    assert out.startswith("checkpoint written: seq ")


# ---- an untouched log -----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_chain() -> list[Row]:
    return build_chain(100_000)


def test_an_untouched_log_of_100000_events_passes(
    big_chain: list[Row], db_url: str, db_kind: str, audit_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    insert_rows(db_url, db_kind, big_chain)
    checkpoint_now(capsys)
    code, out, err = run(capsys, "verify")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "audit log OK: 100000 events (seq 1 to 100000)"
    assert lines[1] == f"head: seq 100000 hash {big_chain[-1].hash}"
    assert lines[2].startswith("checkpoints: 2 read, 2 validly signed; newest: checkpoint at "
                               "seq 100000 (signed at ")


def test_an_empty_log_passes(audit_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "checkpoint")
    assert (code, out) == (0, "audit log is empty: nothing to checkpoint\n")
    code, out, _ = run(capsys, "verify")
    assert (code, out.splitlines()[0]) == (0, "audit log OK: empty (no events)")


# ---- tampering with rows ---------------------------------------------------------------

N = 30  # rows in the small logs; verified 7 at a time so breaks straddle chunks


Tampering = Callable[[str, str], None]  # (url, kind)


def statements(*sql: str) -> Tampering:
    return lambda url, kind: tamper(url, kind, list(sql))


def insert_forged_row(url: str, kind: str) -> None:
    """Slip a forged event in at seq 12, correctly hashed onto row 11; later rows renumbered."""
    tamper(url, kind, ["UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 12",
                       "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1012"])
    good = build_chain(11)
    insert_rows(url, kind, build_chain(1, first=12, prev=good[-1].hash, tag="forged"))


def rewrite_from_row_12(url: str, kind: str) -> None:
    """Edit row 12 and recompute every later hash: a chain that verifies on its own."""
    tamper(url, kind, ["DELETE FROM audit_events WHERE seq >= 12"])
    good = build_chain(11)
    insert_rows(url, kind, build_chain(N - 11, first=12, prev=good[-1].hash, tag="rewritten"))


EDITED = "row seq 12: hash does not match its content: the row was edited"
RELINKED = ("row seq {}: prev_hash does not match the previous row's hash: "
            "a row was inserted, deleted or reordered before it")
ROW_TAMPERING: dict[str, tuple[Tampering, str]] = {
    "edited-details": (
        statements("UPDATE audit_events SET details = '{\"n\":1000}' WHERE seq = 12"), EDITED
    ),
    "edited-actor": (
        statements("UPDATE audit_events SET actor = 'operator:99' WHERE seq = 12"), EDITED
    ),
    "edited-details-not-json": (
        statements("UPDATE audit_events SET details = 'not json' WHERE seq = 12"),
        "row seq 12: content not canonicalizable: ",
    ),
    "edited-action": (
        statements("UPDATE audit_events SET action = 'consent.given' WHERE seq = 12"), EDITED
    ),
    "deleted-middle-row": (
        statements("DELETE FROM audit_events WHERE seq = 12"),
        "row seq 13: seq gap, seq 12 missing: rows were deleted",
    ),
    "deleted-first-rows": (
        statements("DELETE FROM audit_events WHERE seq <= 3"),
        "row seq 4: seq gap, seq 1 to 3 missing: rows were deleted",
    ),
    "inserted-forged-row": (insert_forged_row, RELINKED.format(13)),
    "reordered": (
        statements("UPDATE audit_events SET seq = 1000 WHERE seq = 12",
                   "UPDATE audit_events SET seq = 12 WHERE seq = 13",
                   "UPDATE audit_events SET seq = 13 WHERE seq = 1000"),
        RELINKED.format(12),
    ),
    "rewritten-and-rehashed": (rewrite_from_row_12, "rewritten: checkpoint at seq 30 (signed at "),
}

EDIT_TIME = {
    "sqlite": "UPDATE audit_events SET at = '2026-05-04 09:00:01.000000' WHERE seq = 12",
    "postgresql": "UPDATE audit_events SET at = at + interval '1 second' WHERE seq = 12",
}


@pytest.fixture
def small_log(db_url: str, db_kind: str, audit_env: Path,
              capsys: pytest.CaptureFixture[str]) -> list[Row]:
    rows = build_chain(N)
    insert_rows(db_url, db_kind, rows)
    checkpoint_now(capsys)
    code, out, _ = run(capsys, "verify", "--chunk-size", "7")
    assert code == 0, out
    return rows


@pytest.mark.parametrize("how", list(ROW_TAMPERING))
def test_tampered_rows_are_named(
    small_log: list[Row], db_url: str, db_kind: str, how: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    change, expected = ROW_TAMPERING[how]
    change(db_url, db_kind)
    code, out, _ = run(capsys, "verify", "--chunk-size", "7")
    assert code == 1, out
    assert out.splitlines()[0].startswith(f"audit log BROKEN: {expected}"), out


def test_an_edited_time_is_named(
    small_log: list[Row], db_url: str, db_kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(db_url, db_kind, [EDIT_TIME[db_kind]])
    code, out, _ = run(capsys, "verify", "--chunk-size", "7")
    assert code == 1
    assert out.splitlines()[0] == (
        "audit log BROKEN: row seq 12: hash does not match its content: the row was edited"
    )
    assert f"last good row: seq 11 hash {small_log[10].hash}" in out


def test_a_truncated_log_is_caught_only_by_the_checkpoint(
    small_log: list[Row], db_url: str, db_kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(db_url, db_kind, ["DELETE FROM audit_events WHERE seq > 25"])
    code, out, _ = run(capsys, "verify", "--no-checkpoint")
    assert code == 0  # a shorter chain is still a chain
    assert "warning: checkpoints not checked (--no-checkpoint)" in out
    code, out, _ = run(capsys, "verify")
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("audit log BROKEN: missing tail: checkpoint at seq 30 (signed at ")
    assert first.endswith("but the log ends at seq 25")
    assert "hash chain intact: 25 events" in out


def test_an_emptied_log_is_caught(
    small_log: list[Row], db_url: str, db_kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "TRUNCATE audit_events" if db_kind == "postgresql" else "DELETE FROM audit_events"
    tamper(db_url, db_kind, [sql])
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert out.splitlines()[0].endswith("but the log ends at seq 0")


def test_a_cut_tail_replaced_by_forged_rows_is_caught(
    small_log: list[Row], db_url: str, db_kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows 26-30 removed and 10 well-chained forged rows appended: longer than the checkpoint."""
    tamper(db_url, db_kind, ["DELETE FROM audit_events WHERE seq > 25"])
    insert_rows(db_url, db_kind, build_chain(10, first=26, prev=small_log[24].hash, tag="f"))
    code, out, _ = run(capsys, "verify")
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("audit log BROKEN: rewritten: checkpoint at seq 30 (signed at ")
    assert first.endswith("the log was rewritten at or before seq 30")


@pytest.mark.parametrize("kept_in", ["file", "table"])
def test_a_checkpoint_in_either_place_is_enough(
    small_log: list[Row], db_url: str, db_kind: str, audit_env: Path, kept_in: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if kept_in == "table":
        (audit_env / "checkpoints.jsonl").unlink()
        tamper(db_url, db_kind, ["DELETE FROM audit_events WHERE seq > 20"])
    else:
        tamper(db_url, db_kind, ["DELETE FROM audit_checkpoints",
                                 "DELETE FROM audit_events WHERE seq > 20"])
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert out.splitlines()[0].endswith("but the log ends at seq 20")
    where = "checkpoints.jsonl line 1" if kept_in == "file" else "audit_checkpoints id 1"
    assert where in out.splitlines()[0]


# ---- tampering with checkpoints ----------------------------------------------------------


def _lines(audit_env: Path) -> list[str]:
    return (audit_env / "checkpoints.jsonl").read_text().splitlines()


def test_a_forged_checkpoint_line_is_tampering(
    small_log: list[Row], audit_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = json.loads(_lines(audit_env)[0])
    forged = {**real, "seq": 31, "sig": "0" * 64}  # our key id, made-up signature
    with open(audit_env / "checkpoints.jsonl", "a") as f:
        f.write(json.dumps(forged) + "\n")
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert out.splitlines()[0] == (
        f"audit log BROKEN: {audit_env}/checkpoints.jsonl line 2: signature does not match "
        "its content (forged or altered)"
    )
    assert "checkpoints: 3 read, 2 validly signed, 1 bad" in out


def test_an_altered_checkpoint_line_is_tampering(
    small_log: list[Row], audit_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = json.loads(_lines(audit_env)[0])
    (audit_env / "checkpoints.jsonl").write_text(json.dumps({**real, "seq": 25}) + "\n")
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert "line 1: signature does not match its content (forged or altered)" in out


def test_a_forged_checkpoint_row_is_tampering(
    small_log: list[Row], db_url: str, db_kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """INSERT is allowed (the table is append-only, not read-only); a forged row still shows."""
    bogus = sign(OTHER_KEY.encode(), 40, "ab" * 32, T0)
    tamper(db_url, db_kind, [(
        "INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature) "
        f"SELECT 40, '{bogus.hash}', at, '{bogus.key_id}', '{bogus.signature}' "
        "FROM audit_checkpoints WHERE id = 1"
    )])
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert out.splitlines()[0].startswith(
        "audit log BROKEN: audit_checkpoints id 2: signed with another key"
    )


def test_a_malformed_line_is_tampering_but_a_torn_last_line_is_a_warning(
    small_log: list[Row], audit_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = audit_env / "checkpoints.jsonl"
    good = path.read_text()
    path.write_text(good + '{"seq": 3')  # a crash mid-append
    code, out, _ = run(capsys, "verify")
    assert code == 0, out
    assert "warning: " in out and "line 2: torn last line ignored" in out
    path.write_text('{"seq": 3}\n' + good)
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert "line 1: malformed checkpoint" in out.splitlines()[0]


def test_the_wrong_key_is_reported(
    small_log: list[Row], audit_env: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CALLAGENT_AUDIT_CHECKPOINT_KEY", OTHER_KEY)
    code, out, _ = run(capsys, "verify")
    assert code == 1
    first = out.splitlines()[0]
    assert "signed with another key" in first
    assert "CALLAGENT_AUDIT_CHECKPOINT_KEY is not the key the service signs with" in first
    assert "no validly signed checkpoint" in out


def test_a_log_without_any_checkpoint_fails(
    db_url: str, db_kind: str, audit_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_rows(db_url, db_kind, build_chain(5))
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert out.splitlines()[0].startswith("audit log BROKEN: no validly signed checkpoint in ")


# ---- missing key, bad usage ---------------------------------------------------------------


def test_a_missing_key_is_a_configuration_error(
    small_log: list[Row], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALLAGENT_AUDIT_CHECKPOINT_KEY")
    code, out, err = run(capsys, "verify")
    assert (code, out) == (2, "")
    assert "CALLAGENT_AUDIT_CHECKPOINT_KEY is not set" in err
    assert "--no-checkpoint" in err
    code, out, err = run(capsys, "checkpoint")
    assert code == 2 and "there is no key to sign with" in err
    code, out, _ = run(capsys, "verify", "--no-checkpoint")
    assert code == 0 and out.startswith(f"audit log OK: {N} events")


def test_a_short_key_is_a_configuration_error(
    small_log: list[Row], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLAGENT_AUDIT_CHECKPOINT_KEY", "short")
    code, _, err = run(capsys, "verify")
    assert code == 2 and "audit.checkpoint_key: expected at least 32 characters" in err


def test_verify_needs_no_twilio_token(
    small_log: list[Row], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALLAGENT_TWILIO_AUTH_TOKEN", raising=False)
    code, out, _ = run(capsys, "verify")
    assert code == 0, out


@pytest.fixture
def no_db_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CALLAGENT_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("CALLAGENT_AUDIT_CHECKPOINT_KEY", KEY)
    monkeypatch.setenv("CALLAGENT_AUDIT_CHECKPOINT_DIR", str(tmp_path / "audit"))
    yield


def test_a_missing_or_unmigrated_database_is_a_usage_error(
    no_db_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path}/nothing-here.db"
    code, _, err = run(capsys, "verify", "--url", missing)
    assert code == 2 and "no database at" in err
    assert not (tmp_path / "nothing-here.db").exists()
    sqlite3.connect(tmp_path / "empty.db").close()
    code, _, err = run(capsys, "verify", "--url", f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    assert code == 2 and "database error" in err and "callagent db upgrade" in err
    code, _, err = run(capsys, "verify", "--chunk-size", "0",
                       "--url", f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    assert code == 2 and "--chunk-size" in err


def test_a_rewrite_is_placed_between_two_checkpoints(
    db_url: str, db_kind: str, audit_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = build_chain(N)
    for first in (0, 10, 20):  # checkpoints at seq 10, 20 and 30
        insert_rows(db_url, db_kind, rows[first : first + 10])
        checkpoint_now(capsys)
    rewrite_from_row_12(db_url, db_kind)
    code, out, _ = run(capsys, "verify", "--chunk-size", "7")
    assert code == 1
    first_line = out.splitlines()[0]
    assert first_line.startswith("audit log BROKEN: rewritten: checkpoint at seq 20 (signed at ")
    assert first_line.endswith("the log was rewritten at or before seq 20 and after seq 10 "
                               "(the last checkpoint it still matches)")
    assert "  also: ... and 1 more checkpoints do not match" in out  # the one at seq 30
