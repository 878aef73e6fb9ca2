"""Sans-I/O outbound pacer: decides when each mu-law frame may go to Twilio.

Twilio plays what we send in order and in real time, and starts at once when
its buffer is empty. Sending far ahead is allowed but delays barge-in (a
``clear`` has more to throw away) and skews mark-based timing, so the pacer
keeps at most ``lead_ms`` of audio queued at Twilio.

It models Twilio's side with a playout clock: the current unbroken run of
audio started at ``_run_start`` and holds ``_run_samples``, so it ends at
``_run_start + _run_samples / 8000``. A frame of ``d`` seconds is due once
sending it leaves no more than the lead queued: ``now >= run_end + d - lead``.
If the run has ended when a frame goes out, Twilio plays it at once, so a new
run starts at ``now`` (the agent fell silent and spoke again, or we were late).

Sending in batches: with ``batch_ms`` above one frame, once the lead is full
the pacer waits until there is room for ``batch_ms`` of audio and then sends
that much in one pass, so the shell wakes once per batch instead of once per
20 ms frame (at 200 calls that is thousands of timer wake-ups a second fewer).
The lead then swings between ``lead_ms - batch_ms`` and ``lead_ms``; frames
are still 20 ms each. A frame's schedule (for lateness) is the pass a
punctual shell would have sent it in.

The estimate ignores network transit: real playback trails it by the one-way
delay. Mark echoes (``call/playback.py``) are the authoritative record.

Early timers: with ``early_ms``, a pass due within that much of ``now`` goes
now. A shell whose timers can fire a little before their due time (uvloop
rounds a delay to whole milliseconds on a millisecond clock, and runs a
delay that rounds to 0 at once) would otherwise wake, find nothing due, and
re-arm a sub-millisecond timer that fires at once: a spin of a hundred or so idle
wake-ups a second per call. The lead may then exceed ``lead_ms`` by up to
``early_ms``.

No clock reads: every method that depends on time takes ``now``
(``time.monotonic()`` seconds) from the shell, which sleeps until
``next_due_at(now)`` and then sends what ``due(now)`` returns.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["DEFAULT_LEAD_MS", "Frame", "MarkOut", "OutboundPacer"]

DEFAULT_LEAD_MS = 200.0
_MIN_LEAD_MS = 20.0  # one frame: a smaller lead could never send a 20 ms frame
_MAX_LEAD_MS = 1000.0
_FRAME_MS = 20.0
_RATE = 8000  # mu-law bytes (samples) per second
_MS_PER_BYTE = 1000.0 / _RATE
# Float slack so a frame due "exactly now" is not deferred by rounding (1 ns).
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame to send now, with its timing record."""

    ulaw: bytes
    scheduled_at: float  # earliest moment the lead allowed it out (or its push time)
    sent_at: float  # the ``now`` of the ``due()`` call that handed it out
    plays_at: float  # estimated start of its playback at Twilio

    @property
    def duration_ms(self) -> float:
        return len(self.ulaw) * _MS_PER_BYTE

    @property
    def late_ms(self) -> float:
        return max(0.0, (self.sent_at - self.scheduled_at) * 1000.0)


@dataclass(frozen=True, slots=True)
class MarkOut:
    """A mark to send now, after every frame pushed before it."""

    name: str
    sent_ms: float  # all audio handed out before this mark (pacer total, all turns)


class OutboundPacer:
    """Holds frames and marks; releases them so the lead at Twilio stays <= lead_ms."""

    def __init__(
        self,
        lead_ms: float = DEFAULT_LEAD_MS,
        *,
        late_after_ms: float = 20.0,
        batch_ms: float = _FRAME_MS,
        early_ms: float = 0.0,
    ) -> None:
        if isinstance(lead_ms, bool) or not isinstance(lead_ms, (int, float)):
            raise ValueError(f"lead_ms must be a number of milliseconds, got {lead_ms!r}")
        if not _MIN_LEAD_MS <= lead_ms <= _MAX_LEAD_MS:  # NaN fails this too
            raise ValueError(
                f"lead_ms must be between {_MIN_LEAD_MS:g} and {_MAX_LEAD_MS:g} ms, got {lead_ms!r}"
            )
        if isinstance(batch_ms, bool) or not isinstance(batch_ms, (int, float)):
            raise ValueError(f"batch_ms must be a number of milliseconds, got {batch_ms!r}")
        # At most half the lead: a batch as deep as the lead would only be sent
        # once Twilio's buffer ran dry, and any lateness would be a gap.
        max_batch = max(_FRAME_MS, lead_ms / 2)
        if not _FRAME_MS <= batch_ms <= max_batch:
            raise ValueError(
                f"batch_ms must be between {_FRAME_MS:g} and {max_batch:g} ms "
                f"(half the lead of {lead_ms:g} ms), got {batch_ms!r}"
            )
        if isinstance(late_after_ms, bool) or not (
            isinstance(late_after_ms, (int, float)) and math.isfinite(late_after_ms) and late_after_ms >= 0
        ):
            raise ValueError(f"late_after_ms must be a finite number >= 0, got {late_after_ms!r}")
        if isinstance(early_ms, bool) or not (
            isinstance(early_ms, (int, float)) and 0 <= early_ms <= _FRAME_MS / 2
        ):
            raise ValueError(f"early_ms must be between 0 and {_FRAME_MS / 2:g} ms, got {early_ms!r}")
        self._lead_ms = float(lead_ms)
        self._early_s = float(early_ms) / 1000.0 + _EPS
        self._lead_s = self._lead_ms / 1000.0
        self._late_after_ms = float(late_after_ms)
        self._batch_s = float(batch_ms) / 1000.0
        # Items waiting to go out: (ulaw, pushed_at) frames and mark names, in order.
        self._queue: deque[tuple[bytes, float] | str] = deque()
        self._pending_bytes = 0
        self._sent_bytes = 0
        self._discarded_ms = 0.0  # audio already at Twilio that a clear threw away
        self._run_start = -math.inf  # nothing sent yet: Twilio is idle
        self._run_bytes = 0
        self._now = -math.inf
        self._late_frames = 0
        self._max_late_ms = 0.0

    # ---- inputs -------------------------------------------------------------

    def push_frame(self, ulaw: bytes, now: float) -> None:
        """Queue one frame (normally 160 bytes = 20 ms) received at ``now``."""
        self._tick(now)
        if not isinstance(ulaw, (bytes, bytearray)):
            raise ValueError(f"a frame must be mu-law bytes, got {type(ulaw).__name__}")
        if not ulaw:
            raise ValueError("a frame must hold at least one byte of mu-law audio, got 0 bytes")
        if len(ulaw) * _MS_PER_BYTE > self._lead_ms:
            raise ValueError(
                f"a frame of {len(ulaw) * _MS_PER_BYTE:g} ms is longer than the lead of "
                f"{self._lead_ms:g} ms; cut it with FrameSplitter first"
            )
        self._queue.append((bytes(ulaw), now))
        self._pending_bytes += len(ulaw)

    def push_mark(self, name: str) -> None:
        """Queue a mark: it goes out right after the frames pushed before it."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a mark name must be a non-empty str, got {name!r}")
        self._queue.append(name)

    def due(self, now: float) -> list[Frame | MarkOut]:
        """Everything that may be sent at ``now``, in order; send it all."""
        self._tick(now)
        out: list[Frame | MarkOut] = []
        queue = self._queue
        pass_at: float | None = None  # when a punctual shell would have started this pass
        while queue:
            head = queue[0]
            if isinstance(head, str):
                queue.popleft()
                out.append(MarkOut(head, self._sent_bytes * _MS_PER_BYTE))
                continue
            ulaw, pushed_at = head
            fits_at = self._due_at(len(ulaw), pushed_at)
            if pass_at is None:
                pass_at = self._pass_due_at(len(ulaw), pushed_at)
                if now + self._early_s < pass_at:
                    break
            elif now + self._early_s < fits_at:
                break
            # The punctual pass this frame belongs to: the first one it fits in.
            scheduled = max(pushed_at, pass_at)
            if fits_at > pass_at + _EPS:
                passes = math.ceil((fits_at - pass_at) / self._batch_s - 1e-6)
                scheduled = max(pushed_at, pass_at + passes * self._batch_s)
            queue.popleft()
            run_end = self._run_end()
            if run_end <= now:  # Twilio's buffer is empty: it plays this at once
                self._run_start, self._run_bytes, run_end = now, 0, now
            self._run_bytes += len(ulaw)
            self._sent_bytes += len(ulaw)
            self._pending_bytes -= len(ulaw)
            frame = Frame(ulaw, min(scheduled, now), now, run_end)
            late = frame.late_ms
            if late > self._late_after_ms:
                self._late_frames += 1
            if late > self._max_late_ms:
                self._max_late_ms = late
            out.append(frame)
        return out

    def next_due_at(self, now: float) -> float | None:
        """When to call ``due()`` next (``now`` if something is due); None if idle."""
        self._tick(now)
        if not self._queue:
            return None
        head = self._queue[0]
        if isinstance(head, str):
            return now
        return max(now, self._pass_due_at(len(head[0]), head[1]))

    def clear(self, now: float) -> float:
        """Barge-in: drop unsent frames and marks; Twilio's buffer is emptied too.

        Returns the ms of unsent audio dropped here. The playout clock restarts:
        the next frame plays as soon as it is sent.
        """
        self._tick(now)
        dropped_ms = self._pending_bytes * _MS_PER_BYTE
        self._discarded_ms += self.queued_ms(now)
        self._queue.clear()
        self._pending_bytes = 0
        self._run_start, self._run_bytes = now, 0
        return dropped_ms

    # ---- readings -----------------------------------------------------------

    @property
    def lead_ms(self) -> float:
        return self._lead_ms

    @property
    def sent_ms(self) -> float:
        """All audio handed out by ``due()`` so far."""
        return self._sent_bytes * _MS_PER_BYTE

    @property
    def pending_ms(self) -> float:
        """Audio pushed but not yet handed out."""
        return self._pending_bytes * _MS_PER_BYTE

    @property
    def late_frames(self) -> int:
        """Frames handed out more than ``late_after_ms`` after their schedule."""
        return self._late_frames

    @property
    def max_late_ms(self) -> float:
        return self._max_late_ms

    def queued_ms(self, now: float) -> float:
        """Estimated audio sent but not yet played at Twilio (the current lead)."""
        return max(0.0, (self._run_end() - now) * 1000.0)

    def playout_position_ms(self, now: float) -> float:
        """Estimated ms of our audio Twilio has played so far (all turns)."""
        return self.sent_ms - self._discarded_ms - self.queued_ms(now)

    # ---- internals ----------------------------------------------------------

    def _run_end(self) -> float:
        return self._run_start + self._run_bytes / _RATE

    def _due_at(self, size: int, pushed_at: float) -> float:
        """When this frame fits under the lead."""
        return max(pushed_at, self._run_end() + size / _RATE - self._lead_s)

    def _pass_due_at(self, size: int, pushed_at: float) -> float:
        """When a pass may start with this frame: room for a whole batch (or the frame)."""
        room = max(size / _RATE, self._batch_s)
        return max(pushed_at, self._run_end() + room - self._lead_s)

    def _tick(self, now: float) -> None:
        # A clock that runs backwards is a shell bug; it would corrupt lateness figures.
        if not now >= self._now:  # also catches NaN
            raise ValueError(f"now must not go backwards: got {now!r} after {self._now!r}")
        self._now = now
