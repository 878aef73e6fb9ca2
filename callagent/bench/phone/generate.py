"""Turn the scenario specs into caller audio: piper (joe), reshaped, through the phone line.

``generate(out_dir, per_scenario)`` writes one 8 kHz WAV per sample (already
G.711 mu-law round-tripped: what Twilio carries) and ``manifest.json`` with
each sample's metadata: the text, the voice, the anchor, and where in the clip
the caller's speech (and pause) lie. ``load(out_dir, per_scenario)`` reads it
back, generating first if it is missing or stale. Used by
``scripts/dev/make_phone_scenarios.py`` and by ``scripts/bench phone``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callagent.audio.pcm import Pcm, Samples
from callagent.audio.wavfile import read_wav, write_wav
from callagent.bench.phone import channel as ch
from callagent.bench.phone.scenarios import SPEC_VERSION, Echo, SampleSpec, Voice, build_specs
from callagent.bench.phone.timeline import Scenario, Span

__all__ = ["Sample", "generate", "load"]

MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Sample:
    spec: SampleSpec
    audio: Samples  # 8 kHz, what the caller sends from the cue on
    speech: Span  # within the clip: the caller's turn, or the overlapping audio
    pause: Span | None = None  # within the clip (pause handling)


class _Voices:
    """One PiperTts per speaking rate, loaded on first use."""

    def __init__(self) -> None:
        self._tts: dict[float, Any] = {}

    def say(self, text: str, voice: Voice) -> ch.Floats:
        from callagent.speech.tts_piper import PiperTts

        tts = self._tts.get(voice.length_scale)
        if tts is None:
            tts = self._tts[voice.length_scale] = PiperTts(length_scale=voice.length_scale, cache_size=0)
        parts = list(tts.synthesize(text))
        samples = np.concatenate([p.samples for p in parts]) if parts else np.zeros(0, np.int16)
        x = ch.shift_voice(samples, tts.rate, voice.factor)
        a, b = ch.speech_bounds(x)
        return x[a:b]


def render(spec: SampleSpec, voices: _Voices) -> Sample:
    """One sample's audio and where its speech lies."""
    rng = np.random.default_rng(spec.seed)
    low, high = spec.line
    pause: Span | None = None
    if not spec.text:  # echo only: a silent window the agent's echo plays into
        return Sample(spec, np.zeros(2 * ch.RATE, np.int16), Span(0.0, 2.0))
    if spec.scenario is Scenario.PAUSE:
        words = spec.text.split()
        first = voices.say(" ".join(words[: spec.split]), spec.voice)
        second = voices.say(" ".join(words[spec.split :]), spec.voice)
        gap = np.zeros(int(round(spec.pause_s * ch.RATE)))
        x = np.concatenate([first, gap, second])
        pause = Span(len(first) / ch.RATE, (len(first) + len(gap)) / ch.RATE)
    else:
        x = voices.say(spec.text, spec.voice)
    x = ch.set_level(ch.band_filter(x, low, high), spec.level_db)
    if spec.scenario is Scenario.TALK_TO_OTHERS:  # turned away, across the room
        x = ch.reverb(ch.band_filter(x, 300.0, 1800.0), rng, 0.4, -6.0)
        x = ch.set_level(x, spec.level_db - spec.side_db)
    elif spec.scenario is Scenario.BACKGROUND:  # a distant talker in a noisy room
        x = ch.reverb(ch.band_filter(x, 300.0, 2500.0), rng, 0.6, -3.0)
        x = ch.set_level(x, spec.level_db - spec.side_db)
        if spec.noise_db is not None:
            bed = ch.band_filter(ch.noise(len(x), rng), 200.0, 3400.0)
            fade = np.minimum(1.0, np.minimum(np.arange(len(x)), np.arange(len(x))[::-1]) / 400.0)
            x = x + bed * fade * ch.db_gain(spec.level_db - spec.noise_db)
    audio = ch.phone_line(x)
    return Sample(spec, audio, Span(0.0, len(audio) / ch.RATE), pause)


def generate(out_dir: Path, per_scenario: int, scenarios: tuple[Scenario, ...] = tuple(Scenario)) -> list[Sample]:
    """Synthesise every sample into ``out_dir`` and write the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    voices = _Voices()
    samples = [render(spec, voices) for spec in build_specs(per_scenario, scenarios)]
    entries = []
    for s in samples:
        write_wav(out_dir / f"{s.spec.id}.wav", [Pcm(s.audio, ch.RATE)])
        entries.append(_entry(s))
    manifest = {"version": SPEC_VERSION, "per_scenario": per_scenario,
                "scenarios": [sc.value for sc in scenarios], "samples": entries}  # fmt: skip
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return samples


def load(out_dir: Path, per_scenario: int, scenarios: tuple[Scenario, ...] = tuple(Scenario)) -> list[Sample]:
    """The samples in ``out_dir``; generated first when missing or made for other settings."""
    path = out_dir / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        if (manifest.get("version") == SPEC_VERSION and manifest.get("per_scenario") == per_scenario
                and manifest.get("scenarios") == [sc.value for sc in scenarios]):  # fmt: skip
            specs = {s.id: s for s in build_specs(per_scenario, scenarios)}
            out = []
            for e in manifest["samples"]:
                pcm = read_wav(out_dir / e["wav"])
                pause = Span(*e["pause"]) if e["pause"] else None
                out.append(Sample(specs[e["id"]], pcm.samples, Span(*e["speech"]), pause))
            return out
    return generate(out_dir, per_scenario, scenarios)


def _entry(s: Sample) -> dict[str, Any]:
    spec = asdict(s.spec)
    spec["scenario"] = s.spec.scenario.value
    spec["echo"] = asdict(s.spec.echo) if isinstance(s.spec.echo, Echo) else None
    return {**spec, "wav": f"{s.spec.id}.wav", "speech": [s.speech.start, s.speech.end],
            "pause": [s.pause.start, s.pause.end] if s.pause else None}  # fmt: skip
