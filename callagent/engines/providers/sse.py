"""Server-sent events, sans-I/O: bytes in, the `data` of each complete event out.

Only what the OpenAI-compatible streams use: `data:` lines (joined with
newlines when an event has several), comment lines (`:`) and other fields
ignored, events ended by a blank line, LF or CRLF line ends.
"""

from __future__ import annotations

__all__ = ["SseParser"]


class SseParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        out: list[str] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return out
            line = self._buffer[:end].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buffer = self._buffer[end + 1 :]
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)

    def close(self) -> list[str]:
        """The last event, if the stream ended without its blank line."""
        out = self.feed(b"\n\n")
        self._buffer = b""
        return out
