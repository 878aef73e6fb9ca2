"""Secure capture keeps only a masked form of keyed digits."""

from __future__ import annotations

import pytest

from callagent.compliance.secure_capture import Captured, SecureCapture, mask_digits


def test_mask_keeps_the_last_four_only() -> None:
    assert mask_digits("4111111111111111") == "************1111"
    assert mask_digits("1234") == "****" and mask_digits("") == ""


def test_end_key_finishes_and_the_digits_are_gone() -> None:
    sc = SecureCapture("#", 19)
    sc.start()
    for d in "411111111111111":
        assert sc.digit(d) is None
    assert sc.digit("1") is None
    done = sc.digit("#")
    assert done == Captured("************1111", 16, "end_key") and not sc.active
    assert "4111111111111111" not in repr(sc.__dict__)


def test_max_digits_finishes_and_other_keys_are_ignored() -> None:
    sc = SecureCapture("#", 4)
    sc.start()
    assert sc.digit("*") is None and sc.digit("A") is None
    assert [sc.digit(d) for d in "123"] == [None, None, None]
    assert sc.digit("4") == Captured("****", 4, "max_digits")


def test_cancel_and_misuse() -> None:
    sc = SecureCapture()
    assert sc.cancel("call ended") is None
    with pytest.raises(RuntimeError, match="not active"):
        sc.digit("1")
    sc.start()
    with pytest.raises(RuntimeError, match="already active"):
        sc.start()
    sc.digit("5")
    assert sc.cancel("call ended") == Captured("*", 1, "call ended")
    with pytest.raises(ValueError, match="max_digits"):
        SecureCapture(max_digits=0)
