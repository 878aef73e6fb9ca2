"""A call's transcript as a timeline: the geometry of an SVG, computed from its turns.

Pure: turns in, a ``Timeline`` of positioned shapes out (the template draws them). Two
lanes (caller above, agent below) on one clock; an interrupted agent turn shows what was
heard (solid) and what was generated but cut off (hatched); stretches where both spoke
are marked as overlaps; each agent reply carries its latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from callagent.console.call_queries import TurnRow

__all__ = ["Bar", "Latency", "Overlap", "Tick", "Timeline", "build_timeline"]

WIDTH = 960.0
LEFT = 70.0
LANE_Y = {"caller": 30.0, "agent": 80.0}
LANE_H = 30.0
HEIGHT = 150.0
# How long the unheard rest of an interrupted reply is drawn, per word not heard.
MS_PER_WORD = 300.0


@dataclass(frozen=True, slots=True)
class Bar:
    seq: int
    speaker: str
    x: float
    y: float
    width: float
    heard: bool              # False: generated but never heard (cut off by the caller)
    interrupted: bool
    title: str


@dataclass(frozen=True, slots=True)
class Overlap:
    x: float
    width: float
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class Latency:
    seq: int
    x1: float
    x2: float
    ms: float


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Timeline:
    width: float
    height: float
    bars: list[Bar]
    overlaps: list[Overlap]
    latencies: list[Latency]
    ticks: list[Tick]
    duration_ms: float
    interruptions: int


def _unheard_ms(t: TurnRow) -> float:
    if not t.interrupted:
        return 0.0
    said = len(t.text.split())
    heard = len((t.heard_text or "").split())
    return max(0, said - heard) * MS_PER_WORD


def _intervals(turns: Sequence[TurnRow], speaker: str) -> list[tuple[float, float]]:
    return [(t.start_ms, t.end_ms) for t in turns if t.speaker == speaker and t.end_ms > t.start_ms]


def _overlaps(turns: Sequence[TurnRow]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a0, a1 in _intervals(turns, "caller"):
        for b0, b1 in _intervals(turns, "agent"):
            lo, hi = max(a0, b0), min(a1, b1)
            if hi > lo:
                out.append((lo, hi))
    return sorted(out)


def _tick_step(duration_ms: float) -> float:
    raw = duration_ms / 8
    for step in (250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000):
        if raw <= step:
            return float(step)
    return 600000.0


def build_timeline(turns: Sequence[TurnRow]) -> Timeline:
    end = max([t.end_ms + _unheard_ms(t) for t in turns] + [1000.0])
    scale = (WIDTH - LEFT - 10) / end

    def x(ms: float) -> float:
        return round(LEFT + ms * scale, 2)

    bars: list[Bar] = []
    latencies: list[Latency] = []
    last_caller_end: float | None = None
    for t in turns:
        lane = LANE_Y.get(t.speaker, LANE_Y["agent"])
        width = max(1.0, (t.end_ms - t.start_ms) * scale)
        bars.append(Bar(t.seq, t.speaker, x(t.start_ms), lane, round(width, 2), True,
                        t.interrupted, f"#{t.seq} {t.speaker}: {t.text}"))
        cut = _unheard_ms(t)
        if cut > 0:
            bars.append(Bar(t.seq, t.speaker, x(t.end_ms), lane, round(cut * scale, 2), False,
                            True, f"#{t.seq} not heard: {t.text}"))
        if t.speaker == "caller":
            last_caller_end = t.end_ms
        elif t.response_latency_ms is not None:
            start = last_caller_end if last_caller_end is not None else t.start_ms - t.response_latency_ms
            latencies.append(Latency(t.seq, x(start), x(start + t.response_latency_ms),
                                     t.response_latency_ms))
    step = _tick_step(end)
    ticks = [Tick(x(ms), f"{ms / 1000:g}s")
             for ms in (i * step for i in range(int(math.floor(end / step)) + 1))]
    overlaps = [Overlap(x(lo), round(max(1.0, (hi - lo) * scale), 2), lo, hi)
                for lo, hi in _overlaps(turns)]
    return Timeline(WIDTH, HEIGHT, bars, overlaps, latencies, ticks, end,
                    sum(1 for t in turns if t.interrupted))
