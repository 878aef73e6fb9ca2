"""Console tables: operators, their sessions and API tokens, login attempts, the transcript
word index; plus the indexes the console's call list needs on ``calls``.

Tables only (queries live in ``callagent.console``). They share ``models.Base``, so
Alembic sees them once this module is imported (``migrations/versions/0004_console.py``
imports it).

Transcript search: ``transcript_terms`` is an inverted index (one row per distinct word
of a turn), the same on SQLite and PostgreSQL, filled by ``console.search_index``. It is
a plain table on purpose: FTS5 virtual tables and expression (``to_tsvector``) indexes
cannot be compared by ``alembic check``, which guards models/migrations drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from callagent.store.models import Base, Call

__all__ = [
    "ApiToken",
    "LoginAttempt",
    "Operator",
    "OperatorSession",
    "TranscriptTerm",
]

_calls = cast(Table, Call.__table__)

# The call list pages newest first by (started_at, id); filters narrow it.
Index("ix_calls_started_at_id", _calls.c.started_at, _calls.c.id)
Index("ix_calls_from_number", _calls.c.from_number)
Index("ix_calls_to_number", _calls.c.to_number)


class Operator(Base):
    """A person using the console. ``role``: viewer | supervisor | admin (``console.roles``)."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # argon2id PHC string
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class OperatorSession(Base):
    """A logged-in browser. The signed cookie carries ``id``; logout sets ``revoked_at``."""

    __tablename__ = "operator_sessions"

    # random, URL-safe (secrets.token_urlsafe)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for the JSON API: only its SHA-256 is stored (the secret is random)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    # hex SHA-256 of the whole token text
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginAttempt(Base):
    """Every console login try, for rate limiting (by username and by client address)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_client_at", "client", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    succeeded: Mapped[bool] = mapped_column(Boolean)


class TranscriptTerm(Base):
    """One distinct lower-cased word of one turn (the transcript search index)."""

    __tablename__ = "transcript_terms"
    __table_args__ = (Index("ix_transcript_terms_turn_id", "turn_id"),)

    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    turn_id: Mapped[int] = mapped_column(
        ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True
    )
    call_id: Mapped[str] = mapped_column(String(36))
