"""Alembic environment for callagent (the only module that imports Alembic's context).

The target URL, first match wins:
1. ``config.attributes["connection"]``: an open sync Connection (tests, tools);
2. ``config.attributes["url"]`` (``callagent.store.db.upgrade(url)``);
3. ``alembic -x url=...``;
4. ``sqlalchemy.url`` in alembic.ini (left unset in ours);
5. ``callagent.config.load_settings().database.url``.
Async URLs are fine: migrations run on the sync twin of the URL
(sqlite+aiosqlite -> sqlite, postgresql+psycopg as is).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.pool import NullPool

from callagent.config import load_settings
from callagent.store.db import sqlite_path, sync_url
from callagent.store.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _target_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        url = load_settings().database.url
    return str(url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Autogenerate drafts spell UTCDateTime as what it stores, not as app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=sync_url(_target_url()).render_as_string(hide_password=False),
        target_metadata=target_metadata,
        render_as_batch=True,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = sync_url(_target_url())
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
