"""Audio shaping for the benchmark's callers: pure functions on float arrays.

Voices: one packaged piper voice (joe) is all we have offline, so callers
differ from the agent by pitch and formants (resampling shifts both),
speaking rate, level and line filtering. Levels are dB relative to full
scale, measured as the RMS of the active (non-silent) part.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.audio.pcm import Samples

__all__ = [
    "RATE",
    "active_rms_db",
    "band_filter",
    "db_gain",
    "mix",
    "noise",
    "phone_line",
    "reverb",
    "set_level",
    "shift_voice",
    "speech_bounds",
    "to_float",
]

RATE = 8000
Floats = npt.NDArray[np.float64]


def to_float(samples: Samples) -> Floats:
    return samples.astype(np.float64) / 32768.0


def db_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def shift_voice(samples: Samples, rate: int, factor: float) -> Floats:
    """Play ``samples`` ``factor`` times faster (pitch and formants x factor,
    duration / factor) and resample to 8 kHz."""
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    out = soxr.resample(to_float(samples), rate * factor, RATE, quality="HQ")
    return np.asarray(out, dtype=np.float64)


def band_filter(x: Floats, low_hz: float, high_hz: float, rate: int = RATE) -> Floats:
    """Zero-phase band-pass with raised-cosine skirts (one octave wide)."""
    if len(x) == 0:
        return x.copy()
    n = 1 << int(np.ceil(np.log2(len(x) + rate // 2)))
    spec = np.fft.rfft(x, n)
    f = np.fft.rfftfreq(n, 1.0 / rate)
    gain = np.ones_like(f)
    if low_hz > 0:
        lo = np.clip(np.log2(np.maximum(f, 1e-9) / low_hz) + 1.0, 0.0, 1.0)
        gain *= 0.5 - 0.5 * np.cos(np.pi * lo)
    if high_hz < rate / 2:
        hi = np.clip(np.log2(high_hz / np.maximum(f, 1e-9)) + 1.0, 0.0, 1.0)
        gain *= 0.5 - 0.5 * np.cos(np.pi * hi)
    return np.asarray(np.fft.irfft(spec * gain, n)[: len(x)], dtype=np.float64)


def reverb(x: Floats, rng: np.random.Generator, rt60_s: float, wet_db: float) -> Floats:
    """A far talker: dry + a decaying-noise room tail ``wet_db`` relative to the dry."""
    length = int(rt60_s * RATE)
    t = np.arange(length) / RATE
    ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60_s)
    ir /= np.sqrt(np.sum(ir**2))
    wet = np.convolve(x, ir)[: len(x)]
    return x + wet * db_gain(wet_db)


def noise(n: int, rng: np.random.Generator) -> Floats:
    """Pink-ish noise (1/f power), unit RMS."""
    white = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(white), dtype=np.float64)
    f[0] = 1.0
    pink = np.fft.irfft(white / np.sqrt(f), n)
    return np.asarray(pink / np.sqrt(np.mean(pink**2)), dtype=np.float64)


def active_rms_db(x: Floats, frame: int = 160) -> float:
    """RMS in dBFS over the frames within 30 dB of the loudest frame."""
    frames = len(x) // frame
    if frames == 0:
        return -120.0
    power = np.mean(x[: frames * frame].reshape(frames, frame) ** 2, axis=1)
    active = power[power >= power.max() * 1e-3]
    return float(10.0 * np.log10(np.mean(active) + 1e-20))


def set_level(x: Floats, db: float) -> Floats:
    """Scale so the active RMS is ``db`` dBFS."""
    return x * db_gain(db - active_rms_db(x))


def mix(base: Floats, add: Floats, at: int = 0) -> Floats:
    """``base`` with ``add`` summed in from sample ``at`` (extended as needed)."""
    out = np.zeros(max(len(base), at + len(add)))
    out[: len(base)] += base
    out[at : at + len(add)] += add
    return out


def speech_bounds(x: Floats, floor_db: float = -50.0, frame: int = 80) -> tuple[int, int]:
    """First and last sample of the frames louder than ``floor_db`` dBFS."""
    frames = len(x) // frame
    if frames == 0:
        return 0, 0
    power = np.mean(x[: frames * frame].reshape(frames, frame) ** 2, axis=1)
    loud = np.flatnonzero(power >= db_gain(floor_db) ** 2)
    if len(loud) == 0:
        return 0, 0
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def phone_line(x: Floats) -> Samples:
    """Clip to int16 and round-trip G.711 mu-law: what Twilio carries."""
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    return ulaw_to_pcm(pcm_to_ulaw(pcm))
