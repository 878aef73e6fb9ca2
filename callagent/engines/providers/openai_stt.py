"""Speech to text over the OpenAI-compatible `POST {base_url}/audio/transcriptions`.

Multipart form: `file` (a 16-bit mono WAV of the caller's utterance), `model`,
`response_format=json`, optional `language`; the answer is `{"text": ...}`.
Served by OpenAI, vLLM, whisper.cpp / llama.cpp servers, speaches, etc.
"""

from __future__ import annotations

import io
import json
import wave

import httpx

from callagent.audio.pcm import Pcm
from callagent.engines.providers._http import Endpoint, map_errors, raise_for_status
from callagent.engines.providers.errors import BadResponse

__all__ = ["OpenAiStt", "wav_bytes"]

MIN_AUDIO_MS = 100.0


def wav_bytes(pcm: Pcm) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(pcm.rate)
        w.writeframes(pcm.samples.astype("<i2").tobytes())
    return out.getvalue()


class OpenAiStt:
    def __init__(self, http: httpx.AsyncClient, endpoint: Endpoint, language: str = "") -> None:
        self._http = http
        self._endpoint = endpoint
        self._language = language

    async def transcribe(self, pcm: Pcm) -> str:
        """The words in `pcm` ("" when the server heard none).

        Raises ValueError for audio too short to hold a word (checked before
        anything is sent) and a `ProviderError` for every provider failure.
        """
        ms = 1000.0 * len(pcm.samples) / pcm.rate
        if ms < MIN_AUDIO_MS:
            raise ValueError(f"audio too short to transcribe: {ms:.0f} ms (need {MIN_AUDIO_MS:.0f})")
        ep = self._endpoint
        data = {"model": ep.model, "response_format": "json"}
        if self._language:
            data["language"] = self._language
        files = {"file": ("utterance.wav", wav_bytes(pcm), "audio/wav")}
        with map_errors(ep.stage):
            response = await self._http.post(
                ep.url("audio/transcriptions"), data=data, files=files, headers=ep.headers(),
                timeout=ep.timeout_s,
            )
        raise_for_status(ep.stage, response, response.content)
        try:
            text = json.loads(response.content)["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadResponse(ep.stage, f"expected JSON with a 'text' field: {response.text[:120]!r}") from exc
        if not isinstance(text, str):
            raise BadResponse(ep.stage, f"'text' is not a string: {text!r}")
        return text.strip()
