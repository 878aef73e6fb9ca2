from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soxr  # type: ignore[import-untyped]

from callagent.audio.pcm import Pcm
from callagent.speech.lm import LmResources
from callagent.speech.stt_pocketsphinx import CHUNK_SAMPLES, PocketsphinxStt
from callagent.speech.tts_piper import MissingExtraError, PiperTts, to_8k

from .helpers import frames, mulaw_round_trip, rms_dbfs, wer

REPLY = "I can help you check the status of your order. Your order has shipped."


def test_synthesize_streams_one_pcm_per_sentence_at_the_voice_rate(tts: PiperTts) -> None:
    sentences = tts.synthesize(REPLY)
    first = next(sentences)  # available before the second sentence is synthesised
    rest = list(sentences)
    assert tts.rate == 22_050
    assert len(rest) == 1
    assert all(p.rate == 22_050 and p.samples.dtype == np.int16 for p in [first, *rest])


def test_8k_output_is_audible_and_of_plausible_length(tts: PiperTts) -> None:
    parts = list(tts.synthesize_8k(REPLY))
    audio = np.concatenate([p.samples for p in parts])
    assert all(p.rate == 8000 for p in parts)
    seconds = len(audio) / 8000
    assert 2.5 < seconds < 8.0  # 15 words at roughly 2-5 words per second
    assert rms_dbfs(audio) > -30


def test_tts_round_trips_through_the_phone_line_and_stt(
    tts: PiperTts, lm_resources: LmResources
) -> None:
    line = np.concatenate([np.zeros(2000, np.int16), tts.prompt_8k(REPLY).samples])
    line = mulaw_round_trip(line)  # what Twilio carries
    audio_16k = np.asarray(soxr.resample(line, 8000, 16000), dtype=np.int16)
    stt = PocketsphinxStt(lm_resources)
    for chunk in frames(audio_16k, CHUNK_SAMPLES):
        stt.process(chunk)
    heard = stt.end_utterance().text
    assert wer(REPLY, heard) < 0.35, heard


def test_prompts_are_cached_and_read_only(tts: PiperTts) -> None:
    first = tts.prompt_8k("Thanks for calling.")
    assert tts.prompt_8k("Thanks for calling.") is first  # no second synthesis
    assert first.rate == 8000 and 0.5 < first.duration_ms / 1000 < 3
    with pytest.raises(ValueError, match="read-only"):
        first.samples[0] = 1


def test_prompt_cache_evicts_least_recently_used() -> None:
    tts = PiperTts(cache_size=2)
    a = tts.prompt_8k("One.")
    tts.prompt_8k("Two.")
    assert tts.prompt_8k("One.") is a  # refreshes "One."
    tts.prompt_8k("Three.")  # evicts "Two."
    assert tts.cached() == 2
    assert tts.prompt_8k("One.") is a


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_rejected(tts: PiperTts, text: str) -> None:
    with pytest.raises(ValueError, match="text is empty"):
        tts.synthesize(text)
    with pytest.raises(ValueError, match="text is empty"):
        tts.prompt_8k(text)


def test_text_without_words_yields_nothing(tts: PiperTts) -> None:
    assert list(tts.synthesize(" ... ")) == []
    assert len(tts.prompt_8k("?!")) == 0


def test_to_8k_handles_empty_and_native_rate_audio() -> None:
    empty = to_8k(Pcm(np.zeros(0, np.int16), 22_050))
    assert empty.rate == 8000 and len(empty) == 0
    same = Pcm(np.ones(160, np.int16), 8000)
    assert to_8k(same) is same
    one_second = Pcm(np.ones(22_050, np.int16), 22_050)
    assert len(to_8k(one_second)) == 8000


def test_bad_thread_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="threads"):
        PiperTts(threads=0)


def test_missing_piper_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"piper-tts.*extra"):
        PiperTts()


def test_importing_the_module_does_not_import_gpl_piper() -> None:
    code = "import sys, callagent.speech.tts_piper; sys.exit('piper' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
