from __future__ import annotations

from pathlib import Path

import pytest

from callagent.speech.lm import (
    DIGIT_WORDS,
    arpa_text,
    build_resources,
    digits_jsgf,
    normalize,
    spoken_digits,
)


def test_normalize_lowercases_strips_punctuation_and_spells_digits() -> None:
    assert normalize("Hi, I'd like 45 7-day Uh-huh!") == [
        "hi", "i'd", "like", "four", "five", "seven", "day", "uh-huh",
    ]  # fmt: skip


def test_spoken_digits_keeps_only_digits() -> None:
    assert spoken_digits("my account number is four five oh zero nine") == "45009"
    assert spoken_digits("") == ""


def test_arpa_text_is_a_trigram_model_with_sentence_marks() -> None:
    arpa = arpa_text(["Yes.", "Yes please", "no"])
    assert "\\data\\" in arpa and arpa.rstrip().endswith("\\end\\")
    assert "ngram 1=5" in arpa  # <s> </s> yes please no
    assert "\\3-grams:" in arpa
    assert "<s> yes please" in arpa


@pytest.mark.parametrize("phrases", [[], ["", "  ", "?!"]])
def test_arpa_text_without_words_raises_instead_of_exiting(phrases: list[str]) -> None:
    # ArpaBoLM itself would call sys.exit() here
    with pytest.raises(ValueError, match="no words"):
        arpa_text(phrases)


def test_digits_jsgf_allows_an_optional_carrier_then_digits() -> None:
    grammar = digits_jsgf(["My number is", "It's"])
    assert "<carrier> = it's | my number is ;" in grammar
    assert "public <digits> = [ <carrier> ] <digit>+ ;" in grammar
    assert all(w in grammar for w in DIGIT_WORDS)
    assert "<carrier>" not in digits_jsgf([])


def test_build_resources_writes_lm_and_a_cut_down_dictionary(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"
    res = build_resources(["Zero problems", "I want to check-in", "Blorfly please"], out)
    assert res.lm_path.parent == out and res.dict_path.parent == out
    assert res.oov == ("blorfly",)
    lm = res.lm_path.read_text()
    assert "blorfly" not in lm and "check in" in lm  # unknown hyphenation split
    entries = res.dict_path.read_text().splitlines()
    heads = {line.split()[0] for line in entries}
    assert {"zero", "zero(2)", "problems", "please", "oh", "nine", "account"} <= heads
    assert len(entries) < 100  # not the 135k-word cmudict
    assert res.words == {h.split("(")[0] for h in heads}


def test_build_resources_with_no_known_words_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no words"):
        build_resources(["Blorfly snarg"], tmp_path)
