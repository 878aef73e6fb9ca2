"""Build pocketsphinx language resources from an agent's expected phrases.

- `arpa_text`: a trigram ARPA model (pocketsphinx.lm.ArpaBoLM, fixed
  back-off) from phrases. Pure.
- `digits_jsgf`: a JSGF grammar for spoken digit strings, optionally after a
  carrier phrase ("my account number is ..."). Pure.
- `build_resources`: writes the LM, the grammar and a pronunciation
  dictionary cut down to the words used, into a given directory.

The cut-down dictionary matters: a Decoder loading the full 135k-word
cmudict takes ~10 s to start, one with the words in use ~0.1 s.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pocketsphinx import get_model_path
from pocketsphinx.lm import ArpaBoLM

__all__ = [
    "DEFAULT_CARRIERS",
    "DIGIT_WORDS",
    "LmResources",
    "arpa_text",
    "build_resources",
    "digits_jsgf",
    "normalize",
    "spoken_digits",
]

DIGIT_WORDS: Mapping[str, str] = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_SPELL = {d: w for w, d in DIGIT_WORDS.items() if w != "oh"}

# What callers say before a number; lets the grammar absorb them instead of
# forcing "my account number is" into digits.
DEFAULT_CARRIERS: tuple[str, ...] = (
    "my account number is",
    "the account number is",
    "my number is",
    "the number is",
    "it is",
    "it's",
)

_TOKEN = re.compile(r"[a-z]+(?:['-][a-z]+)*|\d")


def normalize(text: str) -> list[str]:
    """Lower-case words as the recogniser spells them; digits spelled one by one."""
    return [_SPELL.get(t, t) for t in _TOKEN.findall(text.lower())]


def spoken_digits(text: str) -> str:
    """The digit string in a hypothesis ("four five oh" -> "450"); other words dropped."""
    return "".join(DIGIT_WORDS[w] for w in text.split() if w in DIGIT_WORDS)


def arpa_text(phrases: Iterable[str]) -> str:
    """A trigram ARPA LM over the normalised phrases."""
    corpus = "\n".join(" ".join(ws) for ws in map(normalize, phrases) if ws)
    if not corpus:
        # ArpaBoLM.compute() calls sys.exit() on an empty corpus.
        raise ValueError("no words in the phrases: cannot build a language model")
    lm = ArpaBoLM(text=corpus, add_start=True)  # <s> ... </s> per phrase
    lm.compute()
    out = io.StringIO()
    lm.write(out)
    return out.getvalue()


def digits_jsgf(carriers: Sequence[str] = DEFAULT_CARRIERS) -> str:
    """JSGF for one or more digits, optionally after one carrier phrase."""
    digits = " | ".join(DIGIT_WORDS)
    rules = [f"<digit> = {digits} ;"]
    body = "<digit>+"
    alts = sorted({" ".join(ws) for ws in map(normalize, carriers) if ws})
    if alts:
        rules.append(f"<carrier> = {' | '.join(alts)} ;")
        body = f"[ <carrier> ] {body}"
    return "#JSGF V1.0;\ngrammar digits;\n" + "\n".join(rules) + f"\npublic <digits> = {body} ;\n"


@dataclass(frozen=True, slots=True)
class LmResources:
    """Files for one agent profile, shared read-only by every call's decoder."""

    lm_path: Path
    dict_path: Path
    digits_jsgf: str
    words: frozenset[str]
    oov: tuple[str, ...]  # phrase words the dictionary cannot pronounce: dropped


def build_resources(
    phrases: Iterable[str],
    out_dir: Path,
    *,
    carriers: Sequence[str] = DEFAULT_CARRIERS,
    name: str = "domain",
    cmudict: Path | None = None,
) -> LmResources:
    """Write `<name>.lm` and `<name>.dict` under `out_dir` (created if needed)."""
    source = cmudict or Path(get_model_path("en-us/cmudict-en-us.dict"))
    prons = _read_dict(source)
    phrase_words = [_pronounceable(normalize(p), prons) for p in phrases]
    oov = sorted({w for ws in phrase_words for w in ws if w not in prons})
    # Phrases keep their in-vocabulary words: a decoder cannot load an LM
    # containing words it cannot pronounce.
    kept = [" ".join(w for w in ws if w in prons) for ws in phrase_words]
    usable = [c for c in carriers if all(w in prons for w in normalize(c))]
    grammar = digits_jsgf(usable)
    words = {w for line in kept for w in line.split()} | set(DIGIT_WORDS)
    words |= {w for c in usable for w in normalize(c)}
    out_dir.mkdir(parents=True, exist_ok=True)
    lm_path = out_dir / f"{name}.lm"
    dict_path = out_dir / f"{name}.dict"
    lm_path.write_text(arpa_text(kept), encoding="utf-8")
    dict_path.write_text(
        "".join(line for w in sorted(words) for line in prons[w]), encoding="utf-8"
    )
    return LmResources(lm_path, dict_path, grammar, frozenset(words), tuple(oov))


def _pronounceable(words: list[str], prons: dict[str, list[str]]) -> list[str]:
    """Split hyphenated words the dictionary lacks ("follow-up") into known parts."""
    out: list[str] = []
    for w in words:
        parts = w.split("-")
        if w not in prons and len(parts) > 1 and all(p in prons for p in parts):
            out.extend(parts)
        else:
            out.append(w)
    return out


def _read_dict(path: Path) -> dict[str, list[str]]:
    """word -> its dictionary lines, alternates ("word(2)") included."""
    prons: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            head = line.split(maxsplit=1)[0] if line.strip() else ""
            if head:
                prons.setdefault(head.split("(", 1)[0], []).append(line.rstrip("\n") + "\n")
    return prons
