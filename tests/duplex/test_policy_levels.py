"""The controller and loudness: a talker's level assumed before the caller has
spoken (over our speech only), and each answered turn's level."""

from __future__ import annotations

from callagent.engines.duplex.policy import Answer, Pause, PolicyConfig, State, Yield
from tests.duplex.test_policy import Script


def greeting() -> Script:
    """We speak first: the caller has not said anything yet."""
    s = Script()
    s.policy.agent_speaking(True)
    return s


def test_distant_speech_does_not_cut_the_greeting_before_the_caller_has_spoken() -> None:
    s = greeting()
    assumed = PolicyConfig().assumed_caller_level_db
    s.run(2000, True, text="and now the weather", level=assumed - 14)  # a TV across the room
    assert s.policy.state is State.SPEAKING and not s.out


def test_a_caller_at_a_talkers_level_still_cuts_the_greeting() -> None:
    s = greeting()
    s.run(600, True, text="stop i need to change my address", level=-22.0)
    assert s.policy.state is not State.SPEAKING and s.out


def test_a_quiet_caller_is_heard_while_we_listen() -> None:
    # The assumed level only gates the start of an overlap: while we listen, a
    # caller far below it is still heard (and their level learnt).
    s = Script()
    s.run(200, False)
    s.run(1200, True, text="can you check the status of my order", level=-45.0)
    s.run(1200, False)
    assert s.of(Answer)
    assert s.policy.caller_level_db is not None and s.policy.caller_level_db < -40


def test_inside_an_overlap_quieter_syllables_still_count() -> None:
    # Once a talker has started an overlap, frames below the assumed level (the
    # soft parts of speech) do not break the run into "quiet".
    s = greeting()
    s.run(200, True, text="wait", level=-20.0)
    for _ in range(10):
        s.run(40, True, text="wait stop", level=-20.0)
        s.run(40, True, text="wait stop", level=-40.0)
    assert (s.of(Pause) or s.of(Yield)) and s.policy.state is not State.SPEAKING


def test_an_answer_carries_the_mean_level_of_the_turns_speech() -> None:
    s = Script()
    s.run(200, False)
    s.run(600, True, text="can you check the status of my order", level=-20.0)
    s.run(600, True, text="can you check the status of my order", level=-30.0)
    s.run(1200, False)
    [answer] = s.of(Answer)
    assert answer.level_db is not None and abs(answer.level_db - (-25.0)) < 1.0
