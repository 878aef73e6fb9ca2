"""Database fixtures: every store test runs on SQLite and on the real PostgreSQL.

PostgreSQL comes from CALLAGENT_TEST_PG_URL (default: the local server's `test`
database); each test gets a database of its own, created from it and dropped
afterwards. An unreachable server fails the run: it is never skipped.

Fixtures:
- ``pg_admin_url``: the PostgreSQL URL tests create their databases from.
- ``db_kind``: "sqlite" or "postgresql" (parametrizes everything below).
- ``empty_db_url``: a fresh, empty database (async URL).
- ``db_url``: the same, migrated to head.
- ``db_engine`` / ``db_sessions``: an async engine (``store.db.create_engine_for``)
  on ``db_url`` and its sessionmaker; the engine is disposed after the test.
- ``sqlite_db_url`` / ``pg_db_url``: a migrated database of one kind only.
- ``fresh_pg_database``: a context-manager factory for more PostgreSQL databases.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import ContextManager

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callagent.store.db import create_engine_for, make_sessionmaker, upgrade

# Fixtures shared across folders: the `outage` fixture (a database taken away and back).
pytest_plugins = ["tests.outage"]

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_conninfo(url: str) -> str:
    """A libpq URI (what psycopg.connect takes) for a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get("CALLAGENT_TEST_PG_URL", DEFAULT_PG_URL)
    try:
        with psycopg.connect(pg_conninfo(url), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {url} (set CALLAGENT_TEST_PG_URL or start the "
            f"server, e.g. scripts/test does): {exc}",
            pytrace=False,
        )
    return url


@contextlib.contextmanager
def _fresh_pg_database(admin_url: str) -> Iterator[str]:
    name = f"callagent_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(pg_conninfo(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_pg_database(pg_admin_url: str) -> Callable[[], ContextManager[str]]:
    return lambda: _fresh_pg_database(pg_admin_url)


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(db_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if db_kind == "sqlite":
        yield _sqlite_url(tmp_path / "db" / "callagent.db")
        return
    admin_url = request.getfixturevalue("pg_admin_url")
    with _fresh_pg_database(admin_url) as url:
        yield url


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def sqlite_db_url(tmp_path: Path) -> str:
    url = _sqlite_url(tmp_path / "db" / "callagent.db")
    upgrade(url)
    return url


@pytest.fixture
def pg_db_url(pg_admin_url: str) -> Iterator[str]:
    with _fresh_pg_database(pg_admin_url) as url:
        upgrade(url)
        yield url


@pytest.fixture
async def db_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine_for(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def db_sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(db_engine)
