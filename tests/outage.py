"""Databases a test can take away and give back: a TCP proxy for PostgreSQL, a lock for SQLite."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from callagent.store.db import create_engine_for


class TcpProxy:
    """127.0.0.1:<port> -> target. ``stop()`` cuts every connection and stops listening;
    ``frozen = True`` keeps connections open but stops carrying bytes (a network partition)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.port = 0
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    self._writers.discard(w)
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.frozen:
                    await asyncio.sleep(0.01)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for w in list(self._writers):
            w.transport.abort()
        await server.wait_closed()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class Outage:
    """A database the test can take away and give back."""

    url: str  # what the recorder uses
    direct_url: str  # what the test reads results from

    async def down(self) -> None: ...
    async def up(self) -> None: ...
    async def aclose(self) -> None: ...

    def recorder_engine(self) -> AsyncEngine:
        return create_engine_for(self.url, sqlite_busy_timeout_ms=100, pg_connect_timeout_s=2)


class PgOutage(Outage):
    def __init__(self, db_url: str) -> None:
        u = make_url(db_url)
        self.direct_url = db_url
        self.proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)

    async def open(self) -> None:
        await self.proxy.start()
        self.url = make_url(self.direct_url).set(host="127.0.0.1", port=self.proxy.port).render_as_string(
            hide_password=False)

    async def down(self) -> None:
        await self.proxy.stop()

    async def up(self) -> None:
        await self.proxy.start()  # same port

    async def aclose(self) -> None:
        self.proxy.frozen = False
        await self.proxy.stop()


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
conn.close()
"""


class SqliteOutage(Outage):
    """Another process holds an exclusive lock on the database file."""

    def __init__(self, db_url: str) -> None:
        self.url = self.direct_url = db_url
        self._locker: asyncio.subprocess.Process | None = None

    async def open(self) -> None:
        pass

    async def down(self) -> None:
        path = make_url(self.url).database
        assert path and self._locker is None
        self._locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._locker.stdout is not None
        assert await self._locker.stdout.readline() == b"locked\n"

    async def up(self) -> None:
        if self._locker is not None:
            locker, self._locker = self._locker, None
            await locker.communicate(b"")  # closes its stdin: it commits and exits
            assert locker.returncode == 0

    async def aclose(self) -> None:
        await self.up()


@pytest.fixture
async def outage(db_url: str, db_kind: str) -> AsyncIterator[Outage]:
    o: PgOutage | SqliteOutage = PgOutage(db_url) if db_kind == "postgresql" else SqliteOutage(db_url)
    await o.open()
    try:
        yield o
    finally:
        await o.aclose()
