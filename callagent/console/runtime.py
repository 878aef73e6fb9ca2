"""What the console shares between requests, built once by the app's lifespan.

Held on ``app.state.console``; no module-level state. The session-signing key comes only
from ``CALLAGENT_CONSOLE_SECRET_KEY`` (settings); without it (loopback only, enforced by
``config.validate``) an ephemeral key is generated and a warning logged at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.templating import Jinja2Templates

from callagent.compliance.checkpointer import AuditCheckpointer
from callagent.config import Settings
from callagent.console.call_filters import CallFilter
from callagent.console.call_queries import CallPage, list_calls
from callagent.console.search_index import RESCAN, add_terms, unindexed

__all__ = ["ConsoleRuntime", "session_key"]

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"


def session_key(settings: Settings) -> str:
    if settings.console.secret_key:
        return settings.console.secret_key
    log.warning(
        "CONSOLE SESSION KEY IS EPHEMERAL (CALLAGENT_CONSOLE_SECRET_KEY is not set): a random "
        "key signs console sessions, so every restart logs all operators out and several "
        "processes cannot share sessions. Set the key (at least 32 characters, e.g. "
        "`openssl rand -hex 32`) outside local development."
    )
    return secrets.token_hex(32)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        undefined=jinja2.StrictUndefined,
    )
    return Jinja2Templates(env=env)


@dataclass
class ConsoleRuntime:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    now: Callable[[], datetime]
    live_calls: Callable[[], int]
    signer: URLSafeTimedSerializer
    checkpointer: AuditCheckpointer | None = None
    templates: Jinja2Templates = field(default_factory=_templates)
    index_interval_s: float = 5.0
    _indexer: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls, settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
        now: Callable[[], datetime], live_calls: Callable[[], int],
        checkpointer: AuditCheckpointer | None = None,
    ) -> ConsoleRuntime:
        signer = URLSafeTimedSerializer(session_key(settings), salt="callagent.console.session")
        return cls(settings, sessions, now, live_calls, signer, checkpointer)

    @property
    def secure_cookies(self) -> bool:
        return self.settings.server.public_origin.startswith("https://")

    def start(self) -> None:
        self._indexer = asyncio.create_task(self._index_forever(), name="console-search-index")

    async def close(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads: on SQLite a deferred BEGIN, so readers never queue behind
        the recorder's writes (``store.db`` opens transactions IMMEDIATE by default)."""
        async with self.sessions() as s:
            await s.connection(execution_options={"sqlite_begin": "DEFERRED"})
            yield s

    @contextlib.asynccontextmanager
    async def auditing(self) -> AsyncIterator[AsyncSession]:
        """A write transaction that appends audit events; once committed, the audit
        checkpointer (when configured) is told, as the recorder tells it."""
        async with self.sessions.begin() as s:
            yield s
        if self.checkpointer is not None:
            self.checkpointer.audit_committed()

    async def index_now(self, *, rescan: int = 0, limit: int = 5000) -> int:
        """Index turns the search index lacks (at most ``limit``); returns how many."""
        async with self.reading() as s:
            turns = await unindexed(s, rescan=rescan, limit=limit)
        if turns:
            async with self.sessions.begin() as s:
                await add_terms(s, turns)
        return len(turns)

    async def find_calls(self, params: Mapping[str, str]) -> tuple[CallFilter, CallPage]:
        """The calls the query ``params`` ask for (``BadFilter`` names a bad one). Words are
        searched once the turns not yet indexed are."""
        f = CallFilter.from_params(dict(params), page_size=self.settings.console.page_size)
        if f.words:
            await self.index_now(limit=5000)
        async with self.reading() as s:
            return f, await list_calls(s, f)

    async def _index_forever(self) -> None:
        while True:
            try:
                for _ in range(20):  # a backlog: keep going a while, letting requests in
                    if await self.index_now(rescan=RESCAN, limit=5000) < 5000:
                        break
                    await asyncio.sleep(0)
            except Exception:  # the database may be away; try again later
                log.warning("transcript search index: catch-up failed", exc_info=True)
            await asyncio.sleep(self.index_interval_s)
