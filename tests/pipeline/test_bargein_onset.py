"""The barge-in policy's early onsets (`engines.onset`): voiced sound over the
agent cuts it before the VAD confirms speech; the VAD must confirm within
`OnsetConfig.confirm_ms`, or the agent picks up again."""

from __future__ import annotations

from callagent.engines.pipeline.bargein import BargeInConfig, BargeInPolicy, Decision

CONFIRM_MS = BargeInConfig().onset.confirm_ms
SILENT = -120.0  # a digitally silent line, as the phone benchmark's


class Line:
    """Feeds a policy 20 ms frames (VAD, webrtcvad, level) and keeps its decisions with their times."""

    def __init__(self) -> None:
        self.policy = BargeInPolicy()
        self.t = 0
        self.out: list[tuple[int, Decision]] = []

    def run(self, ms: int, *, speech: bool = False, voiced: bool = False, level: float = SILENT,
            text: str = "", agent: bool = True, interruptible: bool = True, echo: bool = False) -> None:  # fmt: skip
        for _ in range(ms // 20):
            self.t += 20
            d = self.policy.frame(speech=speech, agent_speaking=agent, interruptible=interruptible,
                                  partial=text, level_db=level, voiced=voiced, echo=echo)  # fmt: skip
            if d is not Decision.NONE:
                self.out.append((self.t, d))

    def of(self, kind: Decision) -> list[int]:
        return [t for t, d in self.out if d is kind]


def test_a_soft_start_cuts_the_agent_before_the_vad_confirms_and_the_words_keep_the_floor() -> None:
    line = Line()
    line.run(1000)
    line.run(280, voiced=True, level=-38.0)  # "Ex-cuse": the VAD hears nothing yet
    line.run(1500, speech=True, voiced=True, level=-30.0, text="excuse me can i get an update")
    assert line.of(Decision.INTERRUPT) == [1040]  # the second voiced frame
    assert line.of(Decision.RESUME) == []
    assert line.policy.turn_ended("excuse me can i get an update") is Decision.NONE


def test_an_onset_the_vad_never_confirms_is_taken_back_and_the_detector_rests() -> None:
    line = Line()
    line.run(1000)
    line.run(600, voiced=True, level=-30.0)  # a door, a cough: webrtcvad's, not Silero's
    [cut] = line.of(Decision.INTERRUPT)
    assert line.of(Decision.RESUME) == [cut + CONFIRM_MS]
    line.run(600, voiced=True, level=-30.0)  # more of it: no more cuts while resting
    assert len(line.of(Decision.INTERRUPT)) == 1


def test_a_backchannel_too_short_for_the_vads_rule_is_taken_back_when_the_window_ends() -> None:
    line = Line()
    line.run(1000)
    line.run(40, voiced=True, level=-25.0)
    line.run(100, speech=True, voiced=True, level=-22.0, text="uh-huh")  # under onset_ms
    line.run(600, text="uh-huh")
    [cut] = line.of(Decision.INTERRUPT)
    assert line.of(Decision.RESUME) == [cut + CONFIRM_MS]


def test_a_distant_talkers_broken_speech_does_not_confirm_an_early_cut() -> None:
    line = Line()
    line.run(1000)
    for _ in range(10):  # speech frames, but never onset_ms of them unbroken
        line.run(60, speech=True, voiced=True, level=-30.0, text="else")
        line.run(40, voiced=True, level=-30.0, text="else")
    [cut] = line.of(Decision.INTERRUPT)
    assert line.of(Decision.RESUME) == [cut + CONFIRM_MS]


def test_a_backchannel_the_vads_rule_hears_is_resumed_over_as_before() -> None:
    line = Line()
    line.run(1000)
    line.run(40, voiced=True, level=-25.0)
    line.run(300, speech=True, voiced=True, level=-22.0, text="uh-huh")
    line.run(600, text="uh-huh")
    [cut] = line.of(Decision.INTERRUPT)
    [resumed] = line.of(Decision.RESUME)
    assert resumed - cut < 600  # the quick rule: 100 ms of quiet after a short burst


def test_no_early_cut_when_the_agent_is_silent_or_not_interruptible_or_it_is_echo() -> None:
    for kwargs in ({"agent": False}, {"interruptible": False}, {"echo": True}):
        line = Line()
        line.run(1000)
        line.run(400, voiced=True, level=-25.0, **kwargs)  # type: ignore[arg-type]
        assert line.out == [], kwargs


def test_no_early_cut_for_sound_far_below_the_callers_level() -> None:
    line = Line()
    line.run(1200, speech=True, voiced=True, level=-20.0, text="check my order", agent=False)
    line.policy.turn_ended("check my order")
    line.run(600)
    line.run(400, voiced=True, level=-36.0)  # 16 dB under the caller: the room's
    assert line.out == []
    line.run(100, voiced=True, level=-22.0)  # the caller
    assert line.of(Decision.INTERRUPT)


def test_a_faint_callers_words_get_their_time_from_when_the_vad_would_have_cut() -> None:
    # A quiet caller (the room's level, nothing known of theirs yet): the early
    # cut comes ~250 ms before the VAD's rule would have cut, and the faint
    # rule's wait for words counts from the latter, as it did before early onsets.
    line = Line()
    line.run(1000)
    line.run(280, voiced=True, level=-40.0)
    line.run(800, speech=True, voiced=True, level=-40.0, text="sorry")
    line.run(600, speech=True, voiced=True, level=-40.0, text="sorry can you check")
    assert len(line.of(Decision.INTERRUPT)) == 1 and line.of(Decision.RESUME) == []
    assert line.policy.turn_ended("sorry can you check my order") is Decision.NONE
