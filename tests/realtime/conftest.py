"""A real service on loopback for /v1/realtime: create_app under uvicorn, on SQLite.

Clients are the official `openai` SDK (`client.realtime.connect`) and our own
OpenAI Realtime backend; the engines behind the endpoint are the real ones.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callagent.app import create_app
from callagent.audio.codec import pcm_to_ulaw
from callagent.audio.wavfile import read_wav
from callagent.bench.phone.channel import set_level
from callagent.speech.tts_piper import PiperTts
from callagent.config import RealtimeSettings
from callagent.store.db import create_engine_for
from tests.e2e.conftest import LiveService, make_settings, start_service, stop_service

API_TOKEN = "realtime-test-token"
AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
RATE = 8000


def clip(name: str) -> np.ndarray:
    return read_wav(AUDIO / f"{name}.wav").samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def voiced_burst(tts: PiperTts, ms: float, level_db: float) -> np.ndarray:
    """The loudest `ms` of a synthesised "Hello there." at `level_db` dBFS (8 kHz)."""
    voice = tts.prompt_8k("Hello there.").samples.astype(np.float64)
    n = int(ms * RATE / 1000)
    start = int(np.argmax(np.convolve(voice * voice, np.ones(n), mode="valid")))
    burst = set_level(voice[start : start + n] / 32768.0, level_db)
    return np.clip(np.round(burst * 32768.0), -32768, 32767).astype(np.int16)


def pcmu_b64(samples: np.ndarray) -> str:
    return base64.b64encode(pcm_to_ulaw(samples)).decode("ascii")


@pytest.fixture
async def realtime_service(sqlite_db_url: str, tmp_path: Path) -> AsyncIterator[LiveService]:
    settings = make_settings(sqlite_db_url, tmp_path)
    settings = dataclasses.replace(settings, realtime=RealtimeSettings(api_token=API_TOKEN))
    app = create_app(settings)
    server, task = await start_service(settings, app)
    db = create_engine_for(settings.database.url)
    try:
        yield LiveService(settings, server, db, app)
    finally:
        await stop_service(server, task)
        await db.dispose()
