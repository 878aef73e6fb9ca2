"""Read and write 16-bit PCM WAV files (mono or multi-channel)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from callagent.audio.pcm import Pcm


class WavFormatError(ValueError):
    pass


def read_wav(path: Path | str) -> Pcm:
    """A mono 16-bit WAV as Pcm; stereo files are mixed down."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise WavFormatError(
                f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit samples"
            )
        channels = wav.getnchannels()
        rate = wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return Pcm(data.astype(np.int16), rate)


def write_wav(path: Path | str, channels: list[Pcm]) -> None:
    """Write one or more equal-rate tracks as channels, padding shorter ones with silence."""
    if not channels:
        raise ValueError("write_wav needs at least one channel")
    rate = channels[0].rate
    if any(c.rate != rate for c in channels):
        raise ValueError("all channels must share one sample rate")
    length = max(len(c) for c in channels)
    frames = np.zeros((length, len(channels)), dtype=np.int16)
    for i, c in enumerate(channels):
        frames[: len(c), i] = c.samples
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(len(channels))
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames.astype("<i2").tobytes())
