from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soxr  # type: ignore[import-untyped]

from callagent.speech.lm import LmResources, spoken_digits
from callagent.speech.stt_pocketsphinx import (
    CHUNK_SAMPLES,
    AsyncPocketsphinxStt,
    PocketsphinxStt,
    Search,
    Transcript,
)

from .helpers import Int16, frames, wer

Clips = dict[str, tuple[Int16, str]]


def to_16k(samples_8k: Int16) -> Int16:
    return np.asarray(soxr.resample(samples_8k, 8000, 16000), dtype=np.int16)


def decode(stt: PocketsphinxStt, samples_16k: Int16) -> tuple[list[Transcript], Transcript]:
    partials = [p for p in map(stt.process, frames(samples_16k, CHUNK_SAMPLES)) if p is not None]
    return partials, stt.end_utterance()


@pytest.mark.parametrize("clip", ["01", "02", "04", "05", "06"])
def test_domain_lm_gets_caller_clips_mostly_right(
    lm_resources: LmResources, clips: Clips, clip: str
) -> None:
    samples, text = clips[clip]
    stt = PocketsphinxStt(lm_resources)  # a fresh call: CMN starts from the prior
    partials, final = decode(stt, to_16k(samples))
    assert final.is_final and final.search is Search.DOMAIN
    assert wer(text, final.text) < 0.35, final.text
    assert partials and not any(p.is_final for p in partials)  # streamed while speaking


def test_digits_grammar_reads_the_account_number(lm_resources: LmResources, clips: Clips) -> None:
    stt = PocketsphinxStt(lm_resources)
    stt.use_search(Search.DIGITS)
    _, final = decode(stt, to_16k(clips["02"][0]))
    assert final.search is Search.DIGITS
    assert spoken_digits(final.text) == "45729", final.text


def test_one_decoder_serves_a_whole_call_switching_searches(
    lm_resources: LmResources, clips: Clips
) -> None:
    stt = PocketsphinxStt(lm_resources)
    _, first = decode(stt, to_16k(clips["06"][0]))
    stt.use_search(Search.DIGITS)
    _, number = decode(stt, to_16k(clips["02"][0]))
    stt.use_search(Search.DOMAIN)
    _, last = decode(stt, to_16k(clips["05"][0]))
    assert wer(clips["06"][1], first.text) < 0.35
    assert spoken_digits(number.text) == "45729"
    assert wer(clips["05"][1], last.text) < 0.35 and last.search is Search.DOMAIN


def test_search_switch_waits_for_the_next_utterance(lm_resources: LmResources, clips: Clips) -> None:
    stt = PocketsphinxStt(lm_resources)
    audio = frames(to_16k(clips["02"][0]), CHUNK_SAMPLES)
    for chunk in audio[:10]:
        stt.process(chunk)
    stt.use_search(Search.DIGITS)
    during, final = stt.search, stt.end_utterance()
    assert during is Search.DOMAIN and final.search is Search.DOMAIN  # mid-utterance: unchanged
    assert stt.search is Search.DIGITS


@pytest.mark.parametrize("seconds", [0.02, 1.0, 3.0])
def test_silence_gives_an_empty_final(lm_resources: LmResources, seconds: float) -> None:
    stt = PocketsphinxStt(lm_resources)
    _, final = decode(stt, np.zeros(int(16000 * seconds), dtype=np.int16))
    assert final == Transcript("", True, Search.DOMAIN)


def test_end_without_audio_gives_an_empty_final(lm_resources: LmResources) -> None:
    stt = PocketsphinxStt(lm_resources)
    assert stt.end_utterance() == Transcript("", True, Search.DOMAIN)
    assert stt.end_utterance().text == ""


@pytest.mark.parametrize("size", [0, 160, 319, 321, 640])
def test_wrong_chunk_size_is_rejected(lm_resources: LmResources, size: int) -> None:
    stt = PocketsphinxStt(lm_resources)
    with pytest.raises(ValueError, match=rf"^expected 320 samples \(20 ms at 16 kHz\), got {size}$"):
        stt.process(np.zeros(size, dtype=np.int16))
    assert stt.end_utterance().text == ""  # the bad chunk left no utterance open


def test_non_int16_chunk_is_rejected(lm_resources: LmResources) -> None:
    stt = PocketsphinxStt(lm_resources)
    with pytest.raises(ValueError, match="^expected a 1-D int16 array, got float64"):
        stt.process(np.zeros(320))  # type: ignore[arg-type]


def test_cmn_is_exposed_for_warm_starts(lm_resources: LmResources, clips: Clips) -> None:
    stt = PocketsphinxStt(lm_resources)
    before = stt.cmn()
    decode(stt, to_16k(clips["06"][0]))
    after = stt.cmn()
    assert len(after.split(",")) == 13 and after != before
    warm = PocketsphinxStt(lm_resources, cmn_init=after)
    _, final = decode(warm, to_16k(clips["01"][0]))
    assert wer(clips["01"][1], final.text) < 0.35


async def test_async_wrapper_decodes_chunks_in_order_off_the_loop(
    lm_resources: LmResources, clips: Clips
) -> None:
    samples, text = clips["06"]
    with ThreadPoolExecutor(max_workers=2) as pool:  # 2 workers: order must still hold
        stt = await AsyncPocketsphinxStt.create(lm_resources, pool)
        # submitted all at once; the wrapper must feed them one by one, in order
        await asyncio.gather(*(stt.process(c) for c in frames(to_16k(samples), CHUNK_SAMPLES)))
        final = await stt.end_utterance()
        await stt.use_search(Search.DIGITS)
    assert wer(text, final.text) < 0.35, final.text
    assert stt.stt.search is Search.DIGITS


async def test_async_wrapper_reports_bad_chunks(lm_resources: LmResources) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        stt = await AsyncPocketsphinxStt.create(lm_resources, pool)
        with pytest.raises(ValueError, match="got 10$"):
            await stt.process(np.zeros(10, dtype=np.int16))


def test_concurrent_use_fails_loudly_instead_of_corrupting_the_decoder(
    lm_resources: LmResources,
) -> None:
    stt = PocketsphinxStt(lm_resources)
    with stt._entered():  # another thread is inside a call
        with pytest.raises(RuntimeError, match="thread-confined"):
            stt.process(np.zeros(CHUNK_SAMPLES, dtype=np.int16))
        with pytest.raises(RuntimeError, match="thread-confined"):
            stt.end_utterance()
    assert stt.end_utterance().text == ""  # usable again afterwards
