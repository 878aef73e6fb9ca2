"""Signatures on every webhook and on the media WebSocket upgrade, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import select

from callagent.app import warn_if_unverified
from callagent.sim.caller import parse_stream_twiml
from callagent.store.db import make_sessionmaker
from callagent.store.models import AuditEvent
from callagent.telephony.twilio.signature import SignatureChecker
from tests.e2e.conftest import TOKEN, LiveService, make_settings

FORM = {
    "CallSid": "CA" + "1" * 32,
    "AccountSid": "AC" + "0" * 32,
    "From": "+15005550006",
    "To": "+15005550001",
    "CallStatus": "ringing",
    "Direction": "inbound",
}


def sign(live: LiveService, path: str, form: dict[str, str], token: str = TOKEN) -> str:
    return SignatureChecker(token, True).sign(live.settings.public_url(path), form)


async def rejected_audits(live: LiveService, expected: int) -> list[AuditEvent]:
    for _ in range(100):
        async with make_sessionmaker(live.db)() as s:
            rows = list(
                (
                    await s.execute(
                        select(AuditEvent).where(AuditEvent.action == "webhook.rejected")
                    )
                ).scalars()
            )
        if len(rows) >= expected:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {expected} webhook.rejected audit events, found {len(rows)}")


async def test_voice_webhook_answers_with_connect_stream(live: LiveService) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{live.base_url}/twilio/voice",
            data=FORM,
            headers={"X-Twilio-Signature": sign(live, "/twilio/voice", FORM)},
        )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/xml")
    url, params = parse_stream_twiml(resp.text)
    assert url == live.settings.media_stream_url and "?" not in url
    assert set(params) >= {"call_id", "agent", "direction"}
    assert params["direction"] == "inbound" and params["agent"] == "fixture"
    assert resp.text.rstrip().endswith("<Hangup /></Response>")


@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/status", "/twilio/stream-status"])
async def test_webhooks_refuse_missing_and_bad_signatures(live: LiveService, path: str) -> None:
    async with httpx.AsyncClient() as http:
        missing = await http.post(f"{live.base_url}{path}", data=FORM)
        forged = await http.post(
            f"{live.base_url}{path}",
            data=FORM,
            headers={"X-Twilio-Signature": sign(live, path, FORM, token="wrong-token")},
        )
        tampered = await http.post(
            f"{live.base_url}{path}",
            data={**FORM, "From": "+15550000000"},
            headers={"X-Twilio-Signature": sign(live, path, FORM)},
        )
        metrics = (await http.get(f"{live.base_url}/metrics")).text
    assert (missing.status_code, forged.status_code, tampered.status_code) == (403, 403, 403)
    assert f'callagent_webhook_rejections_total{{path="{path}"}} 3' in metrics
    rows = await rejected_audits(live, 3)
    assert {json.loads(r.details)["reason"] for r in rows} == {"signature missing", "signature invalid"}


async def test_signature_is_checked_against_public_origin_not_host(live: LiveService) -> None:
    # Signed for the Host we were reached at, not the configured public origin: refused.
    host_url = f"http://localhost:{live.settings.server.port}/twilio/voice"
    signature = SignatureChecker(TOKEN, True).sign(host_url, FORM)
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"http://localhost:{live.settings.server.port}/twilio/voice",
            data=FORM,
            headers={"X-Twilio-Signature": signature},
        )
    assert resp.status_code == 403


async def test_media_upgrade_without_signature_is_refused(live: LiveService) -> None:
    url = f"ws://127.0.0.1:{live.settings.server.port}/twilio/media"
    with pytest.raises(websockets.exceptions.InvalidStatus) as missing:
        async with websockets.connect(url):
            pass
    bad = SignatureChecker("wrong-token", True).sign(live.settings.media_stream_url)
    with pytest.raises(websockets.exceptions.InvalidStatus) as forged:
        async with websockets.connect(url, additional_headers={"X-Twilio-Signature": bad}):
            pass
    assert missing.value.response.status_code == 403
    assert forged.value.response.status_code == 403
    rows = await rejected_audits(live, 2)
    assert all(json.loads(r.details)["path"] == "/twilio/media" for r in rows)


def test_switching_verification_off_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/x.db", tmp_path, verify=False)
    with caplog.at_level(logging.WARNING):
        warn_if_unverified(settings)
    assert "SIGNATURE VERIFICATION IS OFF" in caplog.text
