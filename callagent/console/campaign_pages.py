"""Campaign pages: list and create (fields + a CSV of contacts; bad rows are shown),
progress and outcomes (the page refreshes itself, no JavaScript), start and pause."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from callagent.campaigns.settings import IllegalTransition
from callagent.console import campaign_ops as camps
from callagent.console import operator_store as ops
from callagent.console.audit_log import ConsoleAction, audit
from callagent.console.auth import console_of
from callagent.console.page_kit import page, problem, render
from callagent.console.roles import Permission

__all__ = ["routes"]

FIELDS = ("key", "name", "agent_profile", "caller_id", "purpose", "window_start", "window_end",
          "max_concurrent_calls", "max_attempts")


async def _list(request: Request, logged: ops.LoggedIn, status: int = 200, error: str = "",
                values: dict[str, str] | None = None) -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        rows = await camps.list_campaigns(s)
    return render(request, "campaigns.html", logged, status=status, campaigns=rows, error=error,
                  values=values or {})


@page(Permission.READ_CAMPAIGNS)
async def campaigns_page(request: Request, logged: ops.LoggedIn) -> Response:
    return await _list(request, logged)


@page(Permission.RUN_CAMPAIGNS)
async def campaign_create(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    form = await request.form()
    values = {k: str(form.get(k, "")) for k in FIELDS if isinstance(form.get(k, ""), str)}
    upload = form.get("contacts")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await _list(request, logged, 400, "contacts: choose a CSV file of contacts", values)
    data = await upload.read()
    now = runtime.now()
    try:
        key, spec = camps.parse_campaign(values)
        async with runtime.auditing() as s:
            campaign_id = await camps.create(s, key, spec, now=now)
            imported = await camps.import_csv(s, campaign_id, data, now=now)
            await audit(s, ConsoleAction.CAMPAIGN_CREATED, logged.operator.actor, now=now,
                        campaign_id=campaign_id, key=key)
            await audit(s, ConsoleAction.CONTACTS_IMPORTED, logged.operator.actor, now=now,
                        campaign_id=campaign_id, imported=imported.imported,
                        rejected=imported.rejected)
    except camps.BadCampaign as exc:
        return await _list(request, logged, 400, str(exc), values)
    return await _detail(request, logged, campaign_id, imported=imported)


async def _detail(request: Request, logged: ops.LoggedIn, campaign_id: int, *,
                  imported: camps.Imported | None = None, status: int = 200,
                  error: str = "") -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        try:
            progress = await camps.progress(s, campaign_id, now=runtime.now())
        except camps.UnknownCampaign as exc:
            return problem(request, logged, 404, str(exc))
    return render(request, "campaign.html", logged, status=status, p=progress,
                  imported=imported, error=error)


@page(Permission.READ_CAMPAIGNS)
async def campaign_page(request: Request, logged: ops.LoggedIn) -> Response:
    return await _detail(request, logged, int(request.path_params["campaign_id"]))


@page(Permission.RUN_CAMPAIGNS)
async def campaign_move(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    campaign_id, action = int(request.path_params["campaign_id"]), request.path_params["action"]
    if action not in ("start", "pause"):
        return problem(request, logged, 404, f"unknown action {action!r}: start or pause")
    now = runtime.now()
    try:
        async with runtime.auditing() as s:
            await camps.move(s, campaign_id, action)
            await audit(s, ConsoleAction.CAMPAIGN_STARTED if action == "start"
                        else ConsoleAction.CAMPAIGN_PAUSED, logged.operator.actor, now=now,
                        campaign_id=campaign_id)
    except camps.UnknownCampaign as exc:
        return problem(request, logged, 404, str(exc))
    except IllegalTransition as exc:
        return await _detail(request, logged, campaign_id, status=409, error=str(exc))
    return RedirectResponse(f"/console/campaigns/{campaign_id}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/campaigns", campaigns_page, methods=["GET"]),
        Route("/campaigns", campaign_create, methods=["POST"]),
        Route("/campaigns/{campaign_id:int}", campaign_page, methods=["GET"]),
        Route("/campaigns/{campaign_id:int}/{action}", campaign_move, methods=["POST"]),
    ]
