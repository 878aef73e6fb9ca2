"""Loudness over the agent's speech: the caller's level, faint talk, the room. Pure.

Both overlap controllers (the pipeline's barge-in policy and the duplex
controller) ask the same questions of the line's level:

- has the caller spoken, and at what level (an average over their own turns)?
  Once known, speech far below it over our speech is background;
- before that there is nothing to compare with: an overlap whose speech
  frames average below `faint_level_db` is *faint*. It may be a TV, someone
  across the room, or a quiet caller: a caller at -28 dBFS active level
  averages -36 to -44 dBFS here over their first 200 ms, as low as side talk
  from a louder one, so level alone cannot tell them apart. A faint overlap
  still stops the agent on time; only words make it an interruption, and if
  none come within `faint_resume_ms` the agent talks on over it;
- talk that was judged the room's sets a floor: over our speech, speech no
  louder than it (`floor_margin_db` above) is the room's too, until the line
  has had `floor_quiet_ms` without any speech, or the caller has spoken;
- once an overlap's turn has ended, its whole active level says whose words
  they were (`words_over_us`): below `faint_turn_db` the room's, never
  answered; from `talker_turn_db` up a talker's at the phone, and words we
  cannot use get a re-prompt; between the two, and for anything no longer than
  a backchannel, answered only if the flow can use them. Side talk 12 dB under
  a -20 dBFS caller reads -32.3 here, a -28 dBFS caller -28.3: one line at -32
  left side talk a fraction of a dB from a re-prompt, so the costliest answer
  (a re-prompt over our own turn) takes the second line.

No clock here but the frames counted: each controller feeds every 20 ms frame.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ActiveLevel",
    "OverlapWords",
    "RoomConfig",
    "RoomLevels",
    "frame_dbfs",
    "words_over_us",
]

FRAME_MS = 20.0


def frame_dbfs(frame: npt.NDArray[np.int16]) -> float:
    """A frame's level (mean power), dBFS."""
    energy = float(np.dot(frame, frame.astype(np.float64))) / max(1, len(frame))
    return 10.0 * math.log10(energy / 32768.0**2 + 1e-12)


class ActiveLevel:
    """The active level of speech frames as they come: their power mean."""

    def __init__(self) -> None:
        self.frames = 0
        self._power = 0.0

    def add(self, level_db: float) -> None:
        self.frames += 1
        self._power += 10.0 ** (level_db / 10.0)

    @property
    def db(self) -> float | None:
        return 10.0 * math.log10(self._power / self.frames + 1e-12) if self.frames else None


@dataclass(frozen=True, slots=True)
class RoomConfig:
    faint_level_db: float = -35.0  # mean of the frames' dBFS over an overlap's speech
    faint_resume_ms: float = 800.0  # a faint overlap with no words for us, after the stop
    floor_margin_db: float = 6.0
    floor_quiet_ms: float = 2000.0
    background_margin_db: float = 10.0  # below the caller's own level
    # A whole turn's active level (the power mean over its speech frames; the
    # mean of frame dBFS reads ~13 dB lower over a turn, its pauses included):
    # a talker at the phone is -19 to -28 dBFS, someone across the room lower.
    faint_turn_db: float = -32.0
    # From here up, a turn over our speech is a talker's at the phone: words
    # the flow cannot use are an interruption we did not understand.
    talker_turn_db: float = -30.0

    def __post_init__(self) -> None:
        if self.faint_resume_ms <= 0 or self.floor_quiet_ms <= 0:
            raise ValueError("faint_resume_ms and floor_quiet_ms must be > 0")
        if self.talker_turn_db < self.faint_turn_db:
            raise ValueError("talker_turn_db must be >= faint_turn_db")
        if self.floor_margin_db < 0 or self.background_margin_db < 0:
            raise ValueError("margins must be >= 0 dB")

    def below_talker(self, level_db: float | None) -> bool:
        """Speech whose frames average `level_db` is far below a talker's level:
        turned away from the phone, or someone else in the room."""
        return level_db is not None and level_db < self.faint_level_db

    def faint_turn(self, active_level_db: float | None) -> bool:
        """A turn at `active_level_db` (`ActiveLevel`) is far below a
        talker's level."""
        return active_level_db is not None and active_level_db < self.faint_turn_db


class OverlapWords(enum.Enum):
    """Whose words a turn over our speech was (`words_over_us`)."""

    ROOMS = "rooms"  # faint: never transcribed or answered, whatever they say
    UNSURE = "unsure"  # answered if the flow can use them; else we carry on
    CALLERS = "callers"  # answered; words the flow cannot use get a re-prompt


def words_over_us(
    config: RoomConfig, *, speech_ms: float, active_level_db: float | None, backchannel_max_ms: float
) -> OverlapWords:
    """A turn that began over our speech, `speech_ms` long at `active_level_db`
    (`ActiveLevel`): the room's, the caller's, or too little to tell. Words no
    longer than a backchannel are one we misheard ("I see" as "i the")."""
    if config.faint_turn(active_level_db):
        return OverlapWords.ROOMS
    if speech_ms <= backchannel_max_ms or active_level_db is None or active_level_db < config.talker_turn_db:
        return OverlapWords.UNSURE
    return OverlapWords.CALLERS


class RoomLevels:
    """One call's levels. Feed `frame()` every frame, `caller()` with the
    caller's own speech frames (their turns, not over ours)."""

    def __init__(self, config: RoomConfig = RoomConfig()) -> None:
        self.config = config
        self.caller_level_db: float | None = None  # an average over the caller's speech
        self.floor_db: float | None = None  # the room's talk is below this, over our speech
        self._silent_ms = 0.0

    def frame(self, speech: bool) -> None:
        """Every frame: the line's silence ends the room's floor."""
        self._silent_ms = 0.0 if speech else self._silent_ms + FRAME_MS
        if self._silent_ms >= self.config.floor_quiet_ms:
            self.floor_db = None

    def caller(self, level_db: float) -> None:
        ema = self.caller_level_db
        self.caller_level_db = level_db if ema is None else 0.95 * ema + 0.05 * level_db

    def background(self, level_db: float, *, over_us: bool) -> bool:
        """Is a speech frame at `level_db` someone else's? Far below the caller's
        level; or, over our speech, no louder than the room's floor. While we
        listen, a quiet caller is heard."""
        ref = self.caller_level_db
        if ref is not None:
            return level_db < ref - self.config.background_margin_db
        floor = self.floor_db
        return over_us and floor is not None and level_db < floor

    def faint(self, run_level_db: float | None) -> bool:
        """Before the caller has spoken, an overlap far below a talker's level."""
        return self.caller_level_db is None and self.config.below_talker(run_level_db)

    def is_the_rooms(self, run_level_db: float) -> None:
        """A faint overlap proved no interruption: talk at its level is the room's."""
        self.floor_db = run_level_db + self.config.floor_margin_db
