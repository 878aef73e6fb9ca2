"""Words a request does not end on (engines/phrase_ends.py), read by both end-of-turn rules."""

from __future__ import annotations

import pytest

from callagent.engines.duplex.policy import completeness as duplex_completeness
from callagent.engines.phrase_ends import ends_mid_phrase
from callagent.engines.pipeline.turns import Completeness
from callagent.engines.pipeline.turns import completeness as pipeline_completeness


@pytest.mark.parametrize("text", [
    "i want to track",  # a flow sees "track" as an order-status intent already
    "i need to change",
    "can you tell me",
    "could you check my",
    "i moved recently and",
    "the delivery address on",
    "so um",
])  # fmt: skip
def test_a_request_cut_mid_phrase_waits_in_both_engines(text: str) -> None:
    assert ends_mid_phrase(text.split())
    assert pipeline_completeness(text) is Completeness.INCOMPLETE
    assert duplex_completeness(text) == -1


@pytest.mark.parametrize("text", [
    "has my order shipped yet",
    "can you check on it",
    "i'd like to know when my order will arrive",
    "can you help me",
    "tell me the status of my order please",
    "what's the status",
])  # fmt: skip
def test_a_finished_request_does_not(text: str) -> None:
    assert not ends_mid_phrase(text.split())
    assert pipeline_completeness(text) is Completeness.COMPLETE
    assert duplex_completeness(text) >= 0  # 0: "cannot tell" (short, no question word it knows)


def test_each_rule_keeps_its_own_further_endings() -> None:
    assert pipeline_completeness("it's") is Completeness.INCOMPLETE  # a pronoun opens more
    assert pipeline_completeness("my order number") is Completeness.DIGITS
    assert duplex_completeness("my order number") == -1
