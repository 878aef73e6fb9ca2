"""How uvicorn serves the app: its options, and a WebSocket protocol that pauses
reading only when the app falls behind.

uvicorn's sans-I/O WebSocket protocol stops reading the socket after every
message it queues for the app and starts again when the app has taken it:
two event-loop registrations (``epoll_ctl``) per message. A Twilio media
stream is 50 small messages a second per call, so at 200 calls that is 20,000
system calls a second spent on flow control the app never needed. This
subclass keeps uvicorn's protocol and changes only that: reading pauses when
``HIGH_WATER`` messages are waiting (the app really is behind: 1.3 s of a
media stream) and resumes, as uvicorn does, once the app has emptied the
queue. Memory stays bounded by the same mechanism, just later.

It also offers the app a shorter way for each message (``DirectChannel``,
in the scope's extensions under ``DIRECT``), which the media stream takes:
about 70 small messages per call-second, each of which otherwise costs an
ASGI event dict, an ``asyncio.Queue`` hand-off and a wake-up of the app's
read task in, and two layers of coroutines, ``websockets``' frame object and
its serializer out:

- in: a text message is handed to the app's callback from ``data_received``
  when nothing waits in the queue (so the order is the socket's); otherwise,
  and for every other message (binary, the disconnect), the ASGI queue as
  before;
- in, underneath: once the upgrade is accepted (and only if ``websockets``'
  parser then waits at a frame's first byte, with no extension), the
  protocol reads the client's frames itself (`scan_frame`): an unfragmented
  masked text frame is unmasked and handed on as above; a whole ping or
  pong frame is fed alone to ``websockets`` (which answers the ping), so its
  parser is always left at a frame boundary; anything else (close, binary,
  fragments, reserved bits, an unmasked or oversized frame) and everything
  after it goes to ``websockets`` from that boundary on, as before;
- out: ``send_text()`` writes an unfragmented text frame (the bytes
  ``websockets`` writes: a server's frames are not masked) straight to the
  transport when the connection is open, writable, no extension is
  negotiated and no fragmented message is in progress; otherwise it says no
  and the app sends the ASGI way.

It leans on names inside uvicorn's protocol: ``media_ws_protocol()`` checks
``send_receive_event_to_app`` exists and otherwise returns uvicorn's own
choice, and a connection offers the direct channel (and reads frames itself)
only when it has every attribute in ``_UVICORN_SHAPE``, so an upgrade of
uvicorn that renames them costs the saving, never correctness. An app that
finds no ``DIRECT`` extension (another server, Starlette's test client) uses
plain ASGI.

Read batching (``ReadBatching``): from ``media.read_batch_from_calls`` media
streams on one process, a stream's socket is left unread for
``media.read_batch_ms`` after each read, so the next read takes the two or
three frames that came meanwhile in one wake-up and one system call. Per
frame, the event loop's wake-up and the ``recv`` cost about as much as
everything we do with the frame, so this saves about a quarter of the
server's CPU at 200 calls (docs/benchmarks.md), at the price of up to
``read_batch_ms`` - 20 ms more before the engine hears the caller. Below the
threshold every frame is read when it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from websockets.protocol import State
from websockets.streams import StreamReader

try:  # websockets' C unmasking, as its own parser uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover (a build without the C extension)
    from websockets.utils import apply_mask

from callagent.config import Settings

__all__ = [
    "CONTROL",
    "DIRECT",
    "HAND_OVER",
    "HIGH_WATER",
    "NEED_MORE",
    "TEXT",
    "DirectChannel",
    "ReadBatching",
    "at_frame_start",
    "media_ws_protocol",
    "scan_frame",
    "text_frame",
    "uvicorn_options",
]

log = logging.getLogger(__name__)

HIGH_WATER = 64  # messages queued for the app before reading pauses
DIRECT = "callagent.direct"  # the scope's extension: a DirectChannel

# What the direct channel and the frame reader use of uvicorn's protocol (set in its __init__).
_UVICORN_SHAPE = ("conn", "queue", "transport", "writable", "frames", "curr_msg_data_type", "read_paused",
                  "close_sent", "handshake_complete", "initial_response", "disconnected")  # fmt: skip

_TEXT_FIN = 0x81  # FIN + text opcode: the first byte of an unfragmented text frame


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame, byte for byte as ``websockets`` writes it."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + payload
    if n < 65536:
        return bytes((_TEXT_FIN, 126, n >> 8, n & 0xFF)) + payload
    return bytes((_TEXT_FIN, 127)) + n.to_bytes(8, "big") + payload


# What `scan_frame` finds at a position of the client's byte stream.
NEED_MORE = 0  # not a whole frame yet
TEXT = 1  # an unfragmented, masked text frame: ours to read
CONTROL = 2  # a whole, masked ping or pong: for websockets, alone
HAND_OVER = 3  # anything else: websockets reads from here on

_PING_FIN, _PONG_FIN = 0x89, 0x8A


def scan_frame(buf: bytes, pos: int, limit: int | None) -> tuple[int, int, int]:
    """The client frame that starts at ``buf[pos]``: (kind, payload start, frame end).

    ``limit`` is the largest payload ``websockets`` accepts; a larger one is
    handed over, so that ``websockets`` refuses it as it always has (1009).
    """
    avail = len(buf) - pos
    if avail < 2:
        return NEED_MORE, 0, 0
    first, second = buf[pos], buf[pos + 1]
    if not second & 0x80:  # unmasked: websockets fails the connection
        return HAND_OVER, 0, 0
    length = second & 0x7F
    if length < 126:
        head = pos + 6
    elif length == 126:
        if avail < 4:
            return NEED_MORE, 0, 0
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        head = pos + 8
    else:  # 64 KiB or more: never a Twilio message
        return HAND_OVER, 0, 0
    if limit is not None and length > limit:
        return HAND_OVER, 0, 0
    if first == _TEXT_FIN:
        kind = TEXT
    elif first == _PING_FIN or first == _PONG_FIN:
        kind = CONTROL
    else:
        return HAND_OVER, 0, 0
    stop = head + length
    if stop > len(buf):
        return NEED_MORE, 0, 0
    return kind, head, stop


def at_frame_start(conn: Any) -> bool:
    """Whether a ``websockets`` connection's parser waits for a frame's first byte.

    It reads ``websockets``' internals (its reader's buffer, the parser
    generator's frame); a version shaped otherwise answers False, and the
    connection keeps ``websockets``' own reading."""
    try:
        if conn.reader.buffer:
            return False
        gen = conn.parser
        while gen.gi_yieldfrom is not None:
            gen = gen.gi_yieldfrom
        return bool(gen.gi_code is StreamReader.at_eof.__code__)
    except AttributeError:
        return False


class ReadBatching:
    """How long a media stream's socket rests after a read: the same for every
    connection of one server, from the number of media streams it carries."""

    __slots__ = ("interval_s", "from_streams", "streams")

    def __init__(self, interval_s: float, from_streams: int) -> None:
        self.interval_s = interval_s
        self.from_streams = from_streams
        self.streams = 0  # connections with the direct channel attached: media streams

    def rest_s(self) -> float:
        """Seconds to leave the socket unread after a read; 0: read on."""
        return self.interval_s if self.streams >= self.from_streams else 0.0


class DirectChannel:
    """One WebSocket connection's short way in and out (see the module's doc)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def attach(self, on_text: Callable[[str], None]) -> None:
        """From now on, text messages that would find the queue empty go to ``on_text``.

        ``on_text`` runs inside the protocol's ``data_received``: it must not
        raise or block. Messages already queued stay queued, and so does any
        message that arrives while one is: read the queue as before.
        """
        p = self._protocol
        if p.on_text is None and p.read_batching is not None:
            p.read_batching.streams += 1
        p.on_text = on_text

    def detach(self) -> None:
        p = self._protocol
        if p.on_text is not None and p.read_batching is not None:
            p.read_batching.streams -= 1
        p.on_text = None

    def send_text(self, text: str) -> bool:
        """Write ``text`` now as one frame; False (nothing written) when it must go the ASGI way."""
        p = self._protocol
        conn = p.conn
        if (
            p.disconnected
            or p.close_sent
            or not p.handshake_complete
            or p.initial_response is not None
            or not p.writable.is_set()
            or conn.state is not State.OPEN
            or conn.expect_continuation_frame
            or conn.extensions
            or conn.writes
            or conn.debug
        ):
            return False
        p.transport.write(text_frame(text.encode()))
        return True


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn settings for our app (``callagent serve`` and the tests' live servers)."""
    return {
        # Twilio sends small JSON frames; anything much larger is refused by
        # the protocol layer with a precise error, this is the hard ceiling.
        "ws_max_size": 4 * settings.media.max_message_bytes,
        # mu-law audio does not compress; deflate costs ~10% of the media path's CPU.
        "ws_per_message_deflate": False,
        "ws": media_ws_protocol(
            ReadBatching(settings.media.read_batch_ms / 1000, settings.media.read_batch_from_calls)
            if settings.media.read_batch_ms
            else None
        ),
        "proxy_headers": False,
    }


def media_ws_protocol(read_batching: ReadBatching | None = None) -> type[asyncio.Protocol] | str:
    """The protocol class for ``uvicorn.run(ws=...)``: ours, or ``"auto"`` if it cannot be.

    Every connection of the class shares ``read_batching`` (None: never batch)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # uvicorn without its websockets-sansio protocol
        log.info("uvicorn has no websockets-sansio protocol; using its default WebSocket protocol")
        return "auto"
    if not callable(getattr(WebSocketsSansIOProtocol, "send_receive_event_to_app", None)):
        log.info("uvicorn's WebSocket protocol changed shape; using it as it is")
        return "auto"

    class LazyPauseWebSocketProtocol(WebSocketsSansIOProtocol):
        """Pauses reading at HIGH_WATER queued messages instead of after each one;
        offers the app a `DirectChannel`; rests between reads by `ReadBatching`."""

        read_batching: ReadBatching | None = None

        on_text: Callable[[str], None] | None = None
        resting = False  # reading paused by read batching, until its timer
        reading_frames = False  # we read the client's frames (see the module's doc)
        partial = b""  # the start of a frame not yet whole, while reading_frames

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)  # set only when the upgrade is accepted
            if scope is not None and all(hasattr(self, name) for name in _UVICORN_SHAPE):
                scope["extensions"][DIRECT] = DirectChannel(self)
                conn = self.conn
                self.reading_frames = (
                    not conn.extensions and conn.max_fragment_size is None and at_frame_start(conn)
                )

        def data_received(self, data: bytes) -> None:
            if not self.reading_frames:
                super().data_received(data)
                return
            conn = self.conn
            buf = self.partial + data if self.partial else data
            self.partial = b""
            limit = conn.max_message_size
            pos, end = 0, len(buf)
            while pos < end:
                kind, head, stop = scan_frame(buf, pos, limit)
                if kind == TEXT:
                    self.curr_msg_data_type = "text"
                    self.frames = [apply_mask(buf[head:stop], buf[head - 4 : head])]
                    self.send_receive_event_to_app()
                elif kind == CONTROL:
                    super().data_received(buf[pos:stop])
                elif kind == NEED_MORE:
                    self.partial = buf[pos:]
                    return
                else:
                    break
                pos = stop
                if conn.parser_exc is not None or conn.close_sent is not None or conn.close_rcvd is not None:
                    break  # closing (a bad UTF-8 text, ...): websockets reads the rest
            else:  # every frame read, none begun
                if self.on_text is not None and not self.resting and not self.read_paused:
                    rest = self.read_batching.rest_s() if self.read_batching is not None else 0.0
                    if rest:
                        self.resting = True
                        self.transport.pause_reading()
                        asyncio.get_running_loop().call_later(rest, self._rested)
                return
            self.reading_frames = False
            if pos < end:
                super().data_received(buf[pos:])

        def _rested(self) -> None:
            self.resting = False
            # Flow control (read_paused) may have paused reading meanwhile: it resumes it itself.
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

        def send_receive_event_to_app(self) -> None:
            on_text = self.on_text
            if (
                on_text is not None
                and self.curr_msg_data_type == "text"
                and not self.close_sent
                and self.queue.empty()
            ):
                frames = self.frames
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    pass  # uvicorn's own path logs it and closes with 1007
                else:
                    self.frames = []
                    on_text(text)
                    return
            paused = self.read_paused
            # uvicorn pauses reading after queueing unless it believes it already
            # has; let it believe so, then decide from the queue's depth.
            self.read_paused = True
            try:
                super().send_receive_event_to_app()
            finally:
                self.read_paused = paused
            if not paused and self.queue.qsize() >= HIGH_WATER:
                self.read_paused = True
                self.transport.pause_reading()

    LazyPauseWebSocketProtocol.read_batching = read_batching
    return LazyPauseWebSocketProtocol
