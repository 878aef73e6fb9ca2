"""The caller's side of one benchmark call, frame by frame: a sans-I/O script.

Each 20 ms the runner asks ``frame(now, heard, echo)`` for the next caller
frame, giving it the agent audio the caller heard in the last 20 ms and (for
speakerphone echo) the agent audio heard ``delay`` earlier. The script waits
for its anchor (the agent silent for ``at_s`` seconds after its opening, or
``at_s`` seconds after the agent's first audio was heard), plays its clip,
then listens until the agent has answered and gone quiet, or a time limit
passes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from callagent.audio.pcm import Samples
from callagent.bench.phone.scenarios import Anchor

__all__ = ["CallerScript", "ScriptLimits", "Stage"]

RATE = 8000
FRAME = 160
FRAME_S = FRAME / RATE
SPEECH_RMS = 100.0  # int16 RMS above which a heard frame counts as agent audio (about -50 dBFS)


class Stage(enum.Enum):
    WAITING = 1  # for the anchor
    PLAYING = 2  # the clip
    LISTENING = 3  # to the agent's answer
    DONE = 4


@dataclass(frozen=True, slots=True)
class ScriptLimits:
    opening_min_s: float = 3.0  # agent audio heard before "after the greeting" can fire
    anchor_timeout_s: float = 30.0  # start anyway (and say so) if the anchor never comes
    quiet_end_s: float = 2.5  # the call ends once the agent is quiet this long...
    min_tail_s: float = 2.0  # ... at least this long after the clip
    max_tail_s: float = 14.0  # ... or at the latest this long after it


class CallerScript:
    def __init__(self, clip: Samples, anchor: str, at_s: float, *, echo_gain: float = 0.0,
                 limits: ScriptLimits = ScriptLimits()) -> None:  # fmt: skip
        if anchor not in (Anchor.AFTER_GREETING, Anchor.AGENT_HEARD):
            raise ValueError(f"unknown anchor {anchor!r}")
        pad = (-len(clip)) % FRAME
        self._clip = np.concatenate([clip.astype(np.int16), np.zeros(pad, np.int16)])
        self._anchor, self._at = anchor, at_s
        self._echo_gain = echo_gain
        self.limits = limits
        self.stage = Stage.WAITING
        self.agent_heard_s = 0.0  # agent audio heard so far (frames above SPEECH_RMS)
        self.first_heard: float | None = None  # when the agent's first audio was heard
        self.cue_at: float | None = None  # when the clip started, on the call clock
        self.anchor_missed = False
        self._pos = 0
        self._quiet_since: float | None = None
        self._clip_end: float | None = None

    @property
    def done(self) -> bool:
        return self.stage is Stage.DONE

    def frame(self, now: float, heard: Samples, echo: Samples | None = None) -> Samples:
        """The caller's next 20 ms (sent at ``now``)."""
        speaking = len(heard) > 0 and float(np.sqrt(np.mean(heard.astype(np.float64) ** 2))) > SPEECH_RMS
        if speaking:
            self.agent_heard_s += FRAME_S
            if self.first_heard is None:
                self.first_heard = now - FRAME_S
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = now
        quiet_for = 0.0 if self._quiet_since is None else now - self._quiet_since
        if self.stage is Stage.WAITING and self._anchor_reached(now, quiet_for):
            self.stage, self.cue_at = Stage.PLAYING, now
        out = np.zeros(FRAME, np.int16)
        if self.stage is Stage.PLAYING:
            out = self._clip[self._pos : self._pos + FRAME]
            self._pos += FRAME
            if self._pos >= len(self._clip):
                self.stage, self._clip_end = Stage.LISTENING, now + FRAME_S
        elif self.stage is Stage.LISTENING:
            assert self._clip_end is not None
            after = now - self._clip_end
            if after >= self.limits.max_tail_s or (after >= self.limits.min_tail_s
                                                   and quiet_for >= self.limits.quiet_end_s):  # fmt: skip
                self.stage = Stage.DONE
        if echo is not None and self._echo_gain and len(echo) == FRAME:
            mixed = out.astype(np.float64) + echo.astype(np.float64) * self._echo_gain
            out = np.clip(np.round(mixed), -32768, 32767).astype(np.int16)
        return out

    def _anchor_reached(self, now: float, quiet_for: float) -> bool:
        if now >= self.limits.anchor_timeout_s:
            self.anchor_missed = True
            return True
        if self._anchor == Anchor.AGENT_HEARD:
            return self.first_heard is not None and now - self.first_heard >= self._at
        return self.agent_heard_s >= self.limits.opening_min_s and quiet_for >= self._at
