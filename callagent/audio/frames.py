"""Cut a mu-law byte stream of any chunking into whole 20 ms frames."""

from __future__ import annotations

from callagent.audio.codec import ULAW_SILENCE, BytesLike

__all__ = ["FRAME_BYTES", "FrameSplitter"]

# 20 ms of 8 kHz mu-law: one byte per sample.
FRAME_BYTES = 160


class FrameSplitter:
    """Accumulate bytes; hand back whole frames, keep the remainder for later."""

    __slots__ = ("_frame_bytes", "_buf")

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if isinstance(frame_bytes, bool) or not isinstance(frame_bytes, int) or frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be a positive int, got {frame_bytes!r}")
        self._frame_bytes = frame_bytes
        self._buf = bytearray()

    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes

    @property
    def pending_bytes(self) -> int:
        """Bytes held back because they do not fill a frame yet."""
        return len(self._buf)

    def push(self, data: BytesLike) -> list[bytes]:
        """Add a chunk (any size, empty included); return the frames it completes."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"expected mu-law bytes, got {type(data).__name__}")
        buf = self._buf
        buf += data
        size = self._frame_bytes
        whole = len(buf) - len(buf) % size
        if not whole:
            return []
        frames = [bytes(buf[i : i + size]) for i in range(0, whole, size)]
        del buf[:whole]
        return frames

    def flush(self, pad: bool) -> bytes:
        """Return the partial last frame, padded to a whole frame with silence if asked.

        Returns b"" when nothing is pending. Unpadded is fine for Twilio (any
        payload size plays); padding keeps every frame exactly 20 ms.
        """
        rest = bytes(self._buf)
        self._buf.clear()
        if pad and rest:
            rest += bytes([ULAW_SILENCE]) * (self._frame_bytes - len(rest))
        return rest

    def clear(self) -> int:
        """Drop the pending bytes (barge-in); return how many were dropped."""
        dropped = len(self._buf)
        self._buf.clear()
        return dropped
