"""The OpenAI Realtime GA wire protocol alone: no socket, no loop.

Sections refer to /work/shared/reference/openai-realtime.md.
"""

from __future__ import annotations

import base64
import json

import pytest

from callagent.engines.providers.openai_realtime_wire import (
    AudioDelta,
    FunctionCallDone,
    FunctionCallOutputItem,
    InputAudioAppend,
    ItemCreate,
    ItemReference,
    ItemTruncate,
    MessageItem,
    Rejected,
    ResponseCancel,
    ResponseCreate,
    ResponseDone,
    ServerError,
    SessionConfig,
    SpeechStarted,
    TurnDetection,
    WireError,
    apply_session_update,
    encode_session_update,
    encode_truncate,
    parse_client_event,
    parse_server_event,
    parse_tool_result_text,
    tool_result_text,
)


def rejected(event: object) -> Rejected:
    assert isinstance(event, Rejected), event
    return event


# ---- section 3: client events --------------------------------------------------


def test_append_decodes_base64_audio() -> None:
    ev = parse_client_event(json.dumps({"type": "input_audio_buffer.append", "event_id": "e1",
                                        "audio": base64.b64encode(b"\xff\x7f").decode()}))  # fmt: skip
    assert ev == InputAudioAppend("e1", b"\xff\x7f")


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("{not json", "invalid_json", ""),
        ("[1, 2]", "invalid_json", ""),
        ('{"event_id": "e9"}', "missing_required_parameter", "type"),
        ('{"type": "response.frobnicate", "event_id": "e9"}', "invalid_value", "type"),
        ('{"type": "input_audio_buffer.append", "event_id": "e9"}',
         "missing_required_parameter", "audio"),
        ('{"type": "input_audio_buffer.append", "event_id": "e9", "audio": "@@@"}',
         "invalid_value", "audio"),
        ('{"type": "input_audio_buffer.append", "event_id": "e9", "audio": 5}',
         "invalid_type", "audio"),
        ('{"type": "input_audio_buffer.commit", "event_id": "e9", "extra": 1}',
         "unknown_parameter", "extra"),
        ('{"type": "conversation.item.truncate", "event_id": "e9", "item_id": "i",'
         ' "content_index": 0, "audio_end_ms": -5}', "invalid_value", "audio_end_ms"),
        ('{"type": "conversation.item.truncate", "event_id": "e9", "item_id": "i",'
         ' "content_index": 0}', "missing_required_parameter", "audio_end_ms"),
        ('{"type": "conversation.item.create", "event_id": "e9", "item": {"type": "message",'
         ' "role": "robot", "content": []}}', "invalid_value", "item.role"),
        ('{"type": "conversation.item.create", "event_id": "e9", "item": {"type": "image"}}',
         "invalid_value", "item.type"),
        ('{"type": "conversation.item.create", "event_id": "e9", "item": '
         '{"type": "function_call_output", "call_id": "c1"}}',
         "missing_required_parameter", "output"),
        ('{"type": "response.create", "event_id": "e9", "response": {"conversation": "x"}}',
         "invalid_value", "response.conversation"),
    ],
)  # fmt: skip
def test_bad_client_events_become_errors_naming_the_event(text: str, code: str, param: str) -> None:
    err = rejected(parse_client_event(text)).error
    assert (err.type, err.code) == ("invalid_request_error", code)
    assert err.param == param
    assert err.event_id == ("e9" if "e9" in text else "")
    assert err.message


def test_item_create_message_and_function_output() -> None:
    ev = parse_client_event(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}))
    assert ev == ItemCreate("", "", MessageItem("", "user", "hi"))
    ev = parse_client_event(json.dumps({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "{}"}}))
    assert ev == ItemCreate("", "", FunctionCallOutputItem("", "call_1", "{}"))


def test_truncate_create_and_cancel_parse() -> None:
    ev = parse_client_event('{"type":"conversation.item.truncate","item_id":"it","content_index":0,'
                            '"audio_end_ms":1500}')  # fmt: skip
    assert ev == ItemTruncate("", "it", 0, 1500)
    assert parse_client_event('{"type":"response.create"}') == ResponseCreate("")
    assert parse_client_event('{"type":"response.cancel","response_id":"r"}') == ResponseCancel("", "r")


# ---- section 2: session.update ---------------------------------------------------


def test_session_update_sets_pcmu_both_ways_and_semantic_vad() -> None:
    cfg = apply_session_update(SessionConfig(), {
        "type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcmu"},
                      "turn_detection": {"type": "semantic_vad", "eagerness": "high"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"}},
        "tools": [{"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}],
    })  # fmt: skip
    assert cfg.input_format.type == cfg.output_format.type == "audio/pcmu"
    assert cfg.turn_detection == TurnDetection(type="semantic_vad", eagerness="high")
    assert cfg.voice == "cedar" and [t.name for t in cfg.tools] == ["lookup_order"]


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"audio": {}}, "session.type"),
        ({"type": "realtime", "input_audio_format": "g711_ulaw"}, "session.input_audio_format"),
        ({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu", "rate": 8000}}}},
         "session.audio.input.format.rate"),
        ({"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}},
         "session.audio.output.format.rate"),
        ({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad",
                                                                     "threshold": 2}}}},
         "session.audio.input.turn_detection.threshold"),
        ({"type": "realtime", "audio": {"output": {"voice": "nobody"}}}, "session.audio.output.voice"),
        ({"type": "realtime", "tools": [{"type": "function"}]}, "session.tools[0].name"),
        ({"type": "realtime", "max_output_tokens": 0}, "session.max_output_tokens"),
    ],
)  # fmt: skip
def test_bad_session_updates_name_the_parameter(patch: dict[str, object], param: str) -> None:
    with pytest.raises(WireError) as info:
        apply_session_update(SessionConfig(), patch)
    assert info.value.param == param


def test_voice_cannot_change_after_audio() -> None:
    with pytest.raises(WireError) as info:
        apply_session_update(SessionConfig(), {"type": "realtime", "audio": {
            "output": {"voice": "cedar"}}}, audio_started=True)  # fmt: skip
    assert info.value.code == "cannot_update_voice"


def test_encoded_session_update_round_trips_through_the_parser() -> None:
    cfg = SessionConfig(turn_detection=TurnDetection(type="semantic_vad", eagerness="low"))
    text = encode_session_update(cfg)
    data = json.loads(text)
    assert data["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert apply_session_update(SessionConfig(), data["session"]) == cfg


# ---- section 4: server events ----------------------------------------------------


def test_server_events_parse_into_typed_events() -> None:
    assert parse_server_event('{"type":"input_audio_buffer.speech_started","audio_start_ms":320,'
                              '"item_id":"u1"}') == SpeechStarted("u1", 320)  # fmt: skip
    delta = base64.b64encode(b"\x01\x02").decode()
    assert parse_server_event(json.dumps({"type": "response.output_audio.delta", "response_id": "r",
                                          "item_id": "i", "delta": delta})) == AudioDelta(
        "r", "i", b"\x01\x02")  # fmt: skip
    fc = parse_server_event(json.dumps({"type": "response.output_item.done", "response_id": "r",
                                        "item": {"type": "function_call", "id": "f", "call_id": "c",
                                                 "name": "n", "arguments": "{}",
                                                 "status": "completed"}}))  # fmt: skip
    assert fc == FunctionCallDone("r", "f", "c", "n", "{}", "completed")
    done = parse_server_event(json.dumps({"type": "response.done", "response": {
        "id": "r", "status": "cancelled", "status_details": {"reason": "turn_detected"}}}))
    assert done == ResponseDone("r", "cancelled", "turn_detected")
    err = parse_server_event('{"type":"error","error":{"type":"invalid_request_error",'
                             '"code":"x","message":"m","event_id":"e"}}')  # fmt: skip
    assert isinstance(err, ServerError) and err.error.event_id == "e"
    with pytest.raises(WireError):
        parse_server_event("nope")


def test_truncate_encoding_is_the_ga_shape() -> None:
    assert json.loads(encode_truncate("item_1", 1234)) == {
        "type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
        "audio_end_ms": 1234}  # fmt: skip
    assert parse_client_event(encode_truncate("item_1", 1234, "ev1")) == ItemTruncate(
        "ev1", "item_1", 0, 1234)


# ---- response.create: out of band, input, metadata (section 3) ----------------------------


def test_response_create_parses_out_of_band_input_and_metadata() -> None:
    ev = parse_client_event(json.dumps({"type": "response.create", "event_id": "r", "response": {
        "conversation": "none", "metadata": {"topic": "x", "n": "1"},
        "output_modalities": ["audio"], "instructions": "Say only: hi",
        "input": [{"type": "item_reference", "id": "item_1"},
                  {"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "where is my order"}]}]}}))  # fmt: skip
    assert ev == ResponseCreate("r", "Say only: hi", True,
                                (ItemReference("item_1"), MessageItem("", "user", "where is my order")),
                                (("topic", "x"), ("n", "1")), ("audio",))  # fmt: skip
    assert parse_client_event('{"type":"response.create","response":{"input":[]}}') == (
        ResponseCreate("", input=()))


@pytest.mark.parametrize(
    ("response", "code", "param"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_value", "response.metadata"),
        ({"metadata": {"k": 5}}, "invalid_value", "response.metadata.k"),
        ({"metadata": {"k" * 65: "v"}}, "invalid_value", f"response.metadata.{'k' * 65}"),
        ({"metadata": {"k": "v" * 513}}, "invalid_value", "response.metadata.k"),
        ({"metadata": "topic"}, "invalid_type", "response.metadata"),
        ({"input": {"type": "message"}}, "invalid_type", "response.input"),
        ({"input": [{"type": "item_reference"}]}, "missing_required_parameter", "id"),
        ({"input": [{"type": "item_reference", "id": "i", "x": 1}]},
         "unknown_parameter", "response.input[0].x"),
        ({"input": [{"type": "message", "role": "user",
                     "content": [{"type": "input_audio", "audio": ""}]}]},
         "invalid_value", "response.input[0].content[0].type"),
        ({"output_modalities": ["audio", "text"]}, "invalid_value", "response.output_modalities"),
    ],
)  # fmt: skip
def test_bad_response_create_fields_name_the_parameter(
    response: dict[str, object], code: str, param: str
) -> None:
    err = rejected(parse_client_event(json.dumps({"type": "response.create", "event_id": "e9",
                                                  "response": response}))).error  # fmt: skip
    assert (err.code, err.param, err.event_id) == (code, param, "e9")


def test_tool_result_messages_parse_back() -> None:
    text = tool_result_text("lookup_order", '{"order_number": "45729"}', '{"status": "shipped"}')
    assert parse_tool_result_text(text) == ("lookup_order", '{"order_number": "45729"}',
                                            '{"status": "shipped"}')  # fmt: skip
    assert parse_tool_result_text("The call was renewed.") is None


def test_pcma_is_a_format_both_ways() -> None:
    cfg = apply_session_update(SessionConfig(), {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcma"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcma"}}}})  # fmt: skip
    assert (cfg.input_format.type, cfg.output_format.type, cfg.turn_detection) == (
        "audio/pcma", "audio/pcma", None)
    with pytest.raises(WireError) as info:
        apply_session_update(SessionConfig(), {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcma", "rate": 8000}}}})  # fmt: skip
    assert info.value.param == "session.audio.input.format.rate"
