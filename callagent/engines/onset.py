"""Early onset: caller sound starting over our speech, before the VAD confirms it. Pure.

Not wired into the engines on main: the integration (commits 804661f and
ce5a068, reverted by the commit after b28aa3f) met the stop-latency target
but kept the agent cut through background speech in the e2e side-speech
tests (docs/benchmarks.md, "Early onsets"). `scripts/bench vad_onsets` times
the detector alone. The design below is what the integration did.

Silero calls a caller's speech 60-320 ms after its first sound (`scripts/bench
vad_onsets`): soft starts ("excuse me", "the delivery ...") are confirmed
late, and a stop within 250 ms cannot wait for them. webrtcvad flags voiced
frames within 20 ms of the first sound, but flags line noise too. So both
overlap controllers (the pipeline's barge-in policy and the duplex
controller) stop the agent on an *early onset* and take the stop back unless
their own VAD rule (the one that would have stopped the agent without early
onsets) fires within `OnsetConfig.confirm_ms`: a cough, a door or a distant
talker's burst costs the agent a pause of that length and a replay from just
before the cut (`engines.resume`), never its turn. Once confirmed, all goes
on as if the VAD's rule had stopped the agent.

An early onset is `voiced_frames` consecutive frames that webrtcvad calls
voiced, each at least `margin_db` above the line's noise floor (the quietest
frame of the last `floor_window_ms`) and above `min_level_db`, and none that
the echo watchdog explains as our own voice. The controllers add the level
tests of `engines.room`: nothing far below the caller's own level, or no
louder than the room's known floor, is an onset either.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["OnsetConfig", "OnsetDetector"]

FRAME_MS = 20.0


@dataclass(frozen=True, slots=True)
class OnsetConfig:
    voiced_frames: int = 2
    margin_db: float = 12.0
    min_level_db: float = -50.0
    floor_window_ms: float = 1000.0
    # The VAD's first speech frame comes up to ~320 ms after a soft first
    # sound, and the controllers' own onset rules want 140-160 ms more.
    confirm_ms: float = 500.0
    # After an onset the VAD did not confirm (noise, music, a distant talker),
    # early onsets rest until the line has been this long without a frame
    # that would make one: meanwhile the line falls back on the VAD alone.
    rest_ms: float = 3000.0

    def __post_init__(self) -> None:
        if self.voiced_frames < 1:
            raise ValueError("voiced_frames must be >= 1")
        if self.margin_db < 0:
            raise ValueError("margin_db must be >= 0")
        if self.floor_window_ms < FRAME_MS * (self.voiced_frames + 1):
            raise ValueError("floor_window_ms must span more frames than voiced_frames")
        if self.confirm_ms <= 0 or self.rest_ms < 0:
            raise ValueError("confirm_ms must be > 0 and rest_ms >= 0")


class OnsetDetector:
    """One call's early onsets. Feed every 20 ms frame of the caller's line."""

    def __init__(self, config: OnsetConfig = OnsetConfig()) -> None:
        self.config = config
        self._levels: deque[float] = deque(maxlen=int(config.floor_window_ms // FRAME_MS))
        self._voiced = 0  # consecutive frames that qualify
        self._rest_ms = 0.0

    @property
    def floor_db(self) -> float | None:
        """The line's noise floor: its quietest recent frame (None before any)."""
        return min(self._levels) if self._levels else None

    def frame(self, *, voiced: bool, level_db: float, echo: bool = False) -> bool:
        """True while the last `voiced_frames` frames were all loud, voiced and
        not echo (and the detector is not resting)."""
        c = self.config
        floor = self.floor_db
        loud = level_db >= c.min_level_db and (floor is None or level_db >= floor + c.margin_db)
        self._levels.append(level_db)
        qualifies = voiced and loud and not echo
        self._voiced = self._voiced + 1 if qualifies else 0
        if self._rest_ms > 0:
            if not qualifies:
                self._rest_ms -= FRAME_MS  # the sound that was rejected goes on: rest on
            return False
        return self._voiced >= c.voiced_frames

    def unconfirmed(self) -> None:
        """The last onset was not speech after all: rest (`OnsetConfig.rest_ms`)."""
        self._rest_ms = self.config.rest_ms
