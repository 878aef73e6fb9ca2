"""HTTP tools against a local endpoint: timeouts, garbage, 5xx then success, secrets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from callagent.tools.http import HttpToolConfig, call_http_tool
from callagent.tools.outcome import ToolState
from tests.tools.http_server import Reply, ToolEndpoint, json_reply


@pytest.fixture
def endpoint() -> Iterator[ToolEndpoint]:
    server = ToolEndpoint()
    yield server
    server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def config(endpoint: ToolEndpoint, **kw: object) -> HttpToolConfig:
    base: dict[str, object] = {"url": endpoint.url("/orders"), "retries": 2, "backoff_s": 0.0}
    base.update(kw)
    return HttpToolConfig(**base)  # type: ignore[arg-type]


async def test_success_returns_the_json_object(endpoint: ToolEndpoint, client: httpx.AsyncClient) -> None:
    endpoint.add("/orders", json_reply({"status": "shipped"}))
    out = await call_http_tool(client, config(endpoint), {"order_number": "45729"}, {})
    assert out.state is ToolState.OK and out.data == {"status": "shipped"} and out.attempts == 1
    assert json.loads(endpoint.seen[0].body) == {"order_number": "45729"}


async def test_get_sends_arguments_as_the_query(endpoint: ToolEndpoint, client: httpx.AsyncClient) -> None:
    endpoint.add("/orders", json_reply({"ok": True}))
    await call_http_tool(client, config(endpoint, method="GET"), {"order_number": "45729"}, {})
    assert endpoint.seen[0].method == "GET" and endpoint.seen[0].query == "order_number=45729"


async def test_500_then_success_is_retried(endpoint: ToolEndpoint, client: httpx.AsyncClient) -> None:
    endpoint.add("/orders", Reply(500, b"oops"), Reply(503, b""), json_reply({"status": "ok"}))
    out = await call_http_tool(client, config(endpoint), {}, {})
    assert out.state is ToolState.OK and out.attempts == 3 and len(endpoint.seen) == 3


async def test_500_every_time_is_an_error_after_the_retries(
    endpoint: ToolEndpoint, client: httpx.AsyncClient
) -> None:
    endpoint.add("/orders", *[Reply(500, b"")] * 3)
    out = await call_http_tool(client, config(endpoint), {}, {})
    assert out.state is ToolState.ERROR and out.attempts == 3
    assert out.error == "the tool's endpoint failed (500) after 3 attempts"


async def test_a_timeout_is_retried_then_reported(endpoint: ToolEndpoint, client: httpx.AsyncClient) -> None:
    endpoint.add("/orders", Reply(hold=True), Reply(hold=True))
    out = await call_http_tool(client, config(endpoint, timeout_s=0.2, retries=1), {}, {})
    assert out.state is ToolState.ERROR and out.attempts == 2
    assert "did not answer within 0.2 s" in out.error


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"<html>busy</html>", "not JSON"), (b"[1, 2]", "JSON list, expected an object"),
     (b"\xff\xfe", "not JSON")],
)
async def test_a_garbage_answer_is_an_error_without_retry(
    endpoint: ToolEndpoint, client: httpx.AsyncClient, body: bytes, expected: str
) -> None:
    endpoint.add("/orders", Reply(200, body), json_reply({"never": "asked"}))
    out = await call_http_tool(client, config(endpoint), {}, {})
    assert out.state is ToolState.ERROR and expected in out.error and out.attempts == 1


async def test_404_is_not_found_and_400_an_error(endpoint: ToolEndpoint, client: httpx.AsyncClient) -> None:
    endpoint.add("/orders", Reply(404, b"{}"), Reply(400, b"{}"))
    assert (await call_http_tool(client, config(endpoint), {}, {})).state is ToolState.NOT_FOUND
    out = await call_http_tool(client, config(endpoint), {}, {})
    assert out.state is ToolState.ERROR and "refused the request (400)" in out.error


async def test_unreachable_endpoint_is_an_error(client: httpx.AsyncClient) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = HttpToolConfig(url=f"http://127.0.0.1:{port}/x", retries=0)
    out = await call_http_tool(client, cfg, {}, {})
    assert out.state is ToolState.ERROR and "could not be reached" in out.error


async def test_secret_headers_come_from_the_environment(
    endpoint: ToolEndpoint, client: httpx.AsyncClient
) -> None:
    endpoint.add("/orders", json_reply({}))
    cfg = config(endpoint, headers={"X-Tenant": "acme"},
                 secret_headers={"Authorization": "ORDERS_API_TOKEN"})
    await call_http_tool(client, cfg, {}, {"ORDERS_API_TOKEN": "Bearer s3cret"})
    assert endpoint.seen[0].headers["authorization"] == "Bearer s3cret"
    assert endpoint.seen[0].headers["x-tenant"] == "acme"


async def test_a_missing_secret_is_an_error_and_nothing_is_sent(
    endpoint: ToolEndpoint, client: httpx.AsyncClient
) -> None:
    cfg = config(endpoint, secret_headers={"Authorization": "ORDERS_API_TOKEN"})
    out = await call_http_tool(client, cfg, {}, {})
    assert out.state is ToolState.ERROR and "ORDERS_API_TOKEN is empty" in out.error
    assert endpoint.seen == []


@pytest.mark.parametrize(
    ("kw", "expected"),
    [({"url": "ftp://x/y"}, "url: expected an http"), ({"method": "BREW"}, "method: expected"),
     ({"timeout_s": 0}, "timeout_s"), ({"retries": 11}, "retries"), ({"backoff_s": -1}, "backoff_s"),
     ({"headers": {"A": "1"}, "secret_headers": {"a": "X"}}, "also in secret_headers")],
)
def test_bad_config_is_refused(kw: dict[str, object], expected: str) -> None:
    base: dict[str, object] = {"url": "http://127.0.0.1/x"}
    base.update(kw)
    with pytest.raises(ValueError, match=expected):
        HttpToolConfig(**base)  # type: ignore[arg-type]
