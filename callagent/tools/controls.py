"""What built-in tools may do to the live call: the session implements this."""

from __future__ import annotations

from typing import Protocol

__all__ = ["CallControls"]


class CallControls(Protocol):
    async def hang_up(self, reason: str) -> None:
        """End the call (a call that already ended is not an error)."""

    async def transfer(self, target: str, warm: bool, announce: str) -> None:
        """Hand the caller to a person: cold (<Dial>) or warm (the human hears ``announce`` first)."""

    async def collect_digits(self, max_len: int, terminator: str, secure: bool) -> str:
        """Keypad digits; with ``secure`` only a masked form ever leaves the session."""

    def stop_recording(self, how: str) -> None:
        """The caller refused recording: keep no more audio (consent refused, audited)."""

    def record_opt_out(self, channel: str) -> str:
        """Put the caller's number on the internal do-not-call list; returns it (E.164)."""
