"""Operator, session, API-token and login-attempt queries. Each takes an ``AsyncSession``
and never commits: the caller owns the unit of work."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.console.passwords import hash_password, hash_token, new_token
from callagent.console.roles import Role
from callagent.store.operators import ApiToken, LoginAttempt, Operator, OperatorSession

__all__ = [
    "BadUsername",
    "DuplicateOperator",
    "LoggedIn",
    "OperatorView",
    "UnknownOperator",
    "add_operator",
    "check_username",
    "count_failures",
    "create_api_token",
    "find_by_username",
    "get_operator",
    "list_operators",
    "open_session",
    "operator_for_token",
    "prune_attempts",
    "record_attempt",
    "revoke_session",
    "session_operator",
    "set_active",
    "set_role",
]

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")


class BadUsername(ValueError):
    """A username that is not 2-64 characters of a-z, 0-9, '.', '_' or '-'."""


class DuplicateOperator(ValueError):
    """The username is taken."""


class UnknownOperator(LookupError):
    """No operator with that id or username."""


@dataclass(frozen=True, slots=True)
class OperatorView:
    id: int
    username: str
    role: Role
    active: bool
    created_at: datetime

    @property
    def actor(self) -> str:
        """How the audit log names this operator."""
        return f"operator:{self.username}"


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """An open browser session: its operator and the CSRF token its forms carry."""

    session_id: str
    operator: OperatorView
    csrf_token: str
    expires_at: datetime


def _view(row: Operator) -> OperatorView:
    return OperatorView(row.id, row.username, Role(row.role), row.active, row.created_at)


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise BadUsername(
            f"bad username {username!r}: 2-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


async def add_operator(
    s: AsyncSession, username: str, password: str, role: Role, *, now: datetime
) -> OperatorView:
    name = check_username(username)
    # argon2 is slow on purpose: off the event loop (it carries live calls' audio)
    password_hash = await asyncio.to_thread(hash_password, password)
    row = Operator(username=name, password_hash=password_hash, role=role.value,
                   active=True, created_at=now)
    s.add(row)
    try:
        async with s.begin_nested():
            await s.flush()
    except IntegrityError:
        raise DuplicateOperator(f"operator {name!r} already exists") from None
    return _view(row)


async def get_operator(s: AsyncSession, operator_id: int) -> OperatorView:
    row = await s.get(Operator, operator_id)
    if row is None:
        raise UnknownOperator(f"no operator with id {operator_id}")
    return _view(row)


async def find_by_username(s: AsyncSession, username: str) -> tuple[OperatorView, str] | None:
    """The operator and its password hash, or None."""
    row = await s.scalar(select(Operator).where(Operator.username == username.strip().lower()))
    return None if row is None else (_view(row), row.password_hash)


async def list_operators(s: AsyncSession) -> list[OperatorView]:
    return [_view(r) for r in await s.scalars(select(Operator).order_by(Operator.username))]


async def _row_by_name(s: AsyncSession, username: str) -> Operator:
    row = await s.scalar(select(Operator).where(Operator.username == username.strip().lower()))
    if row is None:
        raise UnknownOperator(f"no operator named {username!r}")
    return row


async def set_role(s: AsyncSession, username: str, role: Role) -> OperatorView:
    row = await _row_by_name(s, username)
    row.role = role.value
    return _view(row)


async def set_active(s: AsyncSession, username: str, active: bool, *, now: datetime) -> OperatorView:
    """Disabling also ends the operator's sessions and revokes its API tokens."""
    row = await _row_by_name(s, username)
    row.active = active
    row.disabled_at = None if active else now
    if not active:
        await s.execute(update(OperatorSession).where(
            OperatorSession.operator_id == row.id, OperatorSession.revoked_at.is_(None)
        ).values(revoked_at=now))
        await s.execute(update(ApiToken).where(
            ApiToken.operator_id == row.id, ApiToken.revoked_at.is_(None)
        ).values(revoked_at=now))
    return _view(row)


# --- browser sessions ---------------------------------------------------------------------

async def open_session(
    s: AsyncSession, operator: OperatorView, *, now: datetime, ttl: timedelta
) -> LoggedIn:
    row = OperatorSession(
        id=secrets.token_urlsafe(32), operator_id=operator.id,
        csrf_token=secrets.token_urlsafe(32), created_at=now, expires_at=now + ttl,
    )
    s.add(row)
    await s.flush()
    return LoggedIn(row.id, operator, row.csrf_token, row.expires_at)


async def session_operator(s: AsyncSession, session_id: str, *, now: datetime) -> LoggedIn | None:
    """The live session: not expired, not revoked, its operator active. Else None."""
    row = (await s.execute(
        select(OperatorSession, Operator)
        .join(Operator, Operator.id == OperatorSession.operator_id)
        .where(OperatorSession.id == session_id)
    )).first()
    if row is None:
        return None
    sess, op = row[0], row[1]
    if sess.revoked_at is not None or sess.expires_at <= now or not op.active:
        return None
    return LoggedIn(sess.id, _view(op), sess.csrf_token, sess.expires_at)


async def revoke_session(s: AsyncSession, session_id: str, *, now: datetime) -> None:
    await s.execute(update(OperatorSession).where(
        OperatorSession.id == session_id, OperatorSession.revoked_at.is_(None)
    ).values(revoked_at=now))


# --- API tokens -------------------------------------------------------------------------------

async def create_api_token(
    s: AsyncSession, username: str, name: str, *, now: datetime, ttl: timedelta | None
) -> tuple[str, OperatorView]:
    """A new token's text (shown once; only its hash is kept) and its operator."""
    row = await _row_by_name(s, username)
    if not row.active:
        raise UnknownOperator(f"operator {username!r} is disabled")
    label = name.strip()
    if not 1 <= len(label) <= 64:
        raise ValueError(f"token name must be 1-64 characters, got {name!r}")
    token = new_token()
    s.add(ApiToken(operator_id=row.id, name=label, token_hash=hash_token(token), created_at=now,
                   expires_at=None if ttl is None else now + ttl))
    await s.flush()
    return token, _view(row)


async def operator_for_token(s: AsyncSession, token: str, *, now: datetime) -> OperatorView | None:
    row = (await s.execute(
        select(ApiToken, Operator)
        .join(Operator, Operator.id == ApiToken.operator_id)
        .where(ApiToken.token_hash == hash_token(token))
    )).first()
    if row is None:
        return None
    tok, op = row[0], row[1]
    if tok.revoked_at is not None or (tok.expires_at is not None and tok.expires_at <= now):
        return None
    return _view(op) if op.active else None


# --- login attempts ---------------------------------------------------------------------------

async def record_attempt(
    s: AsyncSession, username: str, client: str, succeeded: bool, *, now: datetime
) -> None:
    s.add(LoginAttempt(username=username[:64], client=client[:64], at=now, succeeded=succeeded))
    await s.flush()


async def prune_attempts(s: AsyncSession, *, before: datetime) -> None:
    """Forget login attempts older than ``before`` (they no longer count)."""
    await s.execute(delete(LoginAttempt).where(LoginAttempt.at < before))


async def count_failures(
    s: AsyncSession, *, username: str, client: str, since: datetime
) -> tuple[int, int]:
    """Failed attempts since ``since``: (for this username, from this client)."""
    by_name = await s.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.username == username[:64], LoginAttempt.at >= since,
        LoginAttempt.succeeded.is_(False),
    )) or 0
    by_client = await s.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.client == client[:64], LoginAttempt.at >= since,
        LoginAttempt.succeeded.is_(False),
    )) or 0
    return int(by_name), int(by_client)
