"""The scripted-flow brain: whole conversations through the two shipped agents.

Tools are answered here the way the tools layer will: a ToolRequest goes to
the sample order store (or a stub), and the result comes back through
`Flow.tool_result`. No I/O, no clock: silence is fed as seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from callagent.agents.flow import (
    Action,
    AskNode,
    Choice,
    DigitsSpec,
    EndNode,
    Flow,
    FlowError,
    FlowSpec,
    FlowState,
    Hangup,
    ListenFor,
    Node,
    Say,
    ToolRequest,
    ToolStatus,
    Transfer,
    check_flow,
    normalize_utterance,
)
from callagent.agents.orders import AddressChangeRefused, OrderStore
from callagent.agents.profile import AgentProfile, load_profile

AGENTS = Path(__file__).resolve().parents[2] / "config" / "agents"
CALLER = "+15555550101"  # has orders 45729 (shipped) and 24087 (processing)
CONTACT = {
    "first_name": "Ana",
    "appointment_id": "APT-1001",
    "appointment_time": "Tuesday, June 10 at 9 AM",
    "provider": "Dr. Patel",
    "slot_1": "Wednesday at 2 PM",
    "slot_2": "Friday at 10 AM",
}


@pytest.fixture(scope="module")
def cs_profile() -> AgentProfile:
    return load_profile(AGENTS / "customer_service.toml")


@pytest.fixture(scope="module")
def reminder_profile() -> AgentProfile:
    return load_profile(AGENTS / "appointment_reminder.toml")


class Call:
    """Drives a flow like an engine: tools answered at once, actions collected."""

    def __init__(self, flow: Flow, store: OrderStore | None = None, *, tools_fail: bool = False):
        self.flow = flow
        self.store = store or OrderStore.sample()
        self.tools_fail = tools_fail
        self.requests: list[ToolRequest] = []
        self.log: list[Action] = []

    def _run(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            out.append(action)
            if isinstance(action, ToolRequest):
                self.requests.append(action)
                status, data = self._execute(action)
                queue += self.flow.tool_result(action.id, status, data)
        self.log += out
        return out

    def _execute(self, req: ToolRequest) -> tuple[ToolStatus, Mapping[str, object]]:
        if self.tools_fail:
            return ToolStatus.ERROR, {"reason": "the service is down"}
        args = {k: str(v) for k, v in req.args.items()}
        if req.name == "lookup_order":
            order = self.store.get(args["order_number"])
            return (ToolStatus.OK, order.fields()) if order else (ToolStatus.NOT_FOUND, {})
        if req.name == "find_orders_by_phone":
            orders = self.store.by_phone(args["phone"])
            return (ToolStatus.OK, orders[0].fields()) if orders else (ToolStatus.NOT_FOUND, {})
        if req.name == "change_address":
            try:
                order = self.store.change_address(args["order_number"], args["new_address"])
            except KeyError:
                return ToolStatus.NOT_FOUND, {}
            except AddressChangeRefused as exc:
                return ToolStatus.ERROR, {"reason": exc.reason}
            return ToolStatus.OK, order.fields()
        return ToolStatus.OK, {}  # the appointment tools: accepted

    def start(self) -> list[Action]:
        return self._run(self.flow.start())

    def say(self, text: str) -> list[Action]:
        return self._run(self.flow.on_user_text(text, True))

    def keys(self, keys: str) -> list[Action]:
        out: list[Action] = []
        for k in keys:
            out += self._run(self.flow.on_dtmf(k))
        return out

    def silence(self, seconds: float) -> list[Action]:
        return self._run(self.flow.on_silence(seconds))


def text(actions: Sequence[Action]) -> str:
    return " ".join(a.text for a in actions if isinstance(a, Say))


def cs_call(profile: AgentProfile, store: OrderStore | None = None, **kw: bool) -> Call:
    call = Call(profile.new_flow({"caller_number": CALLER}), store, **kw)
    call.start()
    return call


def reminder_call(profile: AgentProfile) -> Call:
    call = Call(profile.new_flow(CONTACT))
    call.start()
    return call


LISTEN_DIGITS = ListenFor("digits", DigitsSpec(5, 5, "#", 5.0, "order_number", "lookup"))
LISTEN_DIGITS_AGAIN = ListenFor(
    "digits", DigitsSpec(5, 5, "#", 5.0, "order_number", "lookup_again")
)
LISTEN_SPEECH = ListenFor("speech")


# ---- matching ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("heard", "tokens"),
    [
        ("Um, it's four-five seven!", ["it", "is", "457"]),
        ("four five seven two nine", ["45729"]),
        ("457 29", ["45729"]),
        ("four oh five", ["405"]),
        ("Oh, yes.", ["yes"]),
        ("twenty three", ["23"]),
        ("double five six", ["556"]),
        ("I don't know, uh, I can't", ["i", "do", "not", "know", "i", "can", "not"]),
        ("Uh-huh", ["uh-huh"]),
        ("THE ORDER\u2019S LATE", ["the", "order", "is", "late"]),
        ("", []),
    ],
)
def test_normalize_utterance_is_tolerant_of_stt_output(heard: str, tokens: list[str]) -> None:
    assert normalize_utterance(heard) == tokens


def _yes_no() -> FlowSpec:
    choices = (
        Choice("yes", keywords=("yes", "right", "agent"), phrases=("that's right",)),
        Choice("no", keywords=("no",), phrases=("that's not right", "not correct")),
        Choice("code", pattern=re.compile(r"code (?:is )?(?P<code>\d+)")),
    )
    nodes: dict[str, Node] = {
        "q": AskNode("Right?", on_fail="no", choices=choices),
        "yes": EndNode("yes"),
        "no": EndNode("no"),
        "code": EndNode("code", say="Code {code|spell}."),
    }
    return FlowSpec("q", nodes)


@pytest.mark.parametrize(
    ("heard", "reason"),
    [
        ("That's right.", "yes"),
        ("no, that's not right", "no"),  # the longest match wins over "right"
        ("that is not correct", "no"),
        ("that's, um, quite right", "yes"),  # a phrase allows one extra word
        ("agents", "yes"),  # plurals
        ("the code is four two", "code"),
    ],
)
def test_the_longest_matching_choice_wins(heard: str, reason: str) -> None:
    flow = Flow(_yes_no())
    flow.start()
    actions = flow.on_user_text(heard, True)
    assert actions[-1] == Hangup(reason)


def test_a_pattern_fills_slots_from_named_groups() -> None:
    flow = Flow(_yes_no())
    flow.start()
    assert flow.on_user_text("my code is four two", True)[0] == Say("Code 4 2.", False)
    assert flow.slots["code"] == "42"


# ---- customer service ------------------------------------------------------------


def test_disclosures_play_first_and_cannot_be_interrupted(cs_profile: AgentProfile) -> None:
    actions = Flow(cs_profile.flow or FlowSpec("", {}), {"caller_number": CALLER}).start()
    assert actions[:3] == [
        Say("Hi, you've reached Acme Supplies' automated assistant.", False),
        Say("This call is recorded for quality and training.", False),
        Say("Thanks for calling."),
    ]
    assert actions[3] == Say(
        "I can check the status of an order or change a delivery address. How can I help?"
    )
    assert actions[4] == LISTEN_SPEECH


def test_order_status_by_speech(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    assert call.say("Hi, I'd like to check the status of my order.")[-1] == LISTEN_DIGITS
    actions = call.say("my order number is four five seven two nine")
    assert call.requests == [ToolRequest("lookup-1", "lookup_order", {"order_number": "45729"})]
    assert text(actions) == (
        "Order 4 5 7 2 9 has shipped with UPS and should arrive on Thursday, June 12. "
        "Is there anything else I can help you with?"
    )
    assert actions[-1] == LISTEN_SPEECH
    assert call.say("No thanks, that's all.") == [
        Say("Thank you for calling Acme Supplies. Goodbye.", False),
        Hangup("completed"),
    ]
    assert call.flow.state is FlowState.ENDED


def test_order_status_by_keys_with_pound(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    assert call.keys("1")[-1] == LISTEN_DIGITS
    assert call.keys("4572") == []  # collecting
    assert call.keys("9") == []  # five digits, but the pound key ends the entry
    actions = call.keys("#")
    assert call.requests[-1].args == {"order_number": "45729"}
    assert "has shipped with UPS" in text(actions)


def test_keyed_digits_time_out_into_a_submission(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    call.keys("1")
    call.keys("45729")
    assert call.silence(2.0) == []  # under the inter-digit timeout
    actions = call.silence(5.0)
    assert call.requests[-1].args == {"order_number": "45729"}
    assert "Order 4 5 7 2 9 has shipped" in text(actions)


def test_too_few_digits_reprompt(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    call.keys("1")
    call.keys("457")
    actions = call.silence(5.0)
    assert actions == [
        Say("Sorry, I need the five digit order number. Say it one digit at a time, "
            "or key it in and press pound."),
        LISTEN_DIGITS,
    ]  # fmt: skip
    assert call.keys("457#")[0].text.startswith("Sorry")  # type: ignore[union-attr]
    assert call.requests == []


def test_star_clears_the_digits_keyed_so_far(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    call.keys("1")
    call.keys("111*45729#")
    assert call.requests[-1].args == {"order_number": "45729"}


def test_keys_zero_and_nine_are_digits_while_an_order_number_is_keyed(
    cs_profile: AgentProfile,
) -> None:
    call = cs_call(cs_profile)
    call.keys("1")
    assert call.keys("1") + call.keys("0") + call.keys("9") == []  # no hand-off, no opt-out
    call.keys("99#")
    assert call.requests[-1].args == {"order_number": "10999"}


def test_order_not_found_then_found_on_retry(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    call.say("where is my order")
    actions = call.keys("99999#")
    assert text(actions) == (
        "I couldn't find an order numbered 9 9 9 9 9. "
        "Please say the five digit order number again, or key it in and press pound."
    )
    assert actions[-1] == LISTEN_DIGITS_AGAIN
    actions = call.say("it's one three oh nine oh")
    assert call.requests[-1].args == {"order_number": "13090"}
    assert "Order 1 3 0 9 0 has shipped with FedEx" in text(actions)


def test_order_not_found_twice_hands_off(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    call.keys("1")
    call.keys("99999#")
    actions = call.keys("88888#")
    assert actions[-2:] == [
        Say("Let me transfer you to a member of our team. Please hold.", False),
        Transfer("queue:customer-service"),
    ]
    assert "I still couldn't find that order" in text(actions)


def test_caller_without_the_number_is_looked_up_by_phone(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    call.say("track my order")
    actions = call.say("I don't know it")
    assert call.requests[-1] == ToolRequest(
        "lookup_phone-1", "find_orders_by_phone", {"phone": CALLER}
    )
    assert "Order 2 4 0 8 7 is being prepared" in text(actions)  # the newest of two


def test_change_of_address(cs_profile: AgentProfile) -> None:
    store = OrderStore.sample()
    call = cs_call(cs_profile, store)
    assert call.say("Actually wait, stop, I need to change the address.")[-1] == LISTEN_DIGITS
    actions = call.keys("45729#")
    assert text(actions) == (
        "What is the new delivery address for order 4 5 7 2 9? "
        "Please say the street, the city and the zip code."
    )
    assert actions[-1] == LISTEN_SPEECH
    assert text(call.say("um")) == ""  # fillers only: nothing heard
    assert "Please say the full new address" in text(call.say("Oak"))  # too short
    assert text(call.say("22 Oak Street Springfield")) == (
        "I heard: 22 Oak Street Springfield. Is that correct?"
    )
    call.say("no, that's not right")  # back to the address
    assert text(call.say("22 Oak Street, Springfield, Illinois 62704")) == (
        "I heard: 22 Oak Street, Springfield, Illinois 62704. Is that correct?"
    )
    actions = call.say("yes")
    assert call.requests[-1] == ToolRequest(
        "change_address-2", "change_address",
        {"order_number": "45729", "new_address": "22 Oak Street, Springfield, Illinois 62704"},
    )  # fmt: skip
    assert text(actions) == (
        "Done. Order 4 5 7 2 9 will now be delivered to 22 Oak Street, Springfield, Illinois "
        "62704. Is there anything else I can help you with?"
    )
    order = store.get("45729")
    assert order is not None and order.address == "22 Oak Street, Springfield, Illinois 62704"
    assert len(store.history("45729")) == 2


def test_change_of_address_refused_for_a_delivered_order(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    call.keys("2")
    call.keys("10571#")
    call.say("9 Quarry Lane, Lyons, Colorado")
    actions = call.say("yes that's right")
    assert text(actions).startswith(
        "Sorry, I couldn't change the address on that order, because it has already been delivered."
    )
    assert actions[-1] == LISTEN_SPEECH


def test_tool_failure_hands_off(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile, tools_fail=True)
    call.keys("1")
    actions = call.keys("45729#")
    assert "isn't responding" in text(actions) and actions[-1] == Transfer("queue:customer-service")


@pytest.mark.parametrize(
    "heard",
    ["agent", "A human, please.", "Can I speak to a representative?", "I want a real person"],
)
def test_hand_off_on_request_at_any_listening_node(cs_profile: AgentProfile, heard: str) -> None:
    for before in ([], ["where is my order"], ["change address", "45729"]):
        call = cs_call(cs_profile)
        for line in before:
            call.say(line)
        assert call.say(heard)[-1] == Transfer("queue:customer-service")


def test_hand_off_by_key_zero(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    assert call.keys("0")[-1] == Transfer("queue:customer-service")


@pytest.mark.parametrize(
    "heard", ["Stop calling me!", "Please do not call this number", "don't call me"]
)
def test_opt_out_by_phrase(cs_profile: AgentProfile, heard: str) -> None:
    call = cs_call(cs_profile)
    assert call.say(heard) == [
        Say("Understood. We won't call this number again. Goodbye.", False),
        Hangup("opt_out"),
    ]


def test_opt_out_by_key_nine(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    assert call.keys("9")[-1] == Hangup("opt_out")


def test_idle_prompt_then_polite_hang_up(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    assert call.silence(3) == []
    assert call.silence(8) == [Say("Are you still there? I'm still listening.")]
    assert call.silence(12) == []  # prompted once
    assert call.silence(20) == [
        Say("I haven't heard anything, so I'll hang up now. Please call again any time. "
            "Goodbye.", False),
        Hangup("idle"),
    ]  # fmt: skip
    assert call.flow.state is FlowState.ENDED


def test_caller_input_rearms_the_idle_prompt(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    assert call.silence(8)
    assert call.flow.on_user_text("I", False) == []  # partial: the caller is talking
    assert call.silence(8) == [Say("Are you still there? I'm still listening.")]


def test_misunderstood_caller_is_reprompted_then_handed_off(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    first = call.say("purple elephants")
    assert text(first).startswith("Sorry, I didn't catch that. Say order status or press 1")
    assert first[-1] == LISTEN_SPEECH
    assert call.keys("5")[-1] == LISTEN_SPEECH  # an unknown key is a miss too
    assert call.say("purple elephants")[-1] == Transfer("queue:customer-service")


def test_partial_transcripts_do_not_move_the_flow(cs_profile: AgentProfile) -> None:
    call = cs_call(cs_profile)
    assert call.flow.on_user_text("I want an agent", False) == []
    assert call.flow.node == "menu"


def test_an_intent_abandons_a_pending_tool_request(cs_profile: AgentProfile) -> None:
    flow = cs_profile.new_flow({"caller_number": CALLER})
    flow.start()
    flow.on_dtmf("1")
    for k in "45729#":
        actions = flow.on_dtmf(k)
    request = actions[-1]
    assert isinstance(request, ToolRequest) and flow.state is FlowState.WAITING_TOOL
    assert flow.on_user_text("hello?", True) == []  # ignored while the tool runs
    assert flow.on_silence(30) == []
    assert flow.on_user_text("get me a human", True)[-1] == Transfer("queue:customer-service")
    assert flow.tool_result(request.id, "ok", {}) == []  # late: dropped


def test_inputs_after_the_end_are_dropped_and_misuse_raises(cs_profile: AgentProfile) -> None:
    flow = cs_profile.new_flow({"caller_number": CALLER})
    with pytest.raises(FlowError, match="user_text is not allowed in state READY"):
        flow.on_user_text("hi", True)
    flow.start()
    with pytest.raises(FlowError, match="start is not allowed in state LISTENING"):
        flow.start()
    with pytest.raises(FlowError, match="not a DTMF digit"):
        flow.on_dtmf("x")
    with pytest.raises(FlowError, match="tool status must be one of"):
        flow.tool_result("lookup-1", "maybe")
    flow.on_dtmf("9")
    assert flow.on_user_text("hello", True) == []
    assert flow.on_dtmf("1") == [] and flow.on_silence(99) == []
    assert flow.tool_result("x", "ok") == [] and flow.voicemail() == []


def test_missing_contact_fields_are_refused(reminder_profile: AgentProfile) -> None:
    with pytest.raises(FlowError, match="slot_1, slot_2"):
        reminder_profile.new_flow({k: v for k, v in CONTACT.items() if not k.startswith("slot")})


# ---- appointment reminder -----------------------------------------------------------


def test_reminder_opening_is_personal(reminder_profile: AgentProfile) -> None:
    actions = Call(reminder_profile.new_flow(CONTACT)).start()
    assert actions[0] == Say(
        "Hello, this is an automated assistant calling from Riverside Dental.", False
    )
    assert actions[2] == Say("I'm calling for Ana about an upcoming appointment.")
    assert text(actions[3:]).startswith(
        "You have an appointment with Dr. Patel on Tuesday, June 10 at 9 AM. Can you make it?"
    )
    assert actions[-1] == LISTEN_SPEECH


@pytest.mark.parametrize("answer", ["yes", "Yeah, I'll be there.", "1"])
def test_reminder_confirm(reminder_profile: AgentProfile, answer: str) -> None:
    call = reminder_call(reminder_profile)
    actions = call.keys(answer) if answer.isdigit() else call.say(answer)
    assert call.requests == [
        ToolRequest("confirm-1", "confirm_appointment", {"appointment_id": "APT-1001"})
    ]
    assert actions[-2:] == [
        Say(
            "Thank you, you're confirmed for Tuesday, June 10 at 9 AM. See you then. Goodbye.",
            False,
        ),
        Hangup("confirmed"),
    ]


@pytest.mark.parametrize(
    ("first", "pick", "time"),
    [
        ("No, I can't make it.", "The second one, please.", "Friday at 10 AM"),
        ("reschedule", "first", "Wednesday at 2 PM"),
        ("2", "1", "Wednesday at 2 PM"),
        ("I need a different time", "option two", "Friday at 10 AM"),
    ],
)
def test_reminder_reschedule_to_an_offered_slot(
    reminder_profile: AgentProfile, first: str, pick: str, time: str
) -> None:
    call = reminder_call(reminder_profile)
    offer = call.keys(first) if first.isdigit() else call.say(first)
    assert text(offer) == (
        "I can offer Wednesday at 2 PM, or Friday at 10 AM. Say first or press 1 for Wednesday "
        "at 2 PM, say second or press 2 for Friday at 10 AM, or say neither."
    )
    actions = call.keys(pick) if pick.isdigit() else call.say(pick)
    assert call.requests == [ToolRequest(
        "reschedule-1", "reschedule_appointment", {"appointment_id": "APT-1001", "new_time": time}
    )]  # fmt: skip
    assert actions[-2:] == [
        Say(f"All set: your appointment with Dr. Patel is now {time}. Goodbye.", False),
        Hangup("rescheduled"),
    ]


def test_reminder_neither_slot_asks_them_to_call(reminder_profile: AgentProfile) -> None:
    call = reminder_call(reminder_profile)
    call.say("reschedule")
    assert call.say("neither of those work")[-1] == Hangup("needs_callback")


@pytest.mark.parametrize("how", ["Stop calling me.", "take me off your list", "key:9"])
def test_reminder_opt_out(reminder_profile: AgentProfile, how: str) -> None:
    call = reminder_call(reminder_profile)
    actions = call.keys(how[4:]) if how.startswith("key:") else call.say(how)
    assert actions == [
        Say("Understood. We won't call you again. Goodbye.", False),
        Hangup("opt_out"),
    ]


def test_reminder_opt_out_also_while_choosing_a_slot(reminder_profile: AgentProfile) -> None:
    call = reminder_call(reminder_profile)
    call.keys("2")
    assert call.keys("9")[-1] == Hangup("opt_out")


def test_reminder_voicemail(reminder_profile: AgentProfile) -> None:
    flow = reminder_profile.new_flow(CONTACT)
    assert flow.voicemail() == [
        Say("Hello Ana, this is Riverside Dental with a reminder of your appointment with "
            "Dr. Patel on Tuesday, June 10 at 9 AM. To confirm or reschedule, please call us "
            "at 5 5 5, 0 1 0 0. Goodbye.", False),
        Hangup("voicemail"),
    ]  # fmt: skip


def test_reminder_idle_hang_up(reminder_profile: AgentProfile) -> None:
    call = reminder_call(reminder_profile)
    assert call.silence(6) == [Say("Are you still there?")]
    assert call.silence(15)[-1] == Hangup("idle")


def test_reminder_hand_off(reminder_profile: AgentProfile) -> None:
    call = reminder_call(reminder_profile)
    assert call.say("can I talk to the front desk")[-1] == Transfer("office:front-desk")


# ---- smaller rules --------------------------------------------------------------


def test_node_timeout_goes_to_on_timeout_before_idle() -> None:
    nodes: dict[str, Node] = {
        "q": AskNode("Anything?", on_fail="bye", choices=(Choice("bye", keywords=("no",)),),
                     timeout_s=4.0, on_timeout="bye"),
        "bye": EndNode("timeout", say="Bye."),
    }  # fmt: skip
    flow = Flow(FlowSpec("q", nodes))
    flow.start()
    assert flow.on_silence(3.9) == []
    assert flow.on_silence(4.0) == [Say("Bye.", False), Hangup("timeout")]


def test_digits_without_terminator_submit_at_max_length() -> None:
    digits = DigitsSpec(min_len=1, max_len=1, terminator="", slot="choice", goto="bye")
    nodes: dict[str, Node] = {
        "q": AskNode("Pick.", on_fail="bye", digits=digits),
        "bye": EndNode(say="{choice}"),
    }
    flow = Flow(FlowSpec("q", nodes))
    assert flow.start() == [Say("Pick."), ListenFor("digits", digits)]
    assert flow.on_dtmf("7") == [Say("7", False), Hangup("completed")]


def test_expected_phrases_cover_prompts_and_expectations(cs_profile: AgentProfile) -> None:
    spec = cs_profile.flow
    assert spec is not None
    phrases = spec.expected_phrases()
    assert not any("{" in p or "}" in p for p in phrases)
    words = {w for p in phrases for w in normalize_utterance(p)}
    for node in spec.nodes.values():
        if isinstance(node, AskNode):
            for choice in node.choices:
                assert set(choice.keywords + choice.phrases) <= set(phrases)
    for intent in spec.intents:
        assert set(intent.keywords + intent.phrases) <= set(phrases)
    # the words of every prompt, less its placeholders
    prompts = ("Please say your five digit order number", "Is there anything else",
               "has my order shipped", "a member of our team", "Are you still there")  # fmt: skip
    for prompt in prompts:
        assert set(normalize_utterance(prompt)) <= words, prompt
    assert any("zero one two three" in p for p in phrases)  # the flow asks for digits


def test_expected_phrases_of_the_reminder(reminder_profile: AgentProfile) -> None:
    phrases = reminder_profile.expected_phrases()
    for p in ("reschedule", "confirm", "I'll be there", "the second one", "neither of those",
              "stop calling me", "front desk"):  # fmt: skip
        assert p in phrases
    assert not any("zero one two" in p for p in phrases)  # no digits node


def test_check_flow_accepts_both_shipped_flows(
    cs_profile: AgentProfile, reminder_profile: AgentProfile
) -> None:
    assert cs_profile.flow is not None and check_flow(cs_profile.flow) == []
    assert reminder_profile.flow is not None and check_flow(reminder_profile.flow) == []


# ---- with the real recogniser -----------------------------------------------------

AUDIO = Path(__file__).resolve().parents[3] / "shared" / "audio"


@pytest.fixture(scope="module")
def lm(cs_profile: AgentProfile, tmp_path_factory: pytest.TempPathFactory) -> object:
    lm_mod = pytest.importorskip("callagent.speech.lm")
    return lm_mod.build_resources(cs_profile.expected_phrases(), tmp_path_factory.mktemp("cs_lm"))


def _recognise(resources: object, clip: str, digits: bool = False) -> str:
    import numpy as np
    import soxr

    from callagent.audio.wavfile import read_wav
    from callagent.speech.stt_pocketsphinx import CHUNK_SAMPLES, PocketsphinxStt, Search

    wav = AUDIO / clip
    assert wav.exists(), f"missing test clip {wav}"
    pcm = read_wav(wav)
    samples = np.asarray(soxr.resample(pcm.samples, pcm.rate, 16000), dtype=np.int16)
    stt = PocketsphinxStt(resources)  # type: ignore[arg-type]
    if digits:
        stt.use_search(Search.DIGITS)
    for i in range(0, len(samples) - CHUNK_SAMPLES + 1, CHUNK_SAMPLES):
        stt.process(samples[i : i + CHUNK_SAMPLES])
    return stt.end_utterance().text


def test_clips_recognised_with_the_flows_own_language_model_drive_the_flow(
    cs_profile: AgentProfile, lm: object
) -> None:
    status = cs_call(cs_profile)
    heard = _recognise(lm, "01_order_status.wav")
    actions = status.say(heard)
    assert status.flow.node == "ask_order" and status.flow.slots["purpose"] == "status", heard
    listen = actions[-1]
    assert isinstance(listen, ListenFor) and listen.kind == "digits"  # the STT switches grammar
    number = _recognise(lm, "02_account_number.wav", digits=listen.kind == "digits")
    actions = status.say(number)
    assert status.requests[-1].args == {"order_number": "45729"}, number
    assert "Order 4 5 7 2 9 has shipped" in text(actions)

    human = cs_call(cs_profile)
    heard = _recognise(lm, "06_human_please.wav")
    assert human.say(heard)[-1] == Transfer("queue:customer-service"), heard


def test_words_that_would_end_the_call_are_known_without_moving_the_flow(
    cs_profile: AgentProfile,
) -> None:
    call = cs_call(cs_profile)
    assert call.flow.would_end_call("goodbye") and call.flow.would_end_call("I want an agent")
    assert not call.flow.would_end_call("where is my order")
    assert not call.flow.would_end_call("purple elephants")  # a re-prompt, not an end
    assert call.flow.node == "menu"  # probes run on a copy
    assert call.say("where is my order")[-1] == LISTEN_DIGITS


def test_a_copied_flow_goes_its_own_way(cs_profile: AgentProfile) -> None:
    import copy

    call = cs_call(cs_profile)
    before = copy.deepcopy(call.flow)
    call.say("where is my order")
    call.say("four five")  # too few digits: a miss, and a value or two may be set
    assert call.flow.node == "ask_order" and before.node == "menu"
    twin = Call(before)
    assert twin.say("where is my order")[-1] == LISTEN_DIGITS  # the copy answers as the original did
