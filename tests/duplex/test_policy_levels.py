"""The controller and loudness: before the caller has spoken, a faint overlap
(a TV, someone across the room, or a quiet caller) pauses us on time, but only
words make it an interruption; with none, we talk on over it and over the room
at that level. Each answered turn carries its level, which the local engine
uses to tell words not meant for it."""

from __future__ import annotations

from callagent.engines.duplex.policy import Answer, Pause, PolicyConfig, Resume, State, Yield
from tests.duplex.test_policy import Script

FAINT = PolicyConfig().room.faint_level_db


def greeting() -> Script:
    """We speak first: the caller has not said anything yet."""
    s = Script()
    s.policy.agent_speaking(True)
    return s


def test_faint_talk_without_words_for_us_pauses_then_is_talked_over() -> None:
    c = PolicyConfig()
    s = greeting()
    s.run(3000, True, text="else is", level=FAINT - 4)  # a TV across the room
    [pause] = s.of(Pause)
    assert pause.at_ms + 20 - pause.onset_ms <= c.soft_pause_ms  # on time, as for anyone
    [resume] = s.of(Resume)
    assert resume.at_ms - pause.at_ms <= c.room.faint_resume_ms and not s.of(Yield)
    assert s.policy.state is State.SPEAKING  # the TV goes on; so do we
    s.out.clear()
    s.run(3000, True, text="let list stop", level=FAINT - 2)  # more of the room, no louder
    assert s.out == []
    s.run(c.room.floor_quiet_ms, False)  # the room goes quiet; a later overlap counts again
    s.run(600, True, text="um", level=FAINT - 4)
    assert s.of(Pause)


def test_a_quiet_caller_who_cuts_in_with_words_takes_the_floor() -> None:
    s = greeting()
    s.run(300, True, text="", level=FAINT - 4)
    s.run(600, True, text="i need to change my address", level=FAINT - 4)
    [pause] = s.of(Pause)
    [yielded] = s.of(Yield)
    assert pause.at_ms - pause.onset_ms <= PolicyConfig().soft_pause_ms
    assert not s.of(Resume) and s.policy.state is State.USER_TALKING


def test_a_faint_stop_word_takes_the_floor() -> None:
    s = greeting()
    s.run(500, True, text="sorry wait", level=FAINT - 4)
    assert s.of(Pause) and s.of(Yield)


def test_a_caller_at_a_talkers_level_pauses_the_greeting_on_time() -> None:
    s = greeting()
    s.run(600, True, text="so", level=-30.0)
    [pause] = s.of(Pause)
    assert pause.at_ms - pause.onset_ms <= PolicyConfig().soft_pause_ms


def test_the_rooms_level_is_only_ignored_over_our_speech() -> None:
    s = greeting()
    s.run(2000, True, text="else is", level=FAINT - 4)
    assert s.of(Resume)
    s.run(400, False)
    s.policy.agent_speaking(False)  # our turn ends; the caller, as quiet as the room, speaks
    s.out.clear()
    s.run(1200, True, text="can you check my order", level=FAINT - 4)
    s.run(1200, False)
    assert s.of(Answer)


def test_once_the_caller_has_spoken_their_own_level_decides() -> None:
    s = Script()
    s.run(600, True, text="hi i want to check my order", level=-40.0)  # a quiet caller
    s.run(1600, False)  # past continuation_ms: an overlap, not the turn going on
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
