"""What every console page shares: rendering, refusals, and the permission/CSRF gate.

``page(permission)`` wraps a handler: without a session a GET is sent to the login page
and a POST refused (401); a POST without the session's CSRF token gets 403; a role
without the permission gets 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from callagent.console import operator_store as ops
from callagent.console.auth import check_csrf, console_of, may, session_of
from callagent.console.roles import Permission

__all__ = ["Handler", "field", "page", "problem", "render"]

Handler = Callable[[Request, ops.LoggedIn], Awaitable[Response]]


def render(request: Request, name: str, logged: ops.LoggedIn | None, status: int = 200,
            **context: Any) -> Response:
    runtime = console_of(request)
    ctx = {"me": logged.operator if logged else None,
           "csrf": logged.csrf_token if logged else "",
           "Permission": Permission, "may": may, **context}
    return runtime.templates.TemplateResponse(request, name, ctx, status_code=status)


def problem(request: Request, logged: ops.LoggedIn | None, status: int, message: str) -> Response:
    return render(request, "problem.html", logged, status=status, message=message)


def page(permission: Permission) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            logged = await session_of(request)
            if logged is None:
                if request.method == "GET":
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(
                        "/console/login?" + urlencode({"next": target}), status_code=303)
                return problem(request, None, 401, "Not logged in (or the session expired).")
            if request.method != "POST":
                return await _checked(request, logged)
            form = await request.form()
            try:
                if not check_csrf(logged.csrf_token, form.get("csrf_token")):
                    return problem(request, logged, 403,
                                   "Missing or wrong CSRF token: reload the page and try again.")
                return await _checked(request, logged)
            finally:
                await form.close()  # spooled uploads

        async def _checked(request: Request, logged: ops.LoggedIn) -> Response:
            if not may(logged.operator, permission):
                return problem(request, logged, 403,
                               f"Your role ({logged.operator.role.value}) may not do this.")
            return await handler(request, logged)
        return endpoint
    return wrap


def field(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


