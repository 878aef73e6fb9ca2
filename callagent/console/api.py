"""The JSON API under /api: the console's pages as JSON, for scripts and other tools.

Every route but ``/api/openapi.json`` needs ``Authorization: Bearer <token>``
(``callagent token create``); 401 without a valid one, 403 when the token's operator's
role lacks the permission. Bodies are JSON checked against the schemas in
``console.openapi`` (errors name the field); a contact import takes the CSV itself
(``text/csv``). Views of a transcript and exports are audited as on the pages.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import jsonschema
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from callagent.campaigns.settings import IllegalTransition
from callagent.console import campaign_ops as camps
from callagent.console import operator_store as ops
from callagent.console.audit_log import ConsoleAction, audit
from callagent.console.auth import bearer_operator, console_of, may
from callagent.console.call_filters import BadFilter
from callagent.console.call_queries import UnknownCall, call_detail, dashboard
from callagent.console.export import to_csv, to_json, to_jsonable
from callagent.console.openapi import SCHEMAS, openapi_document
from callagent.console.passwords import WeakPassword
from callagent.console.roles import Permission, UnknownRole, parse_role

__all__ = ["routes"]

Handler = Callable[[Request, ops.OperatorView], Awaitable[Response]]
MAX_JSON_BYTES = 64 * 1024


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.isoformat()))


def api(permission: Permission) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            operator = await bearer_operator(request)
            if operator is None:
                return error(401, "missing, unknown, expired or revoked bearer token",
                             **{"www-authenticate": 'Bearer realm="callagent"'})
            if not may(operator, permission):
                return error(403, f"role {operator.role.value} may not do this")
            return await handler(request, operator)
        return endpoint
    return wrap


async def _body(request: Request, schema: str) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_JSON_BYTES:
        raise _BadBody(f"body: larger than {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadBody(f"body: not JSON ({exc})") from None
    try:
        jsonschema.validate(data, SCHEMAS[schema])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "body"
        raise _BadBody(f"{where}: {exc.message}") from None
    assert isinstance(data, dict)
    return data


class _BadBody(ValueError):
    pass


def _call_id(request: Request) -> str:
    return str(request.path_params["call_id"])


@api(Permission.READ_CALLS)
async def calls(request: Request, operator: ops.OperatorView) -> Response:
    try:
        _, page = await console_of(request).find_calls(request.query_params)
    except BadFilter as exc:
        return error(400, str(exc))
    return JSONResponse({
        "calls": [_plain(asdict(c)) for c in page.calls],
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
    })


@api(Permission.READ_CALLS)
async def call(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    async with runtime.auditing() as s:
        try:
            detail = await call_detail(s, _call_id(request))
        except UnknownCall as exc:
            return error(404, str(exc))
        await audit(s, ConsoleAction.TRANSCRIPT_VIEWED, operator.actor, now=runtime.now(),
                    call_id=detail.call.id, via="api")
    return JSONResponse(to_jsonable(detail, with_audit=True))


@api(Permission.EXPORT_CALLS)
async def export(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        return error(400, f"format: expected json or csv, got {fmt!r}")
    async with runtime.auditing() as s:
        try:
            detail = await call_detail(s, _call_id(request))
        except UnknownCall as exc:
            return error(404, str(exc))
        await audit(s, ConsoleAction.CALL_EXPORTED, operator.actor, now=runtime.now(),
                    call_id=detail.call.id, format=fmt, via="api")
    if fmt == "csv":
        return PlainTextResponse(to_csv(detail), media_type="text/csv; charset=utf-8")
    return PlainTextResponse(to_json(detail), media_type="application/json")


@api(Permission.READ_CALLS)
async def dashboard_figures(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        figures = await dashboard(s, now=runtime.now())
    return JSONResponse({**_plain(asdict(figures)), "live_calls": runtime.live_calls()})


# --- operators -------------------------------------------------------------------------------

@api(Permission.MANAGE_OPERATORS)
async def operators(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        everyone = await ops.list_operators(s)
    return JSONResponse({"operators": [
        {"username": o.username, "role": o.role.value, "active": o.active} for o in everyone]})


@api(Permission.MANAGE_OPERATORS)
async def operator_add(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    now = runtime.now()
    try:
        body = await _body(request, "NewOperator")
        role = parse_role(body["role"])
        async with runtime.auditing() as s:
            added = await ops.add_operator(s, body["username"], body["password"], role, now=now)
            await audit(s, ConsoleAction.OPERATOR_ADDED, operator.actor, now=now,
                        operator=added.username, role=role.value, via="api")
    except ops.DuplicateOperator as exc:
        return error(409, str(exc))
    except (_BadBody, UnknownRole, ops.BadUsername, WeakPassword) as exc:
        return error(400, str(exc))
    return JSONResponse({"username": added.username, "role": role.value, "active": True},
                        status_code=201)


@api(Permission.MANAGE_OPERATORS)
async def operator_change(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    username, change = request.path_params["username"], request.path_params["change"]
    now = runtime.now()
    try:
        async with runtime.auditing() as s:
            if change == "role":
                role = parse_role((await _body(request, "RoleChange"))["role"])
                done = await ops.set_role(s, username, role)
                await audit(s, ConsoleAction.ROLE_CHANGED, operator.actor, now=now,
                            operator=done.username, role=role.value, via="api")
            elif change == "disable":
                if username == operator.username:
                    return error(400, "you cannot disable yourself")
                done = await ops.set_active(s, username, False, now=now)
                await audit(s, ConsoleAction.OPERATOR_DISABLED, operator.actor, now=now,
                            operator=done.username, via="api")
            else:
                return error(404, f"unknown change {change!r}: role or disable")
    except ops.UnknownOperator as exc:
        return error(404, str(exc))
    except (_BadBody, UnknownRole) as exc:
        return error(400, str(exc))
    return JSONResponse({"username": done.username, "role": done.role.value,
                         "active": done.active})


# --- campaigns -------------------------------------------------------------------------------

def _campaign_id(request: Request) -> int:
    return int(request.path_params["campaign_id"])


@api(Permission.READ_CAMPAIGNS)
async def campaigns(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        rows = await camps.list_campaigns(s)
    return JSONResponse({"campaigns": [_plain(asdict(c)) for c in rows]})


@api(Permission.RUN_CAMPAIGNS)
async def campaign_create(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    now = runtime.now()
    try:
        key, spec = camps.parse_campaign(await _body(request, "NewCampaign"))
        async with runtime.auditing() as s:
            campaign_id = await camps.create(s, key, spec, now=now)
            await audit(s, ConsoleAction.CAMPAIGN_CREATED, operator.actor, now=now,
                        campaign_id=campaign_id, key=key, via="api")
    except (_BadBody, camps.BadCampaign) as exc:
        return error(409 if "already exists" in str(exc) else 400, str(exc))
    return JSONResponse({"id": campaign_id, "key": key, "state": "draft"}, status_code=201)


@api(Permission.READ_CAMPAIGNS)
async def campaign_status(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        try:
            p = await camps.progress(s, _campaign_id(request), now=runtime.now())
        except camps.UnknownCampaign as exc:
            return error(404, str(exc))
    return JSONResponse(_plain(asdict(p)))


@api(Permission.RUN_CAMPAIGNS)
async def campaign_import(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != "text/csv":
        return error(415, "content-type: send the contacts file as text/csv")
    now = runtime.now()
    try:
        async with runtime.auditing() as s:
            result = await camps.import_csv(s, _campaign_id(request), await request.body(), now=now)
            await audit(s, ConsoleAction.CONTACTS_IMPORTED, operator.actor, now=now,
                        campaign_id=_campaign_id(request), imported=result.imported,
                        rejected=result.rejected, via="api")
    except camps.UnknownCampaign as exc:
        return error(404, str(exc))
    except camps.BadCampaign as exc:
        return error(400, str(exc))
    return JSONResponse(asdict(result))


@api(Permission.RUN_CAMPAIGNS)
async def campaign_move(request: Request, operator: ops.OperatorView) -> Response:
    runtime = console_of(request)
    action = request.path_params["action"]
    now = runtime.now()
    try:
        async with runtime.auditing() as s:
            done = await camps.move(s, _campaign_id(request), action)
            await audit(s, ConsoleAction.CAMPAIGN_STARTED if action == "start"
                        else ConsoleAction.CAMPAIGN_PAUSED, operator.actor, now=now,
                        campaign_id=done.id, via="api")
    except camps.UnknownCampaign as exc:
        return error(404, str(exc))
    except camps.BadCampaign as exc:
        return error(404, str(exc))
    except IllegalTransition as exc:
        return error(409, str(exc))
    return JSONResponse({"id": done.id, "state": done.state})


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(console_of(request).settings.server.public_origin))


def routes() -> list[BaseRoute]:
    return [
        Route("/openapi.json", openapi),
        Route("/dashboard", dashboard_figures),
        Route("/calls", calls),
        Route("/calls/{call_id}", call),
        Route("/calls/{call_id}/export", export),
        Route("/operators", operators, methods=["GET"]),
        Route("/operators", operator_add, methods=["POST"]),
        Route("/operators/{username}/{change}", operator_change, methods=["POST"]),
        Route("/campaigns", campaigns, methods=["GET"]),
        Route("/campaigns", campaign_create, methods=["POST"]),
        Route("/campaigns/{campaign_id:int}", campaign_status),
        Route("/campaigns/{campaign_id:int}/contacts", campaign_import, methods=["POST"]),
        Route("/campaigns/{campaign_id:int}/{action}", campaign_move, methods=["POST"]),
    ]
