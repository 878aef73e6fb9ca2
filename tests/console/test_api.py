"""The JSON API (bearer tokens) and its OpenAPI document, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import jsonschema
import pytest
from sqlalchemy import update

from callagent.console.operator_store import create_api_token
from callagent.console.roles import Role
from callagent.store.db import make_sessionmaker
from callagent.store.operators import ApiToken
from tests.console.conftest import PHRASE, Seeded, audit_actions
from tests.e2e.conftest import LiveService

Console = tuple[LiveService, Seeded]

CSV = ("phone,name,timezone,consent_type,consent_at\n"
       "+14155550100,Ann,America/Los_Angeles,PEWC,2026-01-02T10:00:00Z\n"
       "not a number,Bob,America/New_York,,\n"
       "+14155550100,Ann again,America/Los_Angeles,,\n")


async def token_for(service: LiveService, username: str) -> str:
    async with make_sessionmaker(service.db).begin() as s:
        token, _ = await create_api_token(s, username, "test", now=service.services.now(),
                                          ttl=timedelta(days=1))
    return token


@pytest.fixture
async def clients(console: Console) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    service, _ = console
    made = {role.value: httpx.AsyncClient(
        base_url=f"{service.base_url}/api",
        headers={"authorization": f"Bearer {await token_for(service, role.value)}"})
        for role in Role}
    try:
        yield made
    finally:
        for c in made.values():
            await c.aclose()


async def test_openapi_document_describes_every_route(console: Console) -> None:
    service, _ = console
    async with httpx.AsyncClient(base_url=service.base_url) as anon:
        doc = (await anon.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert {"/calls", "/calls/{call_id}", "/calls/{call_id}/export", "/dashboard", "/operators",
            "/operators/{username}/role", "/operators/{username}/disable", "/campaigns",
            "/campaigns/{campaign_id}", "/campaigns/{campaign_id}/contacts",
            "/campaigns/{campaign_id}/start", "/campaigns/{campaign_id}/pause"} == set(doc["paths"])
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)


async def test_search_detail_and_export_over_the_api(
    console: Console, clients: dict[str, httpx.AsyncClient]
) -> None:
    service, seeded = console
    found = (await clients["viewer"].get("/calls", params={"q": PHRASE})).json()
    assert [c["id"] for c in found["calls"]] == [seeded.call_id]
    detail = await clients["viewer"].get(f"/calls/{seeded.call_id}")
    assert detail.status_code == 200
    assert [t["name"] for t in detail.json()["tool_calls"]] == ["order_status"]
    assert (await clients["viewer"].get(f"/calls/{seeded.call_id}/export")).status_code == 403
    csv_export = await clients["supervisor"].get(f"/calls/{seeded.call_id}/export",
                                                 params={"format": "csv"})
    assert csv_export.status_code == 200 and PHRASE in csv_export.text
    assert (await clients["supervisor"].get(f"/calls/{seeded.call_id}/export",
                                            params={"format": "xml"})).status_code == 400
    assert (await clients["viewer"].get("/calls/nope")).status_code == 404
    assert (await clients["viewer"].get("/calls", params={"direction": "up"})).json() == {
        "error": "direction: expected inbound or outbound, got 'up'"}
    dash = (await clients["viewer"].get("/dashboard")).json()
    assert dash["calls_today"] == 2 and dash["interruptions"] == 2
    actions = await audit_actions(service)
    assert ("operator:viewer", "console.transcript_viewed", seeded.call_id) in actions
    assert ("operator:supervisor", "console.call_exported", seeded.call_id) in actions


@pytest.mark.parametrize("role, method, path", [
    ("viewer", "GET", "/calls/{call}/export"),
    ("viewer", "GET", "/operators"),
    ("viewer", "POST", "/operators"),
    ("viewer", "GET", "/campaigns"),
    ("viewer", "POST", "/campaigns"),
    ("viewer", "POST", "/campaigns/1/start"),
    ("viewer", "POST", "/campaigns/1/contacts"),
    ("supervisor", "GET", "/operators"),
    ("supervisor", "POST", "/operators"),
    ("supervisor", "POST", "/operators/viewer/role"),
    ("supervisor", "POST", "/operators/viewer/disable"),
])
async def test_each_role_is_refused_what_it_must_not_reach(
    console: Console, clients: dict[str, httpx.AsyncClient], role: str, method: str, path: str
) -> None:
    _, seeded = console
    response = await clients[role].request(method, path.format(call=seeded.call_id), json={})
    assert response.status_code == 403
    assert response.json() == {"error": f"role {role} may not do this"}


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer cat_forged", "Basic abc"])
async def test_without_a_valid_token_every_route_is_401(console: Console, header: str | None) -> None:
    service, seeded = console
    headers = {"authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=f"{service.base_url}/api", headers=headers) as c:
        for path in ("/calls", f"/calls/{seeded.call_id}", "/dashboard", "/campaigns"):
            response = await c.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_or_expired_token_is_refused(console: Console) -> None:
    service, _ = console
    token = await token_for(service, "viewer")
    async with httpx.AsyncClient(base_url=f"{service.base_url}/api",
                                 headers={"authorization": f"Bearer {token}"}) as c:
        assert (await c.get("/calls")).status_code == 200
        async with make_sessionmaker(service.db).begin() as s:
            await s.execute(update(ApiToken).values(expires_at=service.services.now()))
        assert (await c.get("/calls")).status_code == 401


async def test_operators_over_the_api(clients: dict[str, httpx.AsyncClient]) -> None:
    admin = clients["admin"]
    added = await admin.post("/operators", json={"username": "newbie", "password": "x" * 12,
                                                 "role": "viewer"})
    assert added.status_code == 201
    assert (await admin.post("/operators", json={"username": "newbie", "password": "x" * 12,
                                                 "role": "viewer"})).status_code == 409
    changed = await admin.post("/operators/newbie/role", json={"role": "supervisor"})
    assert changed.json() == {"username": "newbie", "role": "supervisor", "active": True}
    assert (await admin.post("/operators/newbie/disable")).json()["active"] is False
    assert (await admin.post("/operators/admin/disable")).status_code == 400
    assert (await admin.post("/operators/ghost/role", json={"role": "admin"})).status_code == 404


@pytest.mark.parametrize("body, message", [
    (b"{", "body: not JSON"),
    (b"[]", "body: [] is not of type 'object'"),
    (b'{"username": "a", "password": "xxxxxxxxxxxx", "role": "viewer"}', "username: 'a' is too short"),
    (b'{"username": "abc", "password": "short", "role": "viewer"}', "password: 'short' is too short"),
    (b'{"username": "abc", "password": "xxxxxxxxxxxx", "role": "root"}', "role: 'root' is not one of"),
    (b'{"username": "abc", "password": "xxxxxxxxxxxx"}', "body: 'role' is a required property"),
    (b'{"username": "a b", "password": "xxxxxxxxxxxx", "role": "viewer"}', "bad username"),
])
async def test_bad_operator_bodies_get_a_precise_error(
    clients: dict[str, httpx.AsyncClient], body: bytes, message: str
) -> None:
    response = await clients["admin"].post("/operators", content=body,
                                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_campaign_lifecycle_over_the_api(
    console: Console, clients: dict[str, httpx.AsyncClient]
) -> None:
    service, _ = console
    sup = clients["supervisor"]
    spec = {"key": "renewals", "name": "Renewals", "agent_profile": "customer_service",
            "caller_id": "+15005550001", "purpose": "informational"}
    created = await sup.post("/campaigns", json=spec)
    assert created.status_code == 201
    cid = created.json()["id"]
    assert (await sup.post("/campaigns", json=spec)).status_code == 409
    wrong_type = await sup.post(f"/campaigns/{cid}/contacts", content=CSV.encode())
    assert wrong_type.status_code == 415
    imported = await sup.post(f"/campaigns/{cid}/contacts", content=CSV.encode(),
                              headers={"content-type": "text/csv"})
    assert imported.status_code == 200
    result = imported.json()
    assert (result["imported"], result["rejected"]) == (1, 2)
    assert result["errors"][0].startswith("line 3:") and "duplicate" in result["errors"][1]
    assert (await sup.post(f"/campaigns/{cid}/pause")).status_code == 409  # draft
    assert (await sup.post(f"/campaigns/{cid}/start")).json()["state"] == "running"
    assert (await sup.post(f"/campaigns/{cid}/pause")).json()["state"] == "paused"
    assert (await sup.post(f"/campaigns/{cid}/start")).json()["state"] == "running"
    status = (await sup.get(f"/campaigns/{cid}")).json()
    assert status["contacts"] == 1 and status["by_state"] == [["pending", 1]]
    assert (await sup.get("/campaigns/999")).status_code == 404
    actions = {a[1] for a in await audit_actions(service)}
    assert {"console.campaign_created", "console.contacts_imported",
            "console.campaign_started", "console.campaign_paused"} <= actions


@pytest.mark.parametrize("change, message", [
    ({"caller_id": "5550001"}, "caller_id: '5550001' does not match"),
    ({"purpose": "sales"}, "purpose: 'sales' is not one of"),
    ({"window_start": "07:00"}, "must lie inside"),
    ({"max_concurrent_calls": 0}, "max_concurrent_calls: 0 is less than the minimum of 1"),
    ({"key": "Bad Key"}, "key: 'Bad Key' does not match"),
    ({"colour": "red"}, "Additional properties are not allowed ('colour' was unexpected)"),
])
async def test_bad_campaigns_get_a_precise_error(
    clients: dict[str, httpx.AsyncClient], change: dict[str, object], message: str
) -> None:
    spec = {"key": "k1", "name": "N", "agent_profile": "p", "caller_id": "+15005550001",
            "purpose": "informational", **change}
    response = await clients["supervisor"].post("/campaigns", json=spec)
    assert response.status_code == 400
    assert message in response.json()["error"]
