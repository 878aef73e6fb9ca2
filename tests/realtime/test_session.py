"""The /v1/realtime session core with a real engine (the fixture engine), no socket.

The core turns client events and engine events into server events; these
tests read its output directly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.engines.base import CallContext, EngineEvent
from callagent.engines.fixture import FixtureEngine, FixtureScript
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
