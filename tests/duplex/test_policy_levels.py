"""The controller and loudness: before the caller has spoken, a faint overlap
(a TV, someone across the room) neither pauses nor interrupts us; each answered
turn carries its level, which the local engine uses to tell words not meant
for it."""

from __future__ import annotations

from callagent.engines.duplex.policy import Answer, Pause, PolicyConfig, State, Yield
from tests.duplex.test_policy import Script

FAINT = PolicyConfig().faint_level_db


def greeting() -> Script:
    """We speak first: the caller has not said anything yet."""
    s = Script()
    s.policy.agent_speaking(True)
    return s


def test_faint_speech_over_the_greeting_neither_pauses_nor_interrupts() -> None:
    s = greeting()
    s.run(2000, True, text="stop and now the weather", level=FAINT - 4)  # a TV across the room
    assert not s.of(Pause) and not s.of(Yield)
    assert s.policy.state is State.OVERLAP  # heard, and held as a possible turn of its own
    s.run(400, False)
    assert s.policy.state is State.SPEAKING  # gone: we never stopped


def test_a_caller_at_a_talkers_level_still_pauses_the_greeting_on_time() -> None:
    s, faint = greeting(), greeting()
    s.run(600, True, text="so", level=-30.0)
    faint.run(600, True, text="so", level=FAINT - 4)
    [pause] = s.of(Pause)
    assert pause.at_ms - pause.onset_ms <= PolicyConfig().soft_pause_ms
    assert not faint.of(Pause)


def test_once_the_caller_has_spoken_their_own_level_decides() -> None:
    s = Script()
    s.run(600, True, text="hi i want to check my order", level=-40.0)  # a quiet caller
    s.run(800, False)
    assert s.of(Answer)
    s.policy.agent_speaking(True)
    s.out.clear()
    s.run(600, True, text="actually wait", level=-40.0)  # at their own level: not faint
    assert s.of(Pause) or s.of(Yield)


def test_a_quiet_caller_is_heard_while_we_listen() -> None:
    s = Script()
    s.run(200, False)
    s.run(1200, True, text="can you check the status of my order", level=-45.0)
    s.run(1200, False)
    assert s.of(Answer)
    assert s.policy.caller_level_db is not None and s.policy.caller_level_db < -40


def test_an_answer_carries_the_mean_level_of_the_turns_speech() -> None:
    s = Script()
    s.run(200, False)
    s.run(600, True, text="can you check the status of my order", level=-20.0)
    s.run(600, True, text="can you check the status of my order", level=-30.0)
    s.run(1200, False)
    [answer] = s.of(Answer)
    assert answer.level_db is not None and abs(answer.level_db - (-25.0)) < 1.0
