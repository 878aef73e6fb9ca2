"""The benchmark's scenarios as text: what each caller says, in which voice, when.

Pure and deterministic: ``build_specs(n)`` gives the same samples every time
(seeded). ``generate.py`` turns them into audio.

Timing is anchored on the live call, as the simulator observes it:
``after_greeting`` starts the caller once the agent has spoken and then been
silent for ``at_s`` seconds; ``agent_heard`` starts it ``at_s`` seconds after
the agent's first audio was heard (the agent's opening is the known overlap
target: with the customer_service profile its interruptible part is heard
from about 5.7 s to 11.3 s after its start, the sentence "I can check the
status of an order or change a delivery address." from 6.7 s to 10.3 s).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from callagent.bench.phone.timeline import Scenario

__all__ = ["SPEC_VERSION", "VOICES", "Anchor", "Echo", "SampleSpec", "Voice", "build_specs", "sample_id"]

SPEC_VERSION = 2


@dataclass(frozen=True, slots=True)
class Voice:
    """A caller voice made from the one packaged piper voice."""

    name: str
    factor: float  # resampling factor: pitch and formants x factor, tempo x factor
    length_scale: float  # piper's phoneme length (> 1: slower)


# Pitch and formants -1..+2.5 semitones against the agent's (factor 1.0), rates 0.84-1.09 of
# its tempo. Shifting formants down by more than ~5 % made even clean sentences unintelligible to
# pocketsphinx (the agent's own STT), so the range leans upwards.
VOICES = (
    Voice("high", 1.10, 1.05),
    Voice("low", 0.95, 0.97),
    Voice("higher_slow", 1.15, 1.18),
    Voice("fast", 1.05, 0.88),
    Voice("mid_slow", 1.07, 1.12),
)
LEVELS_DB = (-22.0, -25.0, -19.0, -28.0)  # active RMS, dBFS
LINES = ((300.0, 3400.0), (200.0, 3000.0), (400.0, 3400.0))  # band edges, Hz


class Anchor:
    AFTER_GREETING = "after_greeting"
    AGENT_HEARD = "agent_heard"


@dataclass(frozen=True, slots=True)
class Echo:
    gain_db: float
    delay_s: float


@dataclass(frozen=True, slots=True)
class SampleSpec:
    id: str
    scenario: Scenario
    index: int
    text: str  # what the caller (or the other talker) says; "" for echo only
    voice: Voice
    level_db: float
    line: tuple[float, float]
    anchor: str
    at_s: float
    pause_s: float = 0.0  # pause handling: silence after the first ``split`` words
    split: int = 0
    side_db: float = 0.0  # talking to others / background: level below the caller's
    noise_db: float | None = None  # background: noise level below the caller's
    echo: Echo | None = None
    pair: str = ""  # interruption: the smooth sample with the same request

    @property
    def seed(self) -> int:
        return SPEC_VERSION * 1_000_003 + sum(ord(c) * (k + 1) for k, c in enumerate(self.id))


REQUESTS = (
    "I'd like to check the status of my order.",
    "Can you tell me where my order is?",
    "I need to change the delivery address on my order.",
    "Has my order shipped yet?",
    "I want to track my package please.",
    "I moved recently and need to change my address.",
    "Where is my order? It was supposed to arrive yesterday.",
    "Could you check my order status for me?",
    "I'd like to update the shipping address.",
    "My order hasn't arrived yet, can you check on it?",
    "I want to change where my order gets delivered.",
    "Can I get an update on my order?",
    "I need to send my order to a different address.",
    "Can you check whether my order has shipped?",
    "The delivery address on my order is wrong.",
    "I'm calling about the status of an order.",
    "Please check on my order for me.",
    "I need to fix the address for my delivery.",
    "What's the status of my order?",
    "I'd like to know when my order will arrive.",
    "Can you help me change my delivery address?",
    "I'm trying to find out where my package is.",
    "I have to change the address for an order.",
    "Tell me the status of my order please.",
)
INTERRUPT_OPENERS = ("", "Sorry, ", "", "Excuse me, ")
BACKCHANNELS = ("Uh-huh.", "Yeah.", "Right.", "Okay.", "Mm-hm.", "Yes.", "Sure.", "I see.")
SIDE_TALK = (
    "Honey, can you turn the TV down? I'm on the phone.",
    "Just a minute, I'll be right there.",
    "Put the groceries on the kitchen table.",
    "No, the blue one, next to the door.",
    "Can you feed the dog, please?",
    "Tell your brother dinner is almost ready.",
    "Hold the door for me, would you?",
    "It's in the top drawer on the left.",
    "We're leaving at six, don't forget your coat.",
    "Could you get the mail when you go out?",
    "Thanks, just leave it on the counter.",
    "I'll be off the phone in a second.",
)
BACKGROUND = (
    "And now the weather for the weekend, sunny with a high of seventy two.",
    "The meeting has been moved to three o'clock in the main conference room.",
    "Traffic is backed up on the highway for about two miles.",
    "Flight two forty is now boarding at gate twelve.",
    "Scores from last night's game are coming up after the break.",
    "Please remember to sign in at the front desk.",
    "The store will close in fifteen minutes.",
    "Another cup of coffee? Sure, thanks very much.",
    "Our next caller is on the line from Chicago.",
    "Order number forty two is ready at the counter.",
)


def sample_id(scenario: Scenario, i: int) -> str:
    return f"{scenario.value}_{i:03d}"


def build_specs(per_scenario: int, scenarios: tuple[Scenario, ...] = tuple(Scenario)) -> list[SampleSpec]:
    """``per_scenario`` samples of each scenario, the same every time."""
    if per_scenario < 1:
        raise ValueError("per_scenario must be >= 1")
    specs: list[SampleSpec] = []
    for scenario in scenarios:
        rng = random.Random(f"{SPEC_VERSION}:{scenario.value}")
        for i in range(per_scenario):
            specs.append(_spec(scenario, i, rng))
    return specs


def _spec(scenario: Scenario, i: int, rng: random.Random) -> SampleSpec:
    base = SampleSpec(
        id=sample_id(scenario, i), scenario=scenario, index=i, text="",
        voice=VOICES[(i + len(scenario.value)) % len(VOICES)],
        level_db=LEVELS_DB[i % len(LEVELS_DB)], line=LINES[i % len(LINES)],
        anchor=Anchor.AGENT_HEARD, at_s=0.0,
    )  # fmt: skip
    request = REQUESTS[i % len(REQUESTS)]
    if scenario is Scenario.SMOOTH:
        return replace(base, text=request, anchor=Anchor.AFTER_GREETING, at_s=1.0)
    if scenario is Scenario.PAUSE:
        words = request.split()
        split = max(2, min(len(words) - 2, round(len(words) * rng.uniform(0.35, 0.6))))
        return replace(base, text=request, anchor=Anchor.AFTER_GREETING, at_s=1.0,
                       pause_s=round(rng.uniform(0.4, 1.0), 2), split=split)  # fmt: skip
    if scenario is Scenario.INTERRUPTION:
        opener = INTERRUPT_OPENERS[i % len(INTERRUPT_OPENERS)]
        text = opener + request[0].lower() + request[1:] if opener else request
        return replace(base, text=text, at_s=round(rng.uniform(7.0, 9.0), 2),
                       pair=sample_id(Scenario.SMOOTH, i))  # fmt: skip
    if scenario is Scenario.BACKCHANNEL:
        return replace(base, text=BACKCHANNELS[i % len(BACKCHANNELS)],
                       at_s=round(rng.uniform(7.0, 9.5), 2))  # fmt: skip
    if scenario is Scenario.TALK_TO_OTHERS:
        return replace(base, text=SIDE_TALK[i % len(SIDE_TALK)], at_s=round(rng.uniform(6.6, 7.6), 2),
                       side_db=round(rng.uniform(8.0, 12.0), 1))  # fmt: skip
    if scenario is Scenario.BACKGROUND:
        return replace(base, text=BACKGROUND[i % len(BACKGROUND)], at_s=round(rng.uniform(6.6, 7.6), 2),
                       side_db=round(rng.uniform(13.0, 17.0), 1),
                       noise_db=round(rng.uniform(18.0, 24.0), 1))  # fmt: skip
    # Speakerphone echo: the caller is silent (even samples) or backchannels (odd).
    echo = Echo(round(rng.uniform(-22.0, -18.0), 1), round(rng.uniform(0.1, 0.3), 3))
    text = BACKCHANNELS[i % len(BACKCHANNELS)] if i % 2 else ""
    return replace(base, text=text, at_s=round(rng.uniform(7.0, 9.0), 2), echo=echo)
