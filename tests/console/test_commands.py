"""`callagent user add|disable|set-role` and `callagent token create`, on both databases."""

from __future__ import annotations

import asyncio
import io

import pytest
from sqlalchemy import select

from callagent.cli import main
from callagent.console.operator_store import OperatorView, find_by_username, operator_for_token
from callagent.console.roles import Role
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import AuditEvent
from callagent.services import utc_now


def run(args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(args)


async def _read(
    url: str, username: str, token: str | None
) -> tuple[tuple[OperatorView, str] | None, OperatorView | None, list[str]]:
    engine = create_engine_for(url)
    try:
        async with make_sessionmaker(engine)() as s:
            found = await find_by_username(s, username)
            by_token = await operator_for_token(s, token, now=utc_now()) if token else None
            actions = list(await s.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))
        return found, by_token, actions
    finally:
        await engine.dispose()


def test_user_lifecycle_and_token(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--url", db_url]
    assert run(["user", "add", "Alice", "--role", "viewer", "--password-stdin", *url],
               monkeypatch, "a long enough pass\n") == 0
    assert run(["user", "set-role", "alice", "supervisor", *url], monkeypatch) == 0
    assert run(["token", "create", "alice", "--name", "ci", "--days", "30", *url],
               monkeypatch) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("cat_")
    found, by_token, _ = asyncio.run(_read(db_url, "alice", token))
    assert found is not None and found[0].role is Role.SUPERVISOR
    assert by_token is not None
    assert run(["user", "disable", "alice", *url], monkeypatch) == 0
    found, by_token, actions = asyncio.run(_read(db_url, "alice", token))
    assert by_token is None  # disabling revokes its tokens
    assert actions == ["console.operator_added", "console.role_changed",
                       "console.token_created", "console.operator_disabled"]


@pytest.mark.parametrize("args, stdin, message", [
    (["user", "add", "bob", "--role", "root", "--password-stdin"], "a long enough pass\n",
     "unknown role 'root'"),
    (["user", "add", "b o b", "--role", "viewer", "--password-stdin"], "a long enough pass\n",
     "bad username"),
    (["user", "add", "bob", "--role", "viewer", "--password-stdin"], "short\n",
     "password too short"),
    (["user", "set-role", "ghost", "admin"], "", "no operator named 'ghost'"),
    (["user", "set-role", "ghost", "boss"], "", "unknown role 'boss'"),
    (["user", "disable", "ghost"], "", "no operator named 'ghost'"),
    (["token", "create", "ghost"], "", "no operator named 'ghost'"),
    (["token", "create", "ghost", "--days", "-1"], "", "--days: expected 0-3650"),
])
def test_bad_input_is_refused_with_a_precise_message(
    sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], stdin: str, message: str,
) -> None:
    assert run([*args, "--url", sqlite_db_url], monkeypatch, stdin) == 2
    assert message in capsys.readouterr().err


def test_a_duplicate_user_is_refused(sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = ["user", "add", "carol", "--role", "admin", "--password-stdin", "--url", sqlite_db_url]
    assert run(args, monkeypatch, "a long enough pass\n") == 0
    assert run(args, monkeypatch, "a long enough pass\n") == 2
    assert "operator 'carol' already exists" in capsys.readouterr().err
