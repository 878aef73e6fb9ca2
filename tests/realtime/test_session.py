"""The /v1/realtime session core with real engines, no socket.

The core turns client events and engine events into server events; these
tests read its output directly. Protocol shapes run on the fixture engine;
the conversation as text (manual turns, re-seeded items, out-of-band
responses) on customer_service's pipeline engine (its flow, pocketsphinx,
piper), with the shell's part played by `Driver`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from callagent.audio.codec import pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from callagent.engines.base import CallContext, EngineEvent
from callagent.engines.fixture import FixtureEngine, FixtureScript
from callagent.engines.providers.openai_realtime_wire import tool_result_text
from callagent.realtime_server.conversation import TextConversation
from callagent.realtime_server.engines import profile_engines
from callagent.realtime_server.session import RealtimeSession, ToolDelegate
from tests.realtime.conftest import clip, silence


def frames(out: list[str]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in out]


async def drain(engine: FixtureEngine, session: RealtimeSession,
                it: AsyncIterator[EngineEvent]) -> list[dict[str, Any]]:  # fmt: skip
    out: list[str] = []
    while engine._events.qsize():
        out += session.on_engine(await it.__anext__())
    return frames(out)


def append(samples: np.ndarray) -> str:
    return json.dumps({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(pcm_to_ulaw(samples)).decode()})  # fmt: skip


async def started() -> tuple[FixtureEngine, RealtimeSession, AsyncIterator[EngineEvent]]:
    engine = FixtureEngine(FixtureScript.packaged())
    session = RealtimeSession(engine, "fixture", "sess_t", ToolDelegate())
    await engine.start(CallContext("c1", "inbound", "fixture"))
    return engine, session, engine.events()


async def test_engine_speech_is_a_bracketed_response_with_pcmu_audio() -> None:
    engine, session, it = await started()
    [created] = frames(session.created())
    assert created["type"] == "session.created"
    assert created["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    out = await drain(engine, session, it)
    kinds = [e["type"] for e in out]
    assert kinds[:4] == ["response.created", "response.output_item.added",
                         "conversation.item.added", "response.content_part.added"]  # fmt: skip
    assert kinds[-1] == "response.done" and out[-1]["response"]["status"] == "completed"
    audio = b"".join(base64.b64decode(e["delta"]) for e in out
                     if e["type"] == "response.output_audio.delta")  # fmt: skip
    greeting = FixtureScript.packaged().greeting.audio.samples
    assert len(audio) == len(greeting)  # 8 kHz mu-law: one byte per sample, nothing resampled
    assert np.abs(ulaw_to_pcm(audio).astype(int) - greeting).max() < 1200  # mu-law step
    done = next(e for e in out if e["type"] == "response.output_audio_transcript.done")
    assert done["transcript"] == "Thank you for calling. How can I help you today?"
    assert len({e["event_id"] for e in out}) == len(out)


async def test_barge_in_is_speech_started_then_truncate_reports_what_was_heard() -> None:
    engine, session, it = await started()
    greeting = await drain(engine, session, it)
    item_id = next(e["item"]["id"] for e in greeting if e["type"] == "response.output_item.added")
    assert session.on_client(append(silence(0.4))) == []
    session.on_client(append(clip("05_barge_in_change_address")))
    session.on_client(append(silence(1.0)))
    out = await drain(engine, session, it)
    kinds = [e["type"] for e in out]
    assert kinds[:6] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "conversation.item.added",
                         "conversation.item.done",
                         "conversation.item.input_audio_transcription.completed"]  # fmt: skip
    # the client played 1.2 s of the greeting before clearing its buffer
    [truncated] = frames(session.on_client(json.dumps({
        "type": "conversation.item.truncate", "event_id": "t1", "item_id": item_id,
        "content_index": 0, "audio_end_ms": 1200})))  # fmt: skip
    assert truncated == {**truncated, "type": "conversation.item.truncated", "item_id": item_id,
                         "audio_end_ms": 1200}  # fmt: skip
    # more than the item holds is refused, naming the event
    [err] = frames(session.on_client(json.dumps({
        "type": "conversation.item.truncate", "event_id": "t2", "item_id": item_id,
        "content_index": 0, "audio_end_ms": 999_999})))  # fmt: skip
    assert (err["error"]["code"], err["error"]["event_id"]) == ("invalid_value", "t2")
    assert "response.created" in kinds  # the engine's reply


async def test_response_create_while_one_is_active_is_an_error() -> None:
    engine, session, it = await started()
    await drain(engine, session, it)
    [created] = frames(session.on_client('{"type":"response.create","event_id":"r1"}'))
    assert created["type"] == "response.created"
    [err] = frames(session.on_client('{"type":"response.create","event_id":"r2"}'))
    assert (err["error"]["code"], err["error"]["event_id"]) == (
        "conversation_already_has_active_response", "r2")
    out = frames(session.on_client('{"type":"response.cancel","event_id":"c1"}'))
    assert out[-1]["type"] == "response.done"
    assert out[-1]["response"]["status_details"]["reason"] == "client_cancelled"


async def test_pcm_24k_is_resampled_both_ways() -> None:
    engine, session, it = await started()
    [updated] = frames(session.on_client(json.dumps({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                                      "output": {"format": {"type": "audio/pcm"}}}}})))  # fmt: skip
    assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    out = await drain(engine, session, it)
    audio = b"".join(base64.b64decode(e["delta"]) for e in out
                     if e["type"] == "response.output_audio.delta")  # fmt: skip
    greeting = FixtureScript.packaged().greeting.audio.samples
    assert abs(len(audio) // 2 - 3 * len(greeting)) < 3 * 160
    [err] = frames(session.on_client(json.dumps({"type": "input_audio_buffer.append",
                                                 "event_id": "odd", "audio": "AA=="})))  # fmt: skip
    assert (err["error"]["code"], err["error"]["event_id"]) == ("invalid_value", "odd")


async def test_commit_needs_100_ms_and_clear_empties_the_buffer() -> None:
    engine, session, it = await started()
    session.on_client(append(silence(0.05)))
    [err] = frames(session.on_client('{"type":"input_audio_buffer.commit","event_id":"k"}'))
    assert err["error"]["code"] == "input_audio_buffer_commit_empty"
    session.on_client(append(silence(0.1)))
    [ok] = frames(session.on_client('{"type":"input_audio_buffer.commit"}'))
    assert ok["type"] == "input_audio_buffer.committed"
    [cleared] = frames(session.on_client('{"type":"input_audio_buffer.clear"}'))
    assert cleared["type"] == "input_audio_buffer.cleared"


# ---- the conversation as text, on a real flow engine (customer_service's pipeline) ------------

GUARD_S = 120.0
MANUAL = {"type": "session.update", "session": {"type": "realtime", "audio": {
    "input": {"turn_detection": None}}}}  # fmt: skip


class Driver:
    """The shell's part for the session core over a real engine: engine events in, frames
    (including those a transcription or a synthesis produced later, via `wake`) out."""

    def __init__(self, model: str = "customer_service") -> None:
        self.delegate = ToolDelegate()
        engine = _builder()(model, self.delegate)
        assert engine is not None
        self.engine = engine
        self._woken = asyncio.Event()
        conv = engine if isinstance(engine, TextConversation) else None
        self.session = RealtimeSession(engine, model, "sess_t", self.delegate,
                                       self._woken.set, conv)  # fmt: skip
        self.frames: list[dict[str, Any]] = []
        self._next: asyncio.Future[EngineEvent] | None = None

    async def __aenter__(self) -> Driver:
        await self.engine.start(CallContext("c1", "inbound", "customer_service"))
        self._it = self.engine.events()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._next is not None:
            self._next.cancel()
        await self.engine.close()

    def send(self, event: dict[str, Any] | str) -> list[dict[str, Any]]:
        out = frames(self.session.on_client(event if isinstance(event, str) else json.dumps(event)))
        self.frames += out
        return out

    async def until(self, pred: Callable[[dict[str, Any]], bool], start: int = 0) -> dict[str, Any]:
        """The first frame from index `start` on that satisfies `pred`, reading on as needed."""
        async with asyncio.timeout(GUARD_S):
            while True:
                hit = next((f for f in self.frames[start:] if pred(f)), None)
                if hit is not None:
                    return hit
                if self._next is None:
                    self._next = asyncio.ensure_future(self._it.__anext__())
                woken = asyncio.ensure_future(self._woken.wait())
                await asyncio.wait({self._next, woken}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if self._next.done():
                    event, self._next = self._next.result(), None
                    self.frames += frames(self.session.on_engine(event))
                if self._woken.is_set():
                    self._woken.clear()
                    self.frames += frames(self.session.flush())


_built: list[Callable[[str, ToolDelegate], Any]] = []


def _builder() -> Callable[[str, ToolDelegate], Any]:
    if not _built:
        _built.append(profile_engines())
    return _built[0]


def kind(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == name


def transcripts(fs: list[dict[str, Any]]) -> list[str]:
    return [f["transcript"] for f in fs if f["type"] == "response.output_audio_transcript.done"]


def user_text(text: str) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}


def assistant_text(text: str) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}}


async def test_manual_turns_commit_is_transcribed_and_response_create_answers_with_the_flow() -> None:
    async with Driver() as d:
        [updated] = d.send(MANUAL)
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await d.until(kind("response.done"))  # the greeting, which nobody requested
        mark = len(d.frames)
        for i in range(0, len(audio := clip("01_order_status")), 800):
            assert d.send(append(audio[i : i + 800])) == []
        committed, added = d.send({"type": "input_audio_buffer.commit", "event_id": "k1"})
        assert committed["type"] == "input_audio_buffer.committed"
        assert added["type"] == "conversation.item.added"
        assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
        item_id = committed["item_id"]
        done = await d.until(lambda f: f["type"] == "conversation.item.input_audio_transcription"
                             ".completed", mark)  # fmt: skip
        assert done["item_id"] == item_id and "status" in done["transcript"]
        [item_done] = [f for f in d.frames[mark:] if f["type"] == "conversation.item.done"]
        assert item_done["item"]["content"][0]["transcript"] == done["transcript"]
        # the engine heard nothing itself, and nobody answered before the client asked
        kinds = [f["type"] for f in d.frames[mark:]]
        assert "input_audio_buffer.speech_started" not in kinds and "response.created" not in kinds
        [created] = d.send({"type": "response.create", "response": {"metadata": {"turn": "1"}}})
        reply = await d.until(kind("response.done"), mark)
        assert reply["response"]["id"] == created["response"]["id"]
        assert reply["response"]["metadata"] == {"turn": "1"}
        assert "order number" in reply["response"]["output"][0]["content"][0]["transcript"]
        # nothing new said: the next response completes empty, at once
        mark = len(d.frames)
        created, empty = d.send({"type": "response.create"})
        assert (empty["type"], empty["response"]["status"], empty["response"]["output"]) == (
            "response.done", "completed", [])


async def test_manual_clear_drops_uncommitted_audio_and_a_short_commit_is_an_error() -> None:
    async with Driver() as d:
        d.send(MANUAL)
        d.send(append(clip("01_order_status")))
        [cleared] = d.send({"type": "input_audio_buffer.clear"})
        assert cleared["type"] == "input_audio_buffer.cleared"
        [err] = d.send({"type": "input_audio_buffer.commit", "event_id": "c0"})
        assert (err["error"]["code"], err["error"]["event_id"]) == (
            "input_audio_buffer_commit_empty", "c0")
        d.send(append(silence(0.06)))
        [err] = d.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        assert "60.00ms" in err["error"]["message"]


async def test_switching_back_to_server_vad_hands_uncommitted_audio_to_the_engine() -> None:
    async with Driver() as d:
        d.send(MANUAL)
        await d.until(kind("response.done"))
        mark = len(d.frames)
        d.send(append(np.concatenate([clip("01_order_status"), silence(0.2)])))
        [updated] = d.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad"}}}}})  # fmt: skip
        assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        d.send(append(silence(2.0)))
        heard = await d.until(kind("conversation.item.input_audio_transcription.completed"), mark)
        assert "status" in heard["transcript"]
        await d.until(kind("response.done"), mark)
        assert any("order number" in t for t in transcripts(d.frames[mark:]))


async def test_reseeded_items_continue_the_flow_and_the_opening_is_not_said_again() -> None:
    async with Driver() as d:
        # a transcript re-seeded on a new session, before the engine greets
        d.send({"type": "conversation.item.create", "item": {"type": "message", "role": "system",
                "content": [{"type": "input_text", "text": "Continue the call."}]}})  # fmt: skip
        d.send(assistant_text("Hi, you've reached Acme Supplies' automated assistant."))
        d.send(user_text("I'd like to check the status of my order."))
        d.send(assistant_text("Please say your five digit order number."))
        d.send(user_text("my account number is 4 5 7 2 9"))
        [created] = d.send({"type": "response.create"})
        done = await d.until(lambda f: f["type"] == "response.done" and f["response"]["id"]
                             == created["response"]["id"])  # fmt: skip
        [said] = transcripts(d.frames)  # the answer, and no greeting before it
        assert said.startswith("Order 4 5 7 2 9") and "Acme" not in said
        assert done["response"]["status"] == "completed"


async def test_a_reseeded_tool_result_message_answers_the_tool_the_flow_waits_for() -> None:
    async with Driver() as d:
        d.send(assistant_text("Please say your five digit order number."))
        d.send(user_text("status"))
        d.send(user_text("4 5 7 2 9"))  # the flow now waits for lookup_order, not run
        d.send({"type": "conversation.item.create", "item": {"type": "message", "role": "system",
                "content": [{"type": "input_text", "text": tool_result_text(
                    "lookup_order", '{"order_number": "45729"}', json.dumps({
                        "order_number": "45729", "status_text": "is lost in the mail"}))}]}})  # fmt: skip
        d.send({"type": "response.create"})
        await d.until(kind("response.done"))
        [said] = transcripts(d.frames)  # no greeting: the assistant item was the history
        assert said.startswith("Order 4 5 7 2 9 is lost in the mail.")


async def test_out_of_band_answers_its_input_and_leaves_the_conversation_where_it_was() -> None:
    async with Driver() as d:
        await d.until(kind("response.done"))  # the greeting: the flow asks how it can help
        mark = len(d.frames)
        [created] = d.send({"type": "response.create", "response": {
            "conversation": "none", "metadata": {"topic": "probe"},
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": "check my order status"}]}]}})  # fmt: skip
        assert created["response"]["conversation_id"] is None
        assert created["response"]["metadata"] == {"topic": "probe"}
        done = await d.until(kind("response.done"), mark)
        side = d.frames[mark:]
        assert done["response"]["metadata"] == {"topic": "probe"}
        assert done["response"]["conversation_id"] is None
        assert "order number" in transcripts(side)[0]
        assert any(f["type"] == "response.output_audio.delta" for f in side)
        assert not [f for f in side if f["type"].startswith("conversation.item")]
        # the conversation did not move: from "how can I help?", a change of address
        [said, _] = d.send(user_text("change my address"))
        mark = len(d.frames)
        d.send({"type": "response.create"})
        await d.until(kind("response.done"), mark)
        assert transcripts(d.frames[mark:])[0].startswith("Please say your five digit order number")
        # out of band, by reference to an item, from where the flow stands now
        mark = len(d.frames)
        d.send({"type": "response.create", "response": {"conversation": "none", "input": [
            {"type": "item_reference", "id": said["item"]["id"]}]}})  # fmt: skip
        await d.until(kind("response.done"), mark)
        assert transcripts(d.frames[mark:])[0].startswith("Sorry, I need the five digit")
        mark = len(d.frames)
        d.send({"type": "response.create", "response": {"conversation": "none",
                                                          "instructions": "Say only: One moment."}})
        await d.until(kind("response.done"), mark)
        assert transcripts(d.frames[mark:]) == ["One moment."]
        # neither moved it: the order number is taken, for the change of address
        d.send(user_text("4 5 7 2 9"))
        mark = len(d.frames)
        d.send({"type": "response.create"})
        await d.until(kind("response.done"), mark)
        assert "new delivery address for order 4 5 7 2 9" in transcripts(d.frames[mark:])[0]


@pytest.mark.parametrize(
    ("response", "code", "param"),
    [
        ({"conversation": "none", "instructions": "Classify the call."},
         "unsupported_response", "response.instructions"),
        ({"conversation": "none"}, "unsupported_response", "response.input"),
        ({"conversation": "none", "input": [{"type": "message", "role": "assistant",
          "content": [{"type": "output_text", "text": "hi"}]}]},
         "unsupported_response", "response.input[0]"),
        ({"conversation": "none", "input": [{"type": "item_reference", "id": "item_nope"}]},
         "item_not_found", "response.input[0].id"),
        ({"instructions": "Be brief."}, "unsupported_response", "response.instructions"),
        ({"input": []}, "unsupported_response", "response.input"),
        ({"output_modalities": ["text"]}, "unsupported_modalities", "response.output_modalities"),
    ],
)  # fmt: skip
async def test_responses_the_flow_cannot_honour_get_precise_errors(
    response: dict[str, Any], code: str, param: str
) -> None:
    async with Driver() as d:
        [err] = d.send({"type": "response.create", "event_id": "bad", "response": response})
        assert err["type"] == "error"
        assert (err["error"]["code"], err["error"]["param"], err["error"]["event_id"]) == (
            code, param, "bad")


async def test_the_fixture_engine_takes_no_text_turns() -> None:
    engine, session, it = await started()
    [err] = frames(session.on_client(json.dumps({**MANUAL, "event_id": "m"})))
    assert (err["error"]["code"], err["error"]["param"]) == (
        "unsupported_turn_detection", "session.audio.input.turn_detection")
    [err] = frames(session.on_client(json.dumps({"type": "response.create", "response": {
        "conversation": "none", "input": []}})))  # fmt: skip
    assert err["error"]["param"] == "response.conversation"


async def test_pcma_both_ways() -> None:
    engine, session, it = await started()
    [updated] = frames(session.on_client(json.dumps({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcma"}},
                                      "output": {"format": {"type": "audio/pcma"}}}}})))  # fmt: skip
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcma"}
    assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcma"}
    out = await drain(engine, session, it)
    audio = b"".join(base64.b64decode(e["delta"]) for e in out
                     if e["type"] == "response.output_audio.delta")  # fmt: skip
    greeting = FixtureScript.packaged().greeting.audio.samples
    assert len(audio) == len(greeting)  # 8 kHz A-law: one byte per sample
    assert audio == pcm_to_alaw(greeting)
    # caller audio in A-law reaches the engine: its barge-in detector hears the clip
    speech = clip("05_barge_in_change_address")
    session.on_client(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(pcm_to_alaw(speech)).decode()}))  # fmt: skip
    session.on_client(append_alaw(silence(1.0)))
    out = await drain(engine, session, it)
    assert "input_audio_buffer.speech_started" in [e["type"] for e in out]


def append_alaw(samples: np.ndarray) -> str:
    return json.dumps({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(pcm_to_alaw(samples)).decode()})  # fmt: skip
