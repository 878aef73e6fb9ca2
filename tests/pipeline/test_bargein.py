"""Barge-in policy on hand-built frame sequences (20 ms frames)."""

from __future__ import annotations

import pytest

from callagent.engines.pipeline.bargein import (
    BargeInConfig,
    BargeInPolicy,
    Decision,
    is_backchannel,
    says_nothing_yet,
)

Frame = tuple[bool, bool, bool, str]  # speech, agent speaking, interruptible, partial


def run(policy: BargeInPolicy, frames: list[Frame]) -> list[tuple[int, Decision]]:
    out: list[tuple[int, Decision]] = []
    for i, (speech, agent, interruptible, partial) in enumerate(frames):
        d = policy.frame(speech=speech, agent_speaking=agent, interruptible=interruptible,
                         partial=partial)  # fmt: skip
        if d is not Decision.NONE:
            out.append((i, d))
    return out


def over_agent(ms: int, partial: str = "", speech: bool = True, interruptible: bool = True) -> list[Frame]:
    return [(speech, True, interruptible, partial)] * (ms // 20)


def test_caller_speech_over_the_agent_interrupts_within_250_ms_of_onset() -> None:
    events = run(BargeInPolicy(), over_agent(100, speech=False) + over_agent(600, "i need"))
    (i, d), = events
    assert d is Decision.INTERRUPT
    assert (i + 1) * 20 - 100 <= 250


def test_short_noise_does_not_interrupt() -> None:
    frames = over_agent(120) + over_agent(400, speech=False)
    assert run(BargeInPolicy(), frames) == []


@pytest.mark.parametrize("word", ["uh-huh", "yeah", "okay", "mm-hm", "right"])
def test_backchannels_do_not_interrupt(word: str) -> None:
    frames = over_agent(60) + over_agent(400, word) + over_agent(300, word, speech=False)
    policy = BargeInPolicy()
    assert run(policy, frames) == []
    assert policy.turn_ended(word) is Decision.NONE


def test_backchannel_then_real_words_interrupt() -> None:
    frames = over_agent(300, "okay") + over_agent(100, "okay but")
    assert [d for _, d in run(BargeInPolicy(), frames)] == [Decision.INTERRUPT]


def test_stop_word_interrupts_at_once() -> None:
    events = run(BargeInPolicy(), over_agent(60, "stop"))
    assert events == [(0, Decision.INTERRUPT)]


def test_non_interruptible_segments_play_to_the_end() -> None:
    frames = over_agent(1500, "can i speak to a human", interruptible=False)
    assert run(BargeInPolicy(), frames) == []


def test_speech_while_the_agent_is_silent_is_no_barge_in() -> None:
    frames: list[Frame] = [(True, False, False, "hello there")] * 50
    assert run(BargeInPolicy(), frames) == []


@pytest.mark.parametrize("partial", ["", "uh huh", "yes", "i"])
def test_a_short_burst_without_content_resumes_once_the_caller_is_quiet(partial: str) -> None:
    # 300 ms over the agent ("uh-huh", a cough), its words (if any) recognised
    # only after the cut at onset + 140 ms: it resumes after 100 ms of quiet,
    # not a second later.
    frames = (over_agent(160) + over_agent(140, partial)
              + [(False, False, False, partial)] * 60)  # fmt: skip
    events = run(BargeInPolicy(), frames)
    assert [d for _, d in events] == [Decision.INTERRUPT, Decision.RESUME]
    resume_at = (events[1][0] + 1) * 20
    assert resume_at == 300 + 100


def test_a_short_burst_asking_for_the_floor_is_not_resumed_at_once() -> None:
    # "wait" asks the agent to stop: it resumes only if the utterance ends with nothing more.
    policy = BargeInPolicy()
    frames = over_agent(300, "wait") + [(False, False, False, "wait")] * 30
    assert [d for _, d in run(policy, frames)] == [Decision.INTERRUPT]
    assert policy.turn_ended("wait") is Decision.RESUME


def test_a_longer_wordless_sound_resumes_after_about_a_second() -> None:
    # 800 ms of sound without words (too long for a backchannel), then quiet.
    frames = over_agent(800) + [(False, False, False, "")] * 60
    events = run(BargeInPolicy(), frames)
    assert [d for _, d in events] == [Decision.INTERRUPT, Decision.RESUME]
    resume_at = (events[1][0] + 1) * 20
    assert resume_at == 1000


def test_floor_words_over_a_longer_stretch_wait_for_the_utterance_end() -> None:
    # "Actually wait, ... stop, ..." with pauses: no resume in the pauses, and
    # none once a second has passed since the onset.
    policy = BargeInPolicy()
    frames = (over_agent(700, "actually wait") + over_agent(240, "actually wait", speech=False)
              + over_agent(300, "actually wait stop")
              + over_agent(600, "actually wait stop", speech=False))  # fmt: skip
    assert [d for _, d in run(policy, frames)] == [Decision.INTERRUPT]
    assert policy.turn_ended("actually wait stop i need to change the address") is Decision.NONE


def test_quick_resume_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="resume_silence_ms"):
        BargeInConfig(resume_silence_ms=0)


def test_interruption_that_brings_words_is_not_resumed() -> None:
    policy = BargeInPolicy()
    frames = over_agent(300) + [(True, False, False, "change the address")] * 60
    assert [d for _, d in run(policy, frames)] == [Decision.INTERRUPT]
    assert policy.turn_ended("change the address") is Decision.NONE


def test_interruption_ending_in_a_backchannel_resumes_at_turn_end() -> None:
    policy = BargeInPolicy()
    assert [d for _, d in run(policy, over_agent(300))] == [Decision.INTERRUPT]
    assert policy.interrupted
    assert policy.turn_ended("yeah") is Decision.RESUME


def test_is_backchannel() -> None:
    assert is_backchannel("Uh-huh.") and is_backchannel("yeah okay")
    assert not is_backchannel("") and not is_backchannel("yeah but wait")


def test_onset_budget_is_enforced() -> None:
    with pytest.raises(ValueError):
        BargeInConfig(onset_ms=400)


def test_a_bare_stop_clears_at_once_but_resumes_if_nothing_follows() -> None:
    # pocketsphinx hears a lone "uh-huh" as "stop": nothing said yet, so it
    # resumes once the caller has been quiet for 100 ms.
    policy = BargeInPolicy()
    assert run(policy, over_agent(60, "stop") + over_agent(200, "stop", speech=False)) == [
        (0, Decision.INTERRUPT), (7, Decision.RESUME)]  # fmt: skip
    assert policy.turn_ended("stop") is Decision.NONE  # already resumed


def test_early_guesses_over_a_short_burst_do_not_take_the_floor() -> None:
    # What pocketsphinx made of a "yes" over the agent, frame by frame.
    frames = (over_agent(160) + over_agent(40, "the") + over_agent(220, "yeah")
              + over_agent(200, "yes", speech=False))  # fmt: skip
    assert [d for _, d in run(BargeInPolicy(), frames)] == [Decision.INTERRUPT, Decision.RESUME]


def test_short_words_with_content_take_the_floor_at_the_pause() -> None:
    policy = BargeInPolicy()
    frames = over_agent(160) + over_agent(200, "two") + over_agent(300, "two", speech=False)
    assert [d for _, d in run(policy, frames)] == [Decision.INTERRUPT]
    assert policy.turn_ended("two") is Decision.NONE  # an answer: the agent stays cut


def test_stop_followed_by_words_is_a_real_interruption() -> None:
    policy = BargeInPolicy()
    frames = over_agent(60, "actually wait") + over_agent(400, "actually wait stop i need")
    assert [d for _, d in run(policy, frames)] == [Decision.INTERRUPT]
    assert policy.turn_ended("actually wait stop i need to change the address") is Decision.NONE


@pytest.mark.parametrize(("text", "nothing"), [("", True), ("uh-huh", True), ("wait", True),
                                               ("hold on", True), ("okay stop", True),
                                               ("no", False), ("stop calling me", False)])  # fmt: skip
def test_says_nothing_yet(text: str, nothing: bool) -> None:
    assert says_nothing_yet(text) is nothing


def test_a_lone_i_is_no_backchannel_but_says_nothing_yet() -> None:
    # pocketsphinx's first guess at almost any onset is "i": it must neither
    # hold back an interruption nor count as words that confirm one.
    assert not is_backchannel("i") and is_backchannel("i see") and is_backchannel("got it")
    assert says_nothing_yet("i") and not says_nothing_yet("i need")
    events = run(BargeInPolicy(), over_agent(60) + over_agent(200, "i"))
    assert [d for _, d in events] == [Decision.INTERRUPT]
    assert (events[0][0] + 1) * 20 == 140  # at the onset rule, not when a word comes
