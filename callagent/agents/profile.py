"""Agent profiles: config/agents/<name>.toml, loaded into frozen dataclasses.

A profile names its engine (optionally an A/B split over engines and
backends), what the agent says first (disclosures, greeting), its voice, the
pipeline's stages or the duplex backend, its tools (declared with JSON-schema
arguments), idle behaviour, opt-out and hand-off, and, for ``brain = "flow"``,
the scripted flow (inline under ``[flow]`` or in ``[flow] file = "x.flow.toml"``).

Every problem is a `ProfileError` naming the file, the dotted key and the
reason; unknown keys are refused. The shipped profiles in config/agents/ are
worked examples. The schema, in short (defaults after "="):

    name = <file stem>  engine = pipeline|duplex|fixture  direction = "any"|inbound|outbound
    description, greeting, ai_disclosure, recording_disclosure, voice, prompt, voicemail = ""
    contact_fields = []                  # names usable as {placeholders}
    [[routing]] arm, engine, backend = "", percent      # percents sum to 100
    [stages.vad|stt|tts|brain] kind, <settings>        # see STAGE_SETTINGS
    [duplex] backend, <settings>
    [[tools]] name, description, [tools.parameters]    # JSON schema, type = "object"
              [tools.http] url, method, headers, secret_headers = {Header = "ENV_VAR"},
              timeout_s, retries, backoff_s              # an HTTP tool (else a built-in)
    [idle] prompt_after_s = 8, hangup_after_s = 20, prompt, goodbye
    [opt_out] keywords, phrases, key (DTMF), node = "opt_out"
    [handoff] keywords, phrases, key, target, node = "handoff"
    [flow] start, on_fail, [flow.intents.<name>], [flow.nodes.<id>] kind = say|ask|tool|...
           or [flow] file = "<path relative to the profile>"
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from callagent.agents.flow import (
    ArgValue,
    AskNode,
    BranchNode,
    Capture,
    Choice,
    DigitsSpec,
    EndNode,
    Flow,
    FlowSpec,
    HandoffNode,
    Idle,
    Intent,
    Node,
    Say,
    SayNode,
    ToolNode,
    check_flow,
    placeholders,
)
from callagent.tools.http import HttpToolConfig

__all__ = [
    "DIRECTIONS",
    "ENGINES",
    "STAGE_SETTINGS",
    "AgentProfile",
    "Handoff",
    "OptOut",
    "ProfileError",
    "Route",
    "StageChoice",
    "Stages",
    "ToolSpec",
    "load_profile",
    "load_profiles",
]

ENGINES: Final = ("pipeline", "duplex", "fixture")
DIRECTIONS: Final = ("inbound", "outbound", "any")
# stage -> kind -> setting -> type. The one place a new stage kind is declared.
STAGE_SETTINGS: Final[Mapping[str, Mapping[str, Mapping[str, type]]]] = {
    "vad": {
        "two_stage": {"mode": int, "threshold": float, "gate_hangover_ms": int,
                      "end_silence_ms": int, "barge_in_ms": int, "echo_cancel": bool},
    },
    # "openai" kinds speak the OpenAI-compatible HTTP APIs (OpenAI, vLLM,
    # llama.cpp server, Ollama, ...); api_key_env names the environment
    # variable holding the key (keys never come from a file).
    "stt": {"pocketsphinx": {"fwdflat": bool, "cmn_init": str},
            "openai": {"base_url": str, "model": str, "api_key_env": str, "language": str,
                       "timeout_s": float}},
    "tts": {"piper": {"threads": int, "cache_size": int, "length_scale": float},
            "openai": {"base_url": str, "model": str, "voice": str, "api_key_env": str,
                       "response_format": str, "timeout_s": float}},
    "brain": {
        "flow": {},
        "llm": {"provider": str, "model": str, "base_url": str,
                "temperature": float, "max_tokens": int, "api_key_env": str,
                "timeout_s": float},
    },
    "duplex": {
        backend: {"model": str, "base_url": str, "temperature": float}
        for backend in ("openai_realtime", "gemini_live", "local")
    },
}  # fmt: skip
_DEFAULT_KINDS: Final = {"vad": "two_stage", "stt": "pocketsphinx", "tts": "piper", "brain": "flow"}
_RANGES: Final = {"mode": (0, 3), "threshold": (0.0, 1.0), "temperature": (0.0, 2.0)}
_CHOICES: Final = {"response_format": ("pcm", "wav")}
_TOP_KEYS: Final = (
    "name", "engine", "description", "direction", "greeting", "ai_disclosure",
    "recording_disclosure", "voice", "prompt", "voicemail", "contact_fields", "routing",
    "stages", "duplex", "tools", "idle", "opt_out", "handoff", "flow",
)  # fmt: skip
_NODE_KINDS: Final = ("say", "ask", "tool", "branch", "handoff", "end")
_SCHEMA_TYPES: Final = ("string", "integer", "number", "boolean", "array", "object")
_PY_TYPES: Final[Mapping[str, type | tuple[type, ...]]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}
_DTMF: Final = frozenset("0123456789*#ABCD")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_TOML_TYPES: Final = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
                      list: "an array", dict: "a table"}  # fmt: skip


class ProfileError(ValueError):
    """A bad profile: the message is "<file>: <dotted.key>: <reason>"."""

    def __init__(self, file: Path, key: str, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")


@dataclass(frozen=True, slots=True)
class Route:
    """One arm of an A/B split (or the only route)."""

    arm: str
    engine: str
    backend: str = ""  # a duplex backend
    percent: int = 100


@dataclass(frozen=True, slots=True)
class StageChoice:
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stages:
    vad: StageChoice = StageChoice("two_stage")
    stt: StageChoice = StageChoice("pocketsphinx")
    tts: StageChoice = StageChoice("piper")
    brain: StageChoice = StageChoice("flow")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]  # a JSON schema of type "object"
    http: HttpToolConfig | None = None  # [tools.http]: an HTTP tool; else a built-in


@dataclass(frozen=True, slots=True)
class OptOut:
    keywords: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    key: str = ""  # DTMF
    node: str = "opt_out"  # the flow node it leads to (brain = "flow")

    @property
    def enabled(self) -> bool:
        return bool(self.keywords or self.phrases or self.key)


@dataclass(frozen=True, slots=True)
class Handoff:
    keywords: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    key: str = ""
    target: str = ""  # default transfer target of handoff nodes
    node: str = "handoff"

    @property
    def enabled(self) -> bool:
        return bool(self.keywords or self.phrases or self.key)


@dataclass(frozen=True, slots=True)
class AgentProfile:
    name: str
    path: Path
    engine: str
    description: str = ""
    direction: str = "any"
    greeting: str = ""
    ai_disclosure: str = ""  # played first, not interruptible
    recording_disclosure: str = ""  # played next, not interruptible
    voice: str = ""
    prompt: str = ""  # instructions for an LLM brain or a duplex backend
    voicemail: str = ""
    contact_fields: tuple[str, ...] = ()
    routing: tuple[Route, ...] = ()
    stages: Stages | None = None  # when a route uses the pipeline engine
    duplex: StageChoice | None = None  # when a route uses the duplex engine
    tools: tuple[ToolSpec, ...] = ()
    idle: Idle = field(default_factory=Idle)
    opt_out: OptOut = field(default_factory=OptOut)
    handoff: Handoff = field(default_factory=Handoff)
    flow: FlowSpec | None = None

    @property
    def routes(self) -> tuple[Route, ...]:
        if self.routing:
            return self.routing
        backend = self.duplex.kind if self.engine == "duplex" and self.duplex else ""
        return (Route("default", self.engine, backend, 100),)

    def pick_route(self, call_key: str) -> Route:
        """The arm a call takes: stable for a key (e.g. the call id), split by percent."""
        point = _stable_percent(f"{self.name}:{call_key}")
        for route in self.routes:
            if point < route.percent:
                return route
            point -= route.percent
        raise AssertionError("route percentages sum to 100")  # pragma: no cover

    def new_flow(self, fields: Mapping[str, str] | None = None) -> Flow:
        if self.flow is None:
            raise ValueError(f"profile {self.name!r} has no flow")
        return Flow(self.flow, fields)

    def expected_phrases(self) -> tuple[str, ...]:
        """Phrases for the STT language model."""
        if self.flow is not None:
            return self.flow.expected_phrases()
        out = [self.greeting, *self.opt_out.keywords, *self.opt_out.phrases,
               *self.handoff.keywords, *self.handoff.phrases]  # fmt: skip
        return tuple(dict.fromkeys(p for p in out if p.strip()))

    def tool(self, name: str) -> ToolSpec:
        for t in self.tools:
            if t.name == name:
                return t
        raise KeyError(name)


def load_profiles(directory: Path | str) -> dict[str, AgentProfile]:
    """Every ``*.toml`` profile in a directory (``*.flow.toml`` files are flows), by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ProfileError(directory, "", "not a directory")
    out: dict[str, AgentProfile] = {}
    for path in sorted(directory.glob("*.toml")):
        if not path.name.endswith(".flow.toml"):
            profile = load_profile(path)
            out[profile.name] = profile
    return out


def load_profile(path: Path | str) -> AgentProfile:
    path = Path(path)
    t = _Table(path, "", _read_toml(path))
    t.expect(_TOP_KEYS)  # a misspelt key is named as such, not as a missing one
    stem = path.name.removesuffix(".toml")
    name = t.text("name", stem)
    if name != stem:
        raise t.error("name", f"must match the file name {stem!r} (profiles are found by it)")
    if not _NAME.match(name):
        raise t.error("name", "expected lower-case letters, digits, '_' or '-'")
    engine = t.one_of("engine", ENGINES)
    contact_fields = t.texts("contact_fields")
    for i, f in enumerate(contact_fields):
        if not _IDENT.match(f):
            raise t.error(f"contact_fields[{i}]", f"{f!r} is not a name (a-z, 0-9, _)")
    p = _Parsed(
        name=name,
        engine=engine,
        description=t.text("description", ""),
        direction=t.one_of("direction", DIRECTIONS, "any"),
        greeting=t.text("greeting", ""),
        ai_disclosure=t.text("ai_disclosure", ""),
        recording_disclosure=t.text("recording_disclosure", ""),
        voice=t.text("voice", ""),
        prompt=t.text("prompt", ""),
        voicemail=t.text("voicemail", ""),
        contact_fields=contact_fields,
    )
    routing = _routing(t)
    routes = routing or (Route("default", engine),)
    uses = {r.engine for r in routes}
    stages = _stages(t, "pipeline" in uses)
    duplex = _duplex(t, engine, routing)
    tools = _tools(t)
    idle = _idle(t)
    opt_out = _opt_out(t)
    handoff = _handoff(t)
    for key in ("greeting", "ai_disclosure", "recording_disclosure", "voicemail"):
        _check_fields(t, key, getattr(p, key), contact_fields)
    _check_fields(t, "idle.prompt", idle.prompt, contact_fields)
    _check_fields(t, "idle.goodbye", idle.goodbye, contact_fields)
    if opt_out.key and opt_out.key == handoff.key:
        raise t.error("handoff.key", f"{handoff.key!r} is also opt_out.key")
    if p.direction == "outbound" and not opt_out.enabled:
        raise t.error("opt_out", "required for outbound agents: callers must be able to opt out")
    if uses - {"fixture"} and not p.ai_disclosure:
        raise t.error("ai_disclosure", "required: callers must hear they are talking to an AI")
    brain = stages.brain.kind if stages else ""
    needs_prompt = "duplex" in uses or brain == "llm"
    if needs_prompt and not p.prompt:
        raise t.error("prompt", "required by a duplex engine or an llm brain")
    flow: FlowSpec | None = None
    if brain == "flow":
        if not t.has("flow"):
            raise t.error("flow", 'required by brain = "flow"')
        flow = _flow(t, p, idle, opt_out, handoff, {x.name: x for x in tools})
    elif t.has("flow"):
        raise t.error("flow", 'used only by a pipeline engine with brain = "flow"')
    t.done()
    return AgentProfile(
        name=name, path=path, engine=engine, description=p.description,
        direction=p.direction, greeting=p.greeting, ai_disclosure=p.ai_disclosure,
        recording_disclosure=p.recording_disclosure, voice=p.voice, prompt=p.prompt,
        voicemail=p.voicemail, contact_fields=contact_fields, routing=routing,
        stages=stages, duplex=duplex, tools=tools, idle=idle, opt_out=opt_out,
        handoff=handoff, flow=flow,
    )  # fmt: skip


# ---- reading typed keys with their dotted names -----------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(path, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"at line (\d+), column (\d+)", str(exc))
        key = f"line {where.group(1)}, column {where.group(2)}" if where else ""
        raise ProfileError(path, key, f"not valid TOML: {exc}") from None


_REQUIRED: Any = object()


class _Table:
    """One TOML table: typed getters that name the key, and an unknown-key check."""

    def __init__(self, file: Path, prefix: str, data: Mapping[str, Any]) -> None:
        self.file, self.prefix, self.data = file, prefix, data
        self._asked: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else self.prefix or name

    def error(self, name: str, reason: str) -> ProfileError:
        return ProfileError(self.file, self.key(name), reason)

    def has(self, name: str) -> bool:
        self._asked.append(name)
        return name in self.data

    def raw(self, name: str, kinds: tuple[type, ...], default: Any = _REQUIRED) -> Any:
        self._asked.append(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise self.error(name, "required")
            return default
        value = self.data[name]
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            wanted = " or ".join(_TOML_TYPES.get(k, k.__name__) for k in kinds)
            raise self.error(name, f"expected {wanted}, got {_describe(value)}")
        return value

    def text(self, name: str, default: Any = _REQUIRED) -> str:
        value: str = self.raw(name, (str,), default)
        return value

    def integer(self, name: str, default: Any = _REQUIRED, lo: int = 0) -> int:
        value: int = self.raw(name, (int,), default)
        if value < lo:
            raise self.error(name, f"expected at least {lo}, got {value}")
        return value

    def number(self, name: str, default: Any = _REQUIRED) -> float:
        value = float(self.raw(name, (int, float), default))
        if value <= 0:
            raise self.error(name, f"expected a positive number, got {value:g}")
        return value

    def boolean(self, name: str, default: Any = _REQUIRED) -> bool:
        value: bool = self.raw(name, (bool,), default)
        return value

    def one_of(self, name: str, allowed: tuple[str, ...], default: Any = _REQUIRED) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise self.error(name, f"expected one of {', '.join(allowed)}; got {value!r}")
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        values: list[Any] = self.raw(name, (list,), [])
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(f"{name}[{i}]", f"expected a string, got {_describe(v)}")
        return tuple(values)

    def key_list(self, name: str) -> tuple[str, ...]:
        keys = self.texts(name)
        for i, k in enumerate(keys):
            if k not in _DTMF or len(k) != 1:
                raise self.error(
                    f"{name}[{i}]", f"expected one DTMF key (0-9, *, #, A-D), got {k!r}"
                )
        return keys

    def dtmf(self, name: str) -> str:
        k = self.text(name, "")
        if k and (k not in _DTMF or len(k) != 1):
            raise self.error(name, f'expected one DTMF key (0-9, *, #, A-D) or "", got {k!r}')
        return k

    def ident(self, name: str, default: Any = _REQUIRED) -> str:
        value = self.text(name, default)
        if value and not _IDENT.match(value):
            raise self.error(name, f"{value!r} is not a name (a-z, 0-9, _)")
        return value

    def table(self, name: str) -> _Table | None:
        value = self.raw(name, (dict,), None)
        return None if value is None else _Table(self.file, self.key(name), value)

    def tables(self, name: str) -> list[_Table]:
        values: list[Any] = self.raw(name, (list,), [])
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, dict):
                raise self.error(f"{name}[{i}]", f"expected a table, got {_describe(v)}")
            out.append(_Table(self.file, self.key(f"{name}[{i}]"), v))
        return out

    def expect(self, names: tuple[str, ...]) -> None:
        """Refuse unknown keys now, before the known ones are read."""
        self._asked += names
        self.done()

    def done(self) -> None:
        for name in self.data:
            if name not in self._asked:
                allowed = ", ".join(dict.fromkeys(self._asked)) or "(none)"
                raise self.error(name, f"unknown key; expected one of: {allowed}")


def _describe(value: Any) -> str:
    for typ, name in _TOML_TYPES.items():
        if type(value) is typ:
            return f"{name.split()[-1]} {value!r}"
    return f"{type(value).__name__} {value!r}"


@dataclass(frozen=True, slots=True)
class _Parsed:
    name: str
    engine: str
    description: str
    direction: str
    greeting: str
    ai_disclosure: str
    recording_disclosure: str
    voice: str
    prompt: str
    voicemail: str
    contact_fields: tuple[str, ...]


def _check_fields(t: _Table, key: str, template: str, fields: tuple[str, ...]) -> None:
    for body in placeholders(template):
        if body.split("|", 1)[0].strip() not in fields:
            raise t.error(
                key,
                f"unknown placeholder {{{body}}}; contact_fields are: "
                f"{', '.join(fields) or '(none)'}",
            )


# ---- sections -----------------------------------------------------------------


def _routing(t: _Table) -> tuple[Route, ...]:
    arms = t.tables("routing")
    routes: list[Route] = []
    for arm in arms:
        name = arm.text("arm")
        if not _NAME.match(name):
            raise arm.error("arm", "expected lower-case letters, digits, '_' or '-'")
        if any(r.arm == name for r in routes):
            raise arm.error("arm", f"{name!r} is used by another arm")
        engine = arm.one_of("engine", ENGINES)
        backend = arm.text("backend", "")
        if backend and engine != "duplex":
            raise arm.error("backend", "only a duplex arm has a backend")
        if backend and backend not in STAGE_SETTINGS["duplex"]:
            raise arm.error("backend", f"expected one of {', '.join(STAGE_SETTINGS['duplex'])}")
        percent = arm.integer("percent")
        if percent > 100:
            raise arm.error("percent", f"expected 0-100, got {percent}")
        arm.done()
        routes.append(Route(name, engine, backend, percent))
    total = sum(r.percent for r in routes)
    if routes and total != 100:
        raise t.error("routing", f"percentages sum to {total}, expected 100")
    return tuple(routes)


def _stage(t: _Table, stage: str, default_kind: str) -> StageChoice:
    kinds = STAGE_SETTINGS[stage]
    kind_key = "backend" if stage == "duplex" else "kind"
    kind = t.one_of(kind_key, tuple(kinds), default_kind)
    settings: dict[str, Any] = {}
    for name, typ in kinds[kind].items():
        value = t.raw(name, (int, float) if typ is float else (typ,), None)
        if value is None:
            continue
        if typ is float:
            value = float(value)
        lo, hi = _RANGES.get(name, (0, None))
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and (value < lo or (hi is not None and value > hi)):
            wanted = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
            raise t.error(name, f"expected {wanted}, got {value}")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise t.error(name, f"expected one of {', '.join(_CHOICES[name])}; got {value!r}")
        if name == "base_url" and not str(value).startswith(("http://", "https://")):
            raise t.error(name, f"expected an http(s) URL, got {value!r}")
        settings[name] = value
    t.done()
    return StageChoice(kind, settings)


def _stages(t: _Table, used: bool) -> Stages | None:
    table = t.table("stages")
    if table is None:
        return Stages() if used else None
    if not used:
        raise t.error("stages", "used only by the pipeline engine; no route uses it")
    chosen = {}
    for stage, default_kind in _DEFAULT_KINDS.items():
        sub = table.table(stage)
        chosen[stage] = _stage(sub, stage, default_kind) if sub else StageChoice(default_kind)
    table.done()
    return Stages(**chosen)


def _duplex(t: _Table, engine: str, routing: tuple[Route, ...]) -> StageChoice | None:
    table = t.table("duplex")
    needs = (
        engine == "duplex"
        if not routing
        else any(r.engine == "duplex" and not r.backend for r in routing)
    )
    used = engine == "duplex" or any(r.engine == "duplex" for r in routing)
    if table is None:
        if needs:
            raise t.error("duplex", "required by the duplex engine: [duplex] backend = ...")
        return None
    if not used:
        raise t.error("duplex", "used only by the duplex engine; no route uses it")
    return _stage(table, "duplex", _REQUIRED)


def _tools(t: _Table) -> tuple[ToolSpec, ...]:
    out: list[ToolSpec] = []
    for tool in t.tables("tools"):
        name = tool.ident("name")
        if any(x.name == name for x in out):
            raise tool.error("name", f"tool {name!r} is declared twice")
        description = tool.text("description")
        params = tool.table("parameters")
        if params is None:
            raise tool.error("parameters", 'required (a JSON schema with type = "object")')
        schema = _schema(params, top=True)
        http = _http_tool(tool)
        tool.done()
        out.append(ToolSpec(name, description, schema, http))
    return tuple(out)


def _http_tool(tool: _Table) -> HttpToolConfig | None:
    """``[tools.http]``: url, method, headers, secret_headers (header = ENV_VAR), timeout_s,
    retries, backoff_s. Secret values come only from the environment."""
    t = tool.table("http")
    if t is None:
        return None
    maps: dict[str, dict[str, str]] = {}
    for name in ("headers", "secret_headers"):
        sub = t.table(name)
        maps[name] = {h: sub.text(h) for h in list(sub.data)} if sub is not None else {}
        if sub is not None:
            sub.done()
    for header, var in maps["secret_headers"].items():
        if not re.match(r"^[A-Z_][A-Z0-9_]*$", var):
            raise t.error(f"secret_headers.{header}",
                          f"expected the name of an environment variable, got {var!r}")
    d = HttpToolConfig("http://x")
    url, method = t.text("url"), t.text("method", d.method)
    timeout_s, retries = t.number("timeout_s", d.timeout_s), t.integer("retries", d.retries)
    backoff_s = float(t.raw("backoff_s", (int, float), d.backoff_s))
    t.done()
    try:
        return HttpToolConfig(url, method, maps["headers"], maps["secret_headers"], timeout_s,
                              retries, backoff_s)  # fmt: skip
    except ValueError as exc:
        key, _, reason = str(exc).partition(": ")
        raise t.error(key, reason) from None


def _schema(t: _Table, top: bool = False) -> dict[str, Any]:
    """A JSON-schema subset: checked here, kept as plain data."""
    kind = t.one_of("type", ("object",) if top else _SCHEMA_TYPES)
    out: dict[str, Any] = {"type": kind}
    if t.has("description"):
        out["description"] = t.text("description")
    if kind == "object":
        props = t.table("properties")
        out["properties"] = {}
        if props is not None:
            for name in list(props.data):
                sub = props.table(name)
                if sub is None or not _IDENT.match(name):
                    raise props.error(name, "expected a table named a-z, 0-9, _")
                out["properties"][name] = _schema(sub)
            props.done()
        required = t.texts("required")
        for i, r in enumerate(required):
            if r not in out["properties"]:
                raise t.error(f"required[{i}]", f"{r!r} is not in properties")
        out["required"] = list(required)
        if t.has("additionalProperties"):
            out["additionalProperties"] = t.boolean("additionalProperties")
    elif kind == "array":
        items = t.table("items")
        if items is None:
            raise t.error("items", "required for an array")
        out["items"] = _schema(items)
    elif kind == "string":
        for name in ("minLength", "maxLength"):
            if t.has(name):
                out[name] = t.integer(name)
        if t.has("pattern"):
            out["pattern"] = _regex(t, "pattern").pattern
    elif kind in ("integer", "number"):
        for name in ("minimum", "maximum"):
            if t.has(name):
                out[name] = t.raw(name, (int, float) if kind == "number" else (int,))
    if kind != "array" and kind != "object" and t.has("enum"):
        values = t.raw("enum", (list,))
        if not values or not all(isinstance(v, _PY_TYPES[kind]) for v in values):
            raise t.error("enum", f"expected a non-empty array of {kind} values")
        out["enum"] = list(values)
    t.done()
    return out


def _regex(t: _Table, name: str) -> re.Pattern[str]:
    source = t.text(name)
    try:
        return re.compile(source)
    except re.error as exc:
        raise t.error(name, f"bad regular expression: {exc}") from None


def _idle(t: _Table) -> Idle:
    table = t.table("idle")
    if table is None:
        return Idle()
    d = Idle()
    idle = Idle(
        prompt_after_s=table.number("prompt_after_s", d.prompt_after_s),
        hangup_after_s=table.number("hangup_after_s", d.hangup_after_s),
        prompt=table.text("prompt", d.prompt),
        goodbye=table.text("goodbye", d.goodbye),
    )
    if idle.hangup_after_s <= idle.prompt_after_s:
        raise table.error(
            "hangup_after_s", f"must be later than prompt_after_s ({idle.prompt_after_s:g} s)"
        )
    table.done()
    return idle


def _opt_out(t: _Table) -> OptOut:
    table = t.table("opt_out")
    if table is None:
        return OptOut()
    out = OptOut(table.texts("keywords"), table.texts("phrases"), table.dtmf("key"),
                 table.ident("node", "opt_out"))  # fmt: skip
    table.done()
    return out


def _handoff(t: _Table) -> Handoff:
    table = t.table("handoff")
    if table is None:
        return Handoff()
    out = Handoff(table.texts("keywords"), table.texts("phrases"), table.dtmf("key"),
                  table.text("target", ""), table.ident("node", "handoff"))  # fmt: skip
    table.done()
    return out


# ---- the flow -------------------------------------------------------------------


def _flow(
    t: _Table,
    p: _Parsed,
    idle: Idle,
    opt_out: OptOut,
    handoff: Handoff,
    tools: Mapping[str, ToolSpec],
) -> FlowSpec:
    outer = t.table("flow")
    assert outer is not None
    ft = outer
    if outer.has("file"):
        rel = outer.text("file")
        outer.done()  # with `file`, nothing else may be inline
        flow_path = (t.file.parent / rel).resolve()
        if not flow_path.is_file():
            raise outer.error("file", f"no such file: {flow_path}")
        ft = _Table(flow_path, "", _read_toml(flow_path))
    start = ft.ident("start")
    on_fail = ft.ident("on_fail", "")
    intents: list[Intent] = []
    for label, spec in (("opt_out", opt_out), ("handoff", handoff)):
        if spec.enabled:
            intents.append(Intent(label, spec.node, spec.keywords, spec.phrases,
                                  (spec.key,) if spec.key else ()))  # fmt: skip
    intents_t = ft.table("intents")
    if intents_t is not None:
        for name in list(intents_t.data):
            sub = intents_t.table(name)
            if sub is None or not _IDENT.match(name) or name in ("opt_out", "handoff"):
                raise intents_t.error(
                    name,
                    "expected a table named a-z, 0-9, _ (not opt_out "
                    "or handoff: those are top-level tables)",
                )
            intents.append(Intent(name, sub.ident("goto"), sub.texts("keywords"),
                                  sub.texts("phrases"), sub.key_list("keys")))  # fmt: skip
            sub.done()
        intents_t.done()
    nodes_t = ft.table("nodes")
    if nodes_t is None:
        raise ft.error("nodes", "required: a table of nodes")
    nodes: dict[str, Node] = {}
    for nid in list(nodes_t.data):
        sub = nodes_t.table(nid)
        if sub is None or not _IDENT.match(nid):
            raise nodes_t.error(nid, "expected a node table named a-z, 0-9, _")
        nodes[nid] = _node(sub, on_fail, handoff.target)
    nodes_t.done()
    ft.done()

    for label, spec in (("opt_out", opt_out), ("handoff", handoff)):
        if spec.enabled and spec.node not in nodes:
            raise t.error(f"{label}.node", f"no flow node {spec.node!r}")
    opening = [Say(p.ai_disclosure, False), Say(p.recording_disclosure, False), Say(p.greeting)]
    flow = FlowSpec(
        start=start, nodes=nodes, intents=tuple(intents), idle=idle,
        opening=tuple(s for s in opening if s.text), voicemail=p.voicemail,
        fields=p.contact_fields,
    )  # fmt: skip
    problems = check_flow(flow)
    if problems:
        raise ProfileError(ft.file, ft.key(problems[0].key), problems[0].reason)
    for nid, node in nodes.items():
        if isinstance(node, ToolNode):
            _check_tool_call(nodes_t, nid, node, tools)
    return flow


def _node(t: _Table, on_fail: str, handoff_target: str) -> Node:
    kind = t.one_of("kind", _NODE_KINDS)
    node: Node
    if kind == "say":
        node = SayNode(t.text("say"), t.ident("next"), t.boolean("interruptible", True))
    elif kind == "ask":
        node = _ask(t, on_fail)
    elif kind == "tool":
        args: dict[str, ArgValue] = {}
        args_t = t.table("args")
        if args_t is not None:
            for name in list(args_t.data):
                args[name] = args_t.raw(name, (str, int, float, bool))
            args_t.done()
        node = ToolNode(
            tool=t.ident("tool"),
            on_ok=t.ident("on_ok"),
            on_error=t.ident("on_error"),
            args=args,
            save_as=t.ident("save_as", ""),
            on_not_found=t.ident("on_not_found", ""),
            say=t.text("say", ""),
        )
    elif kind == "branch":
        cases_t = t.table("cases")
        if cases_t is None:
            raise t.error("cases", "required: a table of slot value = node")
        cases = {value: cases_t.ident(value) for value in list(cases_t.data)}
        cases_t.done()
        node = BranchNode(t.ident("slot"), cases, t.ident("default"))
    elif kind == "handoff":
        target = t.text("target", handoff_target)
        if not target:
            raise t.error("target", "required (or set [handoff] target)")
        node = HandoffNode(target, t.text("say", ""))
    else:
        node = EndNode(t.text("reason", "completed"), t.text("say", ""))
    t.done()
    return node


def _ask(t: _Table, default_on_fail: str) -> AskNode:
    choices: list[Choice] = []
    for c in t.tables("choices"):
        pattern = _regex(c, "pattern") if c.has("pattern") else None
        assign_t = c.table("assign")
        assign = {}
        if assign_t is not None:
            for slot in list(assign_t.data):
                if not _IDENT.match(slot):
                    raise assign_t.error(slot, "not a slot name (a-z, 0-9, _)")
                assign[slot] = assign_t.text(slot)
            assign_t.done()
        choice = Choice(goto=c.ident("goto"), keywords=c.texts("keywords"),
                        phrases=c.texts("phrases"), keys=c.key_list("keys"),
                        pattern=pattern, assign=assign)  # fmt: skip
        if not (choice.keywords or choice.phrases or choice.keys or pattern):
            raise c.error("", "a choice needs keywords, phrases, keys or a pattern")
        c.done()
        choices.append(choice)
    digits = None
    digits_t = t.table("digits")
    if digits_t is not None:
        d = digits_t
        digits = DigitsSpec(min_len=d.integer("min_len", 1, lo=1), max_len=d.integer("max_len", 16),
                            terminator=d.one_of("terminator", ("#", "*", ""), "#"),
                            timeout_s=d.number("timeout_s", 5.0), slot=d.ident("slot", "digits"),
                            goto=d.ident("goto"))  # fmt: skip
        if not digits.min_len <= digits.max_len <= 32:
            raise d.error(
                "max_len", f"expected min_len ({digits.min_len}) to 32, got {digits.max_len}"
            )
        d.done()
    capture = None
    capture_t = t.table("capture")
    if capture_t is not None:
        capture = Capture(capture_t.ident("slot"), capture_t.ident("goto"),
                          capture_t.integer("min_words", 1, lo=1))  # fmt: skip
        capture_t.done()
    on_fail = t.ident("on_fail", default_on_fail)
    if not on_fail:
        raise t.error("on_fail", "required (or set a default: [flow] on_fail)")
    timeout_s = t.number("timeout_s", None) if t.has("timeout_s") else None
    return AskNode(say=t.text("say", ""), on_fail=on_fail, choices=tuple(choices), digits=digits,
                   capture=capture, no_match=t.text("no_match", ""),
                   retries=t.integer("retries", 2), timeout_s=timeout_s,
                   on_timeout=t.ident("on_timeout", ""), examples=t.texts("examples"),
                   interruptible=t.boolean("interruptible", True))  # fmt: skip


def _check_tool_call(
    nodes_t: _Table, nid: str, node: ToolNode, tools: Mapping[str, ToolSpec]
) -> None:
    key = f"{nid}.tool"
    spec = tools.get(node.tool)
    if spec is None:
        raise nodes_t.error(
            key, f"unknown tool {node.tool!r}; declared: {', '.join(tools) or '(none)'}"
        )
    props: Mapping[str, Any] = spec.parameters.get("properties", {})
    for name, value in node.args.items():
        where = f"{nid}.args.{name}"
        if name not in props:
            raise nodes_t.error(
                where,
                f"not a parameter of tool {node.tool!r}; "
                f"expected one of: {', '.join(props) or '(none)'}",
            )
        want = props[name]["type"]
        templated = isinstance(value, str) and bool(placeholders(value))
        if templated and want != "string":
            raise nodes_t.error(where, f"a template gives a string; the parameter is {want}")
        if want in _PY_TYPES and not isinstance(value, _PY_TYPES[want]):
            raise nodes_t.error(where, f"expected {want}, got {_describe(value)}")
        if isinstance(value, bool) and want != "boolean":
            raise nodes_t.error(where, f"expected {want}, got {_describe(value)}")
    for name in spec.parameters.get("required", []):
        if name not in node.args:
            raise nodes_t.error(
                f"{nid}.args", f"missing required argument {name!r} of tool {node.tool!r}"
            )


def _stable_percent(key: str) -> int:
    """0..99 from a string, the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
