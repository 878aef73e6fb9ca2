"""Who is asking, and may they: session cookies, CSRF tokens, bearer tokens, roles.

* Browser: the cookie ``callagent_session`` holds the session id signed with a timestamp
  (itsdangerous); it is refused once older than ``console.session_ttl_s`` and whenever
  the session row is expired, revoked (logout) or its operator disabled. HttpOnly,
  SameSite=Lax, Secure when the public origin is https.
* Every POST form carries ``csrf_token``: the session's token (login: the token of the
  short-lived signed ``callagent_login_csrf`` cookie), compared in constant time.
* JSON API: ``Authorization: Bearer <token>`` (``callagent token create``).
"""

from __future__ import annotations

import hmac
import secrets

from itsdangerous import BadSignature, SignatureExpired
from starlette.requests import Request
from starlette.responses import Response

from callagent.console.operator_store import (
    LoggedIn,
    OperatorView,
    operator_for_token,
    session_operator,
)
from callagent.console.roles import Permission, allowed
from callagent.console.runtime import ConsoleRuntime

__all__ = [
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "bearer_operator",
    "check_csrf",
    "clear_session_cookie",
    "console_of",
    "login_csrf",
    "login_csrf_expected",
    "may",
    "session_of",
    "set_login_csrf_cookie",
    "set_session_cookie",
]

SESSION_COOKIE = "callagent_session"
LOGIN_CSRF_COOKIE = "callagent_login_csrf"
LOGIN_CSRF_TTL_S = 3600


def console_of(request: Request) -> ConsoleRuntime:
    runtime: ConsoleRuntime = request.app.state.console
    return runtime


def set_session_cookie(response: Response, runtime: ConsoleRuntime, logged: LoggedIn) -> None:
    response.set_cookie(
        SESSION_COOKIE, runtime.signer.dumps(logged.session_id),
        max_age=runtime.settings.console.session_ttl_s, path="/", httponly=True,
        samesite="lax", secure=runtime.secure_cookies,
    )


def clear_session_cookie(response: Response, runtime: ConsoleRuntime) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=runtime.secure_cookies)


async def session_of(request: Request) -> LoggedIn | None:
    """The live session the request's cookie names, or None (absent, forged, expired)."""
    runtime = console_of(request)
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        session_id = runtime.signer.loads(raw, max_age=runtime.settings.console.session_ttl_s)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(session_id, str):
        return None
    async with runtime.reading() as s:
        return await session_operator(s, session_id, now=runtime.now())


def login_csrf(request: Request) -> tuple[str, bool]:
    """The token the login form carries, and whether its cookie must be (re)set."""
    token = login_csrf_expected(request)
    return (token, False) if token else (secrets.token_urlsafe(32), True)


def set_login_csrf_cookie(response: Response, runtime: ConsoleRuntime, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, runtime.signer.dumps(token, salt="login-csrf"),
                        max_age=LOGIN_CSRF_TTL_S, path="/console/login", httponly=True,
                        samesite="lax", secure=runtime.secure_cookies)


def login_csrf_expected(request: Request) -> str | None:
    runtime = console_of(request)
    raw = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not raw:
        return None
    try:
        token = runtime.signer.loads(raw, max_age=LOGIN_CSRF_TTL_S, salt="login-csrf")
    except (SignatureExpired, BadSignature):
        return None
    return token if isinstance(token, str) else None


def check_csrf(expected: str | None, given: object) -> bool:
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def may(operator: OperatorView, permission: Permission) -> bool:
    return operator.active and allowed(operator.role, permission)


async def bearer_operator(request: Request) -> OperatorView | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    runtime = console_of(request)
    async with runtime.reading() as s:
        return await operator_for_token(s, token.strip(), now=runtime.now())
