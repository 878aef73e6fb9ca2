"""The scripted-flow brain: a pure state machine over nodes loaded from a profile.

Inputs are method calls (`start`, `on_user_text`, `on_dtmf`, `on_silence`,
`tool_result`, `voicemail`); each returns the actions to take, in order
(`Say`, `ListenFor`, `ToolRequest`, `Transfer`, `Hangup`). The flow never does
I/O, never reads a clock and never awaits: the engine runs tools, plays
speech, counts silence and feeds the results back.

Nodes:
- ``say``: speak, then go to ``next`` at once.
- ``ask``: speak, then listen for ``choices`` (keywords, phrases, DTMF keys,
  a regex), ``digits`` (spoken or keyed, ``terminator`` and inter-digit
  ``timeout_s``) or free speech (``capture``). A miss reprompts with
  ``no_match`` up to ``retries`` times, then goes to ``on_fail``.
- ``tool``: emit a `ToolRequest`; `tool_result` branches on ok / not_found / error.
- ``branch``: go to ``cases[slot value]`` or ``default``.
- ``handoff`` (`Transfer`) and ``end`` (`Hangup`) finish the flow.

Intents (hand-off, opt-out) are checked before a node's own choices at every
listening node. Their DTMF keys do not apply while a digits node collects
digits (a "0" or "9" is then part of the number).

Silence: ``on_silence(seconds)`` takes the caller's silence so far, counted by
the engine from the later of the last `ListenFor` (once the agent's speech
before it has played) and the last caller input. The flow acts once per
threshold: a pending digit entry times out (``digits.timeout_s``), then a node's
``timeout_s`` goes to ``on_timeout``, then the idle prompt, then the idle hang-up.

Matching is tolerant of STT output: lower case, no punctuation, filler words
dropped, contractions expanded, number words turned into digits and runs of
digits joined ("four five seven" -> "457"), plurals accepted; phrases allow one
extra word between their words. The choice with the longest match wins.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Action",
    "AskNode",
    "BranchNode",
    "Capture",
    "Choice",
    "DigitsSpec",
    "EndNode",
    "Flow",
    "FlowError",
    "FlowProblem",
    "FlowSpec",
    "FlowState",
    "HandoffNode",
    "Hangup",
    "Idle",
    "Intent",
    "ListenFor",
    "Node",
    "Say",
    "SayNode",
    "ToolNode",
    "ToolRequest",
    "ToolStatus",
    "Transfer",
    "check_flow",
    "normalize_utterance",
    "placeholders",
]


class FlowError(Exception):
    """Our own misuse of a flow: an input its state does not allow, a missing field."""


# ---- actions the flow emits ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class DigitsSpec:
    min_len: int = 1
    max_len: int = 16
    terminator: str = "#"  # "" submits at max_len
    timeout_s: float = 5.0  # inter-digit: what was keyed so far is submitted
    slot: str = "digits"
    goto: str = ""


@dataclass(frozen=True, slots=True)
class ListenFor:
    """Listen for the caller; "digits" lets the STT switch to its digits grammar."""

    kind: Literal["speech", "digits"]
    digits: DigitsSpec | None = None


ArgValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class ToolRequest:
    id: str
    name: str
    args: Mapping[str, ArgValue]


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str  # "completed", "opt_out", "idle", "no_match", "voicemail", ...


Action = Say | ListenFor | ToolRequest | Transfer | Hangup


class ToolStatus(enum.StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"
    ERROR = "error"


# ---- the flow's definition -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Choice:
    goto: str
    keywords: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None  # searched in the normalised text
    assign: Mapping[str, str] = field(default_factory=dict)  # slot -> template


@dataclass(frozen=True, slots=True)
class Capture:
    """Free speech stored as heard (e.g. a new address)."""

    slot: str
    goto: str
    min_words: int = 1


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    goto: str
    keywords: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Idle:
    prompt_after_s: float = 8.0
    hangup_after_s: float = 20.0
    prompt: str = "Are you still there?"
    goodbye: str = "I haven't heard anything, so I'll end the call now. Goodbye."


@dataclass(frozen=True, slots=True)
class SayNode:
    say: str
    next: str
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class AskNode:
    say: str
    on_fail: str
    choices: tuple[Choice, ...] = ()
    digits: DigitsSpec | None = None
    capture: Capture | None = None
    no_match: str = ""  # reprompt; the node's `say` when empty
    retries: int = 2
    timeout_s: float | None = None
    on_timeout: str = ""
    examples: tuple[str, ...] = ()  # more expected phrases for the STT language model
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class ToolNode:
    tool: str
    on_ok: str
    on_error: str
    args: Mapping[str, ArgValue] = field(default_factory=dict)
    save_as: str = ""  # result fields become slots "<save_as>.<field>"
    on_not_found: str = ""  # on_error when empty
    say: str = ""


@dataclass(frozen=True, slots=True)
class BranchNode:
    slot: str
    cases: Mapping[str, str]
    default: str


@dataclass(frozen=True, slots=True)
class HandoffNode:
    target: str
    say: str = ""


@dataclass(frozen=True, slots=True)
class EndNode:
    reason: str = "completed"
    say: str = ""


Node = SayNode | AskNode | ToolNode | BranchNode | HandoffNode | EndNode


@dataclass(frozen=True, slots=True)
class FlowProblem:
    key: str  # dotted, relative to the flow: "nodes.menu.choices[0].goto"
    reason: str


@dataclass(frozen=True, slots=True)
class FlowSpec:
    start: str
    nodes: Mapping[str, Node]
    intents: tuple[Intent, ...] = ()
    idle: Idle = field(default_factory=Idle)
    opening: tuple[Say, ...] = ()  # disclosures (non-interruptible), then the greeting
    voicemail: str = ""
    fields: tuple[str, ...] = ()  # contact/call fields every Flow must be given

    def expected_phrases(self) -> tuple[str, ...]:
        """Everything the flow says or expects, for the STT language model."""
        out: list[str] = []
        for say in self.opening:
            out += _fragments(say.text)
        out += _fragments(self.idle.prompt) + _fragments(self.idle.goodbye)
        for intent in self.intents:
            out += [*intent.keywords, *intent.phrases]
        has_digits = False
        for node in self.nodes.values():
            for template in _node_templates(node):
                out += _fragments(template)
            if isinstance(node, AskNode):
                for choice in node.choices:
                    out += [*choice.keywords, *choice.phrases]
                out += node.examples
                has_digits |= node.digits is not None
        if has_digits:
            out.append("zero one two three four five six seven eight nine oh")
        return tuple(dict.fromkeys(p for p in out if p.strip()))


# ---- text matching ---------------------------------------------------------

# How long an engine waits, on the audio clock, for more words after words
# the flow could only re-prompt on (`Flow.would_only_reprompt`).
REPROMPT_HOLD_MS = 900.0
# ... but no longer than until the caller has been quiet this long after the
# words (the end-of-turn rule's own wait counts): covers a 1 s mid-sentence
# pause and the VAD's onset votes after it.
REPROMPT_QUIET_MS = 1400.0
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_FILLERS = frozenset({"um", "umm", "uh", "uhm", "er", "erm", "ah", "hmm", "hm", "mm"})
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_REPEAT = {"double": 2, "triple": 3}
_WHOLE = {"can't": "can not", "cannot": "can not", "won't": "will not", "shan't": "shall not"}
_SUFFIXES = (("n't", " not"), ("'re", " are"), ("'m", " am"), ("'ll", " will"),
             ("'d", " would"), ("'ve", " have"), ("'s", " is"))  # fmt: skip


def normalize_utterance(text: str) -> list[str]:
    """Tokens to match on: "Um, it's four-five seven!" -> ["it", "is", "457"]."""
    words: list[str] = []
    for tok in _TOKEN.findall(text.lower().replace("\u2019", "'")):
        if tok in _WHOLE:
            words += _WHOLE[tok].split()
            continue
        for suffix, expansion in _SUFFIXES:
            if tok.endswith(suffix) and len(tok) > len(suffix):
                tok = tok[: -len(suffix)] + expansion
                break
        for part in tok.split():
            pieces = part.split("-")
            if len(pieces) > 1 and all(_is_number_word(p) for p in pieces):
                words += pieces
            elif part not in _FILLERS:
                words.append(part)
    return _join_digits(_numbers(words))


def _is_number_word(word: str) -> bool:
    return word in _UNITS or word in _TEENS or word in _TENS or word == "oh" or word.isdigit()


def _numbers(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _REPEAT and (nxt in _UNITS or (nxt.isdigit() and len(nxt) == 1)):
            digit = str(_UNITS[nxt]) if nxt in _UNITS else nxt
            out.append(digit * _REPEAT[w])
            i += 2
        elif w in _TENS:
            if nxt in _UNITS and _UNITS[nxt] > 0:
                out.append(str(_TENS[w] + _UNITS[nxt]))
                i += 2
            else:
                out.append(str(_TENS[w]))
                i += 1
        elif w in _UNITS or w in _TEENS:
            out.append(str(_UNITS.get(w, _TEENS.get(w))))
            i += 1
        elif w == "oh":
            # "oh" is zero only next to another number ("four oh five").
            if (out and out[-1].isdigit()) or (_is_number_word(nxt) and nxt != "oh"):
                out.append("0")
            i += 1
        else:
            out.append(w)
            i += 1
    return out


def _join_digits(words: list[str]) -> list[str]:
    out: list[str] = []
    for w in words:
        if w.isdigit() and out and out[-1].isdigit():
            out[-1] += w
        else:
            out.append(w)
    return out


def _same_word(heard: str, wanted: str) -> bool:
    return heard == wanted or heard == wanted + "s" or wanted == heard + "s"


def _match_len(tokens: Sequence[str], wanted: Sequence[str], max_gap: int) -> int:
    """len(wanted) if its words occur in order with at most `max_gap` extra words between."""
    if not wanted:
        return 0

    def from_(pos: int, k: int) -> bool:
        if k == len(wanted):
            return True
        stop = len(tokens) if k == 0 else min(len(tokens), pos + max_gap + 1)
        return any(
            _same_word(tokens[j], wanted[k]) and from_(j + 1, k + 1) for j in range(pos, stop)
        )

    return len(wanted) if from_(0, 0) else 0


def _score(tokens: Sequence[str], keywords: Sequence[str], phrases: Sequence[str]) -> int:
    best = 0
    for kw in keywords:
        best = max(best, _match_len(tokens, normalize_utterance(kw), 0))
    for ph in phrases:
        best = max(best, _match_len(tokens, normalize_utterance(ph), 1))
    return best


# ---- templates -------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_NAME = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)(?:\|(spell))?$")


def placeholders(template: str) -> list[str]:
    """The placeholder bodies in a template ("{order.status_text}" -> "order.status_text")."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1) is not None]


def _render(template: str, lookup: Callable[[str], str]) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        parsed = _NAME.match(m.group(1).strip())
        if parsed is None:
            return ""
        value = lookup(parsed.group(1))
        return " ".join(c for c in value if not c.isspace()) if parsed.group(2) else value

    return _PLACEHOLDER.sub(repl, template)


def _fragments(template: str) -> list[str]:
    """The literal text between placeholders, for the language model."""
    parts = _PLACEHOLDER.sub("\n", template).split("\n")
    return [p.strip() for p in parts if any(c.isalnum() for c in p)]


def _node_templates(node: Node) -> list[str]:
    if isinstance(node, AskNode):
        return [node.say, node.no_match]
    if isinstance(node, BranchNode):
        return []
    return [node.say]


# ---- validation ------------------------------------------------------------


def _targets(node: Node) -> Iterator[tuple[str, str]]:
    """(key relative to the node, target node id) for every transition."""
    if isinstance(node, SayNode):
        yield "next", node.next
    elif isinstance(node, AskNode):
        for i, c in enumerate(node.choices):
            yield f"choices[{i}].goto", c.goto
        if node.digits is not None:
            yield "digits.goto", node.digits.goto
        if node.capture is not None:
            yield "capture.goto", node.capture.goto
        yield "on_fail", node.on_fail
        if node.on_timeout:
            yield "on_timeout", node.on_timeout
    elif isinstance(node, ToolNode):
        yield "on_ok", node.on_ok
        yield "on_error", node.on_error
        if node.on_not_found:
            yield "on_not_found", node.on_not_found
    elif isinstance(node, BranchNode):
        for value, target in node.cases.items():
            yield f"cases.{value}", target
        yield "default", node.default


def check_flow(spec: FlowSpec) -> list[FlowProblem]:
    """Every problem in a flow's graph, keys and templates; [] when it is sound."""
    problems: list[FlowProblem] = []
    nodes = spec.nodes
    if spec.start not in nodes:
        problems.append(FlowProblem("start", f"unknown node {spec.start!r}"))
    for intent in spec.intents:
        if intent.goto not in nodes:
            problems.append(
                FlowProblem(f"intents.{intent.name}.goto", f"unknown node {intent.goto!r}")
            )
    for nid, node in nodes.items():
        for key, target in _targets(node):
            if target not in nodes:
                problems.append(FlowProblem(f"nodes.{nid}.{key}", f"unknown node {target!r}"))
    if problems:
        return problems  # the graph checks below need every target to exist

    intent_keys = {k: i.name for i in spec.intents for k in i.keys}
    for nid, node in nodes.items():
        if isinstance(node, AskNode):
            problems += _check_ask(nid, node, intent_keys)

    seen: set[str] = set()
    todo = [spec.start, *(i.goto for i in spec.intents)]
    while todo:
        nid = todo.pop()
        if nid not in seen:
            seen.add(nid)
            todo += [t for _, t in _targets(nodes[nid])]
    for nid in nodes:
        if nid not in seen:
            problems.append(FlowProblem(f"nodes.{nid}", "unreachable from start or any intent"))

    for nid in nodes:
        if _loops_without_listening(nodes, nid):
            problems.append(FlowProblem(f"nodes.{nid}", "loops back to itself without listening"))

    problems += _check_templates(spec)
    return problems


def _loops_without_listening(nodes: Mapping[str, Node], start: str) -> bool:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = nodes[todo.pop()]
        if isinstance(node, SayNode):
            nexts = [node.next]
        elif isinstance(node, BranchNode):
            nexts = [*node.cases.values(), node.default]
        else:
            continue
        for n in nexts:
            if n == start:
                return True
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return False


def _check_ask(nid: str, node: AskNode, intent_keys: Mapping[str, str]) -> list[FlowProblem]:
    out: list[FlowProblem] = []
    if not node.choices and node.digits is None and node.capture is None:
        out.append(FlowProblem(f"nodes.{nid}", "an ask node needs choices, digits or capture"))
    if (node.timeout_s is None) != (not node.on_timeout):
        out.append(FlowProblem(f"nodes.{nid}.on_timeout", "timeout_s and on_timeout go together"))
    owner: dict[str, int] = {}
    for i, choice in enumerate(node.choices):
        for key in choice.keys:
            where = f"nodes.{nid}.choices[{i}].keys"
            if key in owner:
                out.append(FlowProblem(where, f"key {key!r} is also choice {owner[key]}'s"))
            owner.setdefault(key, i)
            if node.digits is not None and (key.isdigit() or key == node.digits.terminator):
                out.append(FlowProblem(where, f"key {key!r} is taken by the digits entry"))
            elif node.digits is None and key in intent_keys:
                out.append(FlowProblem(where, f"key {key!r} is the {intent_keys[key]} intent's"))
    return out


def _check_templates(spec: FlowSpec) -> list[FlowProblem]:
    fields = set(spec.fields)
    slots = set(fields)
    prefixes: set[str] = set()
    for node in spec.nodes.values():
        if isinstance(node, AskNode):
            if node.digits is not None:
                slots.add(node.digits.slot)
            if node.capture is not None:
                slots.add(node.capture.slot)
            for c in node.choices:
                slots |= set(c.assign)
                if c.pattern is not None:
                    slots |= set(c.pattern.groupindex)
        elif isinstance(node, ToolNode) and node.save_as:
            prefixes.add(node.save_as)

    out: list[FlowProblem] = []

    def check(key: str, template: str, known: set[str], allow_results: bool) -> None:
        for body in placeholders(template):
            m = _NAME.match(body.strip())
            if m is None:
                out.append(
                    FlowProblem(
                        key,
                        f"bad placeholder {{{body}}}: expected {{name}}, "
                        "{result.field} or {name|spell}",
                    )
                )
                continue
            name = m.group(1)
            head = name.split(".", 1)[0]
            if "." in name and allow_results and head in prefixes:
                continue
            if name not in known:
                out.append(
                    FlowProblem(
                        key,
                        f"unknown placeholder {{{name}}}; known: "
                        f"{', '.join(sorted(known)) or '(none)'}",
                    )
                )

    for i, say in enumerate(spec.opening):
        check(f"opening[{i}]", say.text, fields, False)
    check("voicemail", spec.voicemail, fields, False)
    check("idle.prompt", spec.idle.prompt, fields, False)
    check("idle.goodbye", spec.idle.goodbye, fields, False)
    for nid, node in spec.nodes.items():
        if isinstance(node, BranchNode):
            continue
        check(f"nodes.{nid}.say", node.say, slots, True)
        if isinstance(node, AskNode):
            check(f"nodes.{nid}.no_match", node.no_match, slots, True)
            for i, c in enumerate(node.choices):
                for slot, template in c.assign.items():
                    check(f"nodes.{nid}.choices[{i}].assign.{slot}", template, slots, True)
        if isinstance(node, ToolNode):
            for arg, value in node.args.items():
                if isinstance(value, str):
                    check(f"nodes.{nid}.args.{arg}", value, slots, True)
    return out


# ---- the state machine -----------------------------------------------------


class FlowState(enum.Enum):
    READY = 1  # before start()
    LISTENING = 2  # at an ask node
    WAITING_TOOL = 3  # a ToolRequest is out
    ENDED = 4  # after Transfer or Hangup


_INPUTS = ("start", "voicemail", "user_text", "dtmf", "silence", "tool_result")
# Which inputs each state takes; "drop" ones are legal races (late input) and do nothing.
_ALLOWED: Mapping[FlowState, Mapping[str, str]] = {
    FlowState.READY: {"start": "run", "voicemail": "run"},
    FlowState.LISTENING: {i: "run" for i in _INPUTS if i != "start"},
    FlowState.WAITING_TOOL: {i: "run" for i in _INPUTS if i != "start"},
    FlowState.ENDED: {i: "drop" for i in _INPUTS if i != "start"},
}
_DTMF = frozenset("0123456789*#ABCD")
_MAX_HOPS = 100


class Flow:
    """One call's walk through a `FlowSpec`."""

    def __init__(self, spec: FlowSpec, fields: Mapping[str, str] | None = None) -> None:
        given = dict(fields or {})
        missing = [f for f in spec.fields if f not in given]
        if missing:
            raise FlowError(f"missing field(s) for this flow: {', '.join(missing)}")
        self._spec = spec
        self._values: dict[str, str] = given
        self._state = FlowState.READY
        self._node = ""
        self._misses = 0
        self._buffer = ""
        self._fired: set[str] = set()  # silence thresholds passed since the last input
        self._pending = ""  # id of the outstanding ToolRequest
        self._requests = 0

    def __deepcopy__(self, memo: dict[int, object]) -> Flow:
        """A copy that can go its own way; the spec (frozen) is shared, which
        makes probes and snapshots cheap enough for the event loop."""
        twin = copy.copy(self)
        twin._values = dict(self._values)
        twin._fired = set(self._fired)
        return twin

    @property
    def state(self) -> FlowState:
        return self._state

    @property
    def node(self) -> str:
        return self._node

    @property
    def slots(self) -> Mapping[str, str]:
        return dict(self._values)

    def expected_phrases(self) -> tuple[str, ...]:
        return self._spec.expected_phrases()

    # -- inputs --

    def start(self) -> list[Action]:
        self._admit("start")
        actions: list[Action] = [
            Say(self._fill(s.text), s.interruptible) for s in self._spec.opening if s.text
        ]
        return actions + self._enter(self._spec.start)

    def voicemail(self) -> list[Action]:
        """An answering machine picked up: leave the message and hang up."""
        if not self._admit("voicemail"):
            return []
        self._state = FlowState.ENDED
        message = self._fill(self._spec.voicemail)
        return [*([Say(message, False)] if message else []), Hangup("voicemail")]

    def on_user_text(self, text: str, final: bool) -> list[Action]:
        if not self._admit("user_text"):
            return []
        tokens = normalize_utterance(text)
        if not tokens:
            return []
        self._heard()
        if not final:
            return []
        intent = self._intent(tokens)
        if intent is not None:
            return self._enter(intent.goto)
        node = self._ask()
        if node is None:
            return []
        best, captures = self._choose(node, tokens)
        if best is not None:
            return self._take(best, captures)
        if node.digits is not None:
            digits = "".join(t for t in tokens if t.isdigit())
            if digits and node.digits.min_len <= len(digits) <= node.digits.max_len:
                self._values[node.digits.slot] = digits
                return self._enter(node.digits.goto)
        if node.capture is not None and len(tokens) >= node.capture.min_words:
            self._values[node.capture.slot] = " ".join(text.split())
            return self._enter(node.capture.goto)
        return self._miss(node)

    def would_only_reprompt(self, text: str) -> bool:
        """Would `text` only draw a re-prompt (no choice, digits, capture or
        intent)? Such words ("hi", "actually wait") are likely the start of a
        sentence: engines wait `REPROMPT_HOLD_MS` more before answering them."""
        return self._probe(text) == "reprompt"

    def would_end_call(self, text: str) -> bool:
        """Would `text` end the call (hang up or transfer)? A caller who pauses
        after "I'd like to" must not be hung up on because the recogniser
        heard "goodbye": engines answer closing words once the caller has
        stopped (`engines.hold`)."""
        return self._probe(text) == "end"

    def _probe(self, text: str) -> Literal["reprompt", "end", "move", ""]:
        """What `text` would do here, on a copy: "reprompt", "end" (hang up
        or transfer), "move" or "" (not listening, or nothing)."""
        if self._state is not FlowState.LISTENING:
            return ""
        probe = copy.deepcopy(self)
        actions = probe.on_user_text(text, True)
        if any(isinstance(a, Hangup | Transfer) for a in actions):
            return "end"
        moved = probe.node != self.node or any(not isinstance(a, Say | ListenFor) for a in actions)
        return "reprompt" if actions and not moved else ("move" if actions else "")

    def on_dtmf(self, digit: str) -> list[Action]:
        if digit not in _DTMF or len(digit) != 1:
            raise FlowError(f"not a DTMF digit: {digit!r}")
        if not self._admit("dtmf"):
            return []
        self._heard()
        node = self._ask()
        spec = node.digits if node is not None else None
        if spec is not None and digit.isdigit():
            self._buffer += digit
            if not spec.terminator and len(self._buffer) >= spec.max_len:
                return self._submit_digits(spec)
            return []
        if spec is not None and digit == spec.terminator:
            return self._submit_digits(spec)
        for intent in self._spec.intents:
            if digit in intent.keys:
                return self._enter(intent.goto)
        if node is None:
            return []
        for choice in node.choices:
            if digit in choice.keys:
                return self._take(choice, {})
        if spec is not None and digit == "*":
            self._buffer = ""
            return []
        return self._miss(node)

    def on_silence(self, seconds: float) -> list[Action]:
        if not self._admit("silence"):
            return []
        node = self._ask()
        if node is None:
            return []
        idle = self._spec.idle
        if node.digits is not None and self._buffer and seconds >= node.digits.timeout_s:
            return self._submit_digits(node.digits)
        if node.timeout_s is not None and seconds >= node.timeout_s:
            return self._enter(node.on_timeout)
        if seconds >= idle.hangup_after_s:
            self._state = FlowState.ENDED
            return [Say(self._fill(idle.goodbye), False), Hangup("idle")]
        if seconds >= idle.prompt_after_s and "idle" not in self._fired:
            self._fired.add("idle")
            return [Say(self._fill(idle.prompt))]
        return []

    def tool_result(
        self, request_id: str, status: ToolStatus | str, data: Mapping[str, object] | None = None
    ) -> list[Action]:
        try:
            outcome = ToolStatus(status)
        except ValueError:
            raise FlowError(
                f"tool status must be one of {[s.value for s in ToolStatus]}, got {status!r}"
            ) from None
        if not self._admit("tool_result") or request_id != self._pending:
            return []  # a request abandoned by an intent, or late after the end
        node = self._spec.nodes[self._node]
        assert isinstance(node, ToolNode)
        self._pending = ""
        if node.save_as:
            for key, value in (data or {}).items():
                self._values[f"{node.save_as}.{key}"] = "" if value is None else str(value)
        if outcome is ToolStatus.OK:
            return self._enter(node.on_ok)
        if outcome is ToolStatus.NOT_FOUND and node.on_not_found:
            return self._enter(node.on_not_found)
        return self._enter(node.on_error)

    # -- internals --

    def _admit(self, what: str) -> bool:
        verdict = _ALLOWED[self._state].get(what)
        if verdict is None:
            raise FlowError(f"{what} is not allowed in state {self._state.name}")
        return verdict == "run"

    def _ask(self) -> AskNode | None:
        if self._state is not FlowState.LISTENING:
            return None
        node = self._spec.nodes[self._node]
        return node if isinstance(node, AskNode) else None

    def _heard(self) -> None:
        self._fired.clear()

    def _intent(self, tokens: Sequence[str]) -> Intent | None:
        best, best_score = None, 0
        for intent in self._spec.intents:
            score = _score(tokens, intent.keywords, intent.phrases)
            if score > best_score:
                best, best_score = intent, score
        return best

    def _choose(self, node: AskNode, tokens: Sequence[str]) -> tuple[Choice | None, dict[str, str]]:
        best: Choice | None = None
        best_score, best_captures = 0, {}
        text = " ".join(tokens)
        for choice in node.choices:
            score = _score(tokens, choice.keywords, choice.phrases)
            captures: dict[str, str] = {}
            if choice.pattern is not None:
                m = choice.pattern.search(text)
                if m is not None:
                    score = max(score, len(m.group(0).split()), 1)
                    captures = {k: v for k, v in m.groupdict().items() if v is not None}
            if score > best_score:
                best, best_score, best_captures = choice, score, captures
        return best, best_captures

    def _take(self, choice: Choice, captures: Mapping[str, str]) -> list[Action]:
        self._values.update(captures)
        for slot, template in choice.assign.items():
            self._values[slot] = self._fill(template)
        return self._enter(choice.goto)

    def _submit_digits(self, spec: DigitsSpec) -> list[Action]:
        value, self._buffer = self._buffer, ""
        if spec.min_len <= len(value) <= spec.max_len:
            self._values[spec.slot] = value
            return self._enter(spec.goto)
        node = self._ask()
        assert node is not None
        return self._miss(node)

    def _miss(self, node: AskNode) -> list[Action]:
        self._misses += 1
        if self._misses > node.retries:
            return self._enter(node.on_fail)
        self._buffer = ""
        self._fired.clear()
        return [Say(self._fill(node.no_match or node.say), node.interruptible), self._listen(node)]

    def _listen(self, node: AskNode) -> ListenFor:
        if node.digits is not None:
            return ListenFor("digits", node.digits)
        return ListenFor("speech")

    def _enter(self, nid: str) -> list[Action]:
        self._pending = ""
        actions: list[Action] = []
        for _ in range(_MAX_HOPS):
            node = self._spec.nodes[nid]
            self._node = nid
            if isinstance(node, SayNode):
                actions.append(Say(self._fill(node.say), node.interruptible))
                nid = node.next
            elif isinstance(node, BranchNode):
                nid = node.cases.get(self._values.get(node.slot, ""), node.default)
            elif isinstance(node, AskNode):
                self._state = FlowState.LISTENING
                self._misses, self._buffer = 0, ""
                self._fired.clear()
                if node.say:
                    actions.append(Say(self._fill(node.say), node.interruptible))
                return [*actions, self._listen(node)]
            elif isinstance(node, ToolNode):
                self._state = FlowState.WAITING_TOOL
                self._requests += 1
                self._pending = f"{self._node}-{self._requests}"
                if node.say:
                    actions.append(Say(self._fill(node.say)))
                args = {k: self._fill(v) if isinstance(v, str) else v for k, v in node.args.items()}
                return [*actions, ToolRequest(self._pending, node.tool, args)]
            else:
                self._state = FlowState.ENDED
                if node.say:
                    actions.append(Say(self._fill(node.say), False))
                done = (
                    Transfer(node.target) if isinstance(node, HandoffNode) else Hangup(node.reason)
                )
                return [*actions, done]
        raise FlowError(f"the flow moved {_MAX_HOPS} times without listening (at {nid!r})")

    def _fill(self, template: str) -> str:
        return " ".join(_render(template, lambda name: self._values.get(name, "")).split())
