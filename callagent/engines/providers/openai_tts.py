"""Text to speech over the OpenAI-compatible `POST {base_url}/audio/speech`.

JSON body `{model, input, voice, response_format}`; `pcm` answers raw 16-bit
little-endian mono at 24 kHz, `wav` a WAV file (any rate; its header is
read). Returned as `Pcm` at the provider's rate: the engine resamples.
"""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np

from callagent.audio.pcm import Pcm
from callagent.engines.providers._http import Endpoint, map_errors, raise_for_status
from callagent.engines.providers.errors import BadResponse

__all__ = ["FORMATS", "OpenAiTts", "PCM_RATE"]

PCM_RATE = 24_000  # the API's fixed rate for response_format="pcm"
FORMATS = ("pcm", "wav")


class OpenAiTts:
    def __init__(self, http: httpx.AsyncClient, endpoint: Endpoint, voice: str = "alloy",
                 response_format: str = "pcm") -> None:  # fmt: skip
        if response_format not in FORMATS:
            raise ValueError(f"tts response_format must be one of {FORMATS}, got {response_format!r}")
        self._http = http
        self._endpoint = endpoint
        self._voice = voice
        self._format = response_format

    async def synthesize(self, text: str) -> Pcm:
        if not text.strip():
            raise ValueError("text is empty: nothing to synthesize")
        ep = self._endpoint
        body = {"model": ep.model, "input": text, "voice": self._voice,
                "response_format": self._format}  # fmt: skip
        with map_errors(ep.stage):
            response = await self._http.post(
                ep.url("audio/speech"), json=body, headers=ep.headers(), timeout=ep.timeout_s
            )
        raise_for_status(ep.stage, response, response.content)
        audio = response.content
        if self._format == "wav":
            return _parse_wav(ep.stage, audio)
        if len(audio) % 2:
            raise BadResponse(ep.stage, f"pcm body of odd length {len(audio)}: not 16-bit samples")
        if not audio:
            raise BadResponse(ep.stage, "empty audio")
        return Pcm(np.frombuffer(audio, dtype="<i2").astype(np.int16), PCM_RATE)


def _parse_wav(stage: str, audio: bytes) -> Pcm:
    try:
        with wave.open(io.BytesIO(audio), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise BadResponse(stage, f"wav must be 16-bit mono, got {8 * w.getsampwidth()}-bit "
                                         f"x {w.getnchannels()} channels")  # fmt: skip
            rate, frames = w.getframerate(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise BadResponse(stage, f"not a WAV file: {exc}") from exc
    if not frames:
        raise BadResponse(stage, "empty audio")
    return Pcm(np.frombuffer(frames, dtype="<i2").astype(np.int16), rate)
