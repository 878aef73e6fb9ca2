"""Pin each speech module's public names, so the API changes only on purpose."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "callagent.speech.vad": ["FRAME_SAMPLES", "SileroModel", "TwoStageVad", "VadFrame"],
    "callagent.speech.lm": [
        "DEFAULT_CARRIERS", "DIGIT_WORDS", "LmResources", "arpa_text",
        "build_resources", "digits_jsgf", "normalize", "spoken_digits",
    ],
    "callagent.speech.stt_pocketsphinx": [
        "CHUNK_SAMPLES", "RATE", "TELEPHONE_CMN_INIT", "AsyncPocketsphinxStt",
        "PocketsphinxStt", "Search", "Transcript",
    ],
    "callagent.speech.tts_piper": ["PHONE_RATE", "MissingExtraError", "PiperTts", "to_8k"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_names_are_pinned(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(EXPECTED[name])
    assert all(hasattr(module, n) for n in module.__all__)
