"""The [console] settings: defaults, validation with precise errors, the secret key rule,
and the cookie attributes they lead to."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.responses import Response

from callagent.config import ConfigError, ServerSettings, Settings, load_settings
from callagent.console.auth import set_session_cookie
from callagent.console.operator_store import LoggedIn, OperatorView
from callagent.console.roles import Role
from callagent.console.runtime import ConsoleRuntime

BASE = {"CALLAGENT_TWILIO_AUTH_TOKEN": "t"}
NO_FILE = Path("/nonexistent/callagent.toml")


def load(**env: str) -> Settings:
    return load_settings(NO_FILE, {**BASE, **env})


def test_defaults() -> None:
    c = load().console
    assert (c.session_ttl_s, c.login_max_failures, c.login_window_s, c.page_size,
            c.api_token_ttl_days, c.secret_key) == (28800, 5, 900, 50, 90, "")


@pytest.mark.parametrize("env, message", [
    ({"CALLAGENT_CONSOLE_SESSION_TTL_S": "10"}, "console.session_ttl_s: expected 60-604800"),
    ({"CALLAGENT_CONSOLE_SESSION_TTL_S": "soon"}, "CALLAGENT_CONSOLE_SESSION_TTL_S: expected an integer"),
    ({"CALLAGENT_CONSOLE_LOGIN_MAX_FAILURES": "0"}, "console.login_max_failures: expected 1-1000"),
    ({"CALLAGENT_CONSOLE_LOGIN_WINDOW_S": "0"}, "console.login_window_s: 1-86400"),
    ({"CALLAGENT_CONSOLE_PAGE_SIZE": "5000"}, "console.page_size: expected 10-500"),
    ({"CALLAGENT_CONSOLE_API_TOKEN_TTL_DAYS": "-1"}, "console.api_token_ttl_days: expected 0-3650"),
    ({"CALLAGENT_CONSOLE_SECRET_KEY": "short"}, "console.secret_key: expected at least 32"),
    ({"CALLAGENT_SERVER_HOST": "0.0.0.0"}, "console.secret_key: required when server.host"),
])
def test_bad_values_are_refused_with_the_key_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(**env)


def test_the_secret_key_is_refused_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[console]\nsecret_key = "' + "k" * 40 + '"\n')
    with pytest.raises(ConfigError, match="console.secret_key: is a secret"):
        load_settings(path, BASE)


def test_a_public_host_with_a_key_is_accepted() -> None:
    s = load(CALLAGENT_SERVER_HOST="0.0.0.0", CALLAGENT_CONSOLE_SECRET_KEY="k" * 40)
    assert s.console.secret_key == "k" * 40


def _cookie(origin: str) -> str:
    settings = Settings(server=ServerSettings(public_origin=origin))
    runtime = ConsoleRuntime.build(settings, async_sessionmaker(), now=lambda: datetime.now(UTC),
                                   live_calls=lambda: 0)
    now = datetime.now(UTC)
    logged = LoggedIn("sid", OperatorView(1, "a", Role.ADMIN, True, now), "csrf",
                      now + timedelta(hours=1))
    response = Response()
    set_session_cookie(response, runtime, logged)
    return response.headers["set-cookie"]


def test_cookies_are_httponly_samesite_and_secure_over_tls(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        plain = _cookie("http://127.0.0.1:8080")
    assert "CONSOLE SESSION KEY IS EPHEMERAL" in caplog.text
    tls = _cookie("https://calls.example.com")
    for cookie in (plain, tls):
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=28800" in cookie
    assert "Secure" in tls and "Secure" not in plain
