"""The duplex controller's early onsets (`engines.onset`): voiced sound over our
speech pauses us before the VAD confirms it; unconfirmed, we resume."""

from __future__ import annotations

from callagent.engines.duplex.policy import FrameIn, Overlap, Pause, PolicyConfig, Resume, State, TurnPolicy, Yield

CONFIRM_MS = PolicyConfig().onset.confirm_ms
SILENT = -120.0


class Script:
    """Drives a policy frame by frame on a 20 ms clock, the agent speaking."""

    def __init__(self) -> None:
        self.policy = TurnPolicy()
        self.policy.agent_speaking(True)
        self.t = 0.0
        self.out: list[tuple[float, object]] = []

    def run(self, ms: float, *, speech: bool = False, voiced: bool = False, level: float = SILENT,
            text: str = "", echo: bool = False) -> None:  # fmt: skip
        for _ in range(int(ms // 20)):
            if text:
                self.policy.partial(text)
            for d in self.policy.frame(FrameIn(self.t, speech, echo, level, voiced)):
                self.out.append((self.t, d))
            self.t += 20.0

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [d for _, d in self.out if isinstance(d, kind)]


def test_a_soft_start_pauses_us_on_its_second_voiced_frame_and_its_words_take_the_floor() -> None:
    s = Script()
    s.run(1000)
    s.run(280, voiced=True, level=-38.0)  # the VAD hears nothing yet
    s.run(1000, speech=True, voiced=True, level=-30.0, text="excuse me can i get an update on my order")
    [pause] = s.of(Pause)
    assert pause.at_ms == 1020 and pause.onset_ms == 1000
    assert s.of(Resume) == [] and s.of(Yield)
    assert s.policy.state is State.USER_TALKING


def test_a_pause_the_vad_never_confirms_is_resumed_as_noise_and_onsets_rest() -> None:
    s = Script()
    s.run(1000)
    s.run(600, voiced=True, level=-30.0)
    [pause] = s.of(Pause)
    [resume] = s.of(Resume)
    assert resume.at_ms - pause.at_ms == CONFIRM_MS and resume.kind is Overlap.NOISE
    s.run(600, voiced=True, level=-30.0)  # resting: no second pause
    assert len(s.of(Pause)) == 1 and s.policy.state is State.SPEAKING


def test_a_backchannel_the_start_rule_hears_resumes_as_one_and_a_shorter_one_as_noise() -> None:
    s = Script()
    s.run(1000)
    s.run(40, voiced=True, level=-25.0)
    s.run(160, speech=True, voiced=True, level=-22.0, text="uh-huh")  # 8 votes: confirmed
    s.run(600, text="uh-huh")
    [pause] = s.of(Pause)
    [resume] = s.of(Resume)
    assert resume.kind is Overlap.BACKCHANNEL and resume.at_ms - pause.at_ms < CONFIRM_MS
    s = Script()
    s.run(1000)
    s.run(40, voiced=True, level=-25.0)
    s.run(100, speech=True, voiced=True, level=-22.0, text="mm")  # too short for the start rule
    s.run(600)
    [pause] = s.of(Pause)
    [resume] = s.of(Resume)
    assert resume.kind is Overlap.NOISE and resume.at_ms - pause.at_ms == CONFIRM_MS


def test_a_distant_talkers_broken_speech_does_not_confirm_an_early_pause() -> None:
    s = Script()
    s.run(1000)
    for _ in range(10):  # speech frames, but never 8 of 10
        s.run(40, speech=True, voiced=True, level=-30.0)
        s.run(40, voiced=True, level=-30.0)
    [pause] = s.of(Pause)
    [resume] = s.of(Resume)
    assert resume.kind is Overlap.NOISE and resume.at_ms - pause.at_ms == CONFIRM_MS
    assert s.policy.state is State.SPEAKING


def test_echo_and_unvoiced_sound_do_not_pause_us() -> None:
    s = Script()
    s.run(1000)
    s.run(400, voiced=True, level=-25.0, echo=True)
    s.run(400, voiced=False, level=-25.0)
    assert s.out == []


def test_early_onsets_are_judged_on_the_level_the_vad_heard_not_the_echo_laden_line() -> None:
    s = Script()
    s.policy.agent_speaking(False)
    s.run(1200, speech=True, voiced=True, level=-22.0, text="check my order please")  # the caller
    s.run(1000)
    s.policy.agent_speaking(True)
    s.out.clear()
    # Our echo makes the raw line -30 dBFS; what is left after cancelling it is
    # far below the caller: the room's.
    for _ in range(20):
        s.out += [(s.t, d) for d in s.policy.frame(FrameIn(s.t, False, False, -30.0, True, -45.0))]
        s.t += 20.0
    assert s.of(Pause) == []
    for _ in range(3):
        s.out += [(s.t, d) for d in s.policy.frame(FrameIn(s.t, False, False, -30.0, True, -26.0))]
        s.t += 20.0
    assert len(s.of(Pause)) == 1  # the caller, over our echo


def test_a_faint_callers_words_get_their_time_from_when_the_vad_would_have_paused() -> None:
    s = Script()
    s.run(1000)
    s.run(280, voiced=True, level=-42.0)  # quiet, and nothing known of the caller's level
    s.run(900, speech=True, voiced=True, level=-42.0, text="the")  # no stop word: "sorry" would yield at once
    s.run(600, speech=True, voiced=True, level=-42.0, text="the delivery address is wrong")
    assert len(s.of(Pause)) == 1 and s.of(Resume) == [] and s.of(Yield)
