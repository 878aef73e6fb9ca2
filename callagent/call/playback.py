"""What the caller has heard, from Twilio mark echoes (twilio.md section 4).

Twilio echoes a mark when playback reaches it, and after a ``clear`` it echoes
every mark still pending. An echo carries only the name, so "played" and
"cleared" look the same; the recipe tells them apart:

1. The session registers every mark it sends, in send order, with its turn and
   the turn's cumulative ms sent up to the mark.
2. An echo of a mark outstanding with no clear over it: the audio up to that
   mark was played; advance the turn's heard ms and pop it.
3. ``on_clear()`` snapshots the outstanding marks. Their later echoes mean
   "not played": pop them without advancing.
4. Heard audio is the mark-confirmed ms, never the ms sent.

``heard_ms()`` (mark-confirmed) is authoritative and lags playback by up to
one chunk. ``heard_ms_estimate()`` fills the gap between marks with elapsed
playback time capped at the ms sent; use it for display and truncation
guesses, not for compliance proof.

Pure: no clock reads; time comes in as ``now`` / ``at`` (monotonic seconds).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from callagent.engines.base import PlaybackProgress

__all__ = ["ClearSnapshot", "PlaybackTracker"]


@dataclass(frozen=True, slots=True)
class ClearSnapshot:
    """What a ``clear`` cut short."""

    cancelled_marks: tuple[str, ...]  # outstanding at the clear: their echoes mean "not played"
    interrupted: tuple[PlaybackProgress, ...]  # open turns, with their mark-confirmed heard ms


@dataclass(slots=True)
class _Mark:
    turn_id: str
    sent_ms: float
    final: bool


@dataclass(slots=True)
class _Turn:
    sent_ms: float = 0.0  # the highest cumulative ms registered with a mark
    heard_ms: float = 0.0
    final_sent: bool = False
    complete: bool = False
    interrupted: bool = False
    plays_at: float | None = None  # estimated start of this turn's playback
    cleared_at: float | None = None


class PlaybackTracker:
    """Per-call record of outstanding marks and per-turn heard audio."""

    def __init__(self) -> None:
        self._outstanding: OrderedDict[str, _Mark] = OrderedDict()  # send order
        self._cancelled: set[str] = set()
        self._turns: dict[str, _Turn] = {}
        self._unknown_echoes = 0

    # ---- inputs -------------------------------------------------------------

    def register_mark(self, name: str, turn_id: str, sent_ms: float, *, final: bool = False) -> None:
        """Record a mark as it is sent. ``final`` marks the end of the turn's audio."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a mark name must be a non-empty str, got {name!r}")
        if name in self._outstanding or name in self._cancelled:
            # Echoes carry only the name: a reused pending name would be ambiguous.
            raise ValueError(f"mark {name!r} is still pending; mark names must be unique")
        if isinstance(sent_ms, bool) or not isinstance(sent_ms, (int, float)) or not (
            math.isfinite(sent_ms) and sent_ms >= 0
        ):
            raise ValueError(f"sent_ms must be a finite number >= 0, got {sent_ms!r}")
        turn = self._turns.setdefault(turn_id, _Turn())
        if turn.interrupted:
            raise ValueError(f"turn {turn_id!r} was cut short by a clear; drop its remaining audio")
        if turn.final_sent:
            raise ValueError(f"turn {turn_id!r} already sent its final mark")
        if sent_ms < turn.sent_ms:
            raise ValueError(
                f"sent_ms for turn {turn_id!r} went backwards: {sent_ms:g} < {turn.sent_ms:g} "
                "(it is the turn's cumulative ms sent)"
            )
        turn.sent_ms = float(sent_ms)
        turn.final_sent = final
        self._outstanding[name] = _Mark(turn_id, float(sent_ms), final)

    def turn_playback_started(self, turn_id: str, at: float) -> None:
        """Note when the turn's first audio starts playing (``Frame.plays_at``).

        Only ``heard_ms_estimate()`` uses it. The first call per turn wins.
        """
        turn = self._turns.setdefault(turn_id, _Turn())
        if turn.plays_at is None:
            turn.plays_at = at

    def on_mark_echo(self, name: str) -> PlaybackProgress | None:
        """Apply an echo. Returns the turn's new progress if audio was confirmed played."""
        if name in self._cancelled:
            self._cancelled.discard(name)  # cleared, not played
            return None
        if name not in self._outstanding:
            self._unknown_echoes += 1
            return None
        # Playback is in order, so marks sent before this one have played too
        # (their echoes are normally already in; this covers a lost one).
        while True:
            head_name, mark = self._outstanding.popitem(last=False)
            turn = self._turns[mark.turn_id]
            turn.heard_ms = max(turn.heard_ms, mark.sent_ms)
            if mark.final:
                turn.complete = True
            if head_name == name:
                return self._progress(mark.turn_id, turn)

    def on_clear(self, now: float | None = None) -> ClearSnapshot:
        """Call when sending ``clear``. ``now`` freezes the elapsed-time estimates."""
        cancelled = tuple(self._outstanding)
        self._cancelled.update(cancelled)
        self._outstanding.clear()
        cut: list[PlaybackProgress] = []
        for turn_id, turn in self._turns.items():
            if turn.complete or turn.interrupted:
                continue
            turn.interrupted = True
            turn.cleared_at = now
            cut.append(self._progress(turn_id, turn))
        return ClearSnapshot(cancelled, tuple(cut))

    # ---- readings -----------------------------------------------------------

    def heard_ms(self, turn_id: str) -> float:
        """Mark-confirmed ms of the turn the caller heard (0 for an unknown turn)."""
        turn = self._turns.get(turn_id)
        return turn.heard_ms if turn else 0.0

    def sent_ms(self, turn_id: str) -> float:
        turn = self._turns.get(turn_id)
        return turn.sent_ms if turn else 0.0

    def is_complete(self, turn_id: str) -> bool:
        """True once the turn's final mark echoed as played: all its audio was heard."""
        turn = self._turns.get(turn_id)
        return turn is not None and turn.complete

    def is_interrupted(self, turn_id: str) -> bool:
        turn = self._turns.get(turn_id)
        return turn is not None and turn.interrupted

    def progress(self, turn_id: str) -> PlaybackProgress:
        return self._progress(turn_id, self._turns.get(turn_id, _Turn()))

    def heard_ms_estimate(self, turn_id: str, now: float) -> float:
        """min(ms sent, time since the turn's playback began), never below confirmed.

        After a clear the clock stops at the clear's ``now``; without that
        ``now`` (or without ``turn_playback_started``) this is ``heard_ms()``.
        """
        turn = self._turns.get(turn_id)
        if turn is None:
            return 0.0
        if turn.complete or turn.plays_at is None:
            return turn.heard_ms
        if turn.interrupted:
            if turn.cleared_at is None:
                return turn.heard_ms
            now = turn.cleared_at
        elapsed_ms = max(0.0, (now - turn.plays_at) * 1000.0)
        return max(turn.heard_ms, min(turn.sent_ms, elapsed_ms))

    @property
    def outstanding_marks(self) -> tuple[str, ...]:
        """Marks sent and not yet echoed, in send order (excludes cleared ones)."""
        return tuple(self._outstanding)

    @property
    def clear_pending(self) -> bool:
        """True while echoes of cleared marks are still expected."""
        return bool(self._cancelled)

    @property
    def unknown_echoes(self) -> int:
        """Echoes whose name was never registered (or already echoed): ignored."""
        return self._unknown_echoes

    @staticmethod
    def _progress(turn_id: str, turn: _Turn) -> PlaybackProgress:
        return PlaybackProgress(turn_id=turn_id, heard_ms=turn.heard_ms, complete=turn.complete)
