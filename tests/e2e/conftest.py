"""A real service on loopback: uvicorn serving create_app, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from callagent.app import EngineFactoryBuilder, create_app, default_engines
from callagent.config import (
    DatabaseSettings,
    RecorderSettings,
    ServerSettings,
    Settings,
    TwilioSettings,
    validate,
)
from callagent.services import Services
from callagent.serving import uvicorn_options
from callagent.store.db import create_engine_for

TOKEN = "test-auth-token"
SHARED_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(db_url: str, tmp_path: Path, *, verify: bool = True) -> Settings:
    port = free_port()
    settings = Settings(
        server=ServerSettings(port=port, public_origin=f"http://127.0.0.1:{port}"),
        twilio=TwilioSettings(auth_token=TOKEN, verify_signatures=verify),
        database=DatabaseSettings(url=db_url),
        recorder=RecorderSettings(journal_dir=str(tmp_path / "journal"), flush_interval_ms=50),
    )
    validate(settings)
    return settings


@dataclass
class LiveService:
    settings: Settings
    server: uvicorn.Server
    db: AsyncEngine  # for the test's own reads
    app: Starlette

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.server.port}"


async def start_service(
    settings: Settings, app: Starlette
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.server.port,
        log_level="warning",
        lifespan="on",
        **uvicorn_options(settings),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


async def stop_service(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, timeout=20)


@contextlib.asynccontextmanager
async def running_service(
    service_db_url: str,
    tmp_path: Path,
    read_db_url: str | None = None,
    engines: EngineFactoryBuilder = default_engines,
) -> AsyncIterator[LiveService]:
    settings = make_settings(service_db_url, tmp_path)
    app = create_app(settings, engines)
    server, task = await start_service(settings, app)
    db = create_engine_for(read_db_url or service_db_url)
    try:
        yield LiveService(settings, server, db, app)
    finally:
        await stop_service(server, task)
        await db.dispose()


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[LiveService]:
    async with running_service(db_url, tmp_path) as service:
        yield service
