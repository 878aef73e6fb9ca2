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

It leans on two names inside uvicorn's protocol (``read_paused`` and
``send_receive_event_to_app``); ``media_ws_protocol()`` checks they exist and
otherwise returns uvicorn's own choice, so an upgrade of uvicorn that renames
them costs the saving, never correctness.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from callagent.config import Settings

__all__ = ["HIGH_WATER", "media_ws_protocol", "uvicorn_options"]

log = logging.getLogger(__name__)

HIGH_WATER = 64  # messages queued for the app before reading pauses


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn settings for our app (``callagent serve`` and the tests' live servers)."""
    return {
        # Twilio sends small JSON frames; anything much larger is refused by
        # the protocol layer with a precise error, this is the hard ceiling.
        "ws_max_size": 4 * settings.media.max_message_bytes,
        # mu-law audio does not compress; deflate costs ~10% of the media path's CPU.
        "ws_per_message_deflate": False,
        "ws": media_ws_protocol(),
        "proxy_headers": False,
    }


def media_ws_protocol() -> type[asyncio.Protocol] | str:
    """The protocol class for ``uvicorn.run(ws=...)``: ours, or ``"auto"`` if it cannot be."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # uvicorn without its websockets-sansio protocol
        log.info("uvicorn has no websockets-sansio protocol; using its default WebSocket protocol")
        return "auto"
    if not callable(getattr(WebSocketsSansIOProtocol, "send_receive_event_to_app", None)):
        log.info("uvicorn's WebSocket protocol changed shape; using it as it is")
        return "auto"

    class LazyPauseWebSocketProtocol(WebSocketsSansIOProtocol):
        """Pauses reading at HIGH_WATER queued messages instead of after each one."""

        def send_receive_event_to_app(self) -> None:
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

    return LazyPauseWebSocketProtocol
