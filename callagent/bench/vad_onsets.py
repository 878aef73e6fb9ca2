"""How soon the engines' VAD hears a caller start: `scripts/bench vad_onsets`.

A floor under every stop latency of the phone benchmark (`scripts/bench
phone`): neither engine can stop for speech its VAD has not yet called
speech. For each overlap scenario's generated samples (the phone benchmark's,
from its cache), the clip is played after 0.5 s of silence, 20 ms at a time,
through the engines' `TwoStageVad` (webrtcvad gate, then Silero), and the
time from the clip's first speech (ground truth from the generator) to the
VAD's first speech frame is printed: p50, p95, max, and the samples never
heard. Beside it, how much of each scenario the VAD calls speech at all
(background and side talk: the less the better). ``--threshold`` and
``--mode`` may be repeated to compare settings in one run.

The engines also stop on *early onsets* (`engines.onset`: webrtcvad-voiced
frames well above the line's floor) and let the VAD confirm afterwards; the
last lines time the `OnsetDetector` alone the same way, and count how many
onsets it makes per sample (for side talk and background each is a
provisional stop that the VAD or the level rules must take back).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webrtcvad

from callagent.audio.pcm import Samples
from callagent.bench.phone.generate import Sample, load
from callagent.bench.phone.timeline import Scenario
from callagent.engines.onset import OnsetDetector
from callagent.engines.room import frame_dbfs
from callagent.speech.vad import SileroModel, TwoStageVad
from callagent.store.db import PROJECT_ROOT

__all__ = ["OnsetFigures", "early_onset_flags", "first_speech_ms", "main", "onset_count", "vad_flags"]

FRAME = 160  # 20 ms at 8 kHz
LEAD_S = 0.5
OVERLAPS = (Scenario.INTERRUPTION, Scenario.BACKCHANNEL, Scenario.TALK_TO_OTHERS, Scenario.BACKGROUND)


def first_speech_ms(flags: Sequence[bool], onset_s: float) -> float | None:
    """From ``onset_s`` (seconds into the frames) to the end of the first frame
    called speech, in ms; None if none is."""
    first = next((i for i, f in enumerate(flags) if f), None)
    return None if first is None else 1000.0 * ((first + 1) * FRAME / 8000 - onset_s)


def _frames(audio: Samples) -> list[Samples]:
    padded = np.concatenate([np.zeros(int(LEAD_S * 8000), np.int16), audio, np.zeros(8000, np.int16)])
    return [padded[i : i + FRAME] for i in range(0, len(padded) - FRAME + 1, FRAME)]


def vad_flags(audio: Samples, model: SileroModel, threshold: float, mode: int) -> list[bool]:
    """``audio`` after `LEAD_S` of silence, frame by frame through a fresh `TwoStageVad`."""
    with TwoStageVad(model, threshold=threshold, mode=mode) as vad:
        return [vad.process(frame).is_speech for frame in _frames(audio)]


def early_onset_flags(audio: Samples, mode: int = 3) -> list[bool]:
    """The same frames through webrtcvad and a fresh `OnsetDetector`: True
    where an early onset is reported."""
    webrtc, onsets = webrtcvad.Vad(mode), OnsetDetector()
    return [onsets.frame(voiced=bool(webrtc.is_speech(f.tobytes(), 8000)), level_db=frame_dbfs(f))
            for f in _frames(audio)]  # fmt: skip


def onset_count(flags: Sequence[bool]) -> int:
    """Separate onsets: runs of True."""
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


@dataclass(frozen=True, slots=True)
class OnsetFigures:
    scenario: str
    threshold: float
    mode: int
    onsets_ms: tuple[float, ...]  # the samples heard
    missed: int  # samples with no speech frame at all
    speech_s: float  # mean speech the VAD called per sample
    early: bool = False  # the early-onset detector's figures (speech_s: onsets per sample)

    def line(self) -> str:
        xs = np.asarray(self.onsets_ms) if self.onsets_ms else np.zeros(1)
        what = (f"early onset (webrtcvad mode {self.mode} + level)" if self.early
                else f"threshold {self.threshold:.2f} mode {self.mode}")  # fmt: skip
        tail = (f"{self.speech_s:.1f} onsets per sample" if self.early
                else f"speech called {self.speech_s:.2f} s per sample")  # fmt: skip
        return (f"{self.scenario:<20} {what}: first {'onset' if self.early else 'speech frame'} "
                f"p50 {np.percentile(xs, 50):.0f} / p95 {np.percentile(xs, 95):.0f} / max {xs.max():.0f} ms "
                f"(n={len(self.onsets_ms)}, never heard {self.missed}); {tail}")  # fmt: skip


def figures(samples: Sequence[Sample], model: SileroModel, threshold: float, mode: int) -> list[OnsetFigures]:
    out = []
    for scenario in OVERLAPS:
        onsets: list[float] = []
        missed, speech = 0, 0.0
        group = [s for s in samples if s.spec.scenario is scenario]
        for sample in group:
            flags = vad_flags(sample.audio, model, threshold, mode)
            speech += sum(flags) * FRAME / 8000
            ms = first_speech_ms(flags, LEAD_S + sample.speech.start)
            if ms is None:
                missed += 1
            else:
                onsets.append(ms)
        out.append(OnsetFigures(scenario.value, threshold, mode, tuple(onsets), missed,
                                speech / max(1, len(group))))  # fmt: skip
    return out


def early_figures(samples: Sequence[Sample], mode: int) -> list[OnsetFigures]:
    out = []
    for scenario in OVERLAPS:
        group = [s for s in samples if s.spec.scenario is scenario]
        flags = [early_onset_flags(s.audio, mode) for s in group]
        timed = [first_speech_ms(f, LEAD_S + s.speech.start) for f, s in zip(flags, group, strict=True)]
        onsets = tuple(ms for ms in timed if ms is not None)
        count = sum(onset_count(f) for f in flags) / max(1, len(group))
        out.append(OnsetFigures(scenario.value, 0.0, mode, onsets, len(timed) - len(onsets), count, early=True))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench vad_onsets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=20, help="samples per scenario (default 20)")
    ap.add_argument("--cache", default=str(PROJECT_ROOT / "var" / "phone_scenarios"),
                    help="the phone benchmark's generated audio (made here when missing)")  # fmt: skip
    ap.add_argument("--threshold", type=float, action="append", help="Silero threshold (default 0.5)")
    ap.add_argument("--mode", type=int, action="append", help="webrtcvad mode (default 3)")
    args = ap.parse_args(argv)
    samples = load(Path(args.cache) / f"{args.samples}", args.samples)
    model = SileroModel()
    for threshold in args.threshold or [0.5]:
        for mode in args.mode or [3]:
            for fig in figures(samples, model, threshold, mode):
                print(fig.line(), flush=True)
    for mode in args.mode or [3]:
        for fig in early_figures(samples, mode):
            print(fig.line(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
