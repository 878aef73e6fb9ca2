"""The WebSocket protocol we run uvicorn with: every message arrives, in order,
and reading pauses when the app falls behind (a real uvicorn server on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets

from callagent.config import Settings
from callagent.serving import (
    CONTROL,
    DIRECT,
    HAND_OVER,
    HIGH_WATER,
    NEED_MORE,
    TEXT,
    DirectChannel,
    ReadBatching,
    at_frame_start,
    media_ws_protocol,
    scan_frame,
    text_frame,
    uvicorn_options,
)
from tests.e2e.conftest import free_port



async def _lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan of the bare test apps below: start, then wait for shutdown."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})

class _SlowReader:
    """An ASGI app that accepts, waits for ``go``, then reads every message."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.received: list[str] = []
        self.done = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await self.go.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            self.received.append(message["text"])
        self.done.set()


async def _serve(app: Any, **override: Any) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    port = free_port()
    options = {**uvicorn_options(Settings()), **override}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def _ws_protocol(server: uvicorn.Server) -> Any:
    [protocol] = [c for c in server.server_state.connections if hasattr(c, "read_paused")]
    return protocol


def test_our_protocol_is_uvicorns_sansio_protocol() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    protocol = media_ws_protocol()
    assert isinstance(protocol, type) and issubclass(protocol, WebSocketsSansIOProtocol)


async def test_every_message_arrives_in_order_and_reading_pauses_only_when_behind() -> None:
    app = _SlowReader()
    messages = [f'{{"event":"media","sequenceNumber":"{i}"}}' for i in range(600)]
    async for server, port in _serve(app):
        async with websockets.connect(f"ws://127.0.0.1:{port}/twilio/media") as ws:
            protocol = _ws_protocol(server)
            for text in messages[:HIGH_WATER - 1]:
                await ws.send(text)
            for _ in range(200):  # wait until the server has read them
                if protocol.queue.qsize() == HIGH_WATER - 1:
                    break
                await asyncio.sleep(0.01)
            # Below the high-water mark the socket is still being read.
            assert protocol.queue.qsize() == HIGH_WATER - 1
            assert protocol.read_paused is False
            for text in messages[HIGH_WATER - 1:]:
                await ws.send(text)
            for _ in range(200):
                if protocol.read_paused:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            # The app is behind: reading has stopped, and the queue is bounded
            # (one read's worth past the mark), not the whole backlog.
            assert protocol.read_paused is True
            assert HIGH_WATER <= protocol.queue.qsize() < len(messages)
            app.go.set()
            for _ in range(300):
                if len(app.received) == len(messages):
                    break
                await asyncio.sleep(0.01)
            assert protocol.read_paused is False
        await asyncio.wait_for(app.done.wait(), timeout=5)
    assert app.received == messages


# ---- the direct channel: text messages in by a call, out as a frame written now ----


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 300, 65535, 65536, 70000])
def test_a_direct_text_frame_is_the_frame_websockets_writes(size: int) -> None:
    from websockets.frames import Frame, Opcode

    payload = bytes(i % 251 for i in range(size))
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


class _DirectApp:
    """Accepts; lets messages queue until ``go``; then attaches a callback and reads
    the queue too, echoing each text back through the channel."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.received: list[str] = []
        self.direct = 0
        self.sent_direct: list[bool] = []
        self.done = asyncio.Event()
        self.channel: DirectChannel | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        channel = scope["extensions"][DIRECT]
        assert isinstance(channel, DirectChannel)
        self.channel = channel
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await self.go.wait()

        def on_text(text: str) -> None:
            self.direct += 1
            self.received.append(text)
            self.sent_direct.append(channel.send_text(f"echo {text}"))

        channel.attach(on_text)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            self.received.append(message["text"])
            if not channel.send_text(f"echo {message['text']}"):
                await send({"type": "websocket.send", "text": f"echo {message['text']}"})
        channel.detach()
        assert channel.send_text("after the close") is False  # the ASGI way, which refuses it
        self.done.set()


async def test_direct_messages_keep_the_sockets_order_with_queued_ones_and_echo_byte_exact() -> None:
    app = _DirectApp()
    messages = [f'{{"event":"media","sequenceNumber":"{i}","x":"{"é" * (i % 3)}"}}' for i in range(300)]
    echoes: list[str] = []
    async for _server, port in _serve(app):
        async with websockets.connect(f"ws://127.0.0.1:{port}/twilio/media", compression=None) as ws:
            for text in messages[:40]:  # queued: nobody is reading yet
                await ws.send(text)
            await asyncio.sleep(0.1)
            app.go.set()
            for i, text in enumerate(messages[40:]):
                await ws.send(text)
                if i % 20 == 0:
                    await asyncio.sleep(0.01)
            while len(echoes) < len(messages):
                echo = await asyncio.wait_for(ws.recv(), timeout=5)
                assert isinstance(echo, str)
                echoes.append(echo)
        await asyncio.wait_for(app.done.wait(), timeout=5)
    assert app.received == messages
    assert echoes == [f"echo {m}" for m in messages]
    assert 0 < app.direct < len(messages)  # both ways were taken
    assert all(app.sent_direct)


def _fake_protocol(**changes: Any) -> Any:
    from types import SimpleNamespace

    from websockets.protocol import State

    writes: list[bytes] = []
    event = asyncio.Event()
    event.set()
    conn = SimpleNamespace(state=State.OPEN, expect_continuation_frame=False, extensions=[], writes=[],
                           debug=False)  # fmt: skip
    p = SimpleNamespace(disconnected=False, close_sent=False, handshake_complete=True, initial_response=None,
                        writable=event, conn=conn, transport=SimpleNamespace(write=writes.append),
                        written=writes)  # fmt: skip
    for name, value in changes.items():
        target = conn if hasattr(conn, name) and not hasattr(p, name) else p
        setattr(target, name, value)
    return p


def test_a_direct_send_writes_one_frame_when_the_connection_is_open() -> None:
    p = _fake_protocol()
    assert DirectChannel(p).send_text('{"event":"clear"}') is True
    assert p.written == [b"\x81\x11" + b'{"event":"clear"}']


@pytest.mark.parametrize(
    "change",
    [
        {"disconnected": True},
        {"close_sent": True},
        {"handshake_complete": False},
        {"initial_response": (403, [], b"")},
        {"writable": asyncio.Event()},  # paused: the ASGI send waits for the buffer to drain
        {"expect_continuation_frame": True},
        {"extensions": ["permessage-deflate"]},
        {"writes": [b"pending"]},
        {"debug": True},
    ],
)
def test_a_direct_send_declines_unless_a_plain_frame_may_go_now(change: dict[str, Any]) -> None:
    p = _fake_protocol(**change)
    assert DirectChannel(p).send_text("x") is False
    assert p.written == []


def test_a_closing_connection_declines_a_direct_send() -> None:
    from websockets.protocol import State

    p = _fake_protocol()
    p.conn.state = State.CLOSING
    assert DirectChannel(p).send_text("x") is False


# ---- reading the client's frames ourselves: what goes where, byte for byte ----


def _client_frame(opcode: Any, payload: bytes, fin: bool = True) -> bytes:
    from websockets.frames import Frame

    return Frame(opcode, payload, fin=fin).serialize(mask=True)


def test_scan_frame_reads_whole_masked_text_frames_and_waits_for_the_rest() -> None:
    from websockets.frames import Opcode

    short, long = _client_frame(Opcode.TEXT, b"hi"), _client_frame(Opcode.TEXT, b"x" * 300)
    buf = short + long
    assert scan_frame(buf, 0, None) == (TEXT, 6, 8)
    assert scan_frame(buf, 8, None) == (TEXT, 16, 316)
    assert scan_frame(buf, 8, 300) == (TEXT, 16, 316)
    for cut in (0, 1, 3, 7, 307):  # nothing, one byte, half a length, no whole mask, a byte short
        assert scan_frame(long[:cut], 0, None)[0] == NEED_MORE
    assert scan_frame(buf, len(buf), None)[0] == NEED_MORE


@pytest.mark.parametrize("opcode", ["PING", "PONG"])
def test_scan_frame_passes_whole_pings_and_pongs_on(opcode: str) -> None:
    from websockets.frames import Opcode

    frame = _client_frame(Opcode[opcode], b"1234")
    assert scan_frame(frame, 0, None) == (CONTROL, 6, 10)
    assert scan_frame(frame[:-1], 0, None)[0] == NEED_MORE


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"\x81\x02hi", id="unmasked"),
        pytest.param(b"\x81\xff" + bytes(12), id="64-bit-length"),
        pytest.param(b"\x82\x82" + bytes(6), id="binary"),
        pytest.param(b"\x88\x82" + bytes(6), id="close"),
        pytest.param(b"\x80\x82" + bytes(6), id="continuation"),
        pytest.param(b"\x01\x82" + bytes(6), id="fragment"),
        pytest.param(b"\xc1\x82" + bytes(6), id="reserved-bit"),
        pytest.param(b"\x09\x82" + bytes(6), id="fragmented-ping"),
    ],
)
def test_scan_frame_hands_everything_else_to_websockets(frame: bytes) -> None:
    assert scan_frame(frame, 0, None)[0] == HAND_OVER
    assert scan_frame(frame[:1], 0, None)[0] == NEED_MORE


def test_scan_frame_hands_an_oversized_text_to_websockets() -> None:
    from websockets.frames import Opcode

    assert scan_frame(_client_frame(Opcode.TEXT, b"x" * 301), 0, 300)[0] == HAND_OVER


def test_at_frame_start_only_between_frames() -> None:
    from websockets.frames import Opcode
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    handshake = ServerProtocol()
    assert at_frame_start(handshake) is False  # reading the HTTP request
    conn = ServerProtocol(state=State.OPEN)
    assert at_frame_start(conn) is True
    frame = _client_frame(Opcode.TEXT, b"x" * 300)
    conn.receive_data(frame[:8])  # header and mask read, payload pending: buffer empty
    assert not conn.reader.buffer and at_frame_start(conn) is False
    conn.receive_data(frame[8:])
    assert [e.data for e in conn.events_received()] == [b"x" * 300] and at_frame_start(conn) is True
    conn.receive_data(frame[:1])
    assert at_frame_start(conn) is False


class _Recorder:
    """Accepts, attaches a callback (unless ``direct`` is False), records every message."""

    def __init__(self, direct: bool = True) -> None:
        self.attach = direct
        self.received: list[str | bytes] = []
        self.closed: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        channel = scope["extensions"][DIRECT]
        if self.attach:
            channel.attach(self.received.append)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.closed.append(message["code"])
                channel.detach()
                return
            text = message.get("text")
            self.received.append(text if text is not None else message["bytes"])


async def _raw_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /twilio/media HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert response.startswith(b"HTTP/1.1 101")
    return reader, writer


async def _server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readexactly(2), timeout=5)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    return head[0], await reader.readexactly(length)


def _accepted(server: uvicorn.Server) -> bool:
    return any(getattr(c, "handshake_complete", False) for c in server.server_state.connections)


async def _until(check: Any) -> None:
    for _ in range(300):
        if check():
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("direct", [True, False])
async def test_frames_in_any_chunking_arrive_in_order_pings_are_answered_and_a_binary_hands_over(
    direct: bool,
) -> None:
    from websockets.frames import Opcode

    app = _Recorder(direct)
    texts = [f'{{"event":"media","n":{i},"p":"{"é" * (i % 200)}"}}' for i in range(60)]
    frames = [_client_frame(Opcode.TEXT, t.encode()) for t in texts]
    async for server, port in _serve(app):
        reader, writer = await _raw_upgrade(port)
        await _until(lambda: _accepted(server))
        protocol = _ws_protocol(server)
        assert protocol.reading_frames is True
        writer.write(b"".join(frames[:10]))  # many frames in one write
        stream = b"".join(frames[10:20]) + _client_frame(Opcode.PING, b"ka") + b"".join(frames[20:30])
        for i in range(0, len(stream), 7):  # and frames cut anywhere, a ping among them
            writer.write(stream[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        assert await _server_frame(reader) == (0x8A, b"ka")  # websockets' pong
        await _until(lambda: len(app.received) == 30)
        assert protocol.reading_frames is True
        writer.write(frames[30] + _client_frame(Opcode.BINARY, b"\x00\x01") + b"".join(frames[31:]))
        await _until(lambda: len(app.received) == len(texts) + 1)
        assert protocol.reading_frames is False  # websockets reads the rest of the connection
        writer.write(_client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big")))
        assert await _server_frame(reader) == (0x88, (1000).to_bytes(2, "big"))
        await _until(lambda: app.closed)
        writer.close()
    assert app.received == [*texts[:31], b"\x00\x01", *texts[31:]]


async def test_a_text_that_is_not_utf8_closes_with_1007_as_before() -> None:
    from websockets.frames import Opcode

    app = _Recorder()
    async for server, port in _serve(app):
        reader, writer = await _raw_upgrade(port)
        await _until(lambda: _accepted(server) and _ws_protocol(server).on_text is not None)
        writer.write(_client_frame(Opcode.TEXT, b"ok") + _client_frame(Opcode.TEXT, b"\xff\xfe") +
                     _client_frame(Opcode.TEXT, b"after"))  # fmt: skip
        opcode, payload = await _server_frame(reader)
        assert (opcode, payload[:2]) == (0x88, (1007).to_bytes(2, "big"))
        writer.close()
    assert app.received == ["ok"]


async def test_the_direct_channel_relies_only_on_names_uvicorns_protocol_has() -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from callagent.serving import _UVICORN_SHAPE

    protocol_class = media_ws_protocol()
    assert not isinstance(protocol_class, str)
    config = Config(app=_Recorder(), ws=protocol_class)
    config.load()
    protocol = protocol_class(config, ServerState(), {}, _loop=asyncio.get_running_loop())  # type: ignore[call-arg]
    missing = [name for name in _UVICORN_SHAPE if not hasattr(protocol, name)]
    assert missing == []


def test_at_frame_start_says_no_for_a_websockets_shaped_otherwise() -> None:
    class Elsewise:  # a later websockets without the internals read here
        reader = None

    assert at_frame_start(Elsewise()) is False


# ---- read batching: from a number of media streams on, a socket rests between reads ----


def test_read_batching_rests_only_from_its_number_of_streams() -> None:
    batching = ReadBatching(interval_s=0.06, from_streams=2)
    assert [batching.rest_s() for batching.streams in (0, 1, 2, 3)] == [0.0, 0.0, 0.06, 0.06]


def test_attaching_counts_a_media_stream_once_and_detaching_uncounts_it_once() -> None:
    from types import SimpleNamespace

    batching = ReadBatching(interval_s=0.06, from_streams=1)
    protocol = SimpleNamespace(on_text=None, read_batching=batching)
    channel = DirectChannel(protocol)
    channel.attach(print)
    channel.attach(repr)  # a second callback replaces the first: still one stream
    assert batching.streams == 1
    channel.detach()
    channel.detach()  # the stream's shell detaches on every way out
    assert batching.streams == 0


def _rest_state(server: uvicorn.Server) -> tuple[bool, bool]:
    """(resting by read batching, the socket being read)."""
    protocol = _ws_protocol(server)
    return protocol.resting, protocol.transport.is_reading()


async def test_a_media_socket_rests_after_each_read_from_the_threshold_and_loses_nothing() -> None:
    from websockets.frames import Opcode

    # A rest far longer than the test's steps, so that "still resting" cannot
    # be a slow machine's accident; the real default is 60 ms.
    batching = ReadBatching(interval_s=2.0, from_streams=1)
    app = _Recorder()
    texts = [f'{{"event":"media","n":{i}}}' for i in range(7)]
    frames = [_client_frame(Opcode.TEXT, t.encode()) for t in texts]
    async for server, port in _serve(app, ws=media_ws_protocol(batching)):
        reader, writer = await _raw_upgrade(port)
        await _until(lambda: _accepted(server) and _ws_protocol(server).on_text is not None)
        assert batching.streams == 1
        writer.write(frames[0])
        await _until(lambda: len(app.received) == 1)
        assert _rest_state(server) == (True, False)  # read once, now resting
        for frame in frames[1:4]:  # three frames come while it rests...
            writer.write(frame)
            await writer.drain()
        await asyncio.sleep(0.1)
        assert app.received == texts[:1]  # ...and wait in the socket
        await _until(lambda: len(app.received) == 4)  # the rest is over: all three in one read
        assert _rest_state(server) == (True, False)
        writer.write(b"".join(frames[4:]))
        await _until(lambda: len(app.received) == len(texts))
        writer.write(_client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big")))
        assert await _server_frame(reader) == (0x88, (1000).to_bytes(2, "big"))
        await _until(lambda: app.closed)
        writer.close()
    assert app.received == texts
    assert batching.streams == 0


async def test_below_the_threshold_every_frame_is_read_when_it_comes() -> None:
    from websockets.frames import Opcode

    batching = ReadBatching(interval_s=2.0, from_streams=2)  # one stream: below
    app = _Recorder()
    texts = [f'{{"event":"media","n":{i}}}' for i in range(5)]
    async for server, port in _serve(app, ws=media_ws_protocol(batching)):
        reader, writer = await _raw_upgrade(port)
        await _until(lambda: _accepted(server) and _ws_protocol(server).on_text is not None)
        for i, text in enumerate(texts):
            writer.write(_client_frame(Opcode.TEXT, text.encode()))
            await writer.drain()
            await _until(lambda: len(app.received) == i + 1)
            assert _rest_state(server) == (False, True)
        writer.close()
    assert app.received == texts


def test_read_batching_comes_from_the_media_settings() -> None:
    from dataclasses import replace

    settings = Settings()
    protocol = uvicorn_options(settings)["ws"]
    assert (protocol.read_batching.interval_s, protocol.read_batching.from_streams) == (0.06, 50)
    off = replace(settings, media=replace(settings.media, read_batch_ms=0))
    assert uvicorn_options(off)["ws"].read_batching is None
