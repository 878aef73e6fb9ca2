"""Early onset: caller sound starting over our speech, before the VAD confirms it. Pure.

Silero calls a caller's speech 60-320 ms after its first sound (`scripts/bench
vad_onsets`): soft starts ("excuse me", "the delivery ...") are confirmed
late, and a stop within 250 ms cannot wait for them. webrtcvad flags voiced
frames within 20 ms of the first sound, but flags line noise too.

`OnsetDetector`: an early onset is `voiced_frames` consecutive frames that
webrtcvad calls voiced, each at least `margin_db` above the line's noise
floor (the quietest frame of the last `floor_window_ms`) and above
`min_level_db`, and none that the echo watchdog explains as our own voice.

`EarlyStop` sits *beside* an overlap controller (the pipeline's barge-in
policy, the duplex controller), never inside it: on an early onset (before
the controller has stopped the agent) it stops the agent at once, and while
the stop is pending the controller is told the agent still speaks, so it
runs exactly the rules it runs without early onsets. The stop stands if
the controller stops the agent itself (its own rule fired: from then on all
is as without early onsets, only sooner). If
the controller is idle `confirm_ms` after the onset (it never saw speech, or
saw a blip), the stop is taken back: a cough, a door or a distant talker's
burst costs the agent a pause of that length and a replay from just before
the cut (`engines.resume`), never its turn, and early onsets rest a while.
A first attempt put the early stop inside the controllers' state machines
(reverted in 7fd73dc): their background and side-talk rules then ran from
the early stop instead of their own, and held the agent silent through
background speech.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

__all__ = ["EarlyAction", "EarlyStop", "OnsetConfig", "OnsetDetector"]

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

    @property
    def resting(self) -> bool:
        return self._rest_ms > 0

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


class EarlyAction(enum.Enum):
    NONE = "none"
    STOP = "stop"  # stop the agent now (keep what it was saying)
    CONFIRMED = "confirmed"  # the controller stopped it too: its stop is already done
    TAKE_BACK = "take_back"  # not speech for the controller: go on with what was cut


class EarlyStop:
    """One call's early stops, beside its overlap controller. Per frame: feed
    `onset()` the line, run the controller (telling it the agent speaks while
    `pending`), then `step()` with what the controller did."""

    def __init__(self, config: OnsetConfig = OnsetConfig()) -> None:
        self.config = config
        self.detector = OnsetDetector(config)
        self._since_ms: float | None = None

    @property
    def pending(self) -> bool:
        """An early stop waits for the controller: to it the agent still speaks."""
        return self._since_ms is not None

    def onset(self, *, voiced: bool, level_db: float, echo: bool = False) -> bool:
        return self.detector.frame(voiced=voiced, level_db=level_db, echo=echo)

    def step(self, t_ms: float, *, onset: bool, may_stop: bool, stopped: bool, busy: bool) -> EarlyAction:
        """After the controller's frame at `t_ms`. `stopped`: it stopped the
        agent (or took it off the floor) in this frame; `busy`: it is judging a
        run of speech over us (the VAD may hear the caller first: a loud
        start, or a backchannel-like first word holding the controller's rule,
        is stopped early too); `may_stop`: the agent's interruptible speech is
        playing, the controller has not stopped it, and the sound is not the
        room's by level (`engines.room`)."""
        since = self._since_ms
        if since is not None:
            if stopped:
                self._since_ms = None
                return EarlyAction.CONFIRMED
            if not busy and t_ms - since >= self.config.confirm_ms:
                self._since_ms = None
                self.detector.unconfirmed()
                return EarlyAction.TAKE_BACK
            return EarlyAction.NONE
        if onset and may_stop and not stopped:
            self._since_ms = t_ms
            return EarlyAction.STOP
        return EarlyAction.NONE
