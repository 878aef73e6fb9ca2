"""The Starlette application: the whole URL map on one screen, and its lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from callagent.call import whisper
from callagent.call.recorder import Recorder
from callagent.compliance.checkpointer import Checkpointer
from callagent.compliance.config_audit import config_event, config_snapshot, last_snapshot
from callagent.compliance.redact import RedactionPolicy
from callagent.config import Settings
from callagent.console import api as console_api
from callagent.console import pages as console_pages
from callagent.console.runtime import ConsoleRuntime
from callagent.engines.base import CallContext, Engine
from callagent.engines.fixture import FixtureEngine, FixtureScript
from callagent.realtime_server.endpoint import realtime_endpoint
from callagent.services import Services
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.telephony.twilio import webhooks
from callagent.telephony.twilio.media import media_endpoint

log = logging.getLogger(__name__)

EngineFactoryBuilder = Callable[[Settings], Callable[[CallContext], Engine]]


def _agents_dir() -> Path:
    here = Path("config/agents")
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "config" / "agents"


def default_engines(settings: Settings) -> Callable[[CallContext], Engine]:
    """Profiles are read once, here; each call gets the engine its profile names.

    Pipeline models (piper voice, Silero pool, per-profile STT resources) load
    once per process, in a background thread: at startup when the default
    profile uses the pipeline, else at the first pipeline call. A pipeline
    engine waits for them in `start()`, never blocking the event loop.
    """
    from callagent.agents.profile import load_profiles
    from callagent.engines.pipeline.engine import PipelineEngine
    from callagent.engines.pipeline.models import PipelineModels, shared_models
    from callagent.engines.pipeline.stages import uses_llm

    script = FixtureScript.packaged()
    profiles = load_profiles(_agents_dir())
    loading: list[Future[PipelineModels]] = []

    def models() -> Future[PipelineModels]:
        if not loading:  # only ever called on the event loop's thread
            loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-models")
            loading.append(loader.submit(shared_models, profiles))
            loader.shutdown(wait=False)
        return loading[0]

    default = profiles.get(settings.agent.default_profile)
    if default is not None and any(r.engine == "pipeline" for r in default.routes):
        models()

    def build(call: CallContext) -> Engine:
        profile = profiles.get(call.agent) or default
        if profile is None:
            return FixtureEngine(script)
        route = profile.pick_route(call.call_id)
        engine = route.engine
        if engine == "duplex":
            from callagent.engines.duplex.factory import build_duplex

            duplex = build_duplex(profile, route.backend, settings, models)
            if duplex is not None:
                return duplex
            log.warning("call %s: duplex backend %r is not available; using the pipeline",
                        call.call_id, route.backend or profile.duplex)  # fmt: skip
            engine = "pipeline"
        if engine == "pipeline" and (profile.flow is not None or uses_llm(profile)):
            return PipelineEngine(profile, models())
        if engine != "fixture":
            log.warning("call %s: engine %r is not available; using the fixture engine",
                        call.call_id, engine)  # fmt: skip
        return FixtureEngine(script)

    return build


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    return JSONResponse(
        {"status": "ok", "live_calls": len(services.live_calls)}
    )


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    recorder = services.recorder
    if isinstance(recorder, Recorder):
        services.metrics.set("callagent_recorder_queue_depth", recorder.queue_depth)
    services.metrics.set("callagent_live_calls", len(services.live_calls))
    return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")


def warn_if_unverified(settings: Settings) -> None:
    if not settings.twilio.verify_signatures:
        log.warning(
            "TWILIO SIGNATURE VERIFICATION IS OFF (twilio.verify_signatures=false). "
            "Anyone can post fake calls to this service. Use this for local development only."
        )


def audit_checkpointer(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> Checkpointer | None:
    """The checkpointer when CALLAGENT_AUDIT_CHECKPOINT_KEY is set; else a warning."""
    if not settings.audit.checkpoint_key:
        log.warning(
            "AUDIT CHECKPOINTS ARE OFF (CALLAGENT_AUDIT_CHECKPOINT_KEY is not set): the audit "
            "log stays hash-chained, but deleting its newest rows cannot be detected. Set the "
            "key (at least 32 characters, e.g. `openssl rand -hex 32`) to sign checkpoints."
        )
        return None
    return Checkpointer(
        sessions,
        settings.audit.checkpoint_key.encode("utf-8"),
        Path(settings.audit.checkpoint_dir),
        interval_s=settings.audit.checkpoint_interval_s,
    )


async def audit_configuration(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], recorder: Recorder
) -> None:
    """One audit event per start: the configuration, and what changed since the last."""
    previous = None
    try:
        async with sessions() as s:
            previous = await last_snapshot(s)
    except (SQLAlchemyError, OSError) as exc:  # the recorder's journal keeps the event
        log.warning("could not read the last configuration event (%s); logging it as new", exc)
    recorder.submit(config_event(previous, config_snapshot(settings, _agents_dir()),
                                 now=datetime.now(UTC)))  # fmt: skip


def freeze_startup_heap() -> int:
    """Put every object alive now out of the cyclic collector's reach; how many.

    A full collection walks every tracked object. After start-up most of them
    are modules, settings and models that live as long as the process, so a
    full collection during 200 calls took 100-104 ms of the event loop (frames
    went out over 100 ms late); with them frozen it took 16-23 ms
    (docs/benchmarks.md, issue #2). Frozen objects are still freed by
    reference counting; only cyclic garbage among them is kept.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def create_app(
    settings: Settings, engines: EngineFactoryBuilder = default_engines, *, freeze_heap: bool = False
) -> Starlette:
    """The ASGI app. ``freeze_heap``: the process is the service's alone (``callagent
    serve``), so after start-up its heap is frozen (`freeze_startup_heap`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        warn_if_unverified(settings)
        db = create_engine_for(settings)
        sessions = make_sessionmaker(db)
        checkpointer = audit_checkpointer(settings, sessions)
        recorder = Recorder(sessions, settings.recorder, checkpointer=checkpointer)
        recorder.start()
        await audit_configuration(settings, sessions, recorder)
        app.state.services = Services(
            settings=settings,
            recorder=recorder,
            engines=engines(settings),
            redaction=RedactionPolicy(
                email=settings.redaction.email,
                dob=settings.redaction.dob,
                phone=settings.redaction.phone,
            ),
        )
        services = app.state.services
        app.state.console = console = ConsoleRuntime.build(
            settings, sessions, now=services.now, live_calls=lambda: len(services.live_calls),
            checkpointer=checkpointer,
        )
        console.start()
        if freeze_heap:
            log.info("froze %d objects alive after start-up", freeze_startup_heap())
        try:
            yield
        finally:
            await console.close()
            await recorder.close()
            await db.dispose()

    return Starlette(
        routes=[
            *webhooks.routes(),
            *whisper.routes(),
            WebSocketRoute("/twilio/media", media_endpoint),
            WebSocketRoute("/v1/realtime", realtime_endpoint(settings)),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Mount("/console", routes=console_pages.routes()),
            Mount("/api", routes=console_api.routes()),
        ],
        lifespan=lifespan,
    )
