"""The redaction core, one test per rule (PCI DSS 3.3/3.4.1, SSA SSN rules, GDPR minimisation)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from callagent.compliance import redact as redact_module
from callagent.compliance.redact import (
    ALWAYS_ON,
    CVV,
    DOB,
    EMAIL,
    EXPIRY,
    PAN,
    PHONE,
    SSN,
    Finding,
    JsonFinding,
    JsonValue,
    Redacted,
    RedactionPolicy,
    StreamingRedactor,
    StreamState,
    mask_digits,
    redact,
    redact_json,
)

DEFAULT = RedactionPolicy()
EVERYTHING = RedactionPolicy(email=True, dob=True, phone=True)
VISA = "4532015112830366"   # Luhn-valid test number
VISA_SPOKEN = "four five three two zero one five one one two eight three zero three six six"
AMEX = "378282246310005"

_WORDS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def found(text: str, policy: RedactionPolicy = DEFAULT) -> list[tuple[str, str]]:
    """(kind, original text) for every finding."""
    return [(f.kind, text[f.start:f.end]) for f in redact(text, policy).findings]


def kinds(text: str, policy: RedactionPolicy = DEFAULT) -> list[str]:
    return [f.kind for f in redact(text, policy).findings]


def luhn_complete(body: str) -> str:
    """``body`` plus the check digit that makes it Luhn-valid."""
    for check in "0123456789":
        candidate = body + check
        total = 0
        for k, ch in enumerate(reversed(candidate)):
            v = int(ch) * (2 if k % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def random_pan(rng: random.Random, length: int) -> str:
    body = rng.choice("23456") + "".join(rng.choice("0123456789") for _ in range(length - 2))
    return luhn_complete(body)


def spoken_group(rng: random.Random, digits: str) -> str:
    """One group as a transcript might give it: numerals, words, pairs, double/triple."""
    style = rng.choice(["numeral", "words", "mixed", "pairs", "repeat"])
    if style == "numeral":
        return digits
    zero = rng.choice(["zero", "oh", "o"])

    def word(d: str) -> str:
        return zero if d == "0" else _WORDS[int(d)]

    if style == "words":
        return " ".join(word(d) for d in digits)
    if style == "mixed":
        return " ".join(d if rng.random() < 0.5 else word(d) for d in digits)
    if style == "pairs":
        out, i = [], 0
        while i < len(digits):
            pair = digits[i:i + 2]
            if len(pair) == 2 and pair[0] == "1":
                out.append(_TEENS[int(pair[1])])
            elif len(pair) == 2 and pair[0] >= "2" and pair[1] != "0":
                sep = rng.choice([" ", "-"])
                out.append(f"{_TENS[int(pair[0]) - 2]}{sep}{_WORDS[int(pair[1])]}")
            else:
                out.extend(word(d) for d in pair)
            i += 2
        return " ".join(out)
    out, i = [], 0
    while i < len(digits):
        n = 1
        while i + n < len(digits) and digits[i + n] == digits[i] and n < 3:
            n += 1
        if n == 1:
            out.append(word(digits[i]))
        else:
            out.append(f"{'double' if n == 2 else 'triple'} {word(digits[i])}")
        i += n
    return " ".join(out)


def spoken_number(rng: random.Random, digits: str, *, card_context: bool) -> str:
    """A whole number, in groups of 4, Amex 4-6-5, random sizes or one group."""
    shape = rng.choice(["fours", "amex", "random", "one"])
    if shape == "fours":
        sizes = [4] * (len(digits) // 4) + ([len(digits) % 4] if len(digits) % 4 else [])
    elif shape == "amex" and len(digits) == 15:
        sizes = [4, 6, 5]
    elif shape == "random":
        sizes = []
        while sum(sizes) < len(digits):
            sizes.append(min(rng.randint(2, 5), len(digits) - sum(sizes)))
    else:
        sizes = [len(digits)]
    groups, pos = [], 0
    for size in sizes:
        groups.append(spoken_group(rng, digits[pos:pos + size]))
        pos += size
    seps = [" ", ", ", " - ", ". ", " / "] + ([" and ", " uh ", ", um, "] if card_context else [])
    return rng.choice(seps).join(groups)


# ----------------------------------------------------------------------------- API


def test_public_names_are_pinned() -> None:
    assert sorted(redact_module.__all__) == sorted([
        "ALWAYS_ON", "CVV", "DOB", "EMAIL", "EXPIRY", "PAN", "PHONE", "SSN", "Finding",
        "JsonFinding", "JsonValue", "Redacted", "RedactionPolicy", "Released", "StreamState",
        "StreamingRedactor", "mask_digits", "redact", "redact_json"])


def test_policy_switchable_kinds_are_off_by_default() -> None:
    assert DEFAULT.kinds == ALWAYS_ON == {PAN, CVV, EXPIRY, SSN}
    assert EVERYTHING.kinds == ALWAYS_ON | {EMAIL, DOB, PHONE}


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.email = True  # type: ignore[misc]


def test_text_without_sensitive_data_is_returned_unchanged() -> None:
    text = "Hi, I'm calling about my order from last Tuesday; it hasn't arrived."
    assert redact(text, EVERYTHING) == Redacted(text, ())


def test_findings_locate_the_original_text_and_are_sorted() -> None:
    text = f"card {VISA} exp 04/27 cvv 123 ssn 123-45-6789"
    result = redact(text, DEFAULT)
    assert [(f.kind, text[f.start:f.end]) for f in result.findings] == [
        (PAN, VISA), (EXPIRY, "04/27"), (CVV, "123"), (SSN, "123-45-6789")]
    assert result.text == ("card [card ending 0366] exp [card expiry] cvv [card security code]"
                           " ssn [SSN]")


def test_findings_never_carry_the_value() -> None:
    assert [f.name for f in dataclasses.fields(Finding)] == ["kind", "start", "end"]
    assert [f.name for f in dataclasses.fields(JsonFinding)] == [
        "path", "kind", "start", "end", "in_key"]
    text = f"{VISA_SPOKEN}, security code one two three, my social is 123-45-6789"
    shown = repr(redact(text, EVERYTHING).findings)
    for secret in (VISA, "0366", "123", "6789", "four five"):
        assert secret not in shown


def test_redacting_twice_changes_nothing_more() -> None:
    texts = [f"card {VISA} 04/27 123, order 4567", f"{VISA_SPOKEN} and oh four twenty seven",
             "ssn 123-45-6789, dob March 3rd 1985, mail j.doe@example.com, call 555 123 4567",
             "the security code is one two three, then my zip 90210"]
    for text in texts:
        once = redact(text, EVERYTHING).text
        assert redact(once, EVERYTHING) == Redacted(once, ())


# ----------------------------------------------------------------------------- PAN


@pytest.mark.parametrize("written", [VISA, "4532 0151 1283 0366", "4532-0151-1283-0366",
                                     "4532.0151.1283.0366", "4532 - 0151 - 1283 - 0366"])
def test_pan_in_digits_is_masked_to_last_four(written: str) -> None:
    result = redact(f"my card is {written}, thanks", DEFAULT)
    assert result.text == "my card is [card ending 0366], thanks"
    assert found(f"my card is {written}, thanks") == [(PAN, written)]


def test_pan_needs_no_card_word() -> None:
    assert found(f"it's {VISA} okay") == [(PAN, VISA)]


def test_pan_amex_grouping_4_6_5() -> None:
    assert redact("3782 822463 10005", DEFAULT).text == "[card ending 0005]"


def test_pan_mask_shows_no_bin_or_middle_digits() -> None:
    text = redact(f"card {VISA}", DEFAULT).text
    assert "4532" not in text and "0151" not in text and "1283" not in text


@pytest.mark.parametrize("spoken", [
    VISA_SPOKEN,
    "four five three two oh one five one one two eight three oh three six six",
    "Four Five Three Two Zero One Five One One Two Eight Three Zero Three Six Six",
    "four five three two, zero one five one, one two eight three, zero three six six",
    "four five three two. zero one five one. one two eight three. zero three six six",
    "four-five-three-two zero-one-five-one one-two-eight-three zero-three-six-six",
    "4532 zero one five one 1283 zero three double six",
    "4 5 3 2 0 1 5 1 1 2 8 3 0 3 6 6",
    "forty five thirty two oh one fifty one twelve eighty three oh three sixty six",
    "forty-five thirty-two zero one fifty-one twelve eighty-three oh three sixty-six",
])
def test_pan_spoken_as_words_is_caught(spoken: str) -> None:
    assert redact(f"the number is {spoken} yes", DEFAULT).text == (
        "the number is [card ending 0366] yes")


def test_pan_spoken_with_double_and_triple() -> None:
    pan = luhn_complete("455500011170002")
    text = f"four triple five triple zero one double one seven triple oh two {_WORDS[int(pan[-1])]}"
    assert redact(text, DEFAULT).text == f"[card ending {pan[-4:]}]"


def test_pan_groups_joined_by_and_or_fillers_near_card_words() -> None:
    text = ("my card is four five three two and zero one five one uh one two eight three and"
            " zero three six six")
    assert redact(text, DEFAULT).text == "my card is [card ending 0366]"


def test_pan_split_by_a_filler_word_near_card_words() -> None:
    text = ("card number is four five three two zero one five one, sorry, one two eight three"
            " zero three six six")
    assert redact(text, DEFAULT).text == "card number is [card ending 0366]"


def test_and_splits_digit_runs_without_card_words() -> None:
    text = ("four five three two and zero one five one and one two eight three and zero three"
            " six six")
    assert kinds(text) == []


def test_pan_with_stray_leading_digit_is_caught() -> None:
    assert found(f"oh, {VISA} there") == [(PAN, VISA)]
    assert redact("card is oh four five three two zero one five one one two eight three zero"
                  " three six six", DEFAULT).text == "card is oh [card ending 0366]"


def test_two_pans_in_one_text_are_both_caught() -> None:
    text = f"first {VISA} then {AMEX}"
    assert redact(text, DEFAULT).text == "first [card ending 0366] then [card ending 0005]"


@pytest.mark.parametrize("written", ["4532 0151 1283 0367", "4532015112830367",
                                     "four five three two zero one five one one two eight three"
                                     " zero three six seven"])
def test_pan_failing_luhn_is_left_alone(written: str) -> None:
    assert kinds(f"my card number is {written}") == []


def test_luhn_valid_number_starting_with_zero_is_not_a_card() -> None:
    number = luhn_complete("0" + VISA[1:15])
    assert kinds(f"order {number}") == []


def test_order_number_of_card_length_is_left_alone() -> None:
    assert kinds("your order number is 1234 5678 9012 3456, it shipped") == []
    assert kinds("order one two three four five six seven eight nine oh one two three four"
                 " five six") == []


@pytest.mark.parametrize("text", [
    "call me on 555 123 4567",
    "five five five one two three four five six seven",
    "my numbers are 555 123 4567 and 555 987 6543",
    "+44 20 7946 0958",
])
def test_phone_numbers_are_not_cards(text: str) -> None:
    assert PAN not in kinds(text)


@pytest.mark.parametrize("text", [
    "one hundred twenty three dollars",
    "I paid $1,234.56 for two hundred forty five items",
    "it was four thousand five hundred twenty three dollars and twelve cents",
    "that's 123 dollars, card on file",
    "twenty nineteen and twenty twenty were hard years",
])
def test_amounts_and_plain_numbers_are_left_alone(text: str) -> None:
    assert kinds(text) == []


def test_hundreds_are_read_as_digits_in_a_card_number() -> None:
    assert redact("card forty five hundred thirty two oh one five one one two eight three oh"
                  " three six six", DEFAULT).text == "card [card ending 0366]"
    assert redact("card four five three two oh one five one one two eight three oh three"
                  " six six, code one hundred and twenty three",
                  DEFAULT).text == "card [card ending 0366], code [card security code]"


def test_pan_written_inside_a_longer_numeral_is_not_cut_out() -> None:
    assert kinds(f"tracking {VISA}1234") == []


# ----------------------------------------------------------------------------- CVV


@pytest.mark.parametrize("keyword", ["security code", "CVV", "cvc", "CVV2", "code on the back",
                                     "three digit code", "3-digit code", "verification code"])
@pytest.mark.parametrize("code", ["123", "one two three", "one twenty three", "4 5 6"])
def test_cvv_after_card_security_keyword(keyword: str, code: str) -> None:
    text = f"the {keyword} is {code}, thanks"
    assert found(text) == [(CVV, code)]


def test_four_digit_amex_cid_after_keyword() -> None:
    assert found("the security code on my amex is 1234") == [(CVV, "1234")]


def test_cvv_right_after_a_pan_without_keyword() -> None:
    assert found(f"{VISA} 123") == [(PAN, VISA), (CVV, "123")]
    assert found(f"it's {VISA_SPOKEN} one two three") == [
        (PAN, VISA_SPOKEN), (CVV, "one two three")]
    assert found(f"{VISA}, and seven seven seven") == [(PAN, VISA), (CVV, "seven seven seven")]


def test_pan_and_cvv_said_in_one_breath_near_card_word() -> None:
    text = f"my visa is {VISA_SPOKEN} nine eight seven"
    assert redact(text, DEFAULT).text == "my visa is [card ending 0366] [card security code]"


@pytest.mark.parametrize("text", [
    "my code is 123", "room 123 please", "I am calling about ticket one two three",
    "the zip code is 902", "we have 3 kids and 123 problems",
])
def test_three_digits_without_card_context_are_left_alone(text: str) -> None:
    assert kinds(text) == []


def test_cvv_keyword_far_from_digits_is_ignored() -> None:
    text = ("what's the security code? hold on, let me go and find my glasses, they were here"
            " a minute ago, ok here: 123")
    assert kinds(text) == []


def test_amount_after_card_is_not_a_cvv() -> None:
    assert found(f"card {VISA} for 250 dollars") == [(PAN, VISA)]
    assert found(f"card {VISA} for $250") == [(PAN, VISA)]


def test_cvv_that_is_not_three_or_four_digits_is_left_alone() -> None:
    assert kinds("the security code is 12345") == []


# -------------------------------------------------------------------------- expiry


@pytest.mark.parametrize("expiry", ["04/27", "4/27", "04/2027", "04-27", "04 / 27"])
def test_expiry_mm_yy_near_card_words(expiry: str) -> None:
    assert found(f"my visa, valid {expiry}") == [(EXPIRY, expiry)]


@pytest.mark.parametrize("expiry", ["oh four twenty seven", "four twenty seven", "0427",
                                    "twelve twenty seven", "oh four twenty twenty seven",
                                    "April 2027", "April twenty twenty seven", "april of '27",
                                    "Apr. 2027", "April two thousand twenty seven"])
def test_expiry_after_expires_keyword(expiry: str) -> None:
    assert found(f"it expires {expiry} I think") == [(EXPIRY, expiry)]


def test_expiry_month_name_near_a_pan() -> None:
    assert found(f"{VISA} April 2027") == [(PAN, VISA), (EXPIRY, "April 2027")]


def test_expiry_and_cvv_after_a_pan_in_one_run() -> None:
    assert found(f"{VISA} 04/27 123") == [(PAN, VISA), (EXPIRY, "04/27"), (CVV, "123")]
    text = f"{VISA_SPOKEN} oh four twenty seven one two three"
    assert found(text) == [(PAN, VISA_SPOKEN), (EXPIRY, "oh four twenty seven"),
                           (CVV, "one two three")]


def test_each_keyword_reads_only_the_digits_right_after_it() -> None:
    text = f"card number {VISA_SPOKEN} expiration twelve twenty six CVV four four four"
    assert kinds(text) == [PAN, EXPIRY, CVV]
    assert kinds("Card: 3782-822463-10005 exp 0526 cid 1234") == [PAN, EXPIRY, CVV]
    assert kinds(f"card {VISA} exp 12/26 and the CVV is 444") == [PAN, EXPIRY, CVV]


def test_expiry_then_code_after_one_keyword() -> None:
    assert found("expiry and code: 0427 123") == [(EXPIRY, "0427"), (CVV, "123")]


@pytest.mark.parametrize("text", ["see you 04/27", "the meeting is April 2027",
                                  "my son was born in April 2027", "order 0427 shipped"])
def test_dates_without_card_context_are_not_expiry(text: str) -> None:
    assert kinds(text) == []


# ----------------------------------------------------------------------------- SSN


@pytest.mark.parametrize("ssn", ["123-45-6789", "123 45 6789"])
def test_ssn_written_is_masked_without_context(ssn: str) -> None:
    assert found(f"it is {ssn}.") == [(SSN, ssn)]


@pytest.mark.parametrize("ssn", ["one two three four five six seven eight nine",
                                 "one two three, four five, six seven eight nine",
                                 "123456789", "1 2 3 4 5 6 7 8 9"])
def test_ssn_nine_digits_near_social_security(ssn: str) -> None:
    assert found(f"my social security number is {ssn}") == [(SSN, ssn)]
    assert found(f"SSN {ssn}") == [(SSN, ssn)]


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "900-12-3456", "987-65-4321",
                                 "123-00-4567", "123-45-0000"])
def test_ssn_invalid_area_group_or_serial_is_left_alone(ssn: str) -> None:
    assert kinds(f"my social security number is {ssn}") == []
    spoken = " ".join(_WORDS[int(d)] for d in ssn if d.isdigit())
    assert kinds(f"my social is {spoken}") == []


def test_nine_digits_without_ssn_context_are_left_alone() -> None:
    assert kinds("routing number 123456789") == []
    assert kinds("one two three four five six seven eight nine") == []


# ------------------------------------------------------------------ switchable kinds


@pytest.mark.parametrize("text", ["mail me at john.smith@example.com",
                                  "it's john dot smith at example dot com",
                                  "my date of birth is 03/03/1985", "call me on 555 123 4567"])
def test_switchable_kinds_are_off_by_default(text: str) -> None:
    assert kinds(text) == []


@pytest.mark.parametrize(("text", "email"), [
    ("mail me at john.smith+tag@mail.example.co.uk please", "john.smith+tag@mail.example.co.uk"),
    ("it's john dot smith at example dot com thanks", "john dot smith at example dot com"),
    ("jane_doe99 at gmail dot com", "jane_doe99 at gmail dot com"),
    ("it's j o h n at gmail dot com", "j o h n at gmail dot com"),
    ("mary underscore lee at yahoo.co.uk", "mary underscore lee at yahoo.co.uk"),
    ("JOHN DOT SMITH AT EXAMPLE DOT ORG", "JOHN DOT SMITH AT EXAMPLE DOT ORG"),
])
def test_email_written_and_spoken_when_enabled(text: str, email: str) -> None:
    assert found(text, RedactionPolicy(email=True)) == [(EMAIL, email)]


@pytest.mark.parametrize("text", ["I'm at home right now", "look at the dot on the map",
                                  "meet at example dot"])
def test_at_without_a_domain_is_not_email(text: str) -> None:
    assert kinds(text, RedactionPolicy(email=True)) == []


@pytest.mark.parametrize("date", ["03/03/1985", "3.3.85", "1985-03-03", "March 3rd, 1985",
                                  "March third nineteen eighty five", "the third of March 1985",
                                  "oh three oh three nineteen eighty five", "March 1985"])
def test_date_of_birth_near_birth_words_when_enabled(date: str) -> None:
    policy = RedactionPolicy(dob=True)
    assert found(f"my date of birth is {date}", policy) == [(DOB, date)]
    assert found(f"I was born {date}", policy) == [(DOB, date)]
    assert found(f"DOB: {date}", policy) == [(DOB, date)]


def test_dates_without_birth_words_are_not_dob() -> None:
    assert kinds("the parcel left on March 3rd, 1985 believe it or not",
                 RedactionPolicy(dob=True)) == []


@pytest.mark.parametrize(("text", "phone"), [
    ("call me on (555) 123-4567 tonight", "(555) 123-4567"),
    ("it's +44 20 7946 0958", "+44 20 7946 0958"),
    ("five five five one two three four five six seven",) * 2,
    ("1-800-555-0199", "1-800-555-0199"),
    ("my cell is 555-0199", "555-0199"),
])
def test_phone_numbers_when_enabled(text: str, phone: str) -> None:
    assert found(text, RedactionPolicy(phone=True)) == [(PHONE, phone)]


def test_short_numbers_are_not_phones() -> None:
    assert kinds("order 5550199 is late", RedactionPolicy(phone=True)) == []


# --------------------------------------------------------------------- mask_digits


def test_mask_digits_keeps_last_four_of_a_pan() -> None:
    assert mask_digits(VISA) == "************0366"
    assert mask_digits(AMEX) == "***********0005"


@pytest.mark.parametrize("entry", ["123", "1234", "123456", "123456789012"])
def test_mask_digits_masks_short_entries_entirely(entry: str) -> None:
    assert mask_digits(entry) == "*" * len(entry)


@pytest.mark.parametrize("entry", ["1234#", "12 34", "١٢٣٤", "abc"])
def test_mask_digits_rejects_non_digits(entry: str) -> None:
    with pytest.raises(ValueError):
        mask_digits(entry)


def test_mask_digits_of_nothing_is_nothing() -> None:
    assert mask_digits("") == ""


# ---------------------------------------------------------------------------- JSON


def test_json_strings_are_redacted_at_every_depth_with_pointer_paths() -> None:
    args: JsonValue = {"note": f"card {VISA}", "items": [{"text": "fine"},
                                                         {"text": f"x {VISA_SPOKEN}"}]}
    new, findings = redact_json(args, DEFAULT)
    assert new == {"note": "card [card ending 0366]",
                   "items": [{"text": "fine"}, {"text": "x [card ending 0366]"}]}
    assert findings == (JsonFinding("/note", PAN, 5, 21),
                        JsonFinding("/items/1/text", PAN, 2, 2 + len(VISA_SPOKEN)))


def test_json_number_that_is_a_pan_becomes_the_mask() -> None:
    new, findings = redact_json({"card": int(VISA), "qty": 3, "price": 12.5}, DEFAULT)
    assert new == {"card": "[card ending 0366]", "qty": 3, "price": 12.5}
    assert findings == (JsonFinding("/card", PAN, 0, 16),)


def test_json_integral_float_pan_becomes_the_mask() -> None:
    new, _ = redact_json([float(4111111111111111)], DEFAULT)
    assert new == ["[card ending 1111]"]


def test_json_keys_are_context_for_their_values() -> None:
    args: JsonValue = {"cvv": "123", "security_code": 456, "exp_month": "04", "expYear": 2027,
                       "card": {"exp": "04/27", "cvc": "999"}, "order": "123"}
    new, findings = redact_json(args, DEFAULT)
    assert new == {"cvv": "[card security code]", "security_code": "[card security code]",
                   "exp_month": "[card expiry]", "expYear": "[card expiry]",
                   "card": {"exp": "[card expiry]", "cvc": "[card security code]"},
                   "order": "123"}
    assert [f.path for f in findings] == ["/cvv", "/security_code", "/exp_month", "/expYear",
                                          "/card/exp", "/card/cvc"]


def test_json_leaves_other_values_and_the_input_alone() -> None:
    args: JsonValue = {"ok": True, "none": None, "n": 1234567890123, "f": 1.5,
                       "list": [1, "two", False]}
    before = repr(args)
    new, findings = redact_json(args, EVERYTHING)
    assert new == args and findings == ()
    assert repr(args) == before


def test_json_keys_are_redacted_and_paths_escaped() -> None:
    new, findings = redact_json({f"a/b~{VISA}": "x"}, DEFAULT)
    assert new == {"a/b~[card ending 0366]": "x"}
    assert findings == (JsonFinding("/a~1b~0[card ending 0366]", PAN, 4, 20, in_key=True),)


def test_json_root_string_has_empty_path() -> None:
    assert redact_json(VISA, DEFAULT) == ("[card ending 0366]", (JsonFinding("", PAN, 0, 16),))


def test_json_rejects_non_json_values() -> None:
    with pytest.raises(TypeError):
        redact_json({"x": (1, 2)}, DEFAULT)  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        redact_json({1: "x"}, DEFAULT)  # type: ignore[dict-item]


def test_json_switchable_kinds_follow_the_policy() -> None:
    args: JsonValue = {"email": "a.b@example.com", "phone": "555 123 4567"}
    assert redact_json(args, DEFAULT) == (args, ())
    new, _ = redact_json(args, EVERYTHING)
    assert new == {"email": "[email]", "phone": "[phone]"}


# ----------------------------------------------------------------------- streaming


def state(r: StreamingRedactor) -> StreamState:
    return r.state   # a call, so mypy does not carry narrowing from one assert to the next


def test_stream_pan_spoken_across_two_caller_turns_is_caught() -> None:
    r = StreamingRedactor(DEFAULT)
    assert r.feed("four five three two zero one five one") == ()
    assert state(r) is StreamState.HOLDING
    assert r.feed("one two eight three zero three six six") == ()   # digits may go on
    first, second = r.flush()
    assert state(r) is StreamState.EMPTY
    assert (first.seq, first.text) == (0, "[card ending 0366]")
    assert (second.seq, second.text) == (1, "[card ending 0366, continued]")
    assert first.findings == (Finding(PAN, 0, 37),)
    assert second.findings == (Finding(PAN, 0, 38),)


def test_stream_piece_without_open_digits_is_released_at_once() -> None:
    r = StreamingRedactor(DEFAULT)
    (out,) = r.feed(f"my card is {VISA}, thanks")
    assert out.text == "my card is [card ending 0366], thanks" and state(r) is StreamState.EMPTY


def test_stream_digits_then_joiners_still_hold() -> None:
    r = StreamingRedactor(DEFAULT)
    assert r.feed("card's four five three two, uh,") == ()
    assert r.feed("zero one five one one two eight three zero three six six") == ()
    out = r.flush()
    assert [o.text for o in out] == ["card's [card ending 0366]", "[card ending 0366, continued]"]


def test_stream_flush_releases_held_pieces() -> None:
    r = StreamingRedactor(DEFAULT)
    assert r.feed("my order is 1234") == ()
    (out,) = r.flush()
    assert out.text == "my order is 1234" and out.findings == ()
    assert r.flush() == () and state(r) is StreamState.EMPTY


def test_stream_words_end_the_hold() -> None:
    r = StreamingRedactor(DEFAULT)
    assert r.feed("four five three two zero one five one") == ()
    first, second = r.feed("sorry, wrong card")
    assert first.text == "four five three two zero one five one" and second.seq == 1


def test_stream_hold_is_bounded() -> None:
    r = StreamingRedactor(DEFAULT, max_hold_chars=60)
    assert r.feed("one two three four five") == ()
    out = r.feed("six seven eight nine zero one two three four five six")
    assert len(out) == 2 and state(r) is StreamState.EMPTY


def test_stream_observed_agent_question_makes_caller_digits_a_cvv() -> None:
    r = StreamingRedactor(DEFAULT)
    r.observe("Thanks. And the three digit code on the back of the card?")
    assert r.feed("one two three") == ()
    (out,) = r.flush()
    assert out.text == "[card security code]"


def test_stream_code_after_pan_in_previous_turn_is_a_cvv() -> None:
    r = StreamingRedactor(DEFAULT)
    (first,) = r.feed(f"{VISA} is the number.")
    r.observe("Got it.")
    assert r.feed("one two three") == ()
    (second,) = r.flush()
    assert first.text == "[card ending 0366] is the number." and second.text == (
        "[card security code]")


def test_stream_context_is_redacted_text_only() -> None:
    r = StreamingRedactor(DEFAULT)
    r.observe(f"I have your card {VISA}.")
    r.feed("okay")
    assert VISA not in r._context and "0151" not in r._context


def test_stream_fragments_hold_a_word_that_may_go_on() -> None:
    r = StreamingRedactor(DEFAULT, separator="")
    assert r.feed("my card is four five three two zero one fi") == ()
    assert r.feed("ve one one two eight three zero three six six") == ()
    released = r.feed(" thanks.")
    assert "".join(x.text for x in released) == (
        "my card is [card ending 0366][card ending 0366, continued] thanks.")


def test_stream_turn_ending_in_a_short_luhn_prefix_keeps_holding() -> None:
    r = StreamingRedactor(DEFAULT)
    head = "two nine. nine o thirty one. oh five three five one. double six"   # 13: Luhn-valid
    assert r.feed(head) == ()
    first, second = r.feed("nine three nine, thanks")
    assert (first.text, second.text) == (
        "[card ending 6939]", "[card ending 6939, continued], thanks")


def test_stream_turn_ending_in_a_pan_is_held_for_its_expiry() -> None:
    r = StreamingRedactor(DEFAULT)
    assert r.feed(f"card {VISA}") == ()
    assert r.feed("oh four twenty seven") == ()
    out = r.feed("is that all?")
    assert [x.text for x in out] == ["card [card ending 0366]", "[card expiry]", "is that all?"]


def test_stream_seq_counts_every_piece_in_order() -> None:
    r = StreamingRedactor(DEFAULT)
    seqs = [x.seq for piece in ["hi", "one two", "three", "bye"] for x in r.feed(piece)]
    seqs += [x.seq for x in r.flush()]
    assert seqs == [0, 1, 2, 3]


def test_stream_split_pan_property() -> None:
    rng = random.Random(7)
    for _ in range(200):
        pan = random_pan(rng, rng.choice([15, 16, 16, 16, 19]))
        words = spoken_number(rng, pan, card_context=False).split(" ")
        if len(words) < 2:
            continue
        cut = rng.randint(1, len(words) - 1)
        r = StreamingRedactor(DEFAULT)
        out = [*r.feed(" ".join(words[:cut])), *r.feed(" ".join(words[cut:])), *r.flush()]
        joined = " ".join(x.text for x in out)
        assert f"[card ending {pan[-4:]}]" in joined, (pan, words)
        assert all(f.kind == PAN for x in out for f in x.findings)


# ------------------------------------------------------------------------ property


def test_random_luhn_valid_pans_in_random_spoken_formats_are_caught() -> None:
    rng = random.Random(20240611)
    for _ in range(1500):
        pan = random_pan(rng, rng.randint(13, 19))
        context = rng.random() < 0.5
        spoken = spoken_number(rng, pan, card_context=context)
        prefix = rng.choice(["my card number is ", "card: ", "the long number on my visa is "]
                            if context else ["", "it's ", "okay so "])
        suffix = rng.choice(["", " thanks", ", okay?", ". bye"])
        text = prefix + spoken + suffix
        result = redact(text, DEFAULT)
        assert result.findings == (Finding(PAN, len(prefix), len(prefix) + len(spoken)),), text
        assert result.text == f"{prefix}[card ending {pan[-4:]}]{suffix}", text


def test_random_luhn_failing_numbers_in_the_same_formats_are_left_alone() -> None:
    rng = random.Random(99)
    for _ in range(1500):
        pan = random_pan(rng, rng.randint(13, 16))
        wrong = pan[:-1] + str((int(pan[-1]) + rng.randint(1, 9)) % 10)
        context = rng.random() < 0.5
        text = ("card number " if context else "order ") + spoken_number(
            rng, wrong, card_context=context)
        assert PAN not in kinds(text), text
