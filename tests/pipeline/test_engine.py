"""PipelineEngine with the real models (piper, Silero, pocketsphinx), no mocks.

Caller clips are fed in 20 ms chunks at 4x real time; a ticker task measures
how late the event loop runs meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from callagent.agents.profile import AgentProfile, load_profiles
from callagent.audio.pcm import Pcm
from callagent.audio.wavfile import read_wav
from callagent.bench.phone.channel import set_level
from callagent.engines.base import (
    AgentAudio,
    AgentTurnDone,
    CallContext,
    EndCall,
    EngineEvent,
    Interrupt,
    Metric,
    PlaybackProgress,
    ToolCallFinished,
    ToolCallStarted,
    Transfer,
    UserTranscript,
)
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.sentences import split_first_clause, split_sentences
from callagent.engines.pipeline.turns import TurnConfig
from callagent.engines.pipeline.models import PipelineModels, shared_models

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT.parent / "shared" / "audio"
SPEED = 4.0
RATE = 8000


@pytest.fixture(scope="module")
def profile() -> AgentProfile:
    return load_profiles(ROOT / "config" / "agents")["customer_service"]


@pytest.fixture(scope="module")
def models() -> PipelineModels:
    # The same process-wide models the app's engine builder uses.
    return shared_models(load_profiles(ROOT / "config" / "agents"))


def clip(name: str) -> np.ndarray:
    return read_wav(AUDIO / f"{name}.wav").samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


@dataclass
class Run:
    events: list[EngineEvent] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    switched_at_ms: float = 0.0

    @property
    def max_lag_ms(self) -> float:
        return max(self.lags_ms, default=0.0)

    @property
    def p99_lag_ms(self) -> float:
        return float(np.percentile(self.lags_ms, 99)) if self.lags_ms else 0.0

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]

    def metric(self, name: str) -> list[float]:
        return [e.value for e in self.of(Metric) if e.name == name]


async def run_call(engine: PipelineEngine, audio: np.ndarray, *, until: type | None = None,
                   dtmf: str = "", dtmf_at_s: float = 0.0,
                   then: np.ndarray | None = None,
                   when: Callable[[list[EngineEvent], float], bool] | None = None,
                   early: np.ndarray | None = None) -> Run:  # fmt: skip
    """Feed `audio`; with `then`, switch to it (at once) when `when(events)` holds.
    `early` is fed before `start()` (it still counts on the audio clock)."""
    early = silence(0.0) if early is None else early
    run = Run()
    for i in range(0, len(early) - 159, 160):  # the session feeds as soon as it has an engine
        engine.feed(Pcm(early[i : i + 160], RATE))
    await engine.start(CallContext("t1", "inbound", "customer_service", from_number="+15005550006"))

    async def collect() -> None:
        async for event in engine.events():
            run.events.append(event)

    async def ticker() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            run.lags_ms.append(1000 * (time.perf_counter() - t0) - 5)

    collector = asyncio.create_task(collect())
    tick = asyncio.create_task(ticker())
    step = 160
    start = time.perf_counter()
    n = 0
    i = 0
    while i + step <= len(audio):
        if then is not None and when is not None and when(run.events, n * 20.0):
            run.switched_at_ms = n * 20.0
            audio, i, then = then, 0, None
        engine.feed(Pcm(audio[i : i + step], RATE))
        i += step
        n += 1
        if dtmf and n * 0.02 >= dtmf_at_s:
            for d in dtmf:
                engine.dtmf(d)
            dtmf = ""
        if until is not None and any(isinstance(e, until) for e in run.events):
            break
        delay = start + n * 0.02 / SPEED - time.perf_counter()
        await asyncio.sleep(max(0.0, delay))
    await asyncio.sleep(0.5)
    tick.cancel()
    await engine.close()
    await collector
    await asyncio.gather(tick, return_exceptions=True)
    return run


def test_split_sentences() -> None:
    assert split_sentences("Hi there. How are you?  Fine!") == ["Hi there.", "How are you?", "Fine!"]


def test_a_long_first_sentence_is_cut_at_its_first_comma() -> None:
    long = "Please say your five digit order number, or key it in and press pound."
    assert split_first_clause(long) == ["Please say your five digit order number,",
                                        "or key it in and press pound."]  # fmt: skip
    assert split_first_clause("Yes, please.") == ["Yes, please."]
    assert split_first_clause("Thanks for calling.") == ["Thanks for calling."]


async def test_order_status_request_then_spoken_digits(
    profile: AgentProfile, models: PipelineModels
) -> None:
    audio = np.concatenate([silence(16.0), clip("01_order_status"), silence(7.0),
                            clip("02_account_number"), silence(10.0)])  # fmt: skip
    run = await run_call(PipelineEngine(profile, models), audio)

    # The greeting: disclosures (not interruptible), then the menu, one segment per sentence.
    first = [e for e in run.of(AgentAudio) if e.turn_id == "a1"]
    assert len(first) >= 4 and all(e.segment_end for e in first)
    assert not first[0].interruptible and first[-1].interruptible
    done = run.of(AgentTurnDone)
    assert done[0].text.startswith("Hi, you've reached Acme Supplies")

    finals = [e for e in run.of(UserTranscript) if e.final]
    assert len(finals) >= 2, finals
    assert "status" in finals[0].text and "order" in finals[0].text
    assert 15_500 < finals[0].start_ms < finals[0].end_ms < 20_000
    assert "4" in finals[1].text or "four" in finals[1].text
    # The flow's next prompt as audio: asking for the order number.
    assert "order number" in done[1].text
    # The digits ran the lookup tool, and the status was read out.
    started, finished = run.of(ToolCallStarted), run.of(ToolCallFinished)
    assert [s.name for s in started] == ["lookup_order"]
    assert finished[0].status == "ok" and '"order_number": "45729"' in finished[0].result
    assert any("4 5 7 2 9" in d.text for d in done[2:])
    # Per-turn figures.
    assert run.metric("stt_ms") and run.metric("brain_ms") and run.metric("tts_ms")
    # One end-of-speech-to-audio figure per reply (how fast: `scripts/bench turns`).
    eos = run.metric("eos_to_audio_ms")
    assert len(eos) == 2 and all(v > 0 for v in eos)
    # The loop is never held for long (2 shared vCPUs: scheduling noise reaches
    # a few tens of ms; a blocking native call would show as 80+ ms every turn).
    print(f"event loop lag: p99 {run.p99_lag_ms:.1f} ms, max {run.max_lag_ms:.1f} ms")
    # Event-loop lag is a speed figure: it is measured and reported by benchmarks, not asserted.


async def test_asking_for_a_human_transfers_then_ends(
    profile: AgentProfile, models: PipelineModels
) -> None:
    audio = np.concatenate([silence(16.0), clip("06_human_please"), silence(8.0)])
    run = await run_call(PipelineEngine(profile, models), audio, until=EndCall,
                         early=silence(1.0))  # fmt: skip
    finals = [e for e in run.of(UserTranscript) if e.final]
    assert finals and "human" in finals[0].text
    # Times are on the call's audio clock, counting the second fed before start().
    onset = 1000.0 + 16_000.0 + speech_onset_ms(clip("06_human_please"))
    assert abs(finals[0].start_ms - onset) < 150, (finals[0].start_ms, onset)
    tail = [e for e in run.events if isinstance(e, Transfer | EndCall)]
    assert tail == [Transfer("queue:customer-service"), EndCall("transfer")]
    # The goodbye is spoken before the transfer.
    i_transfer = run.events.index(tail[0])
    assert any(isinstance(e, AgentAudio) and e.turn_id == "a2" for e in run.events[:i_transfer])


async def test_keyed_order_number_runs_the_lookup(
    profile: AgentProfile, models: PipelineModels
) -> None:
    run = await run_call(PipelineEngine(profile, models), silence(6.0), dtmf="145729#",
                         dtmf_at_s=1.0)  # fmt: skip
    assert [e.name for e in run.of(ToolCallStarted)] == ["lookup_order"]
    assert any("has shipped" in d.text or "4 5 7 2 9" in d.text for d in run.of(AgentTurnDone))


def speech_onset_ms(samples: np.ndarray) -> float:
    """Start of the first 20 ms frame above -40 dBFS."""
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud = np.sqrt((frames**2).mean(axis=1)) > 330
    return 20.0 * int(np.argmax(loud))


def speech_length_ms(samples: np.ndarray) -> float:
    """From the first to the last 20 ms frame above -40 dBFS."""
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 330)
    return 20.0 * float(loud[-1] - loud[0] + 1)


async def test_caller_barging_in_on_the_menu_interrupts_it(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # "Actually wait, stop, I need to change the address." while the menu plays.
    engine = PipelineEngine(profile, models)
    words = clip("05_barge_in_change_address")
    onset = speech_onset_ms(words)

    def menu_playing(events: list[EngineEvent], fed_ms: float) -> bool:
        # Interruptible agent speech from the caller's onset for at least 1 s.
        return all(engine.agent_state(fed_ms + onset + dt) == (True, True) for dt in (0, 500, 1000))

    run = await run_call(engine, silence(30.0), when=menu_playing,
                         then=np.concatenate([words, silence(6.0)]))  # fmt: skip
    interrupts = run.of(Interrupt)
    assert [i.turn_id for i in interrupts] == ["a1"]
    # Within 250 ms of the onset (VAD onset latency included).
    latency = run.metric("barge_in_at_ms")[0] - run.switched_at_ms - onset
    print(f"barge-in {latency:.0f} ms after speech onset")
    assert 0 < latency <= 250, latency
    # The interrupted turn stops early: no further opening sentence is sent.
    assert not any(isinstance(e, AgentAudio) and e.turn_id == "a1"
                   for e in run.events[run.events.index(interrupts[0]):])  # fmt: skip
    # The pauses after "wait," and "stop," (~0.3 s each) do not end the caller's
    # turn: one utterance, decided on the audio clock, and the agent answers it
    # once (no reply started in a pause and then cut off by the rest).
    finals = [e for e in run.of(UserTranscript) if e.final]
    assert len(finals) == 1 and "address" in finals[0].text, finals
    assert finals[0].end_ms - finals[0].start_ms > 2500  # "actually" to "address"
    replies = [d for d in run.of(AgentTurnDone) if d.turn_id != "a1"]
    assert [d.turn_id for d in replies] == ["a2"] and "order number" in replies[0].text


async def test_disclosures_are_not_interrupted(
    profile: AgentProfile, models: PipelineModels
) -> None:
    def disclosure_started(events: list[EngineEvent], fed_ms: float) -> bool:
        return any(isinstance(e, AgentAudio) and not e.interruptible for e in events)

    run = await run_call(PipelineEngine(profile, models), silence(10.0), when=disclosure_started,
                         then=np.concatenate([clip("06_human_please"), silence(14.0)]),
                         until=EndCall)  # fmt: skip
    assert not run.of(Interrupt)
    # The request is still heard and acted on once the opening has played.
    assert run.of(Transfer) == [Transfer("queue:customer-service")]


@pytest.mark.parametrize("name", ["04_yes", "03_uh_huh"])
async def test_a_short_yes_over_the_menu_is_a_backchannel_and_the_agent_resumes(
    profile: AgentProfile, models: PipelineModels, name: str
) -> None:
    engine = PipelineEngine(profile, models)
    words = clip(name)
    onset = speech_onset_ms(words)

    def menu_playing(events: list[EngineEvent], fed_ms: float) -> bool:
        return all(engine.agent_state(fed_ms + onset + dt) == (True, True) for dt in (0, 500, 1000))

    run = await run_call(engine, silence(30.0), when=menu_playing,
                         then=np.concatenate([words, silence(5.0)]))  # fmt: skip
    done = run.of(AgentTurnDone)
    # Either it never interrupted, or it picked up again where it was cut, on
    # this burst: the quick rule decides ~300 ms after the cut; when the
    # recogniser's last guess was not a backchannel, the utterance's end does,
    # after `after_barge_in_ms` of silence (CI once saw 860 ms, which is that
    # rule). How fast is a benchmark's business (scripts/bench turns); here
    # the bound only says which rule may fire: the burst, then the end-of-turn
    # silence, then the VAD's ~150 ms run-end lag.
    if run.of(Interrupt):
        assert len(done) == 2 and done[1].text.endswith("How can I help?")
        [resumed_after] = run.metric("barge_in_resumed_after_ms")
        latest = speech_length_ms(words) + TurnConfig().after_barge_in_ms + 300
        assert 0 < resumed_after <= latest, (resumed_after, latest)
    assert not any("didn't catch" in d.text for d in done)  # "yes" was not taken as an answer


async def test_silence_after_the_menu_brings_the_idle_prompt(
    profile: AgentProfile, models: PipelineModels
) -> None:
    def prompted(events: list[EngineEvent]) -> bool:
        return any(isinstance(e, AgentTurnDone) and "still there" in e.text for e in events)

    engine = PipelineEngine(profile, models)
    reported: list[float] = []

    def when(events: list[EngineEvent], fed_ms: float) -> bool:
        # As the session does: report the opening heard in full once it has played.
        if not reported and engine.agent_state(fed_ms) == (False, False) and events:
            engine.played(PlaybackProgress("a1", fed_ms, True))
            reported.append(fed_ms)
        return prompted(events)

    run = await run_call(engine, silence(30.0), when=when, then=silence(0.1))
    assert reported
    done = run.of(AgentTurnDone)
    assert len(done) == 2 and done[1].text == profile.idle.prompt
    # It came after the opening had played plus idle.prompt_after_s of silence.
    opening_ms = sum(1000.0 * len(e.audio) / RATE for e in run.of(AgentAudio) if e.turn_id == "a1")
    assert run.switched_at_ms >= opening_ms + 1000 * profile.idle.prompt_after_s


async def test_keyed_digits_without_pound_are_taken_after_the_digit_timeout(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # "1" picks order status at the menu; "45729" is keyed with no "#": the
    # ask_order node's timeout_s (5 s of silence) submits what was keyed.
    run = await run_call(PipelineEngine(profile, models), silence(30.0), dtmf="145729",
                         dtmf_at_s=1.0, until=ToolCallFinished)  # fmt: skip
    assert [e.name for e in run.of(ToolCallStarted)] == ["lookup_order"]
    assert '"order_number": "45729"' in run.of(ToolCallStarted)[0].arguments
    done = run.of(AgentTurnDone)
    assert any("order number" in d.text for d in done)  # it asked, then waited for the digits


async def test_a_key_press_picks_a_menu_choice_and_zero_hands_off(
    profile: AgentProfile, models: PipelineModels
) -> None:
    run = await run_call(PipelineEngine(profile, models), silence(12.0), dtmf="0",
                         dtmf_at_s=1.0, until=EndCall)  # fmt: skip
    assert run.of(Transfer) == [Transfer("queue:customer-service")]
    assert run.of(EndCall) == [EndCall("transfer")]


async def test_a_key_that_is_no_dtmf_digit_is_ignored_not_fatal(
    profile: AgentProfile, models: PipelineModels
) -> None:
    run = await run_call(PipelineEngine(profile, models), silence(6.0), dtmf="x",
                         dtmf_at_s=1.0)  # fmt: skip
    assert not run.of(EndCall) and not run.of(ToolCallStarted)
    assert run.of(AgentTurnDone)  # the call went on


async def test_a_silent_caller_is_prompted_then_politely_hung_up_on(
    profile: AgentProfile, models: PipelineModels
) -> None:
    run = await run_call(PipelineEngine(profile, models), silence(60.0), until=EndCall)
    done = [d.text for d in run.of(AgentTurnDone)]
    assert done[1:] == [profile.idle.prompt, profile.idle.goodbye], done
    assert run.of(EndCall) == [EndCall("idle")]
    # The goodbye is spoken before the call ends.
    end = run.events.index(run.of(EndCall)[0])
    assert any(isinstance(e, AgentAudio) and e.turn_id == "a3" for e in run.events[:end])


@pytest.mark.parametrize("pause_s", [0.6, 1.0])
async def test_a_pause_mid_sentence_draws_no_reply_until_the_sentence_is_done(
    profile: AgentProfile, models: PipelineModels, pause_s: float
) -> None:
    from callagent.bench.turns import with_pause

    words, at = with_pause(clip("01_order_status"), pause_s)  # "Hi, [pause] I'd like to ..."
    run = await run_call(PipelineEngine(profile, models),
                         np.concatenate([silence(14.0), words, silence(6.0)]))  # fmt: skip
    replies = [d.text for d in run.of(AgentTurnDone)][1:]
    assert not any("didn't catch" in r for r in replies), replies
    assert len(replies) == 1 and "order number" in replies[0], replies


async def _aside_over_the_menu(
    profile: AgentProfile, models: PipelineModels, level_db: float,
    text: str = "Honey, the dog wants to go outside.", *, after_menu: bool = False,
) -> tuple[Run, list[str], list[str]]:
    """Someone says `text` over the menu, at `level_db` dBFS active RMS; with
    `after_menu`, once the opening has ended and the agent listens."""
    engine = PipelineEngine(profile, models)
    aside = models.tts.prompt_8k(text).samples
    scaled = set_level(aside.astype(np.float64) / 32768.0, level_db)
    aside = np.clip(np.round(scaled * 32768.0), -32768, 32767).astype(np.int16)

    def menu_playing(events: list[EngineEvent], fed_ms: float) -> bool:
        return all(engine.agent_state(fed_ms + dt) == (True, True) for dt in (300, 1000, 1500))

    def listening(events: list[EngineEvent], fed_ms: float) -> bool:
        done = any(isinstance(e, AgentTurnDone) for e in events)
        return done and engine.agent_state(fed_ms) == (False, False)

    run = await run_call(engine, silence(30.0), when=listening if after_menu else menu_playing,
                         then=np.concatenate([silence(0.3 if after_menu else 0.0), aside,
                                              silence(6.0)]))  # fmt: skip
    done = [d.text for d in run.of(AgentTurnDone)]
    finals = [e.text for e in run.of(UserTranscript) if e.final]
    return run, done, finals


async def test_faint_words_over_the_agent_not_meant_for_it_resume_its_speech(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # Someone across the room (-36 dBFS, side talk's level in the phone
    # benchmark) over the menu: it may cut the agent, but it is faint, so the
    # agent picks up its menu again instead of answering it.
    run, done, finals = await _aside_over_the_menu(profile, models, -36.0)
    assert not any("didn't catch" in d for d in done), (finals, done)
    if run.of(Interrupt):
        assert run.metric("overlap_not_for_agent") or run.metric("barge_in_resumed_after_ms"), finals
        # Even when the recogniser makes flow words of it ("bye"): never answered.
        assert done[-1].endswith("How can I help?"), done


async def test_faint_words_over_the_agent_are_never_answered_even_usable_ones(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # A TV across the room saying words the flow could act on ("order status")
    # over the menu: far below a talker's level, so not the caller's.
    run, done, finals = await _aside_over_the_menu(profile, models, -38.0,
                                                   "I want to check my order status.")
    assert not any("order number" in d for d in done), (finals, done)
    if finals:
        assert run.metric("overlap_not_for_agent"), (finals, done)


async def test_loud_words_over_the_agent_it_cannot_use_are_re_prompted(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # The same words at a talker's level (-20 dBFS): a caller who cut in and
    # was not understood. Talking on over them would ignore the caller; they
    # get the flow's re-prompt, after the hold.
    run, done, finals = await _aside_over_the_menu(profile, models, -20.0)
    assert run.of(Interrupt), finals
    assert finals, "the words were heard"
    assert not run.metric("overlap_not_for_agent"), (finals, done)
    assert "didn't catch" in done[-1], (finals, done)


async def test_words_over_the_agent_between_faint_and_a_talkers_level_are_not_re_prompted(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # At -31 dBFS, between the faint line (-32) and a talker's (-30): side talk
    # a little louder than the benchmark's, or a quiet caller. Words the flow
    # cannot use are not re-prompted over our own turn
    # (`engines.room.words_over_us`); the agent goes on with its menu. (Whether
    # they are transcribed at all turns on the room's floor: a quiet onset with
    # no words within 0.8 s makes talk at its level the room's.)
    run, done, finals = await _aside_over_the_menu(profile, models, -31.0)
    assert not any("didn't catch" in d for d in done), (finals, done)
    if run.of(Interrupt):
        assert run.metric("overlap_not_for_agent"), (finals, done)
        assert done[-1].endswith("How can I help?"), (finals, done)


async def test_a_loud_backchannel_misheard_as_other_words_is_no_interruption(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # "I see" at a talker's level: whatever the recogniser makes of it, a burst
    # no longer than a backchannel with nothing for the flow is not re-prompted.
    run, done, finals = await _aside_over_the_menu(profile, models, -20.0, "I see.")
    assert not any("didn't catch" in d for d in done), (finals, done)
    assert done[-1].endswith("How can I help?"), (finals, done)


async def test_faint_talk_after_the_menu_before_the_caller_spoke_is_not_re_prompted(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # Background talk going on after the menu ended (the e2e background case):
    # far below a talker's level, words the flow cannot use. Not the caller's:
    # no "Sorry, I didn't catch that" into a silent line.
    run, done, finals = await _aside_over_the_menu(profile, models, -38.0, after_menu=True)
    assert not any("didn't catch" in d for d in done), (finals, done)
    if finals:
        assert run.metric("overlap_not_for_agent"), (finals, done)


@pytest.mark.parametrize(("level_db", "text", "reply"), [
    (-38.0, "I want to check my order status.", "order number"),  # a quiet caller: answered
    (-20.0, "Honey, the dog wants to go outside.", "didn't catch"),  # a talker: re-prompted
])  # fmt: skip
async def test_words_after_the_menu_from_a_quiet_caller_or_a_talker_are_answered(
    profile: AgentProfile, models: PipelineModels, level_db: float, text: str, reply: str
) -> None:
    # The controls: usable words at the faint level, unusable words at a talker's.
    run, done, finals = await _aside_over_the_menu(profile, models, level_db, text, after_menu=True)
    assert finals, "the words were heard"
    assert any(reply in d for d in done[1:]), (finals, done)


async def test_a_short_voiced_burst_over_the_menu_stops_it_early_and_the_menu_goes_on(
    profile: AgentProfile, models: PipelineModels
) -> None:
    # 120 ms of voice at a talker's level over the menu: an early onset
    # (`engines.onset`) stops the agent at once; the barge-in policy never
    # takes it up (too short for its 140 ms rule), so the stop is taken back
    # and the menu goes on from just before the cut. Without early onsets a
    # burst this short never cut the agent at all.
    from tests.realtime.conftest import voiced_burst

    engine = PipelineEngine(profile, models)
    burst_pcm = voiced_burst(models.tts, 120.0, -20.0)

    def menu_playing(events: list[EngineEvent], fed_ms: float) -> bool:  # the burst lands at +600 ms
        return all(engine.agent_state(fed_ms + dt) == (True, True) for dt in (500, 600, 700, 800, 1500))

    run = await run_call(engine, silence(30.0), when=menu_playing,
                         then=np.concatenate([silence(0.6), burst_pcm, silence(8.0)]))  # fmt: skip
    done = [d.text for d in run.of(AgentTurnDone)]
    assert run.of(Interrupt), done  # the early stop
    assert run.metric("barge_in_resumed_after_ms"), done  # taken back
    assert not any("didn't catch" in d for d in done), done
    assert done[-1].endswith("How can I help?"), done
