"""Full-Duplex-Bench's measures, as pure functions over one call's ``CallTimeline``.

Definitions follow FDB v1 (takeover, TOR, latency) and v1.5 (stop and
response latency, respond / resume behaviour); where we differ, and why, is
written in docs/benchmarks.md ("Phone conversations"):

- takeover: agent speech that lasts at least 1 s, or has more than 3 words
  (FDB v1's ``turn_duration_threshold`` / ``turn_num_words_threshold``);
- smooth turn-taking: whether the agent took the turn after the caller's turn,
  and the latency from the end of the caller's turn to the start of the agent's
  speech heard (negative clipped to 0, as FDB does);
- pause handling: whether the agent took the turn between the start of the
  pause and the end of the caller's turn (lower is better);
- overlaps: stop latency (overlap start to the end of the agent audio heard
  that was playing then), response latency (overlap end to the next agent
  speech), and the behaviour: RESPOND (stopped or not, then took a new turn),
  RESUME (kept its turn, or picked the same turn up again), UNKNOWN (cut and
  silent), NO_OVERLAP (the agent was not speaking when the overlap started:
  the sample missed its target and is left out of the rates). An agent in a
  gap of its speech (at most `MERGE_GAP_S`, FDB v1.5's merge) when the
  overlap starts and cut by a ``clear`` right after was speaking: the merge
  would have joined the gap to the audio the clear dropped. Its stop latency
  is 0 (negative clipped, as for turn latency).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from callagent.bench.phone.analyze import MODEL_MERGE_GAP_S as MERGE_GAP_S
from callagent.bench.phone.timeline import AgentSpeech, CallTimeline, Span

__all__ = [
    "RESPONSE_WINDOW_S",
    "TAKEOVER_SECONDS",
    "TAKEOVER_WORDS",
    "Behaviour",
    "OverlapOutcome",
    "TurnOutcome",
    "is_takeover",
    "overlap_outcome",
    "pause_takeover",
    "percentile",
    "rate",
    "same_response",
    "smooth_turn",
    "v15_average",
]

TAKEOVER_SECONDS = 1.0
TAKEOVER_WORDS = 3
RESPONSE_WINDOW_S = 5.0  # a new agent turn this long after the overlap still answers it
TURN_WINDOW_S = 10.0  # the agent must answer a caller's turn within this
HELD_S = 0.5  # agent audio this long past the overlap's end: it talked over the caller
CLEAR_SLACK_S = 0.3


class Behaviour(enum.StrEnum):
    RESPOND = "respond"
    RESUME = "resume"
    UNKNOWN = "unknown"
    NO_OVERLAP = "no_overlap"


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    takeover: bool
    latency: float | None  # seconds, when it took the turn
    early: bool = False  # it started before the caller had finished (latency clipped to 0)


@dataclass(frozen=True, slots=True)
class OverlapOutcome:
    behaviour: Behaviour
    stop_latency: float | None  # overlap start -> end of the agent audio playing then
    response_latency: float | None  # overlap end -> next agent speech
    response_turn: str = ""  # the agent turn that answered (RESPOND)


def is_takeover(speech: AgentSpeech) -> bool:
    """FDB v1: at least 1 s of speech, or more than 3 words."""
    return speech.span.duration >= TAKEOVER_SECONDS or speech.words > TAKEOVER_WORDS


def smooth_turn(tl: CallTimeline, window_s: float = TURN_WINDOW_S) -> TurnOutcome:
    """Did the agent take the turn after the caller's turn, and how fast?"""
    turn = _required(tl.caller_turn, "caller_turn")
    for speech in tl.agent:
        s = speech.span.start
        if turn.start <= s < turn.end + window_s and is_takeover(speech):
            return TurnOutcome(True, max(0.0, s - turn.end), s < turn.end)
    return TurnOutcome(False, None)


def pause_takeover(tl: CallTimeline) -> bool:
    """Did the agent take the turn inside the caller's pause (before the caller was done)?"""
    pause = _required(tl.pause, "pause")
    turn = _required(tl.caller_turn, "caller_turn")
    return any(pause.start <= sp.span.start < turn.end and is_takeover(sp) for sp in tl.agent)


def overlap_outcome(tl: CallTimeline, window_s: float = RESPONSE_WINDOW_S) -> OverlapOutcome:
    """What the agent did about caller audio that overlapped its speech."""
    ov = _required(tl.overlap, "overlap")
    playing = next((sp for sp in tl.agent if sp.span.start <= ov.start <= sp.span.end), None)
    if playing is None:
        playing = _cut_in_a_gap(tl, ov)
    if playing is None:
        return OverlapOutcome(Behaviour.NO_OVERLAP, None, None)
    stop = playing.span.end
    stop_latency = max(0.0, stop - ov.start)
    cut = any(ov.start - CLEAR_SLACK_S <= c <= stop + CLEAR_SLACK_S for c in tl.clears)
    nxt = next((sp for sp in tl.agent if sp.span.start >= stop), None)
    if nxt is not None and nxt.span.start > max(ov.end, stop) + window_s:
        nxt = None
    response_latency = max(0.0, nxt.span.start - ov.end) if nxt is not None else None
    if nxt is not None and is_takeover(nxt) and not _continues(tl, playing, nxt):
        return OverlapOutcome(Behaviour.RESPOND, stop_latency, response_latency, nxt.turn)
    held = stop >= ov.end + HELD_S
    if held or not cut or (nxt is not None and _continues(tl, playing, nxt)):
        return OverlapOutcome(Behaviour.RESUME, stop_latency, response_latency)
    return OverlapOutcome(Behaviour.UNKNOWN, stop_latency, None)


def _cut_in_a_gap(tl: CallTimeline, ov: Span) -> AgentSpeech | None:
    """The agent speech that paused less than `MERGE_GAP_S` before the overlap
    and was cut (a clear) between its end and just after the overlap's start."""
    before = [sp for sp in tl.agent if 0.0 < ov.start - sp.span.end <= MERGE_GAP_S]
    if before and any(before[-1].span.end <= c <= ov.start + CLEAR_SLACK_S for c in tl.clears):
        return before[-1]
    return None


def _continues(tl: CallTimeline, before: AgentSpeech, after: AgentSpeech) -> bool:
    """``after`` goes on with ``before``'s turn: the same turn, or a repeat of its words."""
    if before.turn and before.turn == after.turn:
        return True
    a, b = tl.text_of(before.turn), tl.text_of(after.turn)
    if not a or not b:
        return False
    said, again = set(_words(a)), _words(b)
    return bool(again) and sum(w in said for w in again) / len(again) >= 0.6


def same_response(text: str, clean_text: str) -> bool:
    """The agent's answer matches its answer to the same request without overlap
    (word Jaccard >= 0.5): it responded to the new content."""
    a, b = set(_words(text)), set(_words(clean_text))
    if not a or not b:
        return False
    return len(a & b) / len(a | b) >= 0.5


def rate(flags: Sequence[bool]) -> float:
    """Share of True; NaN for no samples."""
    return sum(flags) / len(flags) if flags else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def v15_average(respond_interruption: float, resume_rates: Sequence[float]) -> float:
    """100 x mean of the expected behaviour's rate over FDB v1.5's four overlap
    scenarios: respond for interruptions, resume for backchannel, talking to
    others and background speech. NaN if any is missing."""
    parts = [respond_interruption, *resume_rates]
    if len(parts) != 4 or any(math.isnan(p) for p in parts):
        return math.nan
    return 100.0 * sum(parts) / 4


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _required(span: Span | None, name: str) -> Span:
    if span is None:
        raise ValueError(f"this measure needs the timeline's {name}")
    return span
