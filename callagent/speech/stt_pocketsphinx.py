"""Streaming speech-to-text with pocketsphinx: one Decoder per call.

Each call's decoder holds two searches built from `lm.LmResources`: the domain
N-gram LM and the digits grammar; `use_search` switches between them at the
next utterance. One decoder per call (not per turn) because its live cepstral
mean (CMN) adapts to the caller's line and carries over between turns.

Threading: `PocketsphinxStt` is thread-confined: it must only be used by one
thread at a time (it raises RuntimeError if entered concurrently). Measured:
pocketsphinx holds the GIL inside its native calls, so a worker thread does
not free the event loop while a call runs; hence `fwdflat=False` by default,
which cuts `end_utt` from 45-150 ms to ~2 ms, with the same words on the
test clips. `AsyncPocketsphinxStt` runs calls in a given executor, one at a
time and in order.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from pocketsphinx import Decoder, get_model_path

from callagent.speech._frames import check_frame
from callagent.speech.lm import LmResources

__all__ = [
    "CHUNK_SAMPLES",
    "RATE",
    "TELEPHONE_CMN_INIT",
    "AsyncPocketsphinxStt",
    "PocketsphinxStt",
    "Search",
    "Transcript",
]

RATE = 16_000  # the bundled en-us acoustic model is 16 kHz only
CHUNK_SAMPLES = 320  # 20 ms

# Starting cepstral mean for 8 kHz telephone audio upsampled to 16 kHz. The
# model's default (40,3,-1,0...) suits wideband microphones; with it the first
# utterance of a call came out badly ("where human please" for "can I speak
# to a human please"). Measured as the live CMN after decoding piper (joe)
# sentences put through soxr 8 kHz, G.711 mu-law and back to 16 kHz; c0
# (level) is left at the model default. It adapts from there on every call.
TELEPHONE_CMN_INIT = "40,25,-28,35,-16,-2,8,-22,14,-10,1,7,-14"

_T = TypeVar("_T")


class Search(enum.StrEnum):
    DOMAIN = "domain"
    DIGITS = "digits"


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool
    search: Search


class PocketsphinxStt:
    """Streaming recogniser for one call. Thread-confined (see module doc)."""

    def __init__(
        self,
        resources: LmResources,
        *,
        cmn_init: str = TELEPHONE_CMN_INIT,
        fwdflat: bool = False,
        bestpath: bool = False,
        hmm_dir: Path | None = None,
    ) -> None:
        hmm = hmm_dir or Path(get_model_path("en-us/en-us"))
        self._decoder = Decoder(
            hmm=str(hmm),
            lm=None,  # searches are added by name below
            dict=str(resources.dict_path),
            cmninit=cmn_init,
            fwdflat=fwdflat,
            # The lattice best-path pass held the GIL 80-87 ms per utterance with
            # the digits grammar (0.9 ms without, same words on the test clips).
            bestpath=bestpath,
            loglevel="FATAL",  # pocketsphinx logs every utterance to stderr otherwise
        )
        self._decoder.add_lm_file(Search.DOMAIN.value, str(resources.lm_path))
        self._decoder.add_jsgf_string(Search.DIGITS.value, resources.digits_jsgf)
        self._decoder.activate_search(Search.DOMAIN.value)
        self._search = Search.DOMAIN
        self._next_search = Search.DOMAIN
        self._in_utt = False
        self._partial = ""
        self._busy = threading.Lock()

    @property
    def search(self) -> Search:
        """The search the current (or next) utterance is decoded with."""
        return self._search if self._in_utt else self._next_search

    def use_search(self, search: Search) -> None:
        """Decode with `search` from the next utterance on (pocketsphinx cannot
        switch inside one)."""
        with self._entered():
            self._next_search = Search(search)

    def process(self, chunk: npt.NDArray[np.int16]) -> Transcript | None:
        """Feed 20 ms at 16 kHz; returns a partial transcript when it changed."""
        check_frame(chunk, CHUNK_SAMPLES, RATE)
        with self._entered():
            if not self._in_utt:
                if self._next_search is not self._search:
                    self._decoder.activate_search(self._next_search.value)
                    self._search = self._next_search
                self._decoder.start_utt()
                self._in_utt, self._partial = True, ""
            self._decoder.process_raw(chunk.tobytes(), False, False)
            hyp = self._decoder.hyp()
            text = hyp.hypstr if hyp is not None else ""
            if text == self._partial:
                return None
            self._partial = text
            return Transcript(text, False, self._search)

    def end_utterance(self) -> Transcript:
        """Final transcript of the audio since the last end; "" if none."""
        with self._entered():
            if not self._in_utt:
                return Transcript("", True, self._next_search)
            self._decoder.end_utt()
            self._in_utt = False
            hyp = self._decoder.hyp()
            return Transcript(hyp.hypstr if hyp is not None else "", True, self._search)

    def cmn(self) -> str:
        """Current cepstral mean: a warm `cmn_init` for the caller's next call."""
        with self._entered():
            # update=True folds in the last utterance's statistics, which the
            # decoder otherwise applies only at the next start_utt; never
            # mid-utterance, where it would shift the mean under the search.
            cmn: str = self._decoder.get_cmn(not self._in_utt)
            return cmn

    def _entered(self) -> _Confined:
        return _Confined(self._busy)


class _Confined:
    """Fails loudly instead of corrupting the decoder on concurrent use."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("PocketsphinxStt is thread-confined: called concurrently")

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class AsyncPocketsphinxStt:
    """Runs a `PocketsphinxStt` in `executor`, one call at a time, in order."""

    def __init__(self, stt: PocketsphinxStt, executor: Executor) -> None:
        self._stt = stt
        self._executor = executor
        self._order = asyncio.Lock()  # FIFO: chunks reach the decoder in arrival order

    @classmethod
    async def create(
        cls,
        resources: LmResources,
        executor: Executor,
        *,
        cmn_init: str = TELEPHONE_CMN_INIT,
        fwdflat: bool = False,
    ) -> AsyncPocketsphinxStt:
        """Builds the decoder (~0.1 s with a cut-down dictionary) off the loop."""
        loop = asyncio.get_running_loop()
        make = functools.partial(PocketsphinxStt, resources, cmn_init=cmn_init, fwdflat=fwdflat)
        return cls(await loop.run_in_executor(executor, make), executor)

    @property
    def stt(self) -> PocketsphinxStt:
        return self._stt

    async def process(self, chunk: npt.NDArray[np.int16]) -> Transcript | None:
        return await self._run(functools.partial(self._stt.process, chunk))

    async def end_utterance(self) -> Transcript:
        return await self._run(self._stt.end_utterance)

    async def use_search(self, search: Search) -> None:
        await self._run(functools.partial(self._stt.use_search, search))

    async def _run(self, fn: Callable[[], _T]) -> _T:
        async with self._order:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
