"""[tools.http] in an agent profile: parsed into an HttpToolConfig, bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest

from callagent.agents.profile import ProfileError, load_profile

BASE = '''
name = "helper"
engine = "fixture"
[[tools]]
name = "order_api"
description = "Look an order up in the order service."
[tools.parameters]
type = "object"
required = ["order_number"]
[tools.parameters.properties.order_number]
type = "string"
'''


def write(tmp_path: Path, http: str) -> Path:
    path = tmp_path / "helper.toml"
    path.write_text(BASE + http)
    return path


def test_an_http_tool_is_parsed(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, '''
[tools.http]
url = "https://orders.example.com/v1/lookup"
method = "GET"
timeout_s = 2.5
retries = 3
backoff_s = 0.5
headers = { Accept-Language = "en" }
secret_headers = { Authorization = "ORDERS_API_TOKEN" }
'''))
    http = profile.tool("order_api").http
    assert http is not None and http.url == "https://orders.example.com/v1/lookup"
    assert (http.method, http.timeout_s, http.retries, http.backoff_s) == ("GET", 2.5, 3, 0.5)
    assert http.secret_headers == {"Authorization": "ORDERS_API_TOKEN"}
    assert http.headers == {"Accept-Language": "en"}


def test_a_tool_without_http_is_a_builtin(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, "")).tool("order_api").http is None


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        ('[tools.http]\nmethod = "GET"', "tools[0].http.url: required"),
        ('[tools.http]\nurl = "file:///etc/passwd"', "tools[0].http.url: expected an http"),
        ('[tools.http]\nurl = "http://x/y"\nmethod = "BREW"', "tools[0].http.method: expected one of"),
        ('[tools.http]\nurl = "http://x/y"\nretries = 20', "tools[0].http.retries: expected 0-10"),
        ('[tools.http]\nurl = "http://x/y"\ntimeout_s = 0', "tools[0].http.timeout_s"),
        ('[tools.http]\nurl = "http://x/y"\nsecret_headers = { Authorization = "Bearer abc" }',
         "expected the name of an environment variable"),
        ('[tools.http]\nurl = "http://x/y"\nheaders = { X = 1 }', "tools[0].http.headers.X: expected a string"),
        ('[tools.http]\nurl = "http://x/y"\ntoken = "abc"', "tools[0].http.token: unknown key"),
    ],
)
def test_bad_http_tools_are_refused_with_the_key(tmp_path: Path, http: str, expected: str) -> None:
    with pytest.raises(ProfileError) as err:
        load_profile(write(tmp_path, http))
    assert expected in str(err.value)
