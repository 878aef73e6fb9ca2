"""Holding words the flow could only re-prompt on: pure, on the speech thread's clock.

A caller's turn that would only draw a re-prompt ("hi", "actually wait",
`Flow.would_only_reprompt`) is likely the start of a sentence, or, when it
cut the agent off, words not meant for it (side talk, someone in the room).
A turn that would end the call (`Flow.would_end_call`) waits the same way:
ending a call on words heard in a pause is the one answer that cannot be
taken back.
Both engines that run the scripted flow (the pipeline and the local duplex
backend) hold such words for `REPROMPT_HOLD_MS`: if the caller goes on, the
next turn is answered together with them; if not, the engine answers them
(a re-prompt) or picks up its cut speech. The hold ends sooner once the
caller has been quiet `REPROMPT_QUIET_MS` after the words: after a long
end-of-turn wait (1.2 s after "... or") the caller is done, and an unclear
interruption is re-prompted, or a misheard "mm-hm" over the agent resumed,
0.7 s sooner.

The hold is released on the clock of the thread that hears the caller, not on
the feed's: under load that thread lags the feed, and words it has not heard
yet must still join the held ones. No clock, flow or I/O here: the engine
gives the time, whether the caller is talking and whether words would only
re-prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from callagent.agents.flow import REPROMPT_HOLD_MS, REPROMPT_QUIET_MS

__all__ = ["Held", "RepromptHold"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Held(Generic[T]):
    """Words waiting for more."""

    text: str
    first: T  # the engine's record of the words (the pipeline: the turn's `Final`)
    release_ms: float  # on the speech thread's clock
    overlapped: bool  # they began over the agent's speech (and may have cut it)


class RepromptHold(Generic[T]):
    """One call's held words, if any."""

    def __init__(self, hold_ms: float = REPROMPT_HOLD_MS, quiet_ms: float = REPROMPT_QUIET_MS) -> None:
        self.hold_ms = hold_ms
        self.quiet_ms = quiet_ms
        self._held: Held[T] | None = None

    @property
    def held(self) -> Held[T] | None:
        return self._held

    def words(
        self,
        text: str,
        at_ms: float,
        first: T,
        *,
        reprompt_only: Callable[[str], bool],
        ends_call: Callable[[str], bool] | None = None,
        overlapped: bool = False,
        words_end_ms: float | None = None,
    ) -> tuple[str, T] | None:
        """The caller's turn `text`, decided at `at_ms`: what to answer now, or
        None when it is held. What to answer is (words, record of the first
        words): these words after the held ones, with the held ones' record,
        when the caller went on after a pause; else these words and `first`.
        `reprompt_only` is asked when nothing is held, and when the held words
        were overlapped: words not meant for us that more unusable words
        follow stay held, together, and keep the first words' record.
        `words_end_ms`, when the caller's words ended: the hold ends once they
        have been quiet `quiet_ms` since, if that comes first. Words that
        `ends_call` (and did not come over the agent) are held too: a caller
        is not hung up on in a pause because the recogniser heard "goodbye"."""
        release_ms = at_ms + self.hold_ms
        if words_end_ms is not None:
            release_ms = min(release_ms, max(at_ms, words_end_ms + self.quiet_ms))
        held, self._held = self._held, None
        if held is not None:
            joined = f"{held.text} {text}"
            if held.overlapped and reprompt_only(joined):
                # Still nothing the flow can use after words not meant for us
                # (a TV, side talk going on): the same talk, held as such.
                self._held = Held(joined, held.first, release_ms, True)
                return None
            return joined, held.first
        closing = not overlapped and ends_call is not None and ends_call(text)
        if closing or reprompt_only(text):
            self._held = Held(text, first, release_ms, overlapped)
            return None
        return text, first

    def release(self, now_ms: float, *, caller_talking: bool) -> Held[T] | None:
        """The held words, once their time has come on the speech thread's
        clock (`now_ms`) and the caller is not talking again; else None."""
        held = self._held
        if held is None or caller_talking or now_ms < held.release_ms:
            return None
        self._held = None
        return held

    def cancel(self) -> None:
        """Drop the held words (a key press answers instead)."""
        self._held = None
