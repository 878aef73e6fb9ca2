"""Secure capture: card entry by keypad, where only a masked form ever leaves.

A pure state machine. ``start()`` arms it; each ``digit()`` is kept in memory
only; the end key or ``max_digits`` finishes it and ``masked`` is what may be
stored (every digit but the last four replaced by ``*``). The digits
themselves are dropped at the end. While ``active`` the session pauses the
recording, withholds the keys from the engine and mutes the caller's audio
to the engine (spoken digits never reach speech recognition).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Captured", "SecureCapture", "mask_digits"]


def mask_digits(digits: str) -> str:
    """All but the last four digits as ``*`` (PCI DSS: display at most the last four)."""
    keep = 4 if len(digits) > 4 else 0
    return "*" * (len(digits) - keep) + digits[len(digits) - keep :]


@dataclass(frozen=True, slots=True)
class Captured:
    masked: str
    length: int
    ended_by: str  # "end_key" | "max_digits" | "call ended" | "cancelled"
    digits: str = ""  # only for a plain (not secure) collection: ``reveal=True``


class SecureCapture:
    def __init__(self, end_key: str = "#", max_digits: int = 19, *, reveal: bool = False) -> None:
        if not 1 <= max_digits <= 32:
            raise ValueError(f"max_digits: expected 1-32, got {max_digits}")
        self._reveal = reveal  # a plain digit collection (an order number), not card entry
        self._end_key = end_key
        self._max = max_digits
        self._digits: list[str] = []
        self.active = False

    def start(self) -> None:
        if self.active:
            raise RuntimeError("secure capture is already active")
        self._digits = []
        self.active = True

    def digit(self, key: str) -> Captured | None:
        """Take one key; the capture when it is complete, else None."""
        if not self.active:
            raise RuntimeError("secure capture is not active")
        if key == self._end_key:
            return self._finish("end_key")
        if key.isdigit() and len(key) == 1:
            self._digits.append(key)
            if len(self._digits) >= self._max:
                return self._finish("max_digits")
        return None  # other keys (*, A-D) are ignored during capture

    def cancel(self, why: str) -> Captured | None:
        return self._finish(why) if self.active else None

    def _finish(self, how: str) -> Captured:
        digits = "".join(self._digits)
        self._digits = []
        self.active = False
        return Captured(mask_digits(digits), len(digits), how, digits if self._reveal else "")
