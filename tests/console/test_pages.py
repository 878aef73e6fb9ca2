"""The console over HTTP on a live service (SQLite and PostgreSQL): login, search, detail,
export, audit, roles, CSRF, expired sessions, rate limiting, bad filters."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import update

from callagent.console.auth import SESSION_COOKIE
from callagent.console.runtime import ConsoleRuntime
from callagent.store.db import make_sessionmaker
from callagent.store.models import Call
from callagent.store.operators import OperatorSession
from tests.console.conftest import PHRASE, Seeded, audit_actions, csrf_of, logged_in, login
from tests.e2e.conftest import LiveService

Console = tuple[LiveService, Seeded]


async def test_search_by_phrase_finds_only_the_call_that_said_it(console: Console) -> None:
    service, seeded = console
    async with logged_in(service, "viewer") as client:
        page = await client.get("/console/calls", params={"q": "parcel never arrived"})
        assert page.status_code == 200
        assert seeded.call_id in page.text and seeded.other_call_id not in page.text
        everything = await client.get("/console/calls")
        assert seeded.call_id in everything.text and seeded.other_call_id in everything.text
        none = await client.get("/console/calls", params={"q": "parcel address"})
        assert 'id="no-calls"' in none.text


async def test_keyset_pages_cover_every_call_once(console: Console) -> None:
    service, seeded = console
    async with logged_in(service, "viewer") as client:
        first = await client.get("/console/calls", params={"limit": "1"})
        assert seeded.call_id in first.text and seeded.other_call_id not in first.text
        assert 'id="next-page"' in first.text
        href = first.text.split('id="next-page" href="')[1].split('"')[0].replace("&amp;", "&")
        second = await client.get(href)
        assert seeded.other_call_id in second.text and seeded.call_id not in second.text
        assert 'id="next-page"' not in second.text


async def test_detail_shows_timeline_interruption_tool_call_and_audits_the_view(
    console: Console,
) -> None:
    service, seeded = console
    async with logged_in(service, "viewer") as client:
        page = await client.get(f"/console/calls/{seeded.call_id}")
    assert page.status_code == 200
    html = page.text
    assert 'class="turn agent interrupted"' in html and "unheard" in html
    assert 'class="overlap"' in html and 'class="latency"' in html
    assert "order_status" in html and "A1001" in html
    assert "Heard:</strong> I am sorry to hear that. Your order" in html
    assert "console.transcript_viewed" in html  # the trail shows this very view
    actions = await audit_actions(service)
    assert ("operator:viewer", "console.login", None) in actions
    assert ("operator:viewer", "console.transcript_viewed", seeded.call_id) in actions


async def test_export_json_and_csv_are_audited(console: Console) -> None:
    service, seeded = console
    async with logged_in(service, "supervisor") as client:
        as_json = await client.get(f"/console/calls/{seeded.call_id}/export.json")
        as_csv = await client.get(f"/console/calls/{seeded.call_id}/export.csv")
        unknown = await client.get(f"/console/calls/{seeded.call_id}/export.xml")
    assert as_json.status_code == 200 and as_json.json()["call"]["id"] == seeded.call_id
    assert [t["seq"] for t in as_json.json()["turns"]] == [1, 2, 3, 4]
    assert as_csv.status_code == 200 and as_csv.text.startswith("kind,seq,speaker")
    assert PHRASE in as_csv.text and "order_status" in as_csv.text
    assert unknown.status_code == 404
    exports = [a for a in await audit_actions(service) if a[1] == "console.call_exported"]
    assert exports == [("operator:supervisor", "console.call_exported", seeded.call_id)] * 2


@pytest.mark.parametrize("username, method, path, status", [
    ("viewer", "GET", "/console/calls/{call}/export.json", 403),
    ("viewer", "GET", "/console/calls/{call}/export.csv", 403),
    ("viewer", "GET", "/console/operators", 403),
    ("viewer", "POST", "/console/operators", 403),
    ("viewer", "POST", "/console/operators/admin/disable", 403),
    ("supervisor", "GET", "/console/operators", 403),
    ("supervisor", "POST", "/console/operators", 403),
    ("supervisor", "POST", "/console/operators/viewer/role", 403),
])
async def test_each_role_is_refused_what_it_must_not_reach(
    console: Console, username: str, method: str, path: str, status: int
) -> None:
    service, seeded = console
    async with logged_in(service, username) as client:
        home = await client.get("/console/")
        data = {"csrf_token": csrf_of(home.text), "username": "x1", "password": "p" * 12,
                "role": "admin"}
        url = path.format(call=seeded.call_id)
        response = await (client.get(url) if method == "GET" else client.post(url, data=data))
    assert response.status_code == status
    assert f"Your role ({username})" in response.text
    assert "console.call_exported" not in {a[1] for a in await audit_actions(service)}


@pytest.mark.parametrize("path", ["/console/", "/console/calls", "/console/calls/{call}",
                                  "/console/calls/{call}/export.json", "/console/operators"])
async def test_without_a_session_pages_send_to_login(console: Console, path: str) -> None:
    service, seeded = console
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        response = await client.get(path.format(call=seeded.call_id))
        posted = await client.post("/console/operators", data={"username": "x"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/login?next=")
    assert posted.status_code == 401


async def test_forms_without_their_csrf_token_are_refused(console: Console) -> None:
    service, _ = console
    async with logged_in(service, "admin") as client:
        form = {"username": "newbie", "password": "a long enough pass", "role": "viewer"}
        missing = await client.post("/console/operators", data=form)
        wrong = await client.post("/console/operators", data={**form, "csrf_token": "forged"})
        logout = await client.post("/console/logout", data={})
        page = await client.get("/console/operators")
        assert missing.status_code == 403 and wrong.status_code == 403
        assert "CSRF" in missing.text and logout.status_code == 403
        assert 'data-username="newbie"' not in page.text
        ok = await client.post("/console/operators", data={**form, "csrf_token": csrf_of(page.text)})
        assert ok.status_code == 200 and 'data-username="newbie"' in ok.text
    async with httpx.AsyncClient(base_url=service.base_url) as anon:
        await anon.get("/console/login")
        no_token = await anon.post("/console/login", data={"username": "admin",
                                                           "password": "correct horse battery"})
        assert no_token.status_code == 403 and SESSION_COOKIE not in no_token.cookies


async def test_an_expired_session_is_refused(console: Console) -> None:
    service, _ = console
    async with logged_in(service, "viewer") as client:
        assert (await client.get("/console/")).status_code == 200
        async with make_sessionmaker(service.db).begin() as s:
            await s.execute(update(OperatorSession).values(expires_at=service.services.now()))
        response = await client.get("/console/")
        assert response.status_code == 303 and "/console/login" in response.headers["location"]


async def test_a_cookie_signed_longer_ago_than_the_session_ttl_is_refused(console: Console) -> None:
    service, _ = console
    runtime: ConsoleRuntime = service.app.state.console
    async with logged_in(service, "viewer") as client:
        session_id = runtime.signer.loads(client.cookies[SESSION_COOKIE])
        ttl = service.settings.console.session_ttl_s

        class Old(TimestampSigner):
            def get_timestamp(self) -> int:  # signed ttl + 60 s ago
                return int(time.time()) - ttl - 60

        stale = URLSafeTimedSerializer(runtime.signer.secret_key, salt="callagent.console.session",
                                       signer=Old).dumps(session_id)
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, stale)
        response = await client.get("/console/")
    assert response.status_code == 303


async def test_logout_ends_the_session_server_side(console: Console) -> None:
    service, _ = console
    async with logged_in(service, "viewer") as client:
        cookie = client.cookies[SESSION_COOKIE]
        home = await client.get("/console/")
        out = await client.post("/console/logout", data={"csrf_token": csrf_of(home.text)})
        assert out.status_code == 303
    async with httpx.AsyncClient(base_url=service.base_url, cookies={SESSION_COOKIE: cookie}) as c:
        assert (await c.get("/console/")).status_code == 303
    assert ("operator:viewer", "console.logout", None) in await audit_actions(service)


async def test_failed_logins_are_rate_limited_and_audited(console: Console) -> None:
    service, _ = console
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        for _ in range(service.settings.console.login_max_failures):
            assert (await login(client, "viewer", "wrong password!!")).status_code == 401
        blocked = await login(client, "viewer")  # the right password, too late
        assert blocked.status_code == 429 and SESSION_COOKIE not in blocked.cookies
    failed = [a for a in await audit_actions(service) if a[1] == "console.login_failed"]
    assert len(failed) == service.settings.console.login_max_failures


async def test_a_disabled_operator_cannot_log_in(console: Console) -> None:
    service, _ = console
    async with logged_in(service, "admin") as admin:
        page = await admin.get("/console/operators")
        done = await admin.post("/console/operators/viewer/disable",
                                data={"csrf_token": csrf_of(page.text)})
        assert done.status_code == 200
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        assert (await login(client, "viewer")).status_code == 401


@pytest.mark.parametrize("params, message", [
    ({"from": "2026-13-01"}, "from: expected a date YYYY-MM-DD"),
    ({"from": "2026-05-02", "to": "2026-05-01"}, "to: must not be before from"),
    ({"direction": "sideways"}, "direction: expected inbound or outbound"),
    ({"campaign": "x1"}, "campaign: expected a campaign id"),
    ({"agent": "a b"}, "agent: expected a name"),
    ({"engine": "<script>"}, "engine: expected a name"),
    ({"outcome": "DONE!"}, "outcome: expected a call status"),
    ({"number": "call me"}, "number: expected a phone number"),
    ({"q": "?!"}, "q: no words to search for"),
    ({"q": "a b c d e f g h i"}, "q: at most 8 words"),
    ({"cursor": "not-a-cursor"}, "cursor: not a cursor from this list"),
    ({"limit": "0"}, "limit: expected 1-500"),
    ({"colour": "red"}, "colour: unknown filter"),
])
async def test_bad_filters_get_a_precise_error(
    console: Console, params: dict[str, str], message: str
) -> None:
    service, _ = console
    async with logged_in(service, "viewer") as client:
        response = await client.get("/console/calls", params=params)
    assert response.status_code == 400
    assert message in response.text


async def test_a_kept_recording_plays_and_the_play_is_audited(
    console: Console, tmp_path: Path
) -> None:
    service, seeded = console
    wav = tmp_path / "rec.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    async with make_sessionmaker(service.db).begin() as s:
        await s.execute(update(Call).where(Call.id == seeded.call_id).values(
            recording_path=str(wav)))
    async with logged_in(service, "viewer") as client:
        page = await client.get(f"/console/calls/{seeded.call_id}")
        assert 'id="recording"' in page.text
        played = await client.get(f"/console/calls/{seeded.call_id}/recording.wav")
        none = await client.get(f"/console/calls/{seeded.other_call_id}/recording.wav")
        other = await client.get(f"/console/calls/{seeded.other_call_id}")
    assert played.status_code == 200 and played.content == wav.read_bytes()
    assert played.headers["content-type"] == "audio/wav"
    assert none.status_code == 404 and 'id="no-recording"' in other.text
    assert ("operator:viewer", "console.recording_played", seeded.call_id) in (
        await audit_actions(service))


CSV = ("phone,name,timezone\n"
       "+14155550100,Ann,America/Los_Angeles\n"
       "12,Bob,America/New_York\n")


async def test_a_campaign_from_a_csv_upload_shows_bad_rows_and_runs(console: Console) -> None:
    service, _ = console
    async with logged_in(service, "supervisor") as client:
        page = await client.get("/console/campaigns")
        form = {"csrf_token": csrf_of(page.text), "key": "spring", "name": "Spring",
                "agent_profile": "customer_service", "caller_id": "+15005550001",
                "purpose": "informational", "window_start": "09:00", "window_end": "20:00",
                "max_concurrent_calls": "2", "max_attempts": "3"}
        files = {"contacts": ("contacts.csv", CSV.encode(), "text/csv")}
        created = await client.post("/console/campaigns", data=form, files=files)
        assert created.status_code == 200, created.text
        assert "Imported 1 contact(s); 1 row(s) refused." in created.text
        assert "line 3:" in created.text
        again = await client.post("/console/campaigns", data=form, files=files)
        assert again.status_code == 400 and "already exists" in again.text
        bad = await client.post("/console/campaigns", data={**form, "key": "x2",
                                                            "caller_id": "555"}, files=files)
        assert bad.status_code == 400 and "not an E.164 number" in bad.text
        no_file = await client.post("/console/campaigns", data={**form, "key": "x3"})
        assert no_file.status_code == 400 and "contacts: choose a CSV file" in no_file.text
        no_csrf = await client.post("/console/campaigns", data={**form, "key": "x4",
                                                                "csrf_token": ""}, files=files)
        assert no_csrf.status_code == 403
        href = created.text.split('action="/console/campaigns/')[1].split("/")[0]
        token = csrf_of(created.text)
        paused = await client.post(f"/console/campaigns/{href}/pause", data={"csrf_token": token})
        assert paused.status_code == 409 and "cannot pause" in paused.text
        started = await client.post(f"/console/campaigns/{href}/start", data={"csrf_token": token},
                                    follow_redirects=True)
        assert 'id="campaign-state">running<' in started.text
        assert '<td>pending</td><td>1</td>' in started.text
    async with logged_in(service, "viewer") as viewer:
        assert (await viewer.get("/console/campaigns")).status_code == 403
        assert (await viewer.get(f"/console/campaigns/{href}")).status_code == 403


async def test_dashboard_shows_today_by_outcome_direction_engine_and_latency(
    console: Console,
) -> None:
    service, _ = console
    async with logged_in(service, "viewer") as client:
        page = await client.get("/console/")
    assert page.status_code == 200
    html = page.text
    assert 'id="calls-today"><div>Calls today</div><strong>2</strong>' in html
    assert 'id="interruptions"><div>Interruptions</div><strong>2</strong>' in html
    assert "(4 replies)" in html and "median 675 ms" in html
    assert 'href="/console/calls?direction=inbound">inbound</a></td><td>2<' in html
    assert 'href="/console/calls?engine=fixture">fixture</a></td><td>2<' in html
    assert 'href="/console/calls?outcome=completed">completed</a></td><td>2<' in html
