"""Audio and scoring helpers for the speech tests (no models here)."""

from __future__ import annotations

import audioop
import math
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callagent.speech.lm import normalize

AUDIO_DIR = Path(__file__).resolve().parents[3] / "shared" / "audio"

Int16 = npt.NDArray[np.int16]


def read_wav(path: Path) -> Int16:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def frames(samples: Int16, size: int) -> list[Int16]:
    """Whole frames only: the stages take exact frame sizes."""
    return [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]


def mulaw_round_trip(samples: Int16) -> Int16:
    """What G.711 (Twilio) does to the audio."""
    ulaw = audioop.lin2ulaw(samples.astype("<i2").tobytes(), 2)
    return np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype="<i2").astype(np.int16)


def white_noise(dbfs: float, seconds: float, seed: int = 0) -> Int16:
    rms = 32767 * 10 ** (dbfs / 20)
    noise = np.random.default_rng(seed).normal(0.0, rms, int(8000 * seconds))
    return np.clip(np.round(noise), -32768, 32767).astype(np.int16)


def rms_dbfs(samples: Int16) -> float:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * math.log10(max(rms, 1e-9) / 32767)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein over normalised words."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1] / max(len(ref), 1)
