"""The caller's side of Twilio's playback buffer, as a pure model on the call clock.

Audio we receive is queued and plays in real time; a mark is echoed when
playback reaches it (at once if nothing is queued); ``clear`` drops whatever
has not played and echoes every pending mark. From this the simulator and the
benchmarks rebuild exactly what the caller heard, and when.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from callagent.audio.pcm import Samples

RATE = 8000


@dataclass(slots=True)
class _Segment:
    start: float  # seconds on the call clock
    samples: Samples

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / RATE


@dataclass(slots=True)
class CallerPlayout:
    segments: list[_Segment] = field(default_factory=list)
    pending_marks: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    dropped_ms: float = 0.0

    def buffer_end(self, now: float) -> float:
        return max(now, self.segments[-1].end) if self.segments else now

    def on_media(self, samples: Samples, now: float) -> float:
        """Queue audio; returns when it will start playing."""
        start = self.buffer_end(now)
        self.segments.append(_Segment(start, samples))
        return start

    def on_mark(self, name: str, now: float) -> None:
        self.pending_marks.append((self.buffer_end(now), name))

    def on_clear(self, now: float) -> list[str]:
        """Drop unplayed audio; returns the marks that are echoed at once."""
        self.clears.append(now)
        kept: list[_Segment] = []
        for seg in self.segments:
            if seg.start >= now:
                self.dropped_ms += 1000 * len(seg.samples) / RATE
                continue
            if seg.end > now:
                played = int(round((now - seg.start) * RATE))
                self.dropped_ms += 1000 * (len(seg.samples) - played) / RATE
                seg.samples = seg.samples[:played]
            kept.append(seg)
        self.segments = kept
        echoed = [name for _, name in self.pending_marks]
        self.pending_marks = []
        return echoed

    def due_marks(self, now: float) -> list[str]:
        due = [name for at, name in self.pending_marks if at <= now]
        self.pending_marks = [(at, name) for at, name in self.pending_marks if at > now]
        return due

    def heard(self, until: float) -> Samples:
        """What the caller heard from t=0 to ``until``, silence where nothing played."""
        out = np.zeros(int(round(until * RATE)), dtype=np.int16)
        for seg in self.segments:
            a = int(round(seg.start * RATE))
            if a >= len(out):
                continue
            b = min(len(out), a + len(seg.samples))
            out[a:b] = seg.samples[: b - a]
        return out

    def speech_intervals(self) -> list[tuple[float, float]]:
        """Intervals in which agent audio played (adjacent segments merged)."""
        spans: list[tuple[float, float]] = []
        for seg in self.segments:
            if not len(seg.samples):
                continue
            if spans and seg.start <= spans[-1][1] + 1e-6:
                spans[-1] = (spans[-1][0], max(spans[-1][1], seg.end))
            else:
                spans.append((seg.start, seg.end))
        return spans
