"""The barge-in policy and loudness (`engines.room`): before the caller has
spoken, a faint overlap cuts the agent on time but only words make it an
interruption; with none, the agent picks up again and talks over the room."""

from __future__ import annotations

from callagent.engines.pipeline.bargein import BargeInConfig, BargeInPolicy, Decision

FAINT = BargeInConfig().room.faint_level_db - 4  # a TV across the room, or a quiet caller


class Line:
    """Feeds a policy 20 ms frames and keeps its decisions with their times."""

    def __init__(self) -> None:
        self.policy = BargeInPolicy()
        self.t = 0
        self.out: list[tuple[int, Decision]] = []

    def run(self, ms: int, speech: bool, *, text: str = "", level: float = -20.0,
            agent: bool = True) -> None:  # fmt: skip
        for _ in range(ms // 20):
            self.t += 20
            d = self.policy.frame(speech=speech, agent_speaking=agent, interruptible=True,
                                  partial=text, level_db=level)  # fmt: skip
            if d is not Decision.NONE:
                self.out.append((self.t, d))

    def of(self, kind: Decision) -> list[int]:
        return [t for t, d in self.out if d is kind]


def test_faint_talk_without_words_for_the_agent_cuts_it_then_is_talked_over() -> None:
    cfg = BargeInConfig()
    line = Line()
    line.run(100, False)
    line.run(3000, True, text="else is", level=FAINT)
    [cut] = line.of(Decision.INTERRUPT)
    assert cut - 100 <= 250  # on time, as for anyone
    [resumed] = line.of(Decision.RESUME)
    assert resumed - cut <= cfg.room.faint_resume_ms + 20
    line.out.clear()
    line.run(3000, True, text="let list stop", level=FAINT + 2)  # more of the room, no louder
    assert line.out == [] and line.policy.heard_room  # its words are not the caller's either
    line.run(int(cfg.room.floor_quiet_ms), False)  # the room went quiet: an overlap counts again
    line.run(400, True, text="", level=FAINT)
    assert line.of(Decision.INTERRUPT)


def test_a_quiet_caller_who_cuts_in_with_words_keeps_the_floor() -> None:
    line = Line()
    line.run(300, True, level=FAINT)
    line.run(1500, True, text="i need to change my address", level=FAINT)
    line.run(600, False, text="i need to change my address")
    assert line.of(Decision.INTERRUPT) and not line.of(Decision.RESUME)
    assert line.policy.turn_ended("i need to change my address") is Decision.NONE


def test_faint_floor_words_cut_the_agent_and_the_utterances_end_decides() -> None:
    line = Line()
    line.run(400, True, text="sorry wait", level=FAINT)
    line.run(200, False, text="sorry wait")
    assert line.of(Decision.INTERRUPT) and not line.of(Decision.RESUME)
    assert line.policy.turn_ended("sorry wait") is Decision.RESUME  # nothing said after all
    line = Line()
    line.run(600, True, text="no the other one", level=FAINT)  # a stop word with words
    line.run(1000, False, text="no the other one")
    assert line.of(Decision.INTERRUPT) and not line.of(Decision.RESUME)


def test_a_faint_utterance_that_ends_without_words_for_the_agent_is_resumed_over() -> None:
    line = Line()
    line.run(500, True, text="else", level=FAINT)
    line.run(200, False, text="else")  # the recogniser's words stand until the turn ends
    assert line.of(Decision.INTERRUPT) and not line.of(Decision.RESUME)
    assert line.policy.turn_ended("else is") is Decision.RESUME


def test_once_the_caller_has_spoken_talk_far_below_them_is_not_theirs() -> None:
    line = Line()
    line.run(1200, True, text="check my order", level=-22.0, agent=False)  # their own turn
    line.policy.turn_ended("check my order")
    line.run(600, False)
    line.run(2000, True, text="and now the weather", level=-36.0)  # 14 dB down, over the agent
    assert line.out == []
    line.run(400, True, text="wait", level=-24.0)  # the caller
    assert line.of(Decision.INTERRUPT)


def test_the_rooms_level_is_only_ignored_over_the_agents_speech() -> None:
    line = Line()
    line.run(2000, True, text="else is", level=FAINT)
    assert line.of(Decision.RESUME)
    line.run(200, False)
    # The agent stops; the caller, as quiet as the room, answers: their level is learnt.
    line.run(1200, True, text="can you check my order", level=FAINT, agent=False)
    assert not line.policy.heard_room and line.policy.levels.caller_level_db is not None
