"""Caller audio, one live call, and the verdict for the side-speech overlap tests.

Audio: the phone benchmark's own renderer (``bench.phone.generate.render``:
piper's joe voice, reshaped, band-limited, mu-law round-tripped) on the
benchmark's talking-to-others and background specs, with this test's text and
levels. Levels are relative to the normal caller: the active level of the
shared clip 05, which the control call plays as it is.

Call: ``bench.phone.runner.run_call`` (signed webhook, signed WebSocket,
real-time 20 ms mu-law frames, marks echoed when played, ``clear`` dropping
unplayed audio) with a ``CallerScript`` cued ``AT_S`` after the agent's first
audio was heard: inside the opening's interruptible menu sentence.

Verdict: the benchmark's own FDB v1.5 behaviour (``measures.overlap_outcome``
over ``analyze``'s heard-speech timeline and the agent's turn records), plus
what the records say the agent said after the overlap began, plus what the
caller heard of the menu sentence.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from callagent.audio.wavfile import read_wav
from callagent.bench.phone import analyze
from callagent.bench.phone import channel as ch
from callagent.bench.phone import generate
from callagent.bench.phone.measures import Behaviour, overlap_outcome
from callagent.bench.phone.runner import Recording, run_call
from callagent.bench.phone.scenarios import Anchor, build_specs
from callagent.bench.phone.script import CallerScript, ScriptLimits
from callagent.bench.phone.timeline import Scenario, Span
from callagent.store.db import make_sessionmaker
from callagent.store.models import Turn
from tests.e2e.conftest import SHARED_AUDIO, TOKEN, LiveService
from tests.e2e.test_call_end_to_end import wait_closed

# The opening's interruptible sentence (both engines' customer_service flow, menu node),
# heard about 6.7-10.3 s after the agent's first audio (bench.phone.scenarios).
MENU = "I can check the status of an order or change a delivery address. How can I help?"
AT_S = 7.3
# The menu from the cue on ("... status of an order or change a delivery address. How can I
# help?") takes about 4 s to say: going on with it, the agent is heard for at least half that.
MENU_REST_S = 2.0
CALLER_CLIP = SHARED_AUDIO / "05_barge_in_change_address.wav"  # "Actually wait, stop, I need to ..."
SIDE_TALK = "Hang on, I'm on the phone with them."
BACKGROUND = ("And now the weather for the weekend, sunny with a high of seventy two. "
              "Flight two forty is now boarding at gate twelve.")  # fmt: skip
# Words a resumption may add to the cut sentence (engines.resume: "As I was saying, ...").
_RESUME_WORDS = frozenset({"as", "was", "saying"})


def caller_level_db() -> float:
    """The normal caller's level: clip 05's active RMS, dBFS."""
    return ch.active_rms_db(ch.to_float(read_wav(CALLER_CLIP).samples))


def level_below_caller(sample: generate.Sample) -> float:
    """How far ``sample``'s active level lies below the normal caller's, dB."""
    return caller_level_db() - ch.active_rms_db(ch.to_float(sample.audio))


def side_talk(below_db: float = 12.0) -> generate.Sample:
    """The caller turned away from the handset, talking to someone in the room:
    ``below_db`` under the caller's level, low-passed at 1.8 kHz, room reverb."""
    spec = build_specs(1, (Scenario.TALK_TO_OTHERS,))[0]
    spec = dataclasses.replace(spec, text=SIDE_TALK, level_db=caller_level_db(), side_db=below_db, at_s=AT_S)
    return generate.render(spec, generate._Voices())


def background(below_db: float = 16.0, noise_below_db: float = 21.0) -> generate.Sample:
    """A distant talker (reverberant, band-limited to 2.5 kHz) ``below_db`` under the
    caller's level plus pink noise ``noise_below_db`` under it: about -15 dB together.
    About 5.6 s long: from inside the menu sentence into the agent's listening."""
    spec = build_specs(1, (Scenario.BACKGROUND,))[0]
    spec = dataclasses.replace(spec, text=BACKGROUND, level_db=caller_level_db(), side_db=below_db,
                               noise_db=noise_below_db, at_s=AT_S)  # fmt: skip
    return generate.render(spec, generate._Voices())


def addressed() -> generate.Sample:
    """The control: the caller at full level, to the agent (clip 05, as recorded)."""
    spec = build_specs(1, (Scenario.INTERRUPTION,))[0]
    spec = dataclasses.replace(spec, text=CALLER_CLIP.with_suffix(".txt").read_text().strip(), at_s=AT_S)
    audio = read_wav(CALLER_CLIP).samples
    return generate.Sample(spec, audio, Span(0.0, len(audio) / ch.RATE))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call: the recording, the agent's records, and what they add up to."""

    sample: generate.Sample
    rec: Recording
    turns: list[Turn]  # every turn of the call, in order
    behaviour: Behaviour  # the benchmark's FDB v1.5 label for the overlap
    overlap: Span  # the caller's side audio on the call clock
    speech: list[Span]  # agent speech the caller heard (Silero runs on the playout, unmerged)
    replies: list[str]  # agent turns begun after the overlap that do not go on with the menu
    menu_heard: str  # the menu words heard, over the cut turn and its resumptions
    silent_s: float  # longest stretch without heard agent speech, from the overlap to any reply
    went_on_s: float  # agent speech the caller heard from the overlap on, before any reply

    def problems(self, max_silent_s: float) -> list[str]:
        """What went wrong for speech that was not addressed to the agent ([] = right)."""
        out = []
        if self.behaviour is not Behaviour.RESUME:
            out.append(f"behaviour {self.behaviour.value}, not resume")
        if self.replies:
            out.append(f"answered it: {self.replies}")
        if _words(self.menu_heard)[-4:] != ["how", "can", "i", "help"]:
            out.append(f"the caller never heard the menu sentence end: {self.menu_heard!r}")
        if self.went_on_s < MENU_REST_S:
            out.append(f"the caller heard only {self.went_on_s:.2f} s of agent speech from the overlap on")
        if self.silent_s > max_silent_s:
            out.append(f"cut off for {self.silent_s:.2f} s (> {max_silent_s} s)")
        return out

    def report(self) -> str:
        """The timeline, for failure messages and the log."""
        rec = self.rec
        lines = [f"call {rec.call_id}: cue {rec.cue_at}, overlap {self.overlap.start:.2f}-{self.overlap.end:.2f} s,"
                 f" level {level_below_caller(self.sample):.1f} dB below the caller"]  # fmt: skip
        lines.append("clears: " + ", ".join(f"{c:.2f}" for c in rec.clears))
        lines.append("heard agent speech: " + ", ".join(f"{s.start:.2f}-{s.end:.2f}" for s in self.speech))
        for t in self.turns:
            lines.append(f"  {t.speaker:<6} {t.start_ms / 1000:6.2f}-{t.end_ms / 1000:6.2f} s"
                         f"{' CUT' if t.interrupted else ''} {t.text!r} heard {t.heard_text!r}")  # fmt: skip
        lines.append(f"behaviour {self.behaviour.value}; replies {self.replies}; longest silence "
                     f"{self.silent_s:.2f} s; heard {self.went_on_s:.2f} s from the overlap on; "
                     f"menu heard {self.menu_heard!r}")  # fmt: skip
        return "\n".join(lines)


async def play(live: LiveService, sample: generate.Sample) -> Outcome:
    """Call ``live`` with ``sample`` cued ``AT_S`` after the agent's first audio; hang up
    once the agent has been quiet 4 s (at least 3 s after the clip; long enough to hear a
    late resumption or reply, short of the 8 s idle prompt)."""
    script = CallerScript(sample.audio, Anchor.AGENT_HEARD, sample.spec.at_s,
                          limits=ScriptLimits(quiet_end_s=4.0, min_tail_s=3.0, max_tail_s=10.0))  # fmt: skip
    rec = await run_call(live.base_url, live.settings.server.public_origin, TOKEN, script)
    assert not rec.error, rec.error
    assert not rec.anchor_missed, "the agent's opening was never heard"
    await wait_closed(live.db, rec.call_id, timeout=20)
    async with make_sessionmaker(live.db)() as s:
        turns = list((await s.execute(select(Turn).where(Turn.call_id == rec.call_id)
                                      .order_by(Turn.seq))).scalars().all())  # fmt: skip
    return judge(sample, rec, turns)


def judge(sample: generate.Sample, rec: Recording, turns: Sequence[Turn]) -> Outcome:
    rows = [analyze.DbTurn(t.start_ms / 1000.0, t.text) for t in turns if t.speaker == "agent"]
    labels, texts = analyze.turn_labels(rec, rows)
    speech = analyze.agent_speech(rec, None, labels)
    tl = analyze.timeline(sample, rec, speech, texts)
    assert tl.overlap is not None
    ov = tl.overlap
    behaviour = overlap_outcome(tl).behaviour

    agent = [t for t in turns if t.speaker == "agent"]
    # The menu turn: the agent turn whose text holds the menu and was on when the overlap began.
    menu_turns = [t for t in agent if "delivery address" in t.text and t.start_ms / 1000 <= ov.start]
    assert menu_turns, "no menu turn began before the overlap:\n" + "\n".join(t.text for t in agent)
    menu = menu_turns[-1]
    later = [t for t in agent if t.seq > menu.seq]
    goes_on = [t for t in later if _continues(t.text)]
    replies = [t.text for t in later if not _continues(t.text)]
    heard = [menu.heard_text if menu.heard_text is not None else menu.text]
    heard += [t.heard_text if t.heard_text is not None else t.text for t in goes_on]
    menu_heard = " ".join(h for h in heard if h)

    runs = analyze.vad_runs(rec.heard)
    limit = min([t.start_ms / 1000.0 for t in later if not _continues(t.text)] + [float("inf")])
    prev_end = max([r.end for r in runs if r.start < ov.start] + [ov.start])
    silent = went_on = 0.0
    for r in runs:
        if ov.start <= r.start < limit:
            silent = max(silent, r.start - prev_end)
            prev_end = max(prev_end, r.end)
        went_on += max(0.0, min(r.end, limit) - max(r.start, ov.start))
    return Outcome(sample, rec, list(turns), behaviour, ov, runs, replies, menu_heard, silent, went_on)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _continues(text: str) -> bool:
    """The turn goes on with the menu sentence: nearly all its words are the menu's."""
    menu = set(_words(MENU)) | _RESUME_WORDS
    words = _words(text)
    return bool(words) and sum(w in menu for w in words) / len(words) >= 0.9

