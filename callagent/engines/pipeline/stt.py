"""The call's pocketsphinx decoder, set up so no native call holds the GIL for long.

Same searches and behaviour as `speech.stt_pocketsphinx.PocketsphinxStt`, with
one more setting: ``bestpath=False``. Measured on clip 02 with the digits
grammar: `end_utt` + `hyp()` took 80-87 ms with the default lattice best-path
pass (pocketsphinx holds the GIL throughout, so the event loop stalled that
long) and 0.9 ms without it, with the same words. (`speech/` is owned
elsewhere: this option belongs there, then this module can go.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from pocketsphinx import Decoder, get_model_path

from callagent.speech._frames import check_frame
from callagent.speech.lm import LmResources
from callagent.speech.stt_pocketsphinx import (
    CHUNK_SAMPLES,
    RATE,
    TELEPHONE_CMN_INIT,
    Search,
    Transcript,
)

__all__ = ["CallStt"]


class CallStt:
    """Streaming recogniser for one call; used by one thread only (the worker)."""

    def __init__(self, resources: LmResources, *, cmn_init: str = TELEPHONE_CMN_INIT,
                 hmm_dir: Path | None = None) -> None:  # fmt: skip
        hmm = hmm_dir or Path(get_model_path("en-us/en-us"))
        self._decoder = Decoder(
            hmm=str(hmm),
            lm=None,
            dict=str(resources.dict_path),
            cmninit=cmn_init,
            fwdflat=False,
            bestpath=False,
            loglevel="FATAL",
        )
        self._decoder.add_lm_file(Search.DOMAIN.value, str(resources.lm_path))
        self._decoder.add_jsgf_string(Search.DIGITS.value, resources.digits_jsgf)
        self._decoder.activate_search(Search.DOMAIN.value)
        self._search = Search.DOMAIN
        self._next_search = Search.DOMAIN
        self._in_utt = False
        self._partial = ""

    def use_search(self, search: Search) -> None:
        self._next_search = Search(search)

    def process(self, chunk: npt.NDArray[np.int16]) -> Transcript | None:
        check_frame(chunk, CHUNK_SAMPLES, RATE)
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
        if not self._in_utt:
            return Transcript("", True, self._next_search)
        self._decoder.end_utt()
        self._in_utt = False
        hyp = self._decoder.hyp()
        return Transcript(hyp.hypstr if hyp is not None else "", True, self._search)
