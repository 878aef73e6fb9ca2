"""The console's server-rendered pages (Starlette + Jinja2); usable without JavaScript.

Login/logout, dashboard, calls (list, search, detail, export) and operators; campaigns
are in ``campaign_pages``. Each page names the permission it needs (``page_kit.page``).
Views of a transcript and exports are written to the audit log before they are sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from callagent.console import campaign_pages
from callagent.console import operator_store as ops
from callagent.console.audit_log import ConsoleAction, audit
from callagent.console.auth import (
    check_csrf,
    clear_session_cookie,
    console_of,
    login_csrf,
    login_csrf_expected,
    session_of,
    set_login_csrf_cookie,
    set_session_cookie,
)
from callagent.console.page_kit import field, page, problem, render
from callagent.console.call_filters import DIRECTIONS, BadFilter
from callagent.console.call_queries import (
    UnknownCall,
    call_audit,
    call_detail,
    dashboard,
)
from callagent.console.export import to_csv, to_json
from callagent.console.passwords import WeakPassword, verify_password
from callagent.console.roles import Permission, Role, UnknownRole, parse_role
from callagent.console.timeline import build_timeline

__all__ = ["routes"]

def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(target: str) -> str:
    return target if target.startswith("/console") and not target.startswith("//") else "/console/"


# --- login / logout ---------------------------------------------------------------------------

async def login_form(request: Request) -> Response:
    if await session_of(request) is not None:
        return RedirectResponse("/console/", status_code=303)
    return _login_page(request, 200, "", request.query_params.get("next", "/console/"))


def _login_page(request: Request, status: int, error: str, target: str) -> Response:
    token, fresh = login_csrf(request)
    response = render(request, "login.html", None, status=status, csrf=token, error=error,
                       next=_safe_next(target))
    if fresh:
        set_login_csrf_cookie(response, console_of(request), token)
    return response


async def login_submit(request: Request) -> Response:
    runtime = console_of(request)
    form = await request.form()
    if not check_csrf(login_csrf_expected(request), form.get("csrf_token")):
        return problem(request, None, 403,
                        "Missing or wrong CSRF token: reload the login page and try again.")
    username = str(form.get("username", "")).strip().lower()[:64]
    password = str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/console/")))
    now = runtime.now()
    cfg = runtime.settings.console
    client = _client(request)

    async def again(status: int, error: str) -> Response:
        return _login_page(request, status, error, target)

    if not username or not password:
        return await again(400, "Enter a username and a password.")
    async with runtime.reading() as s:
        by_name, by_client = await ops.count_failures(
            s, username=username, client=client, since=now - timedelta(seconds=cfg.login_window_s))
    if by_name >= cfg.login_max_failures or by_client >= 4 * cfg.login_max_failures:
        return await again(429, "Too many failed logins: wait a few minutes and try again.")
    async with runtime.reading() as s:
        found = await ops.find_by_username(s, username)
    # argon2 is slow on purpose: off the event loop (it carries live calls' audio)
    ok = await asyncio.to_thread(verify_password, found[1] if found else None, password)
    operator = found[0] if found else None
    ok = ok and operator is not None and operator.active
    async with runtime.auditing() as s:
        await ops.prune_attempts(s, before=now - timedelta(days=1))
        await ops.record_attempt(s, username, client, ok, now=now)
        if not ok or operator is None:
            await audit(s, ConsoleAction.LOGIN_FAILED, f"login:{username}", now=now,
                        client=client)
        else:
            logged = await ops.open_session(
                s, operator, now=now, ttl=timedelta(seconds=cfg.session_ttl_s))
            await audit(s, ConsoleAction.LOGIN, operator.actor, now=now, client=client)
    if not ok or operator is None:
        return await again(401, "Wrong username or password (or the account is disabled).")
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, runtime, logged)
    return response


async def logout(request: Request) -> Response:
    runtime = console_of(request)
    logged = await session_of(request)
    if logged is None:
        return problem(request, None, 401, "Not logged in.")
    form = await request.form()
    if not check_csrf(logged.csrf_token, form.get("csrf_token")):
        return problem(request, logged, 403, "Missing or wrong CSRF token.")
    now = runtime.now()
    async with runtime.auditing() as s:
        await ops.revoke_session(s, logged.session_id, now=now)
        await audit(s, ConsoleAction.LOGOUT, logged.operator.actor, now=now)
    response = RedirectResponse("/console/login", status_code=303)
    clear_session_cookie(response, runtime)
    return response


# --- calls --------------------------------------------------------------------------------------

@page(Permission.READ_CALLS)
async def dashboard_page(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        figures = await dashboard(s, now=runtime.now())
    return render(request, "dashboard.html", logged, d=figures, live=runtime.live_calls())


@page(Permission.READ_CALLS)
async def calls_page(request: Request, logged: ops.LoggedIn) -> Response:
    try:
        f, result = await console_of(request).find_calls(request.query_params)
    except BadFilter as exc:
        return render(request, "calls.html", logged, status=400, error=str(exc), calls=[],
                       next_url="", params=dict(request.query_params), directions=DIRECTIONS)
    next_url = ("/console/calls?" + urlencode(f.params(cursor=result.next_cursor))
                if result.next_cursor else "")
    return render(request, "calls.html", logged, error="", calls=result.calls,
                   next_url=next_url, params=f.params(), directions=DIRECTIONS)


@page(Permission.READ_CALLS)
async def call_page(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    call_id = request.path_params["call_id"]
    now = runtime.now()
    async with runtime.auditing() as s:
        try:
            detail = await call_detail(s, call_id)
        except UnknownCall as exc:
            return problem(request, logged, 404, str(exc))
        await audit(s, ConsoleAction.TRANSCRIPT_VIEWED, logged.operator.actor, now=now,
                    call_id=call_id)
        detail = replace(detail, audit=await call_audit(s, call_id))  # shows this view too
    return render(request, "call.html", logged, c=detail, timeline=build_timeline(detail.turns))


@page(Permission.EXPORT_CALLS)
async def export_call(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    call_id, fmt = request.path_params["call_id"], request.path_params["fmt"]
    if fmt not in ("json", "csv"):
        return problem(request, logged, 404, f"unknown export format {fmt!r}: json or csv")
    async with runtime.auditing() as s:
        try:
            detail = await call_detail(s, call_id)
        except UnknownCall as exc:
            return problem(request, logged, 404, str(exc))
        await audit(s, ConsoleAction.CALL_EXPORTED, logged.operator.actor, now=runtime.now(),
                    call_id=call_id, format=fmt)
    body, media = (to_json(detail), "application/json") if fmt == "json" else (
        to_csv(detail), "text/csv; charset=utf-8")
    return PlainTextResponse(body, media_type=media, headers={
        "content-disposition": f'attachment; filename="call-{call_id}.{fmt}"'})


@page(Permission.READ_CALLS)
async def recording(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    call_id = request.path_params["call_id"]
    async with runtime.auditing() as s:
        try:
            detail = await call_detail(s, call_id)
        except UnknownCall as exc:
            return problem(request, logged, 404, str(exc))
        path = detail.call.recording_path
        if not path or not Path(path).is_file():
            return problem(request, logged, 404, f"no recording is kept for call {call_id}")
        await audit(s, ConsoleAction.RECORDING_PLAYED, logged.operator.actor, now=runtime.now(),
                    call_id=call_id)
    return FileResponse(path, media_type="audio/wav")


# --- operators (admin) ------------------------------------------------------------------------

async def _operators_view(request: Request, logged: ops.LoggedIn, status: int = 200,
                          error: str = "", notice: str = "") -> Response:
    runtime = console_of(request)
    async with runtime.reading() as s:
        everyone = await ops.list_operators(s)
    return render(request, "operators.html", logged, status=status, operators=everyone,
                   roles=list(Role), error=error, notice=notice)


@page(Permission.MANAGE_OPERATORS)
async def operators_page(request: Request, logged: ops.LoggedIn) -> Response:
    return await _operators_view(request, logged)


@page(Permission.MANAGE_OPERATORS)
async def operator_add(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    form = await request.form()
    now = runtime.now()
    try:
        role = parse_role(field(form, "role"))
        async with runtime.auditing() as s:
            added = await ops.add_operator(s, field(form, "username"), field(form, "password"),
                                           role, now=now)
            await audit(s, ConsoleAction.OPERATOR_ADDED, logged.operator.actor, now=now,
                        operator=added.username, role=role.value)
    except (UnknownRole, ops.BadUsername, ops.DuplicateOperator, WeakPassword) as exc:
        return await _operators_view(request, logged, 400, error=str(exc))
    return await _operators_view(request, logged, notice=f"added {added.username}")


@page(Permission.MANAGE_OPERATORS)
async def operator_change(request: Request, logged: ops.LoggedIn) -> Response:
    runtime = console_of(request)
    form = await request.form()
    username, change = request.path_params["username"], request.path_params["change"]
    now = runtime.now()
    try:
        async with runtime.auditing() as s:
            if change == "role":
                role = parse_role(field(form, "role"))
                done = await ops.set_role(s, username, role)
                await audit(s, ConsoleAction.ROLE_CHANGED, logged.operator.actor, now=now,
                            operator=done.username, role=role.value)
            elif change in ("disable", "enable"):
                if change == "disable" and username == logged.operator.username:
                    raise ValueError("you cannot disable yourself")
                done = await ops.set_active(s, username, change == "enable", now=now)
                action = (ConsoleAction.OPERATOR_ENABLED if change == "enable"
                          else ConsoleAction.OPERATOR_DISABLED)
                await audit(s, action, logged.operator.actor, now=now, operator=done.username)
            else:
                return problem(request, logged, 404, f"unknown change {change!r}")
    except ops.UnknownOperator as exc:
        return await _operators_view(request, logged, 404, error=str(exc))
    except (UnknownRole, ValueError) as exc:
        return await _operators_view(request, logged, 400, error=str(exc))
    return await _operators_view(request, logged, notice=f"{change}: {done.username}")


def routes() -> list[BaseRoute]:
    return [
        Route("/", dashboard_page),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/calls", calls_page),
        Route("/calls/{call_id}", call_page),
        Route("/calls/{call_id}/export.{fmt}", export_call),
        Route("/calls/{call_id}/recording.wav", recording),
        Route("/operators", operators_page, methods=["GET"]),
        Route("/operators", operator_add, methods=["POST"]),
        Route("/operators/{username}/{change}", operator_change, methods=["POST"]),
        *campaign_pages.routes(),
    ]
