"""The media stream over our uvicorn protocol's direct channel (a live service on loopback)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import websockets

from callagent.call.session import CallSession
from callagent.telephony.twilio.peer import OutboundMedia, TwilioPeer
from tests.e2e.conftest import running_service
from tests.e2e.test_bad_media_input import SILENCE, connect, open_call
from tests.e2e.test_call_end_to_end import wait_closed


async def test_a_message_the_session_fails_on_ends_the_stream_and_is_logged(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    receive = CallSession.receive

    def failing(self: CallSession, message: str | bytes) -> None:
        if message == "boom":
            raise RuntimeError("boom")
        receive(self, message)

    monkeypatch.setattr(CallSession, "receive", failing)
    async with running_service(db_url, tmp_path) as live:
        url, params = await open_call(live)
        peer = TwilioPeer(stream_sid="MZ" + "3" * 32, call_sid="CA" + "2" * 32, account_sid="AC" + "0" * 32)
        heard = 0
        async with connect(live, url) as ws:
            await ws.send(peer.connected())
            await ws.send(peer.start(custom_parameters=params))
            for _ in range(30):  # the direct channel carries both ways
                await ws.send(peer.media(SILENCE))
                try:
                    message = await asyncio.wait_for(ws.recv(), timeout=0.05)
                except TimeoutError:
                    continue
                heard += sum(isinstance(e, OutboundMedia) for e in peer.receive(message))
            with caplog.at_level(logging.ERROR, logger="callagent.telephony.twilio.media"):
                await ws.send("boom")
                with pytest.raises(websockets.exceptions.ConnectionClosedOK) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert heard > 0
        assert "feeding a message failed" in caplog.text
        call = await wait_closed(live.db, params["call_id"])
        assert call.end_reason == "media stream closed"
