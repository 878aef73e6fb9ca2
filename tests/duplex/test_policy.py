"""The local duplex controller alone: frames in, decisions out (duplex-design.md section B)."""

from __future__ import annotations

from callagent.engines.duplex.policy import (
    Answer,
    Backchannel,
    Continued,
    Decision,
    FrameIn,
    Overlap,
    Pause,
    Resume,
    State,
    TurnPolicy,
    Yield,
    completeness,
)


class Script:
    """Drives a policy frame by frame on a 20 ms clock."""

    def __init__(self) -> None:
        self.policy = TurnPolicy()
        self.t = 0.0
        self.out: list[Decision] = []

    def run(self, ms: float, speech: bool, *, text: str = "", level: float = -20.0,
            echo: bool = False) -> None:  # fmt: skip
        for _ in range(int(ms // 20)):
            if text:
                self.policy.partial(text)
            self.out += self.policy.frame(FrameIn(self.t, speech, echo, level))
            self.t += 20.0

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [d for d in self.out if isinstance(d, kind)]


def speaking() -> Script:
    s = Script()
    s.run(600, True, text="hi i want to check my order")  # the caller's level is learnt
    # past continuation_ms: what follows is an overlap, not the turn going on
    s.run(1600, False)
    assert s.of(Answer)
    s.policy.agent_speaking(True)
    s.out.clear()
    return s


def test_completeness_cues() -> None:
    assert completeness("i want to check the status of my order") == 1
    assert completeness("my order number is") == -1
    assert completeness("i want to check the") == -1
    assert completeness("yes") == 0


def test_a_complete_turn_is_answered_after_the_short_endpoint() -> None:
    s = Script()
    s.run(200, False)
    s.run(1200, True, text="can you check the status of my order")
    s.run(600, False)
    [answer] = s.of(Answer)
    assert answer.rule == "complete" and 250 <= answer.silence_ms < 300, answer
    assert s.policy.state is State.RESPONDING


def test_a_mid_sentence_pause_does_not_take_the_turn() -> None:
    s = Script()
    s.run(1000, True, text="my order number is")
    s.run(1000, False)  # thinking: longer than the neutral endpoint
    assert not s.of(Answer)
    s.run(1000, True, text="my order number is four five seven two nine")
    s.run(400, False)
    [answer] = s.of(Answer)
    assert answer.rule == "complete"


def test_a_backchannel_over_us_pauses_within_250_ms_then_resumes() -> None:
    s = speaking()
    s.run(400, True, text="uh-huh")
    [pause] = s.of(Pause)
    assert pause.at_ms + 20 - pause.onset_ms <= 250
    s.run(1000, False)
    [resume] = s.of(Resume)
    assert resume.kind is Overlap.BACKCHANNEL and not s.of(Yield)
    assert s.policy.state is State.SPEAKING


def test_a_short_backchannel_resumes_after_a_short_quiet() -> None:
    # An "uh-huh" of 300 ms: paused at onset + 200 ms, resumed 100 ms after it
    # ends, so the agent's audio has a gap of about half a second at most.
    s = speaking()
    s.run(300, True, text="uh-huh")
    end = s.t
    s.run(300, False)
    [pause], [resume] = s.of(Pause), s.of(Resume)
    assert resume.kind is Overlap.BACKCHANNEL and resume.at_ms + 20 - end == 100
    assert resume.at_ms - pause.at_ms <= 400


def test_a_bare_stop_in_a_short_burst_is_resumed_over() -> None:
    # pocketsphinx hears a short "uh-huh" as "stop".
    s = speaking()
    s.run(300, True, text="stop")
    s.run(300, False)
    assert s.of(Pause) and s.of(Resume) and not s.of(Yield)


def test_stop_in_a_longer_burst_yields() -> None:
    s = speaking()
    s.run(700, True, text="stop")
    [y] = s.of(Yield)
    assert y.reason.startswith("stop_word") and not s.of(Resume)


def test_an_interruption_yields_the_floor() -> None:
    s = speaking()
    s.run(300, True, text="actually wait")
    [y] = s.of(Yield)
    assert y.reason.startswith("stop_word") and s.policy.state is State.USER_TALKING
    s.run(900, True, text="actually wait i need to change the address")
    s.run(400, False)
    assert s.of(Answer)  # the caller's turn is answered, not our old one resumed
    assert not s.of(Resume)


def test_long_wordy_overlap_is_an_interruption_even_without_stop_words() -> None:
    s = speaking()
    s.run(100, True)
    s.run(300, True, text="we moved to a new house")
    [y] = s.of(Yield)
    assert y.at_ms + 20 - y.onset_ms <= 400 and s.policy.state is State.USER_TALKING


def test_talking_to_someone_else_resumes() -> None:
    s = speaking()
    s.run(500, True, text="honey one sec")
    s.run(1000, False)
    [resume] = s.of(Resume)
    assert resume.kind is Overlap.SIDE_TALK and not s.of(Yield)


def test_background_speech_far_below_the_callers_level_is_ignored() -> None:
    s = speaking()
    s.run(2000, True, text="and then the weather", level=-40.0)
    assert s.out == [] and s.policy.state is State.SPEAKING


def test_our_own_echo_never_counts() -> None:
    s = speaking()
    s.run(2000, True, echo=True)
    assert s.out == [] and s.policy.state is State.SPEAKING


def test_a_click_shorter_than_the_start_rule_never_stops_us() -> None:
    s = speaking()
    s.run(100, True)
    s.run(500, False)
    assert s.out == [] and s.policy.state is State.SPEAKING


def test_a_silent_caller_is_answered_at_the_cap() -> None:
    s = Script()
    s.run(600, True, text="and")
    s.run(3000, False)
    [answer] = s.of(Answer)
    assert answer.rule == "incomplete"


def test_a_caller_talking_at_length_gets_a_backchannel_in_a_mid_thought_pause() -> None:
    s = Script()
    s.run(1600, True, text="so i ordered a lamp last week and")
    s.run(400, False)  # before 2.5 s of speech: too early
    assert not s.of(Backchannel)
    s.run(1200, True, text="so i ordered a lamp last week and the box came but")
    s.run(400, False)  # mid-thought (ends on "but"), 300 ms into the pause
    [bc] = s.of(Backchannel)
    assert not s.of(Answer) and s.policy.state is State.USER_PAUSE
    s.run(600, True, text="so i ordered a lamp last week and the box came but the lamp was broken and")
    s.run(400, False)  # within 4 s of the last one: none
    assert len(s.of(Backchannel)) == 1
    s.run(3000, True, text="so i ordered a lamp and the box came but it was broken and i want a refund")
    s.run(700, False)  # a complete-looking end: answered, no backchannel
    assert len(s.of(Backchannel)) == 1 and s.of(Answer)
    assert bc.at_ms > 2000


def test_no_backchannel_for_a_short_turn_or_while_we_speak() -> None:
    s = Script()
    s.run(1200, True, text="my order number is")
    s.run(1500, False)
    assert not s.of(Backchannel)
    t = speaking()  # after a long first turn, we answer and speak: nothing to backchannel
    t.run(1000, False)
    assert not t.of(Backchannel)


def test_the_first_words_of_a_question_are_no_quick_resume() -> None:
    # "Can I ... speak to a human please?": a short first burst, a breath, more.
    s = speaking()
    s.run(300, True, text="can i")
    s.run(160, False)
    assert s.of(Pause) and not s.of(Resume)
    s.run(900, True, text="can i speak to a human please")
    assert s.of(Yield) and not s.of(Resume)


# ---- the caller goes on after the turn we answered: our answer came in their pause


def answered(text: str = "has my order") -> Script:
    s = Script()
    s.run(200, False)
    s.run(600, True, text=text)
    s.run(700, False)  # answered ("has my order": cannot tell, 600 ms)
    assert s.of(Answer)
    s.out.clear()
    return s


def test_the_caller_going_on_before_our_answer_is_heard_takes_it_back() -> None:
    s = answered()
    s.run(600, True, text="shipped yet")
    [cont] = s.of(Continued)
    assert 600 <= cont.gap_ms <= 800 and s.policy.state is State.USER_TALKING, cont
    assert not s.of(Yield) and not s.of(Pause)
    s.run(700, False)
    assert s.of(Answer)  # the second part has its own answer (the engine joins the words)
    s.out.clear()
    s.run(600, True, text="and another thing")  # going on again: taken back again
    assert s.of(Continued)


def test_words_over_our_early_answer_take_it_back_instead_of_yielding_or_resuming() -> None:
    s = answered()
    s.policy.agent_speaking(True)  # our answer plays
    s.run(500, True, text="shipped yet")  # two words, short: over a later turn, resumed over
    s.run(900, False)
    assert s.of(Pause) and s.of(Continued) and not s.of(Resume) and not s.of(Yield)
    assert s.policy.state in (State.USER_TALKING, State.USER_PAUSE, State.RESPONDING)


def test_a_backchannel_over_our_early_answer_is_still_a_backchannel() -> None:
    s = answered("where is my order")
    s.policy.agent_speaking(True)
    s.run(300, True, text="okay")
    s.run(400, False)
    # no quick resume here: "right yes" may be the start of a sentence misheard
    assert s.of(Pause) and not s.of(Resume)
    s.run(500, False)
    assert s.of(Resume) and not s.of(Continued)
    assert s.policy.state is State.SPEAKING


def test_words_heard_as_backchannels_that_go_on_over_our_early_answer_take_it_back() -> None:
    s = answered("where is my order")
    s.policy.agent_speaking(True)
    s.run(400, True, text="right yes")  # "It was ..." as the recogniser hears it
    s.run(200, False)  # a gap between words
    s.run(1200, True, text="right yes heard it arrive yesterday")
    assert s.of(Continued) and not s.of(Resume)


def test_speech_long_after_the_answer_is_a_new_turn() -> None:
    s = answered()
    s.run(1000, False)  # 1.7 s quiet after the words: past continuation_ms
    s.run(600, True, text="hello")
    assert not s.of(Continued) and s.policy.state is State.USER_TALKING


def test_a_caller_who_had_heard_our_answer_for_a_while_cuts_in_on_it() -> None:
    s = Script()
    s.run(600, True, text="has my order")
    s.run(620, False)
    assert s.of(Answer)
    s.policy.agent_speaking(True)  # our answer plays at once
    s.run(840, False)  # 1.44 s after their words, but 0.84 s of our answer heard
    s.run(800, True, text="no i want to change my address")
    assert s.of(Yield) and not s.of(Continued)



def choppy(s: Script, ms: float, text: str) -> None:
    """Words with short gaps: 60 ms of speech, 40 ms between (6 frames in 10)."""
    for _ in range(int(ms // 100)):
        s.run(60, True, text=text)
        s.run(40, False)


def test_a_choppy_resumption_just_after_our_answer_is_heard_as_the_caller_going_on() -> None:
    s = answered()
    choppy(s, 600, "update the address")
    assert s.of(Continued)  # 5 votes in 10 while the caller may be going on


def test_choppy_sound_later_needs_the_full_start_rule() -> None:
    s = answered()
    s.run(1000, False)  # past continuation_ms
    choppy(s, 600, "")
    assert s.policy.state is State.RESPONDING and not s.out  # (no playback in this script)
