"""Engines, sessions and migrations: the lifecycle side of the store.

- ``create_engine_for(settings)``: the async engine. On SQLite every
  connection gets WAL, foreign keys and a busy timeout, and SQLAlchemy (not
  the sqlite3 module) emits ``BEGIN IMMEDIATE`` at the start of each
  transaction, so read-then-write transactions (the audit chain) serialize
  across connections and processes instead of failing. A read-only caller may
  opt into a deferred BEGIN with ``execution_options(sqlite_begin="DEFERRED")``.
- ``make_sessionmaker(engine)``: ``expire_on_commit=False`` sessions.
- ``upgrade(url)`` / ``alembic_config(url)``: Alembic, found next to the
  package (works from any working directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

import callagent
from callagent.config import DatabaseSettings, Settings

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "PROJECT_ROOT",
    "alembic_config",
    "create_engine_for",
    "make_sessionmaker",
    "sqlite_path",
    "sync_url",
    "upgrade",
]

PROJECT_ROOT = Path(callagent.__file__).resolve().parents[1]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"

_SQLITE_BEGIN = {"IMMEDIATE", "DEFERRED", "EXCLUSIVE"}


def _url_of(settings: Settings | DatabaseSettings | str | URL) -> URL:
    if isinstance(settings, Settings):
        return make_url(settings.database.url)
    if isinstance(settings, DatabaseSettings):
        return make_url(settings.url)
    return make_url(settings)


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL (None for other backends and :memory:)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    if u.database.startswith("file:"):
        return None
    return Path(u.database)


def _ensure_sqlite_dir(url: URL) -> None:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def sync_url(url: str | URL) -> URL:
    """The synchronous twin of an (async) URL, for Alembic and tools.

    ``sqlite+aiosqlite`` becomes ``sqlite`` (pysqlite); PostgreSQL URLs use
    psycopg 3, which works both ways.
    """
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return u.set(drivername="sqlite")
    if backend == "postgresql":
        return u.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database URL {u.render_as_string(hide_password=True)!r}")


def create_engine_for(
    settings: Settings | DatabaseSettings | str,
    *,
    sqlite_busy_timeout_ms: int = 5000,
    pg_connect_timeout_s: int = 10,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """The application's async engine for ``settings.database.url``.

    The caller owns it: ``await engine.dispose()`` when done.
    """
    url = _url_of(settings)
    echo = settings.database.echo if isinstance(settings, Settings) else (
        settings.echo if isinstance(settings, DatabaseSettings) else False
    )
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.drivername == "sqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, echo=echo, **engine_kwargs)
        _install_sqlite_hooks(engine, sqlite_busy_timeout_ms)
        return engine
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        connect_args = dict(engine_kwargs.pop("connect_args", {}))
        if "connect_timeout" not in url.query:
            connect_args.setdefault("connect_timeout", pg_connect_timeout_s)
        engine_kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, echo=echo, connect_args=connect_args, **engine_kwargs)
    raise ValueError(f"unsupported database URL {url.render_as_string(hide_password=True)!r}")


def _install_sqlite_hooks(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # SQLAlchemy emits BEGIN itself (below); the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
        if mode not in _SQLITE_BEGIN:
            raise ValueError(f"sqlite_begin: expected one of {sorted(_SQLITE_BEGIN)}, got {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic ``Config`` for this project's migrations, usable from any cwd.

    With ``url`` the migrations target it; without, ``migrations/env.py``
    falls back to ``-x url=...`` and then to ``load_settings().database.url``.
    """
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["configure_logger"] = False
    if url is not None:
        cfg.attributes["url"] = make_url(url).render_as_string(hide_password=False)
    return cfg


def upgrade(url: str | URL | None = None, revision: str = "head") -> None:
    """``alembic upgrade head`` on ``url`` (blocking: run it in a thread from async code)."""
    from alembic import command

    if url is not None:
        _ensure_sqlite_dir(make_url(url))
    command.upgrade(alembic_config(url), revision)
