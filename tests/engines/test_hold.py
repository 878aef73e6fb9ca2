"""Holding words the flow could only re-prompt on (engines/hold.py): no clock, no flow."""

from __future__ import annotations

from collections.abc import Callable

from callagent.agents.flow import REPROMPT_HOLD_MS
from callagent.engines.hold import Held, RepromptHold


def only(*texts: str) -> Callable[[str], bool]:
    return lambda text: text in texts


def test_words_the_flow_can_use_are_answered_at_once() -> None:
    hold: RepromptHold[str] = RepromptHold()
    assert hold.words("my order", 1000.0, "f1", reprompt_only=only("hi")) == ("my order", "f1")
    assert hold.held is None


def test_words_that_would_only_reprompt_are_held_for_the_hold_time() -> None:
    hold: RepromptHold[str] = RepromptHold()
    assert hold.words("hi", 1000.0, "f1", reprompt_only=only("hi"), overlapped=True) is None
    assert hold.held == Held("hi", "f1", 1000.0 + REPROMPT_HOLD_MS, True)


def test_a_caller_who_goes_on_gets_one_answer_from_the_first_words() -> None:
    hold: RepromptHold[str] = RepromptHold(hold_ms=900.0)
    hold.words("hi", 1000.0, "f1", reprompt_only=only("hi"))
    asked: list[str] = []

    def reprompt_only(text: str) -> bool:
        asked.append(text)
        return True

    assert hold.words("it's about my order", 1500.0, "f2", reprompt_only=reprompt_only) == (
        "hi it's about my order", "f1")  # fmt: skip
    assert asked == [] and hold.held is None  # joined words are answered, never held again


def test_words_not_for_us_that_go_on_unusable_stay_held_together() -> None:
    # Background talk over the agent: "else is", then "list", then "let list stop".
    hold: RepromptHold[str] = RepromptHold(hold_ms=900.0)
    unusable = only("else is", "else is list", "else is list let list stop")
    assert hold.words("else is", 1000.0, "f1", reprompt_only=unusable, overlapped=True) is None
    assert hold.words("list", 2500.0, "f2", reprompt_only=unusable) is None
    assert hold.held == Held("else is list", "f1", 3400.0, True)
    assert hold.words("let list stop", 4000.0, "f3", reprompt_only=unusable) is None
    assert hold.release(4899.0, caller_talking=False) is None  # the hold runs from the last words
    assert hold.release(4900.0, caller_talking=False) == Held("else is list let list stop", "f1", 4900.0, True)


def test_words_not_for_us_then_words_the_flow_can_use_are_answered_together() -> None:
    hold: RepromptHold[str] = RepromptHold()
    hold.words("hi", 1000.0, "f1", reprompt_only=only("hi"), overlapped=True)
    assert hold.words("change my address", 1500.0, "f2", reprompt_only=only("hi")) == (
        "hi change my address", "f1")  # fmt: skip
    assert hold.held is None


def test_held_words_are_released_on_the_given_clock_once_the_caller_is_quiet() -> None:
    hold: RepromptHold[str] = RepromptHold(hold_ms=900.0)
    hold.words("hi", 1000.0, "f1", reprompt_only=only("hi"))
    assert hold.release(1899.0, caller_talking=False) is None  # not yet
    assert hold.release(1900.0, caller_talking=True) is None  # the caller is talking again
    assert hold.held is not None
    assert hold.release(1900.0, caller_talking=False) == Held("hi", "f1", 1900.0, False)
    assert hold.held is None and hold.release(5000.0, caller_talking=False) is None


def test_a_key_press_drops_the_held_words() -> None:
    hold: RepromptHold[None] = RepromptHold()
    hold.words("hi", 0.0, None, reprompt_only=only("hi"))
    hold.cancel()
    assert hold.held is None and hold.release(1e9, caller_talking=False) is None
    assert hold.words("two", 10.0, None, reprompt_only=only("hi")) == ("two", None)


def test_the_hold_ends_once_the_caller_has_been_quiet_long_enough_after_the_words() -> None:
    # Words that ended at 1000 ms, decided 1200 ms later (the end-of-turn rule
    # waited after "... or"): the caller has been quiet 1.4 s at 2400 ms, not
    # 3100 ms. A quick decision keeps the whole hold from the decision.
    hold: RepromptHold[str] = RepromptHold(hold_ms=900.0, quiet_ms=1400.0)
    hold.words("what to change where my order or", 2200.0, "f1", reprompt_only=only("what to change where my order or"),
               words_end_ms=1000.0)  # fmt: skip
    assert hold.held is not None and hold.held.release_ms == 2400.0
    hold.cancel()
    hold.words("hi", 1250.0, "f1", reprompt_only=only("hi"), words_end_ms=1000.0)
    assert hold.held is not None and hold.held.release_ms == 2150.0  # 1250 + 900: sooner than 1000 + 1400
    hold.cancel()
    hold.words("hi", 3000.0, "f1", reprompt_only=only("hi"), words_end_ms=1000.0)
    assert hold.held is not None and hold.held.release_ms == 3000.0  # quiet long enough already


def test_words_that_would_end_the_call_are_held_like_a_reprompt() -> None:
    hold: RepromptHold[str] = RepromptHold(hold_ms=900.0)
    ends = only("bye")
    assert hold.words("bye", 1000.0, "f1", reprompt_only=only(), ends_call=ends) is None
    assert hold.held == Held("bye", "f1", 1900.0, False)
    # the caller went on: one answer for the whole, which the flow can use
    assert hold.words("update the address", 1500.0, "f2", reprompt_only=only(),
                      ends_call=ends) == ("bye update the address", "f1")  # fmt: skip
    # said and left alone, they are answered once the hold is over
    hold.words("bye", 3000.0, "f3", reprompt_only=only(), ends_call=ends)
    assert hold.release(3500.0, caller_talking=False) is None
    assert hold.release(3900.0, caller_talking=False) == Held("bye", "f3", 3900.0, False)


def test_closing_words_over_the_agent_are_not_held_as_words_not_for_us() -> None:
    # Words over our speech that would end the call keep their old handling (answered
    # now): held as "not for us" they would be dropped when the hold ran out.
    hold: RepromptHold[str] = RepromptHold()
    assert hold.words("goodbye", 1000.0, "f1", reprompt_only=only(), ends_call=only("goodbye"),
                      overlapped=True) == ("goodbye", "f1")  # fmt: skip
