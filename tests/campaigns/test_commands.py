"""`callagent campaign create | import | start | pause | status`: through `callagent.cli.main`
(the same parser and code as the installed command), on SQLite and PostgreSQL, and once as a
real process. Bad settings and bad rows are refused precisely and lose nothing."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from callagent.campaigns.commands import ProgressBar, render_status
from callagent.campaigns.importer import ImportProgress
from callagent.campaigns.settings import CallingWindow, CampaignSpecError, Weekday
from callagent.campaigns.spec_input import parse_days, parse_duration, parse_window
from callagent.cli import main
from callagent.store.db import PROJECT_ROOT, sync_url
from callagent.store.models import AuditEvent, Campaign, Contact

CREATE = ["--name", "Renewals", "--agent", "appointment_reminder", "--caller-id",
          "+12125550100", "--purpose", "informational"]

GOOD_AND_BAD = """phone,name,timezone,consent_type,consent_at,plan
+12125550001,Ada,America/New_York,PEC,2026-01-01T10:00:00Z,gold
(212) 555-0002,Ben,,PEWC,2026-01-01T10:00:00Z,silver
not a number,Cy,,PEC,2026-01-01T10:00:00Z,gold
+12125550003,Di,Mars/Olympus,PEC,2026-01-01T10:00:00Z,gold
+12125550004,Ed,,PEC,2026-01-01,gold
+12125550001,Ada again,,PEC,2026-01-01T10:00:00Z,gold
+12125550005,Flo,,,,bronze
+12125550006,Gus,,maybe,2026-01-01T10:00:00Z,gold
+12125550007,Hal,America/Chicago,PEC,2026-01-01T10:00:00Z
"""
BAD_LINES = [
    ":4: phone number cannot be parsed: 'not a number': (1) The string supplied did not seem "
    "to be a phone number.",
    ":5: unknown time zone: 'Mars/Olympus'",
    ":6: bad consent timestamp (ISO 8601 date and time): '2026-01-01' has no time of day",
    ":7: duplicate phone number: +12125550001 already on line 2",
    ":9: unknown consent type (PEC or PEWC): 'maybe'",
    ":10: wrong number of fields: expected 6, got 5",
]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def sync_db(db_url: str) -> Iterator[Engine]:
    engine = create_engine(sync_url(db_url))
    yield engine
    engine.dispose()


def count(engine: Engine, model: type[Campaign] | type[Contact]) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def audit(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))


# --- create -----------------------------------------------------------------------------------

def test_create_stores_a_draft_with_the_settings_given(
    capsys: pytest.CaptureFixture[str], db_url: str, sync_db: Engine,
) -> None:
    code, out, err = cli(capsys, "campaign", "create", "renewals", "--url", db_url, *CREATE,
                         "--window", "10:00-19:30", "--days", "mon-sat", "--max-concurrent", "4",
                         "--retry-no-answer", "2h", "--voicemail", "leave_message",
                         "--voicemail-message", "Please call us back.")
    assert (code, err) == (0, "")
    assert "campaign renewals (id 1) created in state draft" in out
    assert "window 10:00-19:30 on Mon,Tue,Wed,Thu,Fri,Sat" in out
    with sync_db.connect() as conn:
        row = conn.execute(select(Campaign.state, Campaign.max_concurrent_calls)).one()
    assert tuple(row) == ("draft", 4)
    assert audit(sync_db) == ["campaign.created"]


BAD_SETTINGS: list[tuple[list[str], str]] = [
    (["--window", "9-17"], "window: expected HH:MM-HH:MM, got '9-17'"),
    (["--window", "07:30-20:00"], "calling window 07:30-20:00 must lie inside 08:00-21:00"),
    (["--window", "20:00-09:00"], "window: calling window start 20:00 must be before end 09:00"),
    (["--days", "mon-funday"], "days: unknown day 'funday' in 'mon-funday'"),
    (["--max-concurrent", "many"], "max_concurrent_calls: expected an integer, got 'many'"),
    (["--max-concurrent", "0"], "max_concurrent_calls must be an integer in 1..1000, got 0"),
    (["--retry-busy", "4 hours"], "retry_busy: expected a duration like 90s"),
    (["--retry-voicemail", "40d"], "retry delay after voicemail must be > 0 and <= 30 days"),
    (["--ring-timeout", "5"], "ring_timeout_s must be an integer in 15..600, got 5"),
    (["--voicemail", "leave_message"], "voicemail policy leave_message needs a voicemail_message"),
    (["--voicemail-message", "hi"], "voicemail_message is set but the policy is hang_up"),
    (["--voicemail", "leave_message", "--voicemail-message", "x" * 3001],
     "voicemail_message is too long: 3001 characters URL-encoded, at most 3000"),
    (["--caller-id", "2125550100"], "caller ID '2125550100' is not an E.164 number"),
]


@pytest.mark.parametrize(("extra", "error"), BAD_SETTINGS, ids=[e[1][:40] for e in BAD_SETTINGS])
def test_bad_settings_are_refused_precisely_and_create_nothing(
    capsys: pytest.CaptureFixture[str], sqlite_db_url: str, extra: list[str], error: str,
) -> None:
    code, out, err = cli(capsys, "campaign", "create", "c", "--url", sqlite_db_url, *CREATE,
                         *extra)
    assert code == 2 and out == ""
    assert err.startswith("callagent campaign create: ") and error in err, err
    engine = create_engine(sync_url(sqlite_db_url))
    try:
        assert count(engine, Campaign) == 0 and audit(engine) == []
    finally:
        engine.dispose()


def test_a_key_is_used_once(capsys: pytest.CaptureFixture[str], sqlite_db_url: str) -> None:
    assert cli(capsys, "campaign", "create", "c", "--url", sqlite_db_url, *CREATE)[0] == 0
    code, _, err = cli(capsys, "campaign", "create", "c", "--url", sqlite_db_url, *CREATE)
    assert code == 2 and "a campaign with key 'c' already exists" in err


# --- import ------------------------------------------------------------------------------------

def test_import_takes_the_good_rows_reports_every_bad_one_and_is_idempotent(
    capsys: pytest.CaptureFixture[str], db_url: str, sync_db: Engine, tmp_path: Path,
) -> None:
    csv = tmp_path / "contacts.csv"
    csv.write_text(GOOD_AND_BAD)
    assert cli(capsys, "campaign", "create", "c", "--url", db_url, *CREATE)[0] == 0
    for round_ in (1, 2):
        code, out, err = cli(capsys, "campaign", "import", "c", str(csv), "--url", db_url)
        assert code == 1
        bad = [line for line in err.splitlines() if line.startswith(str(csv))]
        assert bad == [f"{csv}{line}" for line in BAD_LINES]
        added = 3 if round_ == 1 else 0
        assert (f"9 rows read, {added} contacts added, {3 - added} already present, "
                "6 rejected") in out
        assert "[" + "#" * 30 + "] 100% 9 rows, 3 good, 6 bad" in err
    with sync_db.connect() as conn:
        rows = conn.execute(select(Contact.e164, Contact.timezones, Contact.consent_type,
                                   Contact.fields).order_by(Contact.e164)).all()
    assert [tuple(r) for r in rows] == [
        ("+12125550001", '["America/New_York"]', "PEC", '{"plan": "gold"}'),
        ("+12125550002", '["America/New_York"]', "PEWC", '{"plan": "silver"}'),
        ("+12125550005", '["America/New_York"]', None, '{"plan": "bronze"}'),
    ]
    assert audit(sync_db) == ["campaign.created", "campaign.imported", "campaign.imported"]


@pytest.mark.parametrize(("content", "error"), [
    ("name,timezone\nAda,UTC\n", "line 1: no header row with a phone column"),
    ("phone,phone\n+12125550001,+12125550002\n", "line 1: bad header: column 'phone' given twice"),
    ("", "line 1: no header row with a phone column: the file is empty"),
    (None, "cannot read"),
])
def test_an_import_that_cannot_start_imports_nothing(
    capsys: pytest.CaptureFixture[str], sqlite_db_url: str, tmp_path: Path,
    content: str | None, error: str,
) -> None:
    csv = tmp_path / "contacts.csv"
    if content is not None:
        csv.write_text(content)
    assert cli(capsys, "campaign", "create", "c", "--url", sqlite_db_url, *CREATE)[0] == 0
    code, out, err = cli(capsys, "campaign", "import", "c", str(csv), "--url", sqlite_db_url,
                         "--quiet")
    assert code == 2 and error in err, err
    engine = create_engine(sync_url(sqlite_db_url))
    try:
        assert count(engine, Contact) == 0
    finally:
        engine.dispose()


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(
    capsys: pytest.CaptureFixture[str], sqlite_db_url: str, tmp_path: Path,
) -> None:
    csv = tmp_path / "contacts.csv"
    csv.write_bytes(b"phone,name\n+12125550001,Ada\n+12125550002,B\xe9n\n")
    assert cli(capsys, "campaign", "create", "c", "--url", sqlite_db_url, *CREATE)[0] == 0
    code, _, err = cli(capsys, "campaign", "import", "c", str(csv), "--url", sqlite_db_url,
                       "--quiet")
    assert code == 2 and f"{csv}:3: not UTF-8 text (invalid continuation byte" in err, err


def test_import_into_an_unknown_campaign_is_refused(
    capsys: pytest.CaptureFixture[str], sqlite_db_url: str, tmp_path: Path,
) -> None:
    csv = tmp_path / "contacts.csv"
    csv.write_text(GOOD_AND_BAD)
    code, _, err = cli(capsys, "campaign", "import", "nope", str(csv), "--url", sqlite_db_url)
    assert code == 2 and "no campaign with key 'nope'" in err


def test_the_progress_bar_draws_a_line_per_tenth_off_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, total_chars=1000, width=10)
    for chars, records in ((50, 5), (120, 12), (130, 13), (550, 55)):
        bar.chars = chars
        bar(ImportProgress(line=records + 1, records=records, imported=records, rejected=0,
                           done=False))
    bar(ImportProgress(line=101, records=100, imported=98, rejected=2, done=True))
    lines = out.getvalue().splitlines()
    assert [line[:17] for line in lines] == [
        "[..........]   5%", "[#.........]  12%", "[######....]  55%", "[##########] 100%"]
    assert "100 rows, 98 good, 2 bad" in lines[-1]


# --- start, pause, status ----------------------------------------------------------------------

def test_start_pause_resume_and_illegal_moves(
    capsys: pytest.CaptureFixture[str], db_url: str, sync_db: Engine, tmp_path: Path,
) -> None:
    csv = tmp_path / "contacts.csv"
    csv.write_text(GOOD_AND_BAD)
    base = ["--url", db_url]
    assert cli(capsys, "campaign", "create", "c", *base, *CREATE)[0] == 0
    code, _, err = cli(capsys, "campaign", "pause", "c", *base)
    assert code == 2 and "cannot pause a campaign in state 'draft'" in err
    assert cli(capsys, "campaign", "start", "c", *base)[1] == "campaign c is running\n"
    assert cli(capsys, "campaign", "pause", "c", *base)[1] == "campaign c is paused\n"
    code, _, err = cli(capsys, "campaign", "pause", "c", *base)
    assert code == 2 and "cannot pause a campaign in state 'paused'" in err
    assert cli(capsys, "campaign", "start", "c", *base)[1] == "campaign c is running\n"
    assert cli(capsys, "campaign", "import", "c", str(csv), *base, "--quiet")[0] == 1
    code, out, _ = cli(capsys, "campaign", "status", "c", *base)
    assert code == 0
    assert out.startswith("c (id 1) 'Renewals': running\n")
    assert "0 of 3 contacts finished" in out and "in flight 0/1; pending 3 (due now 3)" in out
    assert audit(sync_db) == ["campaign.created", "campaign.start", "campaign.pause",
                              "campaign.resume", "campaign.imported"]
    code, out, _ = cli(capsys, "campaign", "status", *base)
    assert code == 0 and out.startswith("c (id 1)")
    assert cli(capsys, "campaign", "finish", "c", *base)[1] == "campaign c is finished\n"
    code, _, err = cli(capsys, "campaign", "start", "c", *base)
    assert code == 2 and "cannot start a campaign in state 'finished'" in err
    code, _, err = cli(capsys, "campaign", "import", "c", str(csv), *base, "--quiet")
    assert code == 2 and "campaign 'c' is finished: nothing can be added to it" in err
    assert audit(sync_db)[-1] == "campaign.finish"


def test_status_lines_name_outcomes_skips_and_waits() -> None:
    from datetime import UTC, datetime

    from callagent.campaigns.settings import CampaignState
    from callagent.campaigns.store import CampaignProgress, StoredCampaign
    from tests.campaigns.test_store import make_spec

    progress = CampaignProgress(
        campaign=StoredCampaign(3, "c", CampaignState.RUNNING, make_spec(cap=5)),
        contacts={"pending": 6, "in_call": 2, "done": 10, "skipped": 2},
        attempts={"answered": 8, "busy": 3, "": 2}, skips={"no_consent": 2},
        waiting={"outside_hours": 4}, in_flight=2, due_now=2,
        next_due_at=datetime(2026, 11, 28, 14, 0, tzinfo=UTC))
    text = render_status(progress, width=10)
    assert text.splitlines()[2] == "  [######....]  60%  12 of 20 contacts finished"
    assert "in flight 2/5; pending 6 (due now 2, next at 2026-11-28 14:00 UTC)" in text
    assert "attempts: in progress 2, answered 8, busy 3" in text
    assert "skipped:  no_consent 2" in text and "waiting:  outside_hours 4" in text


# --- the pure parsers ----------------------------------------------------------------------------

def test_days_windows_and_durations_parse_as_typed() -> None:
    from datetime import time as clock, timedelta

    assert parse_days("mon-fri") == frozenset(Weekday) - {Weekday.SATURDAY, Weekday.SUNDAY}
    assert parse_days("fri-mon") == {Weekday.FRIDAY, Weekday.SATURDAY, Weekday.SUNDAY,
                                     Weekday.MONDAY}
    assert parse_days("Tue, thu") == {Weekday.TUESDAY, Weekday.THURSDAY}
    assert parse_days("all") == frozenset(Weekday)
    assert parse_window("8:30-20:00") == CallingWindow(clock(8, 30), clock(20, 0))
    assert parse_duration("x", "1h30m") == timedelta(minutes=90)
    assert parse_duration("x", "90") == timedelta(seconds=90)
    for bad in ("", "mon,", "someday"):
        with pytest.raises(CampaignSpecError, match="days: "):
            parse_days(bad)
    with pytest.raises(CampaignSpecError, match="retry_busy: "):
        parse_duration("retry_busy", "soon")


# --- as a process --------------------------------------------------------------------------------

def run(args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callagent", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_installed_command_runs_a_campaign_setup_and_watches_it(
    sqlite_db_url: str, tmp_path: Path,
) -> None:
    env = {**os.environ, "CALLAGENT_DATABASE_URL": sqlite_db_url}
    csv = tmp_path / "contacts.csv"
    csv.write_text(GOOD_AND_BAD)
    assert run(["campaign", "create", "c", *CREATE], env).returncode == 0
    imported = run(["campaign", "import", "c", str(csv)], env)
    assert imported.returncode == 1 and f"{csv}:4: phone number cannot be parsed" in imported.stderr
    assert run(["campaign", "start", "c"], env).stdout == "campaign c is running\n"
    out = tmp_path / "watch.out"
    with out.open("w") as sink:
        watch = subprocess.Popen([sys.executable, "-m", "callagent", "campaign", "status",
                                  "--watch", "--interval", "0.2"], cwd=PROJECT_ROOT, env=env,
                                 stdout=sink, stderr=subprocess.STDOUT)
        try:
            # Generous: a loaded CI machine has taken over 30 s to start the command.
            deadline = time.monotonic() + 120
            while out.read_text().count("UTC\n") < 2 and time.monotonic() < deadline:
                assert watch.poll() is None, out.read_text()
                time.sleep(0.05)
            assert out.read_text().count("UTC\n") >= 2, f"no two status reports in 120 s: {out.read_text()!r}"
            watch.send_signal(signal.SIGINT)
            assert watch.wait(timeout=60) == 0, out.read_text()
        finally:
            if watch.poll() is None:  # never leave it running into the next test
                watch.kill()
                watch.wait()
    text = out.read_text()
    assert text.count("c (id 1) 'Renewals': running") >= 2 and "Traceback" not in text
