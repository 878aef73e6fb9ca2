"""/v1/realtime on a real service (uvicorn, create_app), driven by the official `openai` SDK.

Behind the endpoint are the real engines (pocketsphinx, Silero, piper, the
scripted flow): customer_service's pipeline and customer_service_duplex's
local duplex engine; the fixture profile's engine for protocol-only tests. Caller clips are sent as audio/pcmu at about
4x real time (audio/pcma, all at once, for manual turns). The hang guards (`wait_for`) only stop a broken run; nothing is timed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from callagent.agents.orders import OrderStore
from callagent.audio.codec import alaw_to_pcm, pcm_to_alaw, ulaw_to_pcm
from tests.e2e.conftest import LiveService
from tests.realtime.conftest import API_TOKEN, clip, pcmu_b64, silence

GUARD_S = 120.0
SESSION = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"},
                  "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
    "tools": [{"type": "function", "name": "lookup_order", "description": "Find an order.",
               "parameters": {"type": "object",
                              "properties": {"order_number": {"type": "string"}}}}],
}  # fmt: skip


def client(live: LiveService, key: str = API_TOKEN) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=live.base_url + "/v1")


async def feed(conn: Any, audio: np.ndarray, chunk: int = 800) -> None:
    for i in range(0, len(audio), chunk):
        await conn.input_audio_buffer.append(audio=pcmu_b64(audio[i : i + chunk]))
        await asyncio.sleep(chunk / 8000 / 4)


@pytest.mark.parametrize("model", ["customer_service", "customer_service_duplex"])
async def test_order_lookup_over_the_sdk_delegates_the_declared_tool(
    realtime_service: LiveService, model: str
) -> None:
    store = OrderStore.sample()
    events: list[Any] = []
    audio_by_item: dict[str, bytearray] = {}
    async with client(realtime_service).realtime.connect(model=model) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session=SESSION)  # type: ignore[arg-type]
        updated = await conn.recv()
        assert updated.type == "session.updated"
        assert updated.model_dump()["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        caller = np.concatenate([silence(16.0), clip("01_order_status"), silence(7.0),
                                 clip("02_account_number"), silence(8.0)])  # fmt: skip
        feeder: asyncio.Task[None] | None = None
        owed_response = answered = False
        while True:
            ev = await asyncio.wait_for(conn.recv(), GUARD_S)
            events.append(ev)
            if ev.type == "response.output_audio.delta":
                if feeder is None:  # the caller hears the greeting begin
                    feeder = asyncio.create_task(feed(conn, caller))
                audio_by_item.setdefault(ev.item_id, bytearray()).extend(base64.b64decode(ev.delta))
            elif ev.type == "response.output_item.done" and ev.item.type == "function_call":
                assert ev.item.status == "completed"
                args = json.loads(ev.item.arguments)
                order = store.get(args["order_number"])
                assert order is not None
                await conn.conversation.item.create(item={
                    "type": "function_call_output", "call_id": str(ev.item.call_id),
                    "output": json.dumps(order.fields())})  # fmt: skip
                owed_response = True
            elif ev.type == "response.done" and owed_response:
                owed_response = False
                await conn.response.create()
            elif (ev.type == "response.output_audio_transcript.done"
                  and "4 5 7 2 9" in ev.transcript):  # fmt: skip
                answered = True
            elif ev.type == "response.done" and answered:
                break
        assert feeder is not None
        feeder.cancel()

    kinds = [e.type for e in events]
    transcripts = [e.transcript for e in events if e.type == "response.output_audio_transcript.done"]
    assert transcripts[0].startswith("Hi, you've reached Acme Supplies")
    assert any("order number" in t for t in transcripts)
    heard = [e.transcript for e in events
             if e.type == "conversation.item.input_audio_transcription.completed"]  # fmt: skip
    assert "status" in heard[0] and "order" in heard[0]
    calls = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("lookup_order", {"order_number": "45729"})]
    # the flow's answer came after the client's tool output, from the order it returned
    assert kinds.index("conversation.item.done", kinds.index("response.function_call_arguments.done")) > 0
    # every response is bracketed; the audio is real mu-law speech, 8 kHz
    assert kinds.count("response.created") == kinds.count("response.done")
    first_item = next(e.item.id for e in events if e.type == "response.output_item.added")
    greeting = ulaw_to_pcm(bytes(audio_by_item[first_item]))
    assert len(greeting) > 8000 * 3 and int(np.abs(greeting).max()) > 2000
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
        "input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")


async def test_bad_client_events_get_error_events_and_the_session_stays_open(
    realtime_service: LiveService,
) -> None:
    async with client(realtime_service).realtime.connect(model="fixture") as conn:
        assert (await conn.recv()).type == "session.created"
        bad: list[tuple[dict[str, Any] | str, str, str]] = [
            ({"type": "input_audio_buffer.append", "event_id": "e1", "audio": "!!"},
             "invalid_value", "audio"),
            ({"type": "no.such.event", "event_id": "e2"}, "invalid_value", "type"),
            ({"type": "session.update", "event_id": "e3", "session": {"type": "realtime",
              "audio": {"input": {"turn_detection": None}}}},
             "unsupported_turn_detection", "session.audio.input.turn_detection"),
            ({"type": "session.update", "event_id": "e4", "session": {"type": "realtime",
              "audio": {"input": {"format": {"type": "audio/pcmu", "rate": 8000}}}}},
             "unknown_parameter", "session.audio.input.format.rate"),
            ({"type": "input_audio_buffer.commit", "event_id": "e5"},
             "input_audio_buffer_commit_empty", ""),
            ({"type": "conversation.item.truncate", "event_id": "e6", "item_id": "nope",
              "content_index": 0, "audio_end_ms": 10}, "item_not_found", "item_id"),
            ({"type": "conversation.item.create", "event_id": "e7", "item": {
              "type": "function_call_output", "call_id": "call_x", "output": "{}"}},
             "invalid_value", "item.call_id"),
            ({"type": "response.cancel", "event_id": "e8", "response_id": "resp_x"},
             "response_cancel_not_active", "response_id"),
        ]  # fmt: skip
        for event, code, param in bad:
            await conn.send(event)  # type: ignore[arg-type]
            err = await asyncio.wait_for(conn.recv(), GUARD_S)
            while err.type != "error":  # the greeting may be under way meanwhile
                err = await asyncio.wait_for(conn.recv(), GUARD_S)
            assert isinstance(event, dict)
            assert (err.error.code, err.error.param or "", err.error.event_id) == (
                code, param, event["event_id"])
        await conn.session.update(session=SESSION)  # type: ignore[arg-type]
        ev = await asyncio.wait_for(conn.recv(), GUARD_S)
        while ev.type != "session.updated":
            assert ev.type != "error"
            ev = await asyncio.wait_for(conn.recv(), GUARD_S)


async def test_raw_non_json_text_gets_an_error_not_a_dropped_connection(
    realtime_service: LiveService,
) -> None:
    url = f"ws://127.0.0.1:{realtime_service.settings.server.port}/v1/realtime?model=fixture"
    async with websockets.connect(url, additional_headers={
            "Authorization": f"Bearer {API_TOKEN}"}) as ws:  # fmt: skip
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send("{this is not json")
        while (msg := json.loads(await asyncio.wait_for(ws.recv(), GUARD_S)))["type"] != "error":
            pass
        assert msg["error"]["code"] == "invalid_json"
        await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "ok1"}))
        while (msg := json.loads(await asyncio.wait_for(ws.recv(), GUARD_S)))["type"] != (
                "input_audio_buffer.cleared"):  # fmt: skip
            assert msg["type"] != "error"


@pytest.mark.parametrize("key", ["wrong-token", ""])
async def test_a_wrong_or_missing_token_is_refused_at_the_handshake(
    realtime_service: LiveService, key: str
) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with client(realtime_service, key or "x").realtime.connect(model="fixture") as conn:
            await conn.recv()
    assert info.value.response.status_code == 403


async def test_an_unknown_profile_gets_model_not_found(realtime_service: LiveService) -> None:
    async with client(realtime_service).realtime.connect(model="no_such_agent") as conn:
        ev = await conn.recv()
        assert ev.type == "error" and ev.error.code == "model_not_found"


async def next_of(conn: Any, kind: str, seen: list[Any] | None = None) -> Any:
    while True:
        ev = await asyncio.wait_for(conn.recv(), GUARD_S)
        if seen is not None:
            seen.append(ev)
        if ev.type == kind:
            return ev


def pcma_b64(samples: np.ndarray) -> str:
    return base64.b64encode(pcm_to_alaw(samples)).decode("ascii")


async def test_manual_turns_in_a_law_and_an_out_of_band_response_over_the_sdk(
    realtime_service: LiveService,
) -> None:
    async with client(realtime_service).realtime.connect(model="customer_service") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcma"}, "turn_detection": None},
            "output": {"format": {"type": "audio/pcma"}}}})  # fmt: skip
        updated = await next_of(conn, "session.updated")
        assert updated.session.audio.input.turn_detection is None
        await next_of(conn, "response.done")  # the greeting
        audio = clip("01_order_status")
        for i in range(0, len(audio), 1600):
            await conn.input_audio_buffer.append(audio=pcma_b64(audio[i : i + 1600]))
        await conn.input_audio_buffer.commit()
        seen: list[Any] = []
        heard = await next_of(conn, "conversation.item.input_audio_transcription.completed", seen)
        assert "status" in heard.transcript
        assert [e.type for e in seen][:2] == ["input_audio_buffer.committed",
                                              "conversation.item.added"]  # fmt: skip
        assert "response.created" not in [e.type for e in seen]  # nobody answers unasked
        await conn.response.create()
        seen = []
        done = await next_of(conn, "response.done", seen)
        assert "order number" in done.response.output[0].content[0].transcript
        reply = b"".join(base64.b64decode(e.delta) for e in seen
                         if e.type == "response.output_audio.delta")  # fmt: skip
        speech = alaw_to_pcm(reply)  # A-law, 8 kHz: one byte per sample
        assert len(speech) > 8000 and int(np.abs(speech).max()) > 2000
        # out of band: answered as the flow would, metadata echoed, no conversation items
        await conn.response.create(response={
            "conversation": "none", "metadata": {"purpose": "preview"},
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": "I don't know it"}]}]})  # fmt: skip
        seen = []
        side = await next_of(conn, "response.done", seen)
        assert side.response.metadata == {"purpose": "preview"}
        assert side.response.conversation_id is None
        # what the flow says before it would call a tool (tools are not run out of band)
        assert side.response.output[0].content[0].transcript == (
            "Let me look up the orders for the number you're calling from.")
        assert not [e for e in seen if e.type.startswith("conversation.item")]
        # an answer that needs a tool first: the response completes with nothing said
        await conn.response.create(response={"conversation": "none", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                             "text": "4 5 7 2 9"}]}]})  # fmt: skip
        side = await next_of(conn, "response.done")
        assert (side.response.status, side.response.output) == ("completed", [])


async def test_what_a_flow_cannot_honour_gets_error_events_over_the_sdk(
    realtime_service: LiveService,
) -> None:
    async with client(realtime_service).realtime.connect(model="customer_service") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"turn_detection": None}}})
        await next_of(conn, "session.updated")
        bad: list[tuple[dict[str, Any], str, str]] = [
            ({"type": "input_audio_buffer.commit", "event_id": "m1"},
             "input_audio_buffer_commit_empty", ""),
            ({"type": "response.create", "event_id": "m2", "response": {
              "conversation": "none", "instructions": "Classify the call."}},
             "unsupported_response", "response.instructions"),
            ({"type": "response.create", "event_id": "m3", "response": {"conversation": "none"}},
             "unsupported_response", "response.input"),
            ({"type": "response.create", "event_id": "m4", "response": {"input": []}},
             "unsupported_response", "response.input"),
            ({"type": "response.create", "event_id": "m5", "response": {
              "conversation": "none", "metadata": {"k": 1}, "input": []}},
             "invalid_value", "response.metadata.k"),
            ({"type": "response.create", "event_id": "m6", "response": {
              "conversation": "none", "input": [{"type": "item_reference", "id": "item_x"}]}},
             "item_not_found", "response.input[0].id"),
        ]  # fmt: skip
        for event, code, param in bad:
            await conn.send(event)  # type: ignore[arg-type]
            err = await next_of(conn, "error")
            assert (err.error.code, err.error.param or "", err.error.event_id) == (
                code, param, event["event_id"])
        await conn.input_audio_buffer.clear()
        await next_of(conn, "input_audio_buffer.cleared")


async def test_a_session_seeded_with_a_transcript_continues_it_without_greeting_again(
    realtime_service: LiveService,
) -> None:
    async with client(realtime_service).realtime.connect(model="customer_service") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=SESSION)  # type: ignore[arg-type]
        for role, text in [("assistant", "Hi, you've reached Acme Supplies. How can I help?"),
                           ("user", "I'd like to check the status of my order.")]:  # fmt: skip
            part = "output_text" if role == "assistant" else "input_text"
            await conn.conversation.item.create(item={  # type: ignore[arg-type, misc]
                "type": "message", "role": role, "content": [{"type": part, "text": text}]})
        await conn.response.create()
        seen: list[Any] = []
        done = await next_of(conn, "response.done", seen)
        # the first thing the engine says is the answer the transcript was owed
        said = [e.transcript for e in seen if e.type == "response.output_audio_transcript.done"]
        assert said == [done.response.output[0].content[0].transcript]
        assert said[0].startswith("Please say your five digit order number")
        assert [e.type for e in seen].count("response.created") == 1
