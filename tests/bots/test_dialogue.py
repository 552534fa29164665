"""The dialogue engine: state from stored events, sessions, rules, two-step fallback, human handoff."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from bots.botspec import load_bot
from bots.dialogue.engine import HANDOFF_TEXT, Message, PartialSink, Services, decide
from bots.dialogue.spec import AnswerKind, parse_dialogue
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.events import AGENT, NLU, PAUSE, RESTART, RESUME, SESSION_START, Event
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.base import SummaryUpdate
from bots.store.sqlite import SQLiteStore
from bots.types import BotResponse, IntentScore, Understanding
from tests.bots.keyword_model import copy_bot, message, say, start_runtime


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await start_runtime(copy_bot(tmp_path), tmp_path / "store.db")
    yield rt
    await rt.aclose()


async def _events(runtime: Runtime, conversation: str = "c1", bot: str = "shop") -> list:  # type: ignore[type-arg]
    loaded = await runtime.store.load(bot, conversation)
    assert loaded is not None
    return loaded.events


async def test_uncertain_message_offers_top_intents_then_second_failure_hands_off(runtime: Runtime) -> None:
    first = await runtime.handle(message("blorp"))
    assert first[0].text == "Sorry, I didn't understand that. Did you mean one of these?"
    assert [(b.title, b.payload) for b in first[0].buttons] == [
        ("Track order", "/track_order"), ("Change order", "/change_order"), ("Greet", "/greet")]
    assert first[0].source == "fallback"
    assert await say(runtime, "zzzt") == [HANDOFF_TEXT]
    assert (await _events(runtime))[-1].kind == PAUSE
    summary = await runtime.store.summary("shop", "c1")
    assert summary is not None and summary.handoff and summary.fallback
    # Paused: the bot stays silent, the messages are kept for the agent.
    assert await say(runtime, "hello? anyone?") == []
    assert (await _events(runtime))[-3].data["text"] == "hello? anyone?"  # user, nlu, sentiment
    # An agent answers and hands the conversation back (what the review UI appends).
    await runtime.store.append("shop", "c1", [Event(AGENT, {"text": "Hi, Ana here. Sorted!"}), Event(RESUME, {})],
                               SummaryUpdate(handoff=False))
    assert await say(runtime, "hello") == ["Hello! How can I help you today?"]
    # The fallback count started over: one uncertain message is a question again, not a handoff.
    assert (await runtime.handle(message("blorp")))[0].source == "fallback"


async def test_did_you_mean_skips_intents_not_to_suggest(tmp_path: Path) -> None:
    """An intent with ``suggest: false`` is never a "Did you mean" button: the next one in the ranking is (a QA
    run of the example bot got "Say hello" and "Something else" for "wher is my oder")."""
    bot_dir = copy_bot(tmp_path)
    yml = bot_dir / "bot.yml"
    yml.write_text(yml.read_text(encoding="utf-8").replace(
        "  greet:\n    examples:", "  greet:\n    suggest: false\n    examples:", 1), encoding="utf-8")
    rt = await start_runtime(bot_dir, tmp_path / "store.db")
    try:
        first = await rt.handle(message("blorp"))
        offered = [b.payload for b in first[0].buttons]
        assert offered[:2] == ["/track_order", "/change_order"] and "/greet" not in offered and len(offered) == 3
    finally:
        await rt.aclose()


def test_suggest_must_be_true_or_false(tmp_path: Path) -> None:
    bot_dir = copy_bot(tmp_path)
    yml = bot_dir / "bot.yml"
    yml.write_text(yml.read_text(encoding="utf-8").replace(
        "  greet:\n    examples:", "  greet:\n    suggest: never\n    examples:", 1), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_bot(bot_dir)
    assert any(p.endswith("intent 'greet': 'suggest' must be true or false (whether \"Did you mean ...?\" may "
                          "offer it)") and "bot.yml:9:" in p for p in exc.value.problems), exc.value.problems


async def test_a_button_click_between_failures_resets_the_fallback(runtime: Runtime) -> None:
    await say(runtime, "blorp")
    assert await say(runtime, "", payload="/greet") == ["Hello! How can I help you today?"]
    assert (await runtime.handle(message("blorp")))[0].source == "fallback"
    state = State.from_events(await _events(runtime))
    assert not state.paused and state.fallbacks_in_a_row == 1


async def test_a_start_over_button_restarts_the_conversation(runtime: Runtime) -> None:
    """``/restart`` (Rasa's default intent, on many bots' "Start over" button) restarts: the form and its slots
    are gone. It was typed text to the NLU before (only the bot's own intents were read from a payload)."""
    await say(runtime, "please change order 55555")
    state = State.from_events(await _events(runtime))
    assert state.active_form == "change_order_form" and state.slots == {"order_id": "55555"}
    await say(runtime, "", payload="/restart")
    events = await _events(runtime)
    assert any(e.kind == RESTART for e in events)
    assert [e.data.get("intent") for e in events if e.kind == NLU][-1] == "restart"
    state = State.from_events(events)
    assert state.active_form is None and state.slots == {}
    assert await say(runtime, "hello") == ["Hello! How can I help you today?"]
    # Nothing else is read from a payload: a name that is neither the bot's intent nor a default one is text.
    assert (await runtime.handle(message("", payload="/not_an_intent")))[0].source == "fallback"


async def test_asking_for_a_human_hands_off_at_once(runtime: Runtime) -> None:
    assert await say(runtime, "I want to talk to a human") == [
        "Of course, I'll connect you with a colleague. Please stay in this chat."]
    state = State.from_events(await _events(runtime))
    assert state.paused
    labels = {"bot": "shop", "channel": "web"}
    assert runtime.metrics.registry.get_sample_value("switchboard_handoffs_total", labels) == 1
    assert await say(runtime, "still there?") == []


async def test_session_expires_after_idle_time(runtime: Runtime) -> None:
    t0 = time.time() - 3600
    await say(runtime, "please change order 55555", at=t0)
    state = State.from_events(await _events(runtime))
    assert state.slots == {"order_id": "55555"} and state.active_form == "change_order_form"
    # 10 minutes later: same session, the form goes on.
    assert await say(runtime, "2", at=t0 + 600) == ["What else would you like to change in order 55555?"]
    # 31 minutes of silence (expiry: 30): a new session without slots or form.
    assert await say(runtime, "hello", at=t0 + 600 + 31 * 60) == ["Hello! How can I help you today?"]
    events = await _events(runtime)
    assert [e.kind for e in events].count(SESSION_START) == 2  # the first message opened one too
    state = State.from_events(events)
    assert state.slots == {} and state.active_form is None
    assert state.session_started_at == pytest.approx(t0 + 600 + 31 * 60)


async def test_rebuilt_state_equals_the_state_of_the_live_turns(runtime: Runtime) -> None:
    for text in ("change my order", "12345", "4"):
        await say(runtime, text)
    rebuilt = State.from_events(await _events(runtime), sender_id="c1")
    # The turn decided next sees the same state: the form goes on where it stood.
    assert rebuilt.active_form == "change_order_form" and rebuilt.requested_slot == "order_change"
    assert rebuilt.slots == {"order_id": "12345", "quantity": 4}


async def test_a_redelivered_message_while_paused_is_answered_once(runtime: Runtime) -> None:
    await say(runtime, "get me an agent")
    again = message("are you there", message_id="dup-1")
    assert await runtime.handle(again) == [] and await runtime.handle(again) == []
    events = await _events(runtime)
    assert [e.data.get("text") for e in events].count("are you there") == 1


async def test_answer_provider_hook_answers_before_the_template(tmp_path: Path) -> None:
    bot_dir = copy_bot(tmp_path, extra_yaml="")
    text = (bot_dir / "bot.yml").read_text().replace(
        "  - intent: goodbye\n", "  - intent: greet\n    answer: retrieval\n  - intent: goodbye\n", 1)
    (bot_dir / "bot.yml").write_text(text)
    bot = load_bot(bot_dir)
    dialogue = parse_dialogue(bot)
    asked: list[tuple[AnswerKind | None, str]] = []

    class Retrieval:
        async def answer(self, kind: AnswerKind | None, text: str, understanding: Understanding,
                         values: Mapping[str, str], *, partial: PartialSink | None = None) -> BotResponse | None:
            asked.append((kind, understanding.intent))
            return BotResponse(text="Hi from the knowledge base", source="retrieval") if kind else None

    hello = Understanding("greet", 0.9, (IntentScore("greet", 0.9),))
    decision = await decide(bot, dialogue, State(), Message("hello", hello, time.time()),
                            Services(answers=Retrieval()))
    assert [r.text for r in decision.responses] == ["Hi from the knowledge base"]
    # Not understood (under the bot's fallback_threshold, 0.5): the provider is asked (kind None) and declines: the
    # fallback. It is told the message was not understood, not the intent the dialogue did not believe.
    unknown = Understanding("track_order", 0.1, (IntentScore("track_order", 0.1),))
    decision = await decide(bot, dialogue, State(), Message("hmm", unknown, time.time()), Services(answers=Retrieval()))
    assert decision.fallback and asked == [("retrieval", "greet"), (None, "nlu_fallback")]


async def test_a_not_understood_message_never_gets_the_template_of_an_intent_the_dialogue_acts_on(
        tmp_path: Path) -> None:
    """The nearest known question of "order 55512" was "how can i edit order 3707955617": its template
    ("Sure, let's change order 55512 ...") answered a message the NLU rejected, while no change form ran.
    Such an answer is dropped for the "did you mean" buttons; the choice then runs the form."""
    bot = load_bot(copy_bot(tmp_path))
    dialogue = parse_dialogue(bot)
    nearest: dict[str, str] = {}

    class Retrieval:
        async def answer(self, kind: AnswerKind | None, text: str, understanding: Understanding,
                         values: Mapping[str, str], *, partial: PartialSink | None = None) -> BotResponse | None:
            return BotResponse(text=f"the {nearest['intent']} template", source="retrieval",
                               metadata={"intent": nearest["intent"], "score": 0.64})

    rejected = Understanding("nlu_fallback", 0.34, (IntentScore("change_order", 0.34), IntentScore("track_order", 0.3),
                                                    IntentScore("goodbye", 0.1)))
    for acting in ("change_order", "track_order", "contact_human_agent"):  # a form, an action, a hand-off
        nearest["intent"] = acting
        decision = await decide(bot, dialogue, State(), Message("order 55512", rejected, time.time()),
                                Services(answers=Retrieval()))
        assert decision.fallback, acting
        [response] = decision.responses
        assert response.source == "fallback" and [b.payload for b in response.buttons] == [
            "/change_order", "/track_order", "/goodbye"], acting
    nearest["intent"] = "goodbye"  # an intent the bot only answers: its answer is given
    decision = await decide(bot, dialogue, State(), Message("see you", rejected, time.time()),
                            Services(answers=Retrieval()))
    assert not decision.fallback and [r.text for r in decision.responses] == ["the goodbye template"]


@pytest.mark.parametrize(("yaml", "expected"), [
    ("slots:\n  order_id:\n    type: colour\n", "bot.yml:{n2}: slot 'order_id': unknown type 'colour'"),
    ("slots:\n  size:\n    type: categorical\n", "bot.yml:{n2}: slot 'size' is categorical: list its 'choices'"),
    ("slots:\n  code:\n    regex: '[a-'\n", "bot.yml:{n2}: slot 'code': invalid regex"),
    ("rules:\n  - intent: greet\n    form: nope\n", "bot.yml:{n2}: rule 'greet': unknown form 'nope'"),
    ("rules:\n  - intent: dance\n    response: hi\n", "bot.yml:{n1}: rule for unknown intent 'dance'"),
    ("rules:\n  - intent: greet\n    response: hi\n    action: action_x\n",
     "bot.yml:{n1}: rule 'greet': use only one of response, action"),
    ("rules:\n  - intent: greet\n    action: action_x\n",
     "bot.yml:{n2}: action 'action_x' is used but the bot has neither 'actions'"),
    ("forms:\n  f:\n    required_slots: [ghost]\n    ask: {ghost: hi}\n",
     "bot.yml:{n2}: form 'f': slot 'ghost' is not declared under 'slots'"),
    ("slots:\n  a: {}\nforms:\n  f:\n    required_slots: [a]\n",
     "bot.yml:{n4}: form 'f': no question to ask for 'a'"),
    ("session_expiry_minutes: -5\n", "bot.yml:{n0}: 'session_expiry_minutes' must be a number"),
    ("action_endpoint: ftp://x\n", "bot.yml:{n0}: 'action_endpoint' needs an http(s) URL"),
    ("actions: nothing_here\n", "bot.yml:{n0}: 'actions': neither nothing_here.py nor nothing_here/__init__.py"),
    ("slots: [a]\n", "bot.yml:{n0}: 'slots' must map slot names to their settings"),
    ("forms: f\n", "bot.yml:{n0}: 'forms' must map form names to their settings"),
    ("slots:\n  a:\n    from_text: maybe\n", "bot.yml:{n2}: slot 'a': 'from_text' must be true or false"),
    ("rules:\n  - intent: greet\n    handoff: 1\n", "bot.yml:{n2}: rule 'greet': 'handoff' must be true or false"),
    ("synonyms:\n  - NYC\n", "bot.yml:{n1}: 'synonyms' must map a canonical value to a list of variants"),
])
def test_dialogue_config_errors_name_file_and_line(tmp_path: Path, yaml: str, expected: str) -> None:
    bot_dir = tmp_path / "bot"
    bot_dir.mkdir()
    head = "name: t\nintents:\n  greet:\n    examples: [hi]\n  bye:\n    examples: [bye]\n"
    (bot_dir / "bot.yml").write_text(head + yaml)
    n0 = head.count("\n") + 1
    with pytest.raises(ConfigError) as err:
        parse_dialogue(load_bot(bot_dir))
    assert expected.format(n0=n0, n1=n0 + 1, n2=n0 + 2, n4=n0 + 4) in str(err.value)


async def test_the_trained_tiny_bot_hands_off_on_request(tiny_bot_dir: Path, tmp_path: Path) -> None:
    """The real ONNX model end to end: understanding, a rule with handoff, silence while paused."""
    bot_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    with (bot_dir / "bot.yml").open("a", encoding="utf-8") as f:
        f.write("rules:\n  - intent: contact_human_agent\n    handoff: true\n")
    store = SQLiteStore(tmp_path / "store.db")
    await store.start()
    runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0), store)
    try:
        await runtime.load_bot(bot_dir)

        async def tiny(text: str) -> list[str]:
            return [r.text for r in await runtime.handle(message(text, "t1", bot="tiny"))]

        assert await tiny("hello there") == ["Hello! How can I help you today?"]
        assert await tiny("please cancel order 98765") == ["Order 98765 is being cancelled."]
        assert await tiny("I need to talk to a real person") == ["Let me get a colleague for you."]
        assert await tiny("hello?") == []
        events = await _events(runtime, "t1", bot="tiny")
        state = State.from_events(events)
        assert state.paused and state.slots["order_id"] == "98765"
        assert state.last_intent == "greet"  # understood, recorded, not answered
    finally:
        await runtime.aclose()


SUPPORT_BOT = Path(__file__).resolve().parents[2] / "examples" / "support"


async def test_example_support_bot_takes_a_refund_request_and_hands_a_complaint_to_a_person(tmp_path: Path) -> None:
    """examples/support: tracking an order asks for its number (a form); a refund is a form (which order, why)
    whose order check agrees with the other forms' lookup (an order not shipped yet is to be cancelled
    instead); a complaint goes to a person at once, and the answer says so (no "tell me and I'll ..." the bot
    cannot keep)."""
    runtime = await start_runtime(copy_bot(tmp_path, SUPPORT_BOT), tmp_path / "store.db")
    try:
        async def support(text: str, conversation: str = "r1") -> list[str]:
            return await say(runtime, text, conversation, bot="support")

        ask_order = "Which order is the refund for? Please give me its order number."
        ask_reason = "What's the reason for the refund? For example damaged, wrong size or not as described."
        assert await support("I want a refund") == [ask_order]
        # an order that cannot be refunded ends the form, with what can be done instead (its number carried)
        refused = await runtime.handle(message("12345", "r1", bot="support"))
        assert [r.text for r in refused] == [
            "Order 12345 hasn't shipped yet, so there is nothing to return: cancel it instead and you get a full "
            "refund."]
        assert [(b.title, b.payload) for b in refused[0].buttons] == [
            ("Cancel it", '/cancel_order{"order_id": "12345"}')]
        assert State.from_events(await _events(runtime, "r1", bot="support")).active_form is None
        assert await support("I want a refund") == [ask_order]
        assert await support("it is 3707955617") == [ask_reason]
        assert await support("42") == ["Please tell me the reason in a few words, e.g. 'it arrived damaged'.",
                                        ask_reason]
        assert await support("the jacket is too small") == [
            "Thanks. I've opened a refund request for order 3707955617 (the jacket is too small). You'll get an "
            "email with a return label within one business day (free in the EU; elsewhere it costs 6 euros); once "
            "the items are back, we check them within 2 business days and refund your original payment method "
            "within 5 business days after that."]
        assert State.from_events(await _events(runtime, "r1", bot="support")).active_form is None

        # "where is my order" asks for the number, says so for an unknown one, then looks the order up
        ask_track = "I can check that for you. What is the order number? You'll find it in your confirmation email."
        assert await support("where is my order", "r3") == [ask_track]
        assert await support("555", "r3") == [
            "I couldn't find order 555. Please check the number in your confirmation email.", ask_track]
        assert await support("98765", "r3") == ["Order 98765 is delivered. You can follow it under My orders."]
        assert State.from_events(await _events(runtime, "r3", bot="support")).active_form is None

        said = await support("I want to complain about the courier", "r2")
        assert said[0].startswith("I'm sorry about your experience. I'm passing you to a colleague"), said
        summary = await runtime.store.summary("support", "r2")
        assert summary is not None and summary.handoff
    finally:
        await runtime.aclose()


async def test_example_support_bot_changes_an_order_tracks_one_and_hands_off(tmp_path: Path) -> None:
    """examples/support: the change-order form with validation (regex + the rasa-sdk validation action
    in examples/support/actions.py), its retry limit, the order-status action setting a slot, and a handoff on
    request with the customer's place in the queue."""
    runtime = await start_runtime(copy_bot(tmp_path, SUPPORT_BOT), tmp_path / "store.db")
    try:
        async def support(text: str) -> list[str]:
            return await say(runtime, text, "s1", bot="support")

        ask_order = "Which order would you like to change? Please give me its order number."
        ask_change = "What would you like to change in order 12345? You can add, remove or replace items."
        digits = "Order numbers contain digits only, like 3707955617; you'll find yours in the confirmation email."
        assert await support("I want to change my order") == [ask_order]
        assert await support("the one from last week") == [digits, ask_order]
        assert await support("12345") == [ask_change]
        assert await support("scarf") == ["Please describe the change in a few words, e.g. 'add a blue scarf'.",
                                          ask_change]
        assert await support("add a blue scarf") == [
            "Thanks! I've asked our warehouse to change order 12345 (add a blue scarf). You'll get an email as soon "
            "as the change is confirmed."]
        assert await support("where is my order 98765") == [
            "Order 98765 is delivered. You can follow it under My orders."]
        state = State.from_events(await _events(runtime, "s1", bot="support"))
        assert state.slots["order_status"] == "delivered" and state.active_form is None
        # two invalid answers: the form ends with a way on instead of the same question a third time
        refused = await runtime.handle(message("change my order 3707955617", "s1", bot="support"))
        assert [r.text for r in refused] == [
            "Order 3707955617 has already shipped, so it can't be changed any more. Once it arrives, you can return "
            "it for a refund."]  # and the form ends: nothing else can be done to change it
        assert [(b.title, b.payload) for b in refused[0].buttons] == [
            ("Where is it?", '/track_order{"order_id": "3707955617"}')]
        assert State.from_events(await _events(runtime, "s1", bot="support")).active_form is None
        assert await support("I want to change my order") == [ask_order]
        assert await support("the one from last week") == [digits, ask_order]
        gave_up = await runtime.handle(message("the one from last week", "s1", bot="support"))
        assert [r.text for r in gave_up] == [digits, "Sorry, I still can't use that as the order number. You can start "
                                                     "again, or talk to a person from our support team."]
        assert [(b.title, b.payload) for b in gave_up[1].buttons] == [
            ("Change an order", "/change_order"), ("Talk to a person", "/contact_human_agent")]
        assert State.from_events(await _events(runtime, "s1", bot="support")).active_form is None
        waiting = ("Thanks for waiting: you're number 1 in the queue for the next available agent. Please stay in "
                   "this chat, or say 'stop' if you no longer need an agent.")
        assert await support("I want to talk to a human") == [
            "Of course, I'll connect you with a member of our support team. Please stay in this chat; an agent will "
            "be with you as soon as one is available.",
            "You're number 1 in the queue for the next available agent. Please stay in this chat."]  # not thanked yet
        summary = await runtime.store.summary("support", "s1")
        assert summary is not None and summary.handoff
        assert await support("hello?") == [waiting]
    finally:
        await runtime.aclose()
