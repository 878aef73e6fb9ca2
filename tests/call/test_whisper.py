"""The warm-transfer whisper endpoint: signed like every webhook, bounded input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from callagent.call import whisper
from callagent.call.recorder import Recorder
from callagent.config import RecorderSettings, Settings, TwilioSettings
from callagent.services import Services
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.telephony.twilio.signature import SignatureChecker
from tests.call.guard_env import no_engine

TOKEN = "whisper-token"
ORIGIN = "http://127.0.0.1:8080"


@pytest.fixture
async def client(sqlite_db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(twilio=TwilioSettings(auth_token=TOKEN),
                        recorder=RecorderSettings(journal_dir=str(tmp_path / "j")))
    db = create_engine_for(sqlite_db_url)
    recorder = Recorder(make_sessionmaker(db), settings.recorder)
    recorder.start()
    app = Starlette(routes=whisper.routes())
    app.state.services = Services(settings=settings, recorder=recorder, engines=no_engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c
    await recorder.close()
    await db.dispose()


async def post(client: httpx.AsyncClient, query: str, *, sign: bool = True) -> httpx.Response:
    form = {"CallSid": "CA" + "2" * 32}
    path = f"/twilio/whisper?{query}" if query else "/twilio/whisper"
    sig = SignatureChecker(TOKEN, True).sign(ORIGIN + path, form) if sign else "bad"
    return await client.post(path, data=form,
                             headers={"X-Twilio-Signature": sig})


async def test_the_human_hears_the_announcement(client: httpx.AsyncClient) -> None:
    resp = await post(client, "text=Caller+about+order+45729")
    assert resp.status_code == 200
    assert resp.text.endswith("<Response><Say>Caller about order 45729</Say></Response>")


@pytest.mark.parametrize(
    ("query", "sign", "status", "body"),
    [("text=hi", False, 403, "invalid Twilio signature"), ("", True, 400, "missing text"),
     ("text=" + "a" * 501, True, 400, "longer than 500")],
)
async def test_bad_requests_are_refused(
    client: httpx.AsyncClient, query: str, sign: bool, status: int, body: str
) -> None:
    resp = await post(client, query, sign=sign)
    assert resp.status_code == status and body in resp.text
