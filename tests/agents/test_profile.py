"""Agent profiles: the shipped ones load; every bad one fails with file, key and reason."""

from __future__ import annotations

import importlib
import json
from collections import Counter
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from callagent.agents.flow import AskNode, Hangup, Idle, ToolNode
from callagent.agents.profile import (
    AgentProfile,
    ProfileError,
    Route,
    StageChoice,
    Stages,
    load_profile,
    load_profiles,
)

AGENTS = Path(__file__).resolve().parents[2] / "config" / "agents"

# A small valid profile; each bad case below changes one thing in it.
MINI = """\
name = "mini"
engine = "pipeline"
ai_disclosure = "You are talking to an automated assistant."
greeting = "Hello."

[handoff]
keywords = ["agent"]
key = "0"
target = "queue:help"

[[tools]]
name = "lookup"
description = "Look a code up."
[tools.parameters]
type = "object"
required = ["code"]
[tools.parameters.properties.code]
type = "string"

[flow]
start = "menu"
on_fail = "handoff"

[flow.nodes.menu]
kind = "ask"
say = "Say or key a code."
digits = { min_len = 3, max_len = 4, goto = "lookup" }
choices = [{ keywords = ["bye"], goto = "bye" }]

[flow.nodes.lookup]
kind = "tool"
tool = "lookup"
args = { code = "{digits}" }
on_ok = "bye"
on_error = "handoff"

[flow.nodes.handoff]
kind = "handoff"

[flow.nodes.bye]
kind = "end"
say = "Bye."
"""


def write(tmp_path: Path, text: str, name: str = "mini.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(old: str, new: str) -> str:
    assert old in MINI, old
    return MINI.replace(old, new, 1)


def test_both_shipped_agents_and_the_fixture_load() -> None:
    profiles = load_profiles(AGENTS)
    assert sorted(profiles) == ["appointment_reminder", "customer_service",
                               "customer_service_duplex", "fixture"]  # fmt: skip
    cs, reminder, fixture = (profiles[n] for n in ("customer_service", "appointment_reminder",
                                                   "fixture"))  # fmt: skip
    assert (cs.engine, cs.direction, reminder.direction) == ("pipeline", "inbound", "outbound")
    assert cs.stages == Stages(vad=StageChoice("two_stage", {"end_silence_ms": 700}))
    assert [t.name for t in cs.tools] == ["lookup_order", "find_orders_by_phone", "change_address"]
    assert cs.handoff.key == "0" and cs.opt_out.key == "9" and reminder.opt_out.key == "9"
    assert cs.flow is not None and cs.flow.start == "menu"
    assert reminder.flow is not None and reminder.voicemail.startswith("Hello {first_name}")
    assert reminder.idle == Idle(6.0, 15.0, "Are you still there?", reminder.idle.goodbye)
    assert fixture.engine == "fixture" and fixture.flow is None and fixture.stages is None
    assert fixture.greeting == "Thank you for calling. How can I help you today?"
    assert fixture.routes == (Route("default", "fixture", "", 100),)


def test_the_mini_profile_is_valid(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, MINI))
    assert profile.name == "mini" and profile.stages == Stages()
    assert profile.flow is not None
    assert [i.name for i in profile.flow.intents] == ["handoff"]
    flow = profile.new_flow()
    flow.start()
    assert flow.on_user_text("bye", True)[-1] == Hangup("completed")


def test_profiles_are_frozen() -> None:
    profile = load_profile(AGENTS / "fixture.toml")
    with pytest.raises(FrozenInstanceError):
        profile.engine = "duplex"  # type: ignore[misc]


def test_tool_schemas_are_kept_as_json_data() -> None:
    cs = load_profile(AGENTS / "customer_service.toml")
    schema = cs.tool("lookup_order").parameters
    assert json.loads(json.dumps(schema)) == {
        "type": "object",
        "properties": {
            "order_number": {
                "type": "string",
                "description": "The five-digit order number.",
                "pattern": "^[0-9]{5}$",
            }
        },
        "required": ["order_number"],
    }  # fmt: skip
    with pytest.raises(KeyError):
        cs.tool("refund")


BAD = [
    # (what changes, expected key, part of the reason)
    (edit('engine = "pipeline"\n', ""), "engine", "required"),
    (edit('engine = "pipeline"', "engine = 5"), "engine", "expected a string, got integer 5"),
    (edit('engine = "pipeline"', 'engine = "turbo"'), "engine",
     "expected one of pipeline, duplex, fixture; got 'turbo'"),
    (edit('name = "mini"', 'name = "maxi"'), "name", "must match the file name 'mini'"),
    (edit("ai_disclosure = ", "ai_disclosur = "), "ai_disclosur",
     "unknown key; expected one of: name, engine"),
    ('[stages.tts]\nthreads = -1\n', "stages.tts.threads", "expected at least 0, got -1"),
    ("colour = 'blue'\n" + MINI, "colour", "unknown key; expected one of: name, engine"),
    (edit('kind = "end"', 'kind = "end"\nsayy = "x"'), "flow.nodes.bye.sayy", "unknown key"),
    (edit('key = "0"', 'key = "00"'), "handoff.key", "expected one DTMF key"),
    (edit('greeting = "Hello."', 'greeting = "Hello {first_name}."'), "greeting",
     "unknown placeholder {first_name}"),
    (edit('ai_disclosure = "You are talking to an automated assistant."\n', ""), "ai_disclosure",
     "required"),
    (edit('engine = "pipeline"', 'engine = "pipeline"\ndirection = "outbound"'), "opt_out",
     "required for outbound agents"),
    ('[idle]\nprompt_after_s = 10\nhangup_after_s = 5\n', "idle.hangup_after_s",
     "must be later than prompt_after_s (10 s)"),
    ('[idle]\nprompt_after_s = 0\n', "idle.prompt_after_s", "expected a positive number"),
    # routing
    ('[[routing]]\narm = "a"\nengine = "pipeline"\npercent = 60\n'
     '[[routing]]\narm = "b"\nengine = "fixture"\npercent = 30\n', "routing",
     "percentages sum to 90, expected 100"),
    ('[[routing]]\narm = "a"\nengine = "pipeline"\npercent = 101\n', "routing[0].percent",
     "expected 0-100"),
    ('[[routing]]\narm = "a"\nengine = "pipeline"\npercent = -5\n', "routing[0].percent",
     "expected at least 0"),
    ('[[routing]]\narm = "a"\nengine = "pipeline"\npercent = 50\n'
     '[[routing]]\narm = "a"\nengine = "fixture"\npercent = 50\n', "routing[1].arm",
     "'a' is used by another arm"),
    ('[[routing]]\narm = "a"\nengine = "pipeline"\npercent = 50\n'
     '[[routing]]\narm = "b"\nengine = "duplex"\npercent = 50\n', "duplex",
     "required by the duplex engine"),
    ('[[routing]]\narm = "a"\nengine = "pipeline"\npercent = 50\n'
     '[[routing]]\narm = "b"\nengine = "duplex"\nbackend = "openai_realtime"\npercent = 50\n',
     "prompt", "required by a duplex engine"),
    ('[[routing]]\narm = "a"\nengine = "pipeline"\nbackend = "local"\npercent = 100\n',
     "routing[0].backend", "only a duplex arm has a backend"),
    ('[duplex]\nbackend = "local"\n', "duplex", "no route uses it"),
    # stages
    ('[stages.stt]\nkind = "whisper"\n', "stages.stt.kind", "expected one of pocketsphinx"),
    ('[stages.stt]\nfwdflat = "no"\n', "stages.stt.fwdflat", "expected a boolean, got string 'no'"),
    ('[stages.stt]\nbeam = 3\n', "stages.stt.beam", "unknown key; expected one of: kind, fwdflat"),
    ('[stages.vad]\nmode = 7\n', "stages.vad.mode", "expected 0..3, got 7"),
    ('[stages.ears]\nkind = "x"\n', "stages.ears", "unknown key; expected one of: vad, stt"),
    ('[stages.brain]\nkind = "llm"\n', "prompt", "required by a duplex engine or an llm brain"),
    # tools
    (edit('[tools.parameters.properties.code]\ntype = "string"',
          '[tools.parameters.properties.code]\ntype = "str"'),
     "tools[0].parameters.properties.code.type", "expected one of string, integer"),
    (edit('required = ["code"]', 'required = ["kode"]'), "tools[0].parameters.required[0]",
     "'kode' is not in properties"),
    (edit('type = "string"', 'type = "string"\npattern = "[0-9"'),
     "tools[0].parameters.properties.code.pattern", "bad regular expression"),
    (edit('type = "string"', 'type = "string"\nformat = "date"'),
     "tools[0].parameters.properties.code.format", "unknown key"),
    (edit('description = "Look a code up."\n', ""), "tools[0].description", "required"),
    (edit('tool = "lookup"', 'tool = "find"'), "flow.nodes.lookup.tool",
     "unknown tool 'find'; declared: lookup"),
    (edit('args = { code = "{digits}" }', 'args = { kode = "{digits}" }'),
     "flow.nodes.lookup.args.kode", "not a parameter of tool 'lookup'"),
    (edit('args = { code = "{digits}" }', "args = {}"), "flow.nodes.lookup.args",
     "missing required argument 'code'"),
    (edit('args = { code = "{digits}" }', "args = { code = 12 }"), "flow.nodes.lookup.args.code",
     "expected string, got integer 12"),
    # the flow's graph
    (edit('goto = "bye" }]', 'goto = "nowhere" }]'), "flow.nodes.menu.choices[0].goto",
     "unknown node 'nowhere'"),
    (edit('start = "menu"', 'start = "menus"'), "flow.start", "unknown node 'menus'"),
    (edit('on_error = "handoff"', 'on_error = "handof"'), "flow.nodes.lookup.on_error",
     "unknown node 'handof'"),
    (MINI + '[flow.nodes.orphan]\nkind = "end"\n', "flow.nodes.orphan",
     "unreachable from start or any intent"),
    (edit('on_ok = "bye"', 'on_ok = "a"') + '[flow.nodes.a]\nkind = "say"\nsay = "A."\nnext = "b"\n'
     '[flow.nodes.b]\nkind = "say"\nsay = "B."\nnext = "a"\n', "flow.nodes.a",
     "loops back to itself without listening"),
    (edit('choices = [{ keywords = ["bye"], goto = "bye" }]', 'choices = [{ goto = "bye" }]'),
     "flow.nodes.menu.choices[0]", "a choice needs keywords, phrases, keys or a pattern"),
    (edit('keywords = ["bye"], goto', 'pattern = "(bye", goto'),
     "flow.nodes.menu.choices[0].pattern",
     "bad regular expression: missing ), unterminated subpattern"),
    (edit('keywords = ["bye"], goto', 'keys = ["11"], goto'), "flow.nodes.menu.choices[0].keys[0]",
     "expected one DTMF key"),
    (edit('keywords = ["bye"], goto', 'keys = ["5"], goto'), "flow.nodes.menu.choices[0].keys",
     "key '5' is taken by the digits entry"),
    (edit('digits = { min_len = 3, max_len = 4, goto = "lookup" }\n', "")
     .replace('keywords = ["bye"], goto = "bye"', 'keys = ["0"], goto = "lookup"'),
     "flow.nodes.menu.choices[0].keys", "key '0' is the handoff intent's"),
    (edit("min_len = 3", "min_len = 0"), "flow.nodes.menu.digits.min_len", "expected at least 1"),
    (edit("max_len = 4", "max_len = 2"), "flow.nodes.menu.digits.max_len",
     "expected min_len (3) to 32, got 2"),
    (edit("max_len = 4,", 'max_len = 4, terminator = "0",'), "flow.nodes.menu.digits.terminator",
     "expected one of #, *, ; got '0'"),
    (edit("max_len = 4,", "max_len = 4, timeout_s = 0,"), "flow.nodes.menu.digits.timeout_s",
     "expected a positive number"),
    (edit("max_len = 4,", 'max_len = 4, slot = "Code",'), "flow.nodes.menu.digits.slot",
     "'Code' is not a name"),
    (edit('digits = { min_len = 3, max_len = 4, goto = "lookup" }\n', "")
     .replace('choices = [{ keywords = ["bye"], goto = "bye" }]', ""),
     "flow.nodes.menu", "an ask node needs choices, digits or capture"),
    (edit('on_fail = "handoff"\n', ""), "flow.nodes.menu.on_fail",
     "required (or set a default: [flow] on_fail)"),
    (edit('kind = "ask"', 'kind = "ask"\ntimeout_s = 3'), "flow.nodes.menu.on_timeout",
     "timeout_s and on_timeout go together"),
    (edit('kind = "ask"', 'kind = "question"'), "flow.nodes.menu.kind", "expected one of say, ask"),
    (edit('say = "Bye."', 'say = "Bye {nmae}."'), "flow.nodes.bye.say",
     "unknown placeholder {nmae}; known: digits"),
    (edit('say = "Bye."', 'say = "Bye {digits|shout}."'), "flow.nodes.bye.say",
     "bad placeholder {digits|shout}"),
    (edit('target = "queue:help"\n', ""), "flow.nodes.handoff.target",
     "required (or set [handoff] target)"),
    (edit('key = "0"', 'key = "0"\nnode = "human"'), "handoff.node", "no flow node 'human'"),
    (MINI.split("[flow]")[0], "flow", 'required by brain = "flow"'),
    (edit('[flow.nodes.bye]', '[flow.intents.opt_out]\ngoto = "bye"\n[flow.nodes.bye]'),
     "flow.intents.opt_out", "not opt_out or handoff"),
    (edit('engine = "pipeline"', 'engine = "fixture"'), "flow",
     'used only by a pipeline engine with brain = "flow"'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "reason"), BAD, ids=[b[1] + ":" + b[2][:24] for b in BAD])
def test_a_bad_profile_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    if not text.startswith(("name", "colour")):  # a snippet: added to the valid profile
        text = MINI + text
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    err = exc.value
    assert (err.file, err.key) == (path, key), str(err)
    assert reason in err.reason, str(err)
    assert str(err) == f"{path}: {key}: {err.reason}"


def test_a_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "mini"\nengine = \n')
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert exc.value.key == "line 2, column 10"
    assert exc.value.reason.startswith("not valid TOML: Invalid value")
    assert str(exc.value).startswith(f"{path}: line 2, column 10: not valid TOML")


def test_an_unreadable_profile_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "absent.toml")
    with pytest.raises(ProfileError, match="not a directory"):
        load_profiles(tmp_path / "nowhere")


def test_a_flow_in_its_own_file(tmp_path: Path) -> None:
    head, flow = MINI.split("[flow]\n")
    (tmp_path / "flows").mkdir()
    flow_text = flow.replace("[flow.nodes.", "[nodes.")
    write(tmp_path, flow_text, "flows/mini.flow.toml")
    write(tmp_path, flow_text, "other.flow.toml")  # beside profiles: skipped by load_profiles
    path = write(tmp_path, head + '[flow]\nfile = "flows/mini.flow.toml"\n')
    profile = load_profiles(tmp_path)["mini"]
    assert profile.path == path and profile.flow is not None
    assert isinstance(profile.flow.nodes["lookup"], ToolNode)


def test_errors_in_a_flow_file_name_that_file(tmp_path: Path) -> None:
    head, flow = MINI.split("[flow]\n")
    flow_path = write(tmp_path, flow.replace("[flow.nodes.", "[nodes.").replace(
        'goto = "bye" }]', 'goto = "byee" }]'), "mini.flow.toml")  # fmt: skip
    write(tmp_path, head + '[flow]\nfile = "mini.flow.toml"\n')
    with pytest.raises(ProfileError) as exc:
        load_profile(tmp_path / "mini.toml")
    assert (exc.value.file, exc.value.key) == (flow_path, "nodes.menu.choices[0].goto")


def test_a_missing_flow_file_is_named_by_its_key(tmp_path: Path) -> None:
    head = MINI.split("[flow]\n")[0]
    path = write(tmp_path, head + '[flow]\nfile = "absent.flow.toml"\n')
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert (exc.value.file, exc.value.key) == (path, "flow.file")
    assert exc.value.reason.startswith("no such file")


def test_a_flow_file_excludes_inline_flow_keys(tmp_path: Path) -> None:
    head = MINI.split("[flow]\n")[0]
    path = write(tmp_path, head + '[flow]\nfile = "x.flow.toml"\nstart = "menu"\n')
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert (exc.value.key, exc.value.reason) == ("flow.start", "unknown key; expected one of: file")


DUPLEX_AB = """\
name = "ab"
engine = "pipeline"
ai_disclosure = "You are talking to an automated assistant."
prompt = "You help customers of Acme Supplies."
voice = "alloy"

[[routing]]
arm = "flow"
engine = "pipeline"
percent = 70

[[routing]]
arm = "realtime"
engine = "duplex"
percent = 30

[duplex]
backend = "openai_realtime"
model = "gpt-realtime"
temperature = 0.7

[stages.brain]
kind = "llm"
model = "local-small"
"""


def test_an_ab_split_routes_calls_stably_by_percentage(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, DUPLEX_AB, "ab.toml"))
    assert profile.duplex == StageChoice("openai_realtime", {"model": "gpt-realtime",
                                                             "temperature": 0.7})  # fmt: skip
    assert profile.stages is not None and profile.stages.brain == StageChoice(
        "llm", {"model": "local-small"}
    )
    assert profile.routes == (
        Route("flow", "pipeline", "", 70),
        Route("realtime", "duplex", "", 30),
    )
    arms = Counter(profile.pick_route(f"CA{i:032d}").arm for i in range(2000))
    assert 0.65 < arms["flow"] / 2000 < 0.75
    assert profile.pick_route("CA1") == profile.pick_route("CA1")  # stable for one call
    assert profile.flow is None
    assert profile.expected_phrases() == ()


def test_a_duplex_only_profile_needs_no_stages(tmp_path: Path) -> None:
    text = ('name = "rt"\nengine = "duplex"\nai_disclosure = "Automated assistant."\n'
            'prompt = "Be brief."\n[duplex]\nbackend = "gemini_live"\n')  # fmt: skip
    profile = load_profile(write(tmp_path, text, "rt.toml"))
    assert profile.stages is None
    assert profile.routes == (Route("default", "duplex", "gemini_live", 100),)
    with pytest.raises(ValueError, match="has no flow"):
        profile.new_flow()


def test_handoff_target_defaults_from_the_handoff_table(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, MINI))
    assert profile.flow is not None
    menu = profile.flow.nodes["menu"]
    assert isinstance(menu, AskNode) and menu.on_fail == "handoff"
    flow = profile.new_flow()
    flow.start()
    assert flow.on_user_text("an agent please", True)[-1].target == "queue:help"  # type: ignore[union-attr]


EXPORTS = {
    "callagent.agents.profile": [
        "DIRECTIONS", "ENGINES", "STAGE_SETTINGS", "AgentProfile", "Handoff", "OptOut",
        "ProfileError", "Route", "StageChoice", "Stages", "ToolSpec", "load_profile",
        "load_profiles",
    ],
    "callagent.agents.flow": [
        "Action", "AskNode", "BranchNode", "Capture", "Choice", "DigitsSpec", "EndNode", "Flow",
        "FlowError", "FlowProblem", "FlowSpec", "FlowState", "HandoffNode", "Hangup", "Idle",
        "Intent", "ListenFor", "Node", "Say", "SayNode", "ToolNode", "ToolRequest", "ToolStatus",
        "Transfer", "check_flow", "normalize_utterance", "placeholders",
    ],
    "callagent.agents.orders": [
        "AddressChangeRefused", "Order", "OrderDataError", "OrderStatus", "OrderStore",
        "find_order", "find_orders_by_phone", "load_orders", "normalize_order_number",
        "normalize_phone", "sample_orders", "with_new_address",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_public_names_are_pinned(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(EXPORTS[name])
    assert all(hasattr(module, n) for n in module.__all__)


def test_agent_profile_type_is_exported() -> None:
    assert AgentProfile.__module__ == "callagent.agents.profile"
