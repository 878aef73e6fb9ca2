"""Real models, loaded once per test session."""

from __future__ import annotations

import pytest

from callagent.speech.lm import LmResources, build_resources
from callagent.speech.tts_piper import PiperTts
from callagent.speech.vad import SileroModel

from .helpers import AUDIO_DIR, Int16, read_wav

# A small contact-centre phrase list. It includes the clips' words (as an
# agent designer would list the replies they expect) but not all their sentences.
PHRASES = [
    "Hi, I'd like to check the status of my order.",
    "Where is my order?",
    "My account number is 4 5 7 2 9.",
    "I want to cancel my subscription.",
    "Uh-huh.",
    "Yes.",
    "No thanks, that's all.",
    "Actually wait, stop.",
    "I need to change the address.",
    "I need to change my phone number.",
    "Can I speak to a human please?",
    "Can I speak to an agent?",
    "I can help you check the status of your order.",
    "Your order has shipped.",
]


@pytest.fixture(scope="session")
def clips() -> dict[str, tuple[Int16, str]]:
    """name (e.g. "01") -> (8 kHz samples, text)."""
    out = {}
    for wav in sorted(AUDIO_DIR.glob("*.wav")):
        out[wav.name[:2]] = (read_wav(wav), wav.with_suffix(".txt").read_text().strip())
    assert len(out) >= 6, f"clips missing in {AUDIO_DIR}"
    return out


@pytest.fixture(scope="session")
def silero() -> SileroModel:
    return SileroModel()


@pytest.fixture(scope="session")
def lm_resources(tmp_path_factory: pytest.TempPathFactory) -> LmResources:
    return build_resources(PHRASES, tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="session")
def tts() -> PiperTts:
    return PiperTts(threads=1)
