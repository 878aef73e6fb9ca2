"""Redaction core: find card data, SSNs and (if switched on) e-mail, dates of birth and phone
numbers in transcripts, tool payloads and log lines, and mask them before anything is stored.

Pure: no I/O, no clock, no logging. Rules: PCI DSS v4 3.3 (no CVV/expiry kept near a PAN),
3.4.1 (masked PAN shows at most BIN + last 4: we keep the last 4 only); GDPR Art. 5(1)(c).
A ``Finding`` says *where* (offsets in the original text) and *what kind*, never the value.

Spoken-number grammar (how a speech-to-text transcript reads digits; case-insensitive):

* digit: ``0``-``9`` numerals, ``zero|oh|o|nought``, ``one``..``nine``, ``niner``;
  ``double X`` / ``triple X`` repeat a one-digit X; ``ten``..``nineteen`` are two digits;
  ``forty``, ``forty five`` / ``forty-five`` are two digits; ``X hundred [and] [Y]`` is
  X then Y padded to two digits (``one hundred five`` = 105, ``forty five hundred`` = 4500).
* joiners inside one digit run: whitespace, ``, . - / ( )``, ``slash``, ``dash`` (hard);
  ``and``, ``uh``, ``um``, ``sorry``, ``okay``, ``yeah``, ``so``, ``wait``... (soft; they
  join only near card words), at most 3 joiners in a row.
  Anything else ends the run, so ``one hundred twenty three dollars`` never reaches 13 digits.
* groups: a new group starts after punctuation or a soft joiner and around every written
  numeral of 2+ digits (``4532 0151`` is two groups; ``four five three two`` is one).

PAN (Luhn; 13-16 digits not starting with 0, or 17-19 starting with 2-6). A run of 13-16
digits is a PAN only as a whole, so a Luhn-failing order number is never cut down to a
Luhn-passing window. In a run of 17+ digits, windows starting with 2-6 are tried, best by
length (16, 15, 19, 14, 13, 17, 18), prefix before suffix. Without card words nearby, a window
must touch the start or end of the run and either be group-aligned or leave one stray leading
digit or a rest that reads as expiry/code (PAN, expiry and CVV said in one breath), and
``and``/fillers split the run (``555 123 4567 and 555 987 6543`` are two numbers). Near card
words (``card``, ``visa``, ``security code``, ``expir``...), ``and``/fillers join, and any
group-aligned window or any prefix/suffix window counts.
CVV/expiry: the first unclaimed digit run after a PAN (within 40 chars), or the digit run right
after a CVV/expiry keyword (within 60), is read as ``MMYY``/``MMYYYY``/``MYY`` (MYY and a bare
``20YY`` only after an expiry keyword), a 3-4 digit code, or one of each; ``MM/YY`` and
``April 2027`` count near card words or a PAN. Amounts (``$``, ``dollars``...) are never codes.

Knowingly not handled: ``thousand`` (``two thousand`` breaks a run), homophones (``for``,
``to``, ``won``), letters in digit runs, a PAN split by a word that is not a filler (or by a
filler with no card word nearby), a PAN inside a longer numeral written without separators,
ITINs (9xx), e-mail local parts said as separate words (``john smith at ...`` masks ``smith
at ...`` only), years alone as dates of birth. Cost of catching PANs said with their code:
random 17-19 digit runs are masked as cards 13% of the time (29% near card words), and a
17-19 digit numeral alone (an ID in a tool result) 6% of the time (measured).
"""

from __future__ import annotations

import bisect
import enum
import re
from dataclasses import dataclass
from typing import NamedTuple, Union

__all__ = [
    "ALWAYS_ON", "CVV", "DOB", "EMAIL", "EXPIRY", "PAN", "PHONE", "SSN",
    "Finding", "JsonFinding", "JsonValue", "Redacted", "RedactionPolicy", "Released",
    "StreamState", "StreamingRedactor", "mask_digits", "redact", "redact_json",
]

PAN, CVV, EXPIRY, SSN = "pan", "cvv", "expiry", "ssn"
EMAIL, DOB, PHONE = "email", "dob", "phone"
ALWAYS_ON: frozenset[str] = frozenset({PAN, CVV, EXPIRY, SSN})

JsonValue = Union[dict[str, "JsonValue"], list["JsonValue"], str, int, float, bool, None]


@dataclass(frozen=True, slots=True)
class RedactionPolicy:
    """Which kinds are masked. Card data and SSNs are always on; the rest are opt-in."""

    email: bool = False
    dob: bool = False
    phone: bool = False

    @property
    def kinds(self) -> frozenset[str]:
        flags = ((EMAIL, self.email), (DOB, self.dob), (PHONE, self.phone))
        return ALWAYS_ON | {kind for kind, on in flags if on}


@dataclass(frozen=True, slots=True)
class Finding:
    """``text[start:end]`` of the original text was masked as ``kind``."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Redacted:
    text: str
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class JsonFinding:
    """A finding in a JSON string; ``path`` is an RFC 6901 pointer (``""`` is the root).

    ``in_key``: the finding is in the member's key, not its value. Offsets are into the
    original string, or into ``str(int(number))`` for a number (which becomes the mask string).
    """

    path: str
    kind: str
    start: int
    end: int
    in_key: bool = False


_MASKS = {CVV: "[card security code]", EXPIRY: "[card expiry]", SSN: "[SSN]",
          EMAIL: "[email]", DOB: "[date of birth]", PHONE: "[phone]"}

# ---------------------------------------------------------------------------- tokens

_TOKEN_RE = re.compile(
    r"(?P<mask>\[(?:card ending \d{4}|card security code|card expiry|SSN|email|date of birth"
    r"|phone)(?:, continued)?\])|(?P<word>[A-Za-z0-9]+)|(?P<punct>\S)")
_UNITS = {"zero": "0", "oh": "0", "o": "0", "nought": "0", "one": "1", "two": "2", "three": "3",
          "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
          "niner": "9"}
_TEENS = {w: str(10 + i) for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: str(2 + i) for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())}
_REPEAT = {"double": 2, "triple": 3}
_SOFT = frozenset({"and", "uh", "um", "umm", "er", "erm", "ah", "hmm", "mm", "sorry", "okay",
                   "ok", "yeah", "yes", "so", "then", "wait", "like", "right"})
_HARD = frozenset({"slash", "dash"})
_JOIN_PUNCT = frozenset(",.-/()")
_MAX_JOINERS = 3
_MASK, _WORD, _PUNCT = 0, 1, 2


class _Tok(NamedTuple):
    kind: int
    text: str
    low: str
    start: int
    end: int


@dataclass(slots=True)
class _Unit:
    """One spoken or written number: ``digits`` from ``text[start:end]``."""

    digits: str
    start: int
    end: int
    group: bool   # starts a digit group
    soft: bool    # a soft joiner (``and``, ``uh``) separates it from the previous unit
    multi: bool   # a written numeral of 2+ digits


_TOK_KINDS = {"mask": _MASK, "word": _WORD, "punct": _PUNCT}


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    new, kinds = tuple.__new__, _TOK_KINDS
    for m in _TOKEN_RE.finditer(text):
        t = m.group()
        out.append(new(_Tok, (kinds[m.lastgroup or "punct"], t, t.lower(), m.start(), m.end())))
    return out


def _small(toks: list[_Tok], i: int) -> tuple[str, int] | None:
    """A unit word, a teen, or tens [-] [unit 1-9] at ``toks[i]``: (digits, next index)."""
    w = toks[i].low
    if w in _TEENS:
        return _TEENS[w], i + 1
    if w in _TENS:
        j = i + 2 if i + 1 < len(toks) and toks[i + 1].text == "-" else i + 1
        if j < len(toks) and _UNITS.get(toks[j].low, "0") != "0":
            return _TENS[w] + _UNITS[toks[j].low], j + 1
        return _TENS[w] + "0", i + 1
    if w in _UNITS:
        return _UNITS[w], i + 1
    return None


def _phrase(toks: list[_Tok], i: int) -> tuple[str, int] | None:
    """The number phrase starting at ``toks[i]``, if any: (digits, next index)."""
    tok = toks[i]
    if tok.kind != _WORD:
        return None
    if tok.text.isdigit():
        return tok.text, i + 1
    if tok.low in _REPEAT:
        if i + 1 < len(toks):
            nxt = toks[i + 1]
            digit = _UNITS.get(nxt.low) or (nxt.text if len(nxt.text) == 1 and nxt.text.isdigit()
                                            else None)
            if digit is not None:
                return digit * _REPEAT[tok.low], i + 2
        return None
    small = _small(toks, i)
    if small is None:
        return None
    digits, j = small
    if j < len(toks) and toks[j].low == "hundred" and digits[0] != "0":
        k = j + 1
        if k + 1 < len(toks) and toks[k].low == "and" and _small(toks, k + 1) is not None:
            k += 1
        rest = _small(toks, k) if k < len(toks) else None
        if rest is not None and rest[0] != "0":
            return digits + rest[0].rjust(2, "0"), rest[1]
        return digits + "00", j + 1
    return digits, j


def _scan(toks: list[_Tok]) -> tuple[list[list[_Unit]], bool]:
    """Digit runs, and whether the last run is still open at the end of the text."""
    runs: list[list[_Unit]] = []
    cur: list[_Unit] = []
    joiners, punct, soft = 0, False, False
    i = 0
    while i < len(toks):
        tok = toks[i]
        found = _phrase(toks, i)
        if found is not None:
            digits, j = found
            multi = tok.text.isdigit() and len(tok.text) > 1
            if cur:
                group = punct or soft or multi or cur[-1].multi
                cur.append(_Unit(digits, tok.start, toks[j - 1].end, group, soft, multi))
            else:
                cur = [_Unit(digits, tok.start, toks[j - 1].end, True, False, multi)]
            joiners, punct, soft = 0, False, False
            i = j
            continue
        if cur:
            if tok.text in _JOIN_PUNCT or tok.low in _HARD:
                joiners, punct = joiners + 1, True
            elif tok.low in _SOFT:
                joiners, soft = joiners + 1, True
            else:
                joiners = _MAX_JOINERS + 1
            if joiners > _MAX_JOINERS:
                runs.append(cur)
                cur = []
        i += 1
    if cur:
        runs.append(cur)
    return runs, bool(cur) or bool(toks and toks[-1].low in _REPEAT)


# -------------------------------------------------------------------------- patterns

_KW_RE = re.compile(r"""(?ix)\b(?:
   (?P<cvv>security\s+(?:code|number)|verification\s+(?:code|number|value)
     |card\s+(?:code|verification)|cvv2?|cvc2?|csc|cid|code\s+on\s+the\s+back
     |back\s+of\s+(?:the|your|my)\s+card|(?:three|four|3|4)[\s-]digit\s+code)
  |(?P<exp>expir\w*|exp(?:\s+date)?|valid\s+(?:thru|through|until)|good\s+(?:thru|through))
  |(?P<ssn>social\s+security(?:\s+number)?|social|ssn)
  |(?P<birth>date\s+of\s+birth|birth\s*date|birthday|born|d\.?o\.?b)
  |(?P<phone>phone|cell|mobile|telephone|call\s+(?:me|back)|reach\s+me)
  |(?P<card>card|credit|debit|visa|master\s*card|amex|american\s+express|discover|maestro
     |diners|jcb|long\s+number)
)\b""")
_CARDISH = ("card", "cvv", "exp")
# First words of _KW_RE's phrases: the regex is only tried where one of these starts.
_KW_FIRST = frozenset("""security verification card cvv cvv2 cvc cvc2 csc cid code back three four
    3 4 exp expiry expires expired expiring expiration valid good social ssn date birth birthdate
    birthday born dob d phone cell mobile telephone call reach credit debit visa master mastercard
    amex american discover maestro diners jcb long""".split())
_U = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_TEEN = r"(?:ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"
_TY = r"(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
_TYU = rf"{_TY}(?:[\s-]+{_U})?"
_SPOKEN_YEAR = (rf"(?:two\s+thousand(?:\s+and)?(?:[\s-]+(?:{_TYU}|{_TEEN}|{_U}))?"
                rf"|(?:nineteen|twenty)[\s-]+(?:oh[\s-]+{_U}|{_TEEN}|{_TYU})|{_TYU}|nineteen)")
_YEAR = rf"(?:\d{{4}}|'?\d{{2}}|{_SPOKEN_YEAR})"
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_ORD = (r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth"
        r"|(?:thir|four|fif|six|seven|eigh|nine)teenth|twentieth|thirtieth"
        rf"|(?:twenty|thirty)[\s-]+(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth))")
_DAY = rf"(?:\d{{1,2}}(?:st|nd|rd|th)?|{_ORD}|{_TEEN}|{_TYU}|{_U})"
_MONTH_YEAR_RE = re.compile(rf"(?i)\b{_MONTH}(?:\s+of)?,?\s+{_YEAR}\b")
_EXPIRY_RE = re.compile(r"(?<![\d/])(?:0?[1-9]|1[0-2])\s?[/-]\s?(?:20\d\d|\d\d)(?![\d/])")
_DATE_RE = re.compile(
    rf"(?i)(?<!\d)(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})"
    rf"|\d{{4}}-\d{{1,2}}-\d{{1,2}})(?!\d)"
    rf"|\b{_MONTH}\s+(?:the\s+)?{_DAY}(?:,?\s+(?:of\s+)?{_YEAR})?\b"
    rf"|\b(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+{_YEAR})?\b"
    rf"|\b{_MONTH}(?:\s+of)?,?\s+{_YEAR}\b")
_SSN_RE = re.compile(r"(?<![\d-])(?<!\d )\d{3}([- ])\d{2}\1\d{4}(?![\d]|[- ]\d)")
_EMAIL_RE = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_TLD = (r"(?:com|net|org|edu|gov|mil|io|co|uk|us|ca|de|fr|es|it|nl|eu|au|nz|ie|in|info|biz|me"
        r"|ai|app|dev|email|online|xyz)")
_ATOM = r"(?:[a-z0-9](?:\s+[a-z0-9](?![a-z0-9])){1,40}|[a-z0-9]{1,64})"
_SEP = r"(?:\s+(?:dot|period|underscore|dash|hyphen|plus)\s+|[._+-])"
_SPOKEN_EMAIL_RE = re.compile(
    rf"(?i)(?<!')\b{_ATOM}(?:{_SEP}{_ATOM}){{0,8}}(?:\s+at\s+|\s*@\s*)"
    rf"[a-z0-9-]{{1,63}}(?:(?:\s+dot\s+|\.)[a-z0-9-]{{1,63}}){{0,6}}(?:\s+dot\s+|\.){_TLD}\b")
_AMOUNT_AFTER_RE = re.compile(
    r"\s*(?:%|(?:dollars?|bucks|cents?|euros?|pounds?|quid|percent|usd|eur|gbp)\b)", re.I)
_LEN_RANK = {16: 0, 15: 1, 19: 2, 14: 3, 13: 4, 17: 5, 18: 6}


def _luhn(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        v = ord(ch) - 48
        if k % 2:
            v = v * 2 - 9 if v > 4 else v * 2
        total += v
    return total % 10 == 0


def _is_pan(digits: str) -> bool:
    """13-16 digits not starting with 0, or 17-19 starting with 2-6 (the brands issuing
    those lengths: Visa, Mastercard/Maestro, Discover, JCB, UnionPay, Mir), and Luhn."""
    n = len(digits)
    return ((13 <= n <= 16 and digits[0] != "0") or (17 <= n <= 19 and digits[0] in "23456")) \
        and _luhn(digits)


def _exp_ok(d: str, myy: bool) -> bool:
    """MMYY, MMYYYY; after an expiry keyword (``myy``) also MYY and a bare 20YY."""
    if len(d) == 3 or (len(d) == 4 and d[:2] == "20" and myy):
        return myy and d[0] != "0"
    return len(d) in (4, 6) and 1 <= int(d[:2]) <= 12 and (len(d) == 4 or d[2:4] == "20")


def _ssn_ok(d: str) -> bool:
    return (len(d) == 9 and d[:3] not in ("000", "666") and d[0] != "9" and d[3:5] != "00"
            and d[5:] != "0000")


def _date_ok(d: str) -> bool:
    a, b = int(d[:2]), int(d[2:4])
    if len(d) == 8 and d[:2] in ("19", "20") and 1 <= b <= 12:
        return True   # YYYYMMDD
    return len(d) in (6, 8) and ((1 <= a <= 12 and 1 <= b <= 31) or (1 <= a <= 31 and 1 <= b <= 12))


def _pan_windows(seg: list[_Unit], loose: bool) -> list[tuple[int, int]]:
    """Unit index ranges of the PANs in one run segment (see the module doc)."""
    found: list[tuple[int, int]] = []
    todo = [(0, len(seg))]
    while todo:
        lo, hi = todo.pop()
        window = _best_window(seg[lo:hi], loose)
        if window is not None:
            found.append((lo + window[0], lo + window[1]))
            todo += [(lo, lo + window[0]), (lo + window[1], hi)]
    return sorted(found)


def _best_window(seg: list[_Unit], loose: bool) -> tuple[int, int] | None:
    digits = "".join(u.digits for u in seg)
    cum = [0]
    for u in seg:
        cum.append(cum[-1] + len(u.digits))
    total, n = cum[-1], len(seg)
    if total < 13:
        return None
    if total <= 19 and _is_pan(digits):
        return 0, n
    if total < 17:
        return None
    best: tuple[tuple[int, int, int], int, int] | None = None
    for i in range(n):
        for j in range(i + 1, n + 1):
            length = cum[j] - cum[i]
            if length > 19:
                break
            if length < 13:
                continue
            anchored = i == 0 or j == n
            aligned = seg[i].group and (j == n or seg[j].group)
            if digits[cum[i]] not in "23456":   # a window starts like a card
                continue
            if aligned:
                ok = loose or anchored
            else:   # unaligned: the rest is one stray digit or reads as expiry/code
                ok = anchored and (loose or (
                    i == 1 and j == n and len(seg[0].digits) == 1) or (
                    i == 0 and bool(_classify([u.digits for u in seg[j:j + 10]], PAN))
                    and total - cum[j] <= 10))
            rank = (_LEN_RANK[length], 0 if i == 0 else 1 if j == n else 2, i)
            if ok and (best is None or rank < best[0]) and _is_pan(digits[cum[i]:cum[j]]):
                best = (rank, i, j)
    return None if best is None else (best[1], best[2])


def _classify(parts: list[str], hint: str) -> list[tuple[int, int, str]]:
    """Read a short digit run as expiry, code, or one of each: (unit from, unit to, kind)."""
    myy = hint == EXPIRY
    whole = "".join(parts)
    if len(whole) > 10:   # MMYYYY and a 4-digit code at most
        return []
    order = (EXPIRY, CVV) if hint != CVV else (CVV, EXPIRY)
    for kind in order:
        if (kind == CVV and len(whole) in (3, 4)) or (kind == EXPIRY and _exp_ok(whole, myy)):
            return [(0, len(parts), kind)]
    for s in range(1, len(parts)):
        a, b = "".join(parts[:s]), "".join(parts[s:])
        if _exp_ok(a, myy) and len(b) in (3, 4):
            return [(0, s, EXPIRY), (s, len(parts), CVV)]
        if len(a) in (3, 4) and _exp_ok(b, myy):
            return [(0, s, CVV), (s, len(parts), EXPIRY)]
    return []


# -------------------------------------------------------------------------- detector

_Hit = tuple[int, int, str, str]   # start, end, kind, mask


class _Detector:
    """One pass over one text; ``base``: where the text starts after the context prefix."""

    def __init__(self, full: str, base: int, policy: RedactionPolicy) -> None:
        self.text, self.policy = full, policy
        toks = _tokenize(full)
        self.anchors = [(t.start, t.end) for t in toks if t.text.startswith("[card ending")]
        self.anchor_ends = [e for _, e in self.anchors]
        self.runs = [r for r in _scan(toks)[0] if r[0].start >= base]
        self.kw: dict[str, list[tuple[int, int]]] = {k: [] for k in (*_CARDISH, "ssn", "birth",
                                                                      "phone")}
        self.at_sign = False   # an e-mail is possible: "@" or the word "at"
        for t in toks:
            if t.low in _KW_FIRST or t.low.startswith("expir"):
                m = _KW_RE.match(full, t.start)
                if m is not None:
                    self.kw[m.lastgroup or "card"].append(m.span())
            self.at_sign = self.at_sign or t.low in ("@", "at")
        self.hits: list[_Hit] = []
        self.claimed: list[tuple[int, int]] = []   # the hits' spans, sorted, disjoint
        self.pans: list[tuple[int, int]] = []
        self.units = [(u.start, r, k) for r, run in enumerate(self.runs) for k, u in enumerate(run)]

    def run(self) -> list[_Hit]:
        if self.policy.email and self.at_sign:
            for rx in (_EMAIL_RE, _SPOKEN_EMAIL_RE):
                for m in rx.finditer(self.text):
                    self._add(m.start(), m.end(), EMAIL)
        if self.runs:
            self._digit_rules()
        if self.policy.dob:
            self._dob()
        if self.policy.phone:
            self._phone()
        return sorted(self.hits)

    def _digit_rules(self) -> None:
        self._pans()
        for m in _SSN_RE.finditer(self.text):
            if _ssn_ok(re.sub(r"\D", "", m.group())):
                self._add(m.start(), m.end(), SSN)
        anchors = sorted(self.pans + self.anchors)
        ends = [e for _, e in anchors]
        cardish = anchors or any(self.kw[k] for k in _CARDISH)
        for rx in (_EXPIRY_RE, _MONTH_YEAR_RE) if cardish else ():
            for m in rx.finditer(self.text):
                s, e = m.span()
                if self._near(_CARDISH, s, e, 80, 40) or _any_in(ends, s - 120, s + 120):
                    self._add(s, e, EXPIRY)
        for _, end in anchors:
            self._tail(end, 40, PAN)
        for kind, hint in (("exp", EXPIRY), ("cvv", CVV)):
            for _, end in self.kw[kind]:
                self._tail(end, 60, hint)
        for _, end in self.kw["ssn"]:
            units = self._after(end, 60)
            if sum(len(u.digits) for u in units) == 9 and _ssn_ok("".join(u.digits for u in units)):
                self._add(units[0].start, units[-1].end, SSN)

    def _free(self, s: int, e: int) -> bool:
        i = bisect.bisect_left(self.claimed, (s, s))
        return not ((i and self.claimed[i - 1][1] > s) or (
            i < len(self.claimed) and self.claimed[i][0] < e))

    def _add(self, s: int, e: int, kind: str, mask: str | None = None) -> None:
        if self._free(s, e):
            self.hits.append((s, e, kind, mask or _MASKS[kind]))
            bisect.insort(self.claimed, (s, e))

    def _near(self, kinds: tuple[str, ...], s: int, e: int, before: int, after: int) -> bool:
        """A keyword of ``kinds`` ends up to ``before`` chars before, or starts up to
        ``after`` chars after, ``text[s:e]``."""
        for kind in kinds:
            spans = self.kw[kind]   # in text order: starts and ends both sorted
            for i in range(bisect.bisect_left(spans, (s - before - 64, 0)), len(spans)):
                ks, ke = spans[i]
                if ks > e + after:
                    break
                if s - before <= ke <= e or e <= ks:
                    return True
        return False

    def _before(self, s: int) -> int:
        """Index of the last non-space character before ``s`` (-1 if none)."""
        i = s - 1
        while i >= 0 and self.text[i].isspace():
            i -= 1
        return i

    def _amount(self, s: int, e: int) -> bool:
        i = self._before(s)
        return ((i >= 0 and self.text[i] in "$€£")
                or _AMOUNT_AFTER_RE.match(self.text, e) is not None)

    def _pans(self) -> None:
        for run in self.runs:
            loose = self._near(_CARDISH, run[0].start, run[-1].end, 80, 40) or _any_in(
                self.anchor_ends, run[0].start - 80, run[0].start)
            for seg in [run] if loose else _split_soft(run):
                for i, j in _pan_windows(seg, loose):
                    digits = "".join(u.digits for u in seg[i:j])
                    s, e = seg[i].start, seg[j - 1].end
                    self._add(s, e, PAN, f"[card ending {digits[-4:]}]")
                    self.pans.append((s, e))

    def _after(self, pos: int, limit: int, skip: bool = False) -> list[_Unit]:
        """The free units of the first soft segment starting within ``limit`` chars of
        ``pos``; with ``skip``, claimed units (a PAN's expiry, found first) are stepped over
        and not counted, else a claimed first unit means there is nothing to read."""
        for idx in range(bisect.bisect_left(self.units, (pos, -1, -1)), len(self.units)):
            _, r, k = self.units[idx]
            run = self.runs[r]
            u = run[k]
            if u.start - pos > limit + 200:
                return []
            if not self._free(u.start, u.end):
                if skip:
                    continue
                return []
            lo = bisect.bisect_left(self.claimed, (pos, pos))
            hi = bisect.bisect_left(self.claimed, (u.start, u.start))
            taken = sum(min(he, u.start) - max(hs, pos) for hs, he in self.claimed[lo:hi])
            if u.start - pos - taken > limit:
                return []
            out = [u]
            for v in run[k + 1:]:
                if v.soft or not self._free(v.start, v.end):
                    break
                out.append(v)
            return out
        return []

    def _tail(self, pos: int, limit: int, hint: str) -> None:
        units = self._after(pos, limit, skip=hint == PAN)
        if not units or self._amount(units[0].start, units[-1].end):
            return
        for i, j, kind in _classify([u.digits for u in units], hint):
            self._add(units[i].start, units[j - 1].end, kind)

    def _dob(self) -> None:
        for _, end in self.kw["birth"]:
            m = _DATE_RE.search(self.text, end, end + 120)
            units = self._after(end, 40)
            digits = "".join(u.digits for u in units)
            run_ok = len(digits) in (6, 8) and _date_ok(digits)
            if m and m.start() - end <= 40 and not (run_ok and units[0].start < m.start()):
                self._add(m.start(), m.end(), DOB)
            elif run_ok:
                self._add(units[0].start, units[-1].end, DOB)

    def _phone(self) -> None:
        for run in self.runs:
            stretch: list[_Unit] = []
            for u in run:
                free = self._free(u.start, u.end)
                if free and not u.soft:
                    stretch.append(u)
                    continue
                if stretch:
                    self._phone_stretch(stretch)
                stretch = [u] if free else []
            if stretch:
                self._phone_stretch(stretch)

    def _phone_stretch(self, units: list[_Unit]) -> None:
        digits = "".join(u.digits for u in units)
        s, e = units[0].start, units[-1].end
        i = self._before(s)
        lead = self.text[i] if i >= 0 else ""
        plus = lead == "+"
        if lead in ("+", "("):
            s = i
        if ((plus and 8 <= len(digits) <= 15) or len(digits) == 10
                or (len(digits) == 11 and digits[0] == "1")
                or (len(digits) == 7 and self._near(("phone",), s, e, 40, 0))):
            self._add(s, e, PHONE)


def _any_in(sorted_values: list[int], lo: int, hi: int) -> bool:
    i = bisect.bisect_left(sorted_values, lo)
    return i < len(sorted_values) and sorted_values[i] <= hi


def _split_soft(run: list[_Unit]) -> list[list[_Unit]]:
    segs: list[list[_Unit]] = [[]]
    for u in run:
        if u.soft:
            segs.append([])
        segs[-1].append(u)
    return segs


def _detect(text: str, policy: RedactionPolicy, context: str = "") -> list[_Hit]:
    """Hits in ``text``; ``context`` (earlier text) only supplies keywords and PAN masks."""
    if not context:
        return _Detector(text, 0, policy).run()
    base = len(context) + 1
    hits = _Detector(f"{context}\x1f{text}", base, policy).run()
    return [(s - base, e - base, k, m) for s, e, k, m in hits if s >= base]


def _apply(text: str, hits: list[_Hit]) -> Redacted:
    out: list[str] = []
    pos = 0
    for s, e, _, mask in hits:
        out += [text[pos:s], mask]
        pos = e
    out.append(text[pos:])
    return Redacted("".join(out), tuple(Finding(k, s, e) for s, e, k, _ in hits))


def redact(text: str, policy: RedactionPolicy) -> Redacted:
    """Mask every sensitive span of ``text`` that ``policy`` turns on."""
    return _apply(text, _detect(text, policy))


def mask_digits(digits: str) -> str:
    """Keypad capture: keep the last 4 of a PAN-length entry (13+ digits), mask the rest."""
    if digits and not (digits.isascii() and digits.isdigit()):
        raise ValueError("mask_digits takes ASCII digits only")
    keep = 4 if len(digits) >= 13 else 0
    return "*" * (len(digits) - keep) + digits[len(digits) - keep:]


# ------------------------------------------------------------------------------ JSON

def _humanize(key: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])|[_\-.]", " ", key)


def _pointer(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def redact_json(obj: JsonValue,
                policy: RedactionPolicy) -> tuple[JsonValue, tuple[JsonFinding, ...]]:
    """Redact every string (keys too) and every number that is sensitive, e.g. a PAN or a
    ``{"cvv": 123}``; such numbers become the mask string. The last two keys on the path are
    the context, so ``{"exp_month": "04"}`` and ``{"security_code": "123"}`` are caught.
    Raises ``TypeError`` on anything that is not a JSON value."""
    found: list[JsonFinding] = []
    return _walk(obj, policy, "", (), found), tuple(found)


def _walk(v: JsonValue, policy: RedactionPolicy, path: str, keys: tuple[str, ...],
          found: list[JsonFinding]) -> JsonValue:
    if isinstance(v, dict):
        out: dict[str, JsonValue] = {}
        for key, item in v.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object key must be str, not {type(key).__name__}")
            red = _apply(key, _detect(key, policy))
            new_key = red.text
            while new_key in out:
                new_key += "'"
            child = _pointer(path, new_key)
            found += [JsonFinding(child, f.kind, f.start, f.end, True) for f in red.findings]
            out[new_key] = _walk(item, policy, child, (*keys, _humanize(key)), found)
        return out
    if isinstance(v, list):
        return [_walk(item, policy, _pointer(path, str(i)), keys, found)
                for i, item in enumerate(v)]
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, float) and not (v.is_integer() and abs(v) < 1e20):
        return v
    if isinstance(v, (int, float)):
        red = _redact_value(str(int(v)), policy, keys)
        found += [JsonFinding(path, f.kind, f.start, f.end) for f in red.findings]
        return red.text if red.findings else v
    if isinstance(v, str):
        red = _redact_value(v, policy, keys)
        found += [JsonFinding(path, f.kind, f.start, f.end) for f in red.findings]
        return red.text
    raise TypeError(f"not a JSON value: {type(v).__name__}")


def _redact_value(text: str, policy: RedactionPolicy, keys: tuple[str, ...]) -> Redacted:
    context = " ".join(keys[-2:])
    hits = _detect(text, policy, context)
    bare = text.strip()
    if not hits and bare.isdigit() and len(bare) <= 4 and any(
            m.lastgroup == "exp" for m in _KW_RE.finditer(context)):
        hits = [(text.index(bare), text.index(bare) + len(bare), EXPIRY, _MASKS[EXPIRY])]
    return _apply(text, hits)


# ------------------------------------------------------------------------- streaming

class StreamState(enum.Enum):
    EMPTY = "empty"        # nothing held back
    HOLDING = "holding"    # pieces held: the last one ends in a digit run that may go on


@dataclass(frozen=True, slots=True)
class Released:
    """Piece number ``seq`` (0-based, in feed order), redacted; offsets are into that piece."""

    seq: int
    text: str
    findings: tuple[Finding, ...]


class StreamingRedactor:
    """Redacts one speaker's transcript of one call, piece by piece (turns or STT fragments).

    Released text is final, never revised, so digits that may go on are held back instead: a
    piece whose text ends in an open digit run (digits, then only joiners) is held, and so is
    every piece after it, until a piece closes the run, ``flush()`` is called, or the held text
    exceeds ``max_hold_chars`` (the bound: digits that go on past it are judged apart). So a
    turn ending in digits is released with the next turn, or at ``flush()`` (hang-up). Held
    pieces are joined with ``separator`` (``" "`` for turns; ``""`` for fragments that carry
    their own spacing, when a trailing word is held too) and redacted together, so a card
    number said over two turns is one PAN. A finding that crosses pieces is
    reported in each piece it touches; later parts' masks end in ``, continued]``. The last
    ``context_chars`` of redacted text (both speakers, via ``observe()``) is kept as context:
    after the agent's ``"security code?"`` the caller's ``"one two three"`` is a CVV. One
    instance per call and speaker (feed the other speaker's text to ``observe()``).
    """

    def __init__(self, policy: RedactionPolicy, *, separator: str = " ",
                 context_chars: int = 160, max_hold_chars: int = 600) -> None:
        self._policy, self._sep = policy, separator
        self._context_chars, self._max_hold = context_chars, max_hold_chars
        self._held: list[str] = []
        self._seq = 0
        self._context = ""

    @property
    def state(self) -> StreamState:
        return StreamState.HOLDING if self._held else StreamState.EMPTY

    def observe(self, text: str) -> None:
        """Other-party text (e.g. the agent's question): context only, never released here."""
        self._remember(_apply(text, _detect(text, self._policy, self._context)).text)

    def feed(self, piece: str) -> tuple[Released, ...]:
        self._held.append(piece)
        joined = self._sep.join(self._held)
        open_tail = _scan(_tokenize(joined))[1] or (self._sep == "" and joined[-1:].isalnum())
        if open_tail and len(joined) <= self._max_hold:
            return ()
        return self._release()

    def flush(self) -> tuple[Released, ...]:
        return self._release() if self._held else ()

    def _remember(self, text: str) -> None:
        self._context = f"{self._context}\n{text}"[-self._context_chars:]

    def _release(self) -> tuple[Released, ...]:
        joined = self._sep.join(self._held)
        hits = _detect(joined, self._policy, self._context)
        out: list[Released] = []
        offset = 0
        for piece in self._held:
            lo, hi = offset, offset + len(piece)
            mine: list[_Hit] = []
            for s, e, kind, mask in hits:
                if s < hi and e > lo:
                    part = mask if s >= lo else f"{mask[:-1]}, continued]"
                    mine.append((max(s, lo) - lo, min(e, hi) - lo, kind, part))
            red = _apply(piece, mine)
            out.append(Released(self._seq, red.text, red.findings))
            self._seq += 1
            offset = hi + len(self._sep)
        self._remember(self._sep.join(r.text for r in out))
        self._held = []
        return tuple(out)
