"""What a bot.yml form takes as an answer, and what it answers instead (QA of the example bot, issue 14).

* a yes/no question is answered by the yes or no in the text ("ok yes", "yes please cancel it", "no thanks, keep
  it"), also when the NLU reads another intent ("yes please cancel it" as stop: the order was not cancelled), and
  by the bot's affirm/deny intents (Rasa's from_intent mappings of a bool slot);
* an affirm/deny message that answers nothing the form asked is a failed answer, not small talk ("Great! What
  else can I do for you?" said before the question again);
* an off-topic question inside a form is answered and the question asked again (counted as a failed answer);
* the give-up message names the slot by its label, not by its name ("the order id");
* "i don't know it" (a deny) to a question that is not yes/no ends the form at once, with a way on.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bots.artifact import Manifest, write_manifest
from bots.botspec import BotSpec, load_bot
from bots.dialogue.engine import Message, Services, decide
from bots.dialogue.forms import check_value, yes_or_no
from bots.dialogue.spec import DialogueSpec, SlotSpec, parse_dialogue
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.events import NLU, USER, Event
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from bots.types import Entity, IntentScore, Understanding
from tests.bots.keyword_model import say

BOT = """name: shop
description: A shop bot whose forms ask an order number and a yes/no question.
channels: [web]
intents:
  cancel_order:
    examples: [cancel my order, cancel order 12345]
    response: Let's cancel it.
  track_order:
    examples: [where is my order, track order 12345]
    response: Let me check.
  affirm:
    examples: ["yes", ok, sure]
    response: Great! What else can I do for you?
  deny:
    examples: ["no", nope]
    response: OK.
  stop:
    examples: [stop, never mind]
    response: Okay, I've stopped that.
  goodbye:
    examples: [bye]
    response: Goodbye!
  check_fee:
    examples: [is there a cancellation fee]
    response: Cancelling is free.
  out_of_scope:
    examples: [what's the weather like]
    response: Sorry, I can't help with that.
  contact_human_agent:
    examples: [get me a person]
    response: I'll get a colleague.
slots:
  order_id:
    type: text
    regex: '\\d{3,12}'
    invalid: Order numbers are digits only, like 12345.
    label: order number
  cancel_confirmed:
    type: bool
    entity: null
forms:
  cancel_order_form:
    required_slots: [order_id, cancel_confirmed]
    ask:
      order_id: Which order?
      cancel_confirmed: Shall I cancel order {order_id}? Please answer yes or no.
    stop_intents: [stop, goodbye]
    ignored_intents: [check_fee]
    submit:
      response: "Cancel order {order_id}: {cancel_confirmed}."
  track_order_form:
    required_slots: [order_id]
    ask:
      order_id: What is the order number?
    stop_intents: [stop, goodbye]
    give_up: Sorry, I still can't use that as the {slot}.
    submit:
      response: Order {order_id} is on its way.
rules:
  - intent: cancel_order
    form: cancel_order_form
  - intent: track_order
    form: track_order_form
  - intent: contact_human_agent
    handoff: true
"""
ASK_ORDER, ASK_CONFIRM = "Which order?", "Shall I cancel order 12345? Please answer yes or no."
GREAT = "Great! What else can I do for you?"


def shop(tmp_path: Path, extra: str = "", bot_yml: str = BOT) -> tuple[BotSpec, DialogueSpec]:
    folder = tmp_path / f"shop-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "bot.yml").write_text(bot_yml + extra, encoding="utf-8")
    bot = load_bot(folder)
    return bot, parse_dialogue(bot)


Said = tuple[str, str, float]  # text, the NLU's intent, its confidence


async def play(bot: BotSpec, dialogue: DialogueSpec, turns: Sequence[Said], services: Services | None = None,
               state: State | None = None) -> list[list[str]]:
    """What the bot says to each message (the state carried over as the runtime carries it)."""
    state = state if state is not None else State()
    out, now = [], time.time()
    for text, intent, confidence in turns:
        ranking = (IntentScore(intent, confidence), IntentScore("track_order" if intent != "track_order" else "stop",
                                                                round(1 - confidence, 2) / 2))
        entities = tuple(Entity("order_id", m.group(), m.start(), m.end()) for m in re.finditer(r"\b\d{3,}\b", text))
        understanding = Understanding(intent, confidence, ranking, entities)
        decision = await decide(bot, dialogue, state, Message(text, understanding, now, "web"), services)
        for event in (Event(USER, {"text": text}, timestamp=now), Event(NLU, understanding.to_dict(), timestamp=now),
                      *decision.events):
            state.apply(event)
        out.append([r.text for r in decision.responses])
    return out


CANCEL: Said = ("I want to cancel order 12345", "cancel_order", 0.98)


def test_a_yes_or_no_anywhere_in_the_answer() -> None:
    confirm = SlotSpec("confirm", type="bool")
    for text in ("ok yes", "yes please cancel it", "Yes!", "ok", "yes 12345", "no problem, go ahead", "sure"):
        assert yes_or_no(text) is True and check_value(confirm, text).value is True, text
    for text in ("no thanks, keep it", "No, I wanted to track it", "nope", "I said no"):
        assert yes_or_no(text) is False and check_value(confirm, text).value is False, text
    for text in ("ok wait, which order?", "not sure", "yes, don't", "no... yes", "hmm", "maybe"):
        assert yes_or_no(text) is None and check_value(confirm, text).reason == "Please answer yes or no.", text


@pytest.mark.parametrize(("said", "confirmed"), [
    (("yes please cancel it", "stop", 0.66), "yes"),     # the NLU's stop does not leave the form: the text answers
    (("ok yes", "affirm", 0.98), "yes"),
    (("no thanks, keep it", "deny", 0.71), "no"),
    (("sure thing, do it", "affirm", 0.9), "yes"),       # no plain yes in the text: the affirm intent answers
    (("I changed my mind", "deny", 0.8), "no"),
    (("no", "affirm", 0.6), "no"),                       # the text's clear no beats the NLU's affirm
])
async def test_a_yes_no_question_is_answered_by_the_text_or_the_affirm_deny_intent(
        tmp_path: Path, said: Said, confirmed: str) -> None:
    bot, dialogue = shop(tmp_path)
    state = State()
    assert await play(bot, dialogue, [CANCEL, said], state=state) == [
        [ASK_CONFIRM], [f"Cancel order 12345: {confirmed}."]]
    assert state.active_form is None and state.slots["cancel_confirmed"] is (confirmed == "yes")


async def test_a_yes_no_question_not_answered_is_asked_again_without_small_talk(tmp_path: Path) -> None:
    """"ok wait" read as affirm once bots had no from_intent: "Great! What else can I do for you?" and the question
    again. Not answered by text or intent, it is asked again after the reason; an affirm/deny message that answers
    nothing the form asked (an order number) is a failed answer too, never small talk."""
    bot, dialogue = shop(tmp_path, bot_yml=BOT.replace("    type: bool\n", "    type: bool\n    from_intent: {}\n"))
    assert await play(bot, dialogue, [CANCEL, ("ok wait", "affirm", 0.9)]) == [
        [ASK_CONFIRM], ["Please answer yes or no.", ASK_CONFIRM]]
    bot, dialogue = shop(tmp_path)
    assert await play(bot, dialogue, [("cancel my order", "cancel_order", 0.97), ("hmm", "affirm", 0.76),
                                      ("12345", "affirm", 0.5), ("yes", "affirm", 0.99)]) == [
        [ASK_ORDER], ["Order numbers are digits only, like 12345.", ASK_ORDER], [ASK_CONFIRM],
        ["Cancel order 12345: yes."]]
    # outside a form an affirm is small talk as before
    assert await play(bot, dialogue, [("yes", "affirm", 0.99)]) == [[GREAT]]


async def test_a_hand_off_still_leaves_the_yes_no_question_and_a_question_is_still_answered(tmp_path: Path) -> None:
    bot, dialogue = shop(tmp_path)
    assert await play(bot, dialogue, [CANCEL, ("no, get me a person", "contact_human_agent", 0.9)]) == [
        [ASK_CONFIRM], ["I'll get a colleague."]]
    assert await play(bot, dialogue, [CANCEL, ("is there a cancellation fee", "check_fee", 0.95),
                                      ("yes", "affirm", 0.99)]) == [
        [ASK_CONFIRM], ["Cancelling is free.", ASK_CONFIRM], ["Cancel order 12345: yes."]]


def test_from_intent_is_checked(tmp_path: Path) -> None:
    _, dialogue = shop(tmp_path, bot_yml=BOT.replace("    type: bool\n",
                                                     "    type: bool\n    from_intent: {check_fee: true}\n"))
    assert dialogue.slots["cancel_confirmed"].from_intent == (("check_fee", True),)
    assert shop(tmp_path)[1].slots["cancel_confirmed"].from_intent == (("affirm", True), ("deny", False))
    with pytest.raises(ConfigError) as error:
        shop(tmp_path, bot_yml=BOT.replace("    type: bool\n",
                                           "    type: bool\n    from_intent: {agree: true, deny: maybe}\n"))
    message = str(error.value)
    assert "slot 'cancel_confirmed': 'from_intent': unknown intent 'agree'" in message
    assert "slot 'cancel_confirmed': 'from_intent': 'deny' must give true or false (a bool slot)" in message
    unasked = BOT.replace("slots:\n", "slots:\n  note:\n    type: text\n    from_intent: {affirm: fine}\n")
    with pytest.raises(ConfigError, match="slot 'note': 'from_intent' fills it while a form asks for it, and no "
                                          "form's required_slots lists it"):
        shop(tmp_path, bot_yml=unasked)


async def test_the_give_up_names_the_slot_by_its_label(tmp_path: Path) -> None:
    bot, dialogue = shop(tmp_path)
    assert await play(bot, dialogue, [("where is my order", "track_order", 0.95), ("A-12", "nlu_fallback", 0.3),
                                      ("A-13", "nlu_fallback", 0.3)]) == [
        ["What is the order number?"], ["Order numbers are digits only, like 12345.", "What is the order number?"],
        ["Order numbers are digits only, like 12345.", "Sorry, I still can't use that as the order number."]]
    bot, dialogue = shop(tmp_path, bot_yml=BOT.replace("    label: order number\n", ""))  # no label: its name
    assert (await play(bot, dialogue, [("where is my order", "track_order", 0.95), ("A-12", "nlu_fallback", 0.3),
                                       ("A-13", "nlu_fallback", 0.3)]))[-1][-1] == (
        "Sorry, I still can't use that as the order id.")


async def test_an_off_topic_question_inside_a_form_is_answered_and_counted(tmp_path: Path) -> None:
    """"what's the weather like today?" (out_of_scope 0.99) was told "Order numbers are digits only" and asked
    again. It is answered, and the form asks again; it counts as a failed answer (max_attempts 2), so that a
    customer who goes on writing what is not an order number is offered a way on, not asked forever."""
    bot, dialogue = shop(tmp_path)
    track = ("where is my order", "track_order", 0.95)
    weather = ("what's the weather like today?", "out_of_scope", 0.99)
    assert await play(bot, dialogue, [track, weather, ("12345", "track_order", 0.4)]) == [
        ["What is the order number?"], ["Sorry, I can't help with that.", "What is the order number?"],
        ["Order 12345 is on its way."]]
    gave_up = ["Order numbers are digits only, like 12345.", "Sorry, I still can't use that as the order number."]
    assert await play(bot, dialogue, [track, weather, ("A-12", "nlu_fallback", 0.3)]) == [
        ["What is the order number?"], ["Sorry, I can't help with that.", "What is the order number?"], gave_up]
    assert await play(bot, dialogue, [track, weather, weather]) == [
        ["What is the order number?"], ["Sorry, I can't help with that.", "What is the order number?"], gave_up]


class FixedNLU:
    """An NLU whose reading of each text is fixed (``reads``: text -> intent, confidence; digits are an order_id),
    served with the operating point ``oos`` (bots/nlu/oos.py; the manifest's)."""

    def __init__(self, spec: BotSpec, reads: dict[str, tuple[str, float]], oos: dict[str, Any] | None = None) -> None:
        self.reads = reads
        self.manifest = Manifest(bot=spec.name, version="fixed-1", data_hash="0" * 16, base_model="fixed",
                                 labels=tuple(sorted(spec.intents)), created_at="2026-01-01T00:00:00Z", oos=oos or {})

    def predict(self, texts: Sequence[str]) -> list[Understanding]:
        out = []
        for text in texts:
            intent, confidence = self.reads[text]
            entities = tuple(Entity("order_id", m.group(), m.start(), m.end()) for m in re.finditer(r"\d{3,}", text))
            out.append(Understanding(intent, confidence, (IntentScore(intent, confidence),
                                                          IntentScore("out_of_scope", 0.14)), entities))
        return out


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, bot_yml: str, reads: dict[str, tuple[str, float]], oos: dict[str, Any] | None = None,
                actions: str | None = None) -> AsyncIterator[Runtime]:
    """The bot served by a Runtime (SQLite store) with a FixedNLU."""
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "bot.yml").write_text(bot_yml + ("actions: actions\n" if actions else ""), encoding="utf-8")
    if actions:
        (folder / "actions.py").write_text(actions, encoding="utf-8")
    artifact = folder / "models" / "fixed-1"
    artifact.mkdir(parents=True)
    write_manifest(artifact, Manifest(bot="shop", version="fixed-1", data_hash="0" * 16, base_model="fixed",
                                      labels=(), created_at="2026-01-01T00:00:00Z"))
    store = SQLiteStore(tmp_path / "store.db")
    await store.start()
    runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0), store,
                      model_loader=lambda path, spec, settings: FixedNLU(spec, reads, oos))
    try:
        await runtime.load_bot(folder)
        yield runtime
    finally:
        await runtime.aclose()


VALIDATION = '''from rasa_sdk import FormValidationAction


class ValidateCancelOrderForm(FormValidationAction):
    def name(self):
        return "validate_cancel_order_form"

    def validate_order_id(self, slot_value, dispatcher, tracker, domain):
        return {"order_id": slot_value}
'''


async def test_a_form_with_a_validation_action_takes_the_affirm_intent_as_the_answer(tmp_path: Path) -> None:
    """With a validation action (the example bot's forms), what the mappings fill waits for it: the text "sure thing,
    do it" was refused as a yes or no before the affirm intent filled the slot, and the refusal stayed ("Please answer
    yes or no." said beside the cancellation)."""
    validated = BOT.replace("    stop_intents: [stop, goodbye]\n    ignored_intents",
                            "    validation_action: validate_cancel_order_form\n    stop_intents: [stop, goodbye]\n"
                            "    ignored_intents")
    reads = {"I want to cancel order 12345": ("cancel_order", 0.98), "sure thing, do it": ("affirm", 0.9),
             "yes please cancel it": ("stop", 0.66)}
    async with serve(tmp_path, validated, reads, actions=VALIDATION) as runtime:
        for conversation, answer in (("c1", "sure thing, do it"), ("c2", "yes please cancel it")):
            assert await say(runtime, "I want to cancel order 12345", conversation) == [ASK_CONFIRM]
            assert await say(runtime, answer, conversation) == ["Cancel order 12345: yes."]


async def test_i_dont_know_it_ends_the_form_at_once_with_a_way_on(tmp_path: Path) -> None:
    """"i don't know it" (deny 0.93) to "What is the order number?" was told "Order numbers contain digits only"
    and asked again: a customer who says they cannot answer is offered a way on at once (the form's ``declined``,
    else "No problem, I'll stop asking for the {slot}." with the buttons of give_up). A deny that answers the
    question (a yes/no slot) is still its answer, and the next message starts afresh."""
    bot, dialogue = shop(tmp_path)
    track = ("where is my order", "track_order", 0.95)
    dont_know = ("i don't know it", "deny", 0.93)
    said = await play(bot, dialogue, [track, dont_know, ("where is my order 12345", "track_order", 0.95)])
    assert said == [["What is the order number?"],
                    ["No problem, I'll stop asking for the order number. You can start again when you have it, or "
                     "talk to a person from our team."],
                    ["Order 12345 is on its way."]]
    state = State()
    await play(bot, dialogue, [track, dont_know], state=state)
    assert state.active_form is None
    last = [e for e in state.history if e.kind == "bot"][-1].data
    assert last["metadata"]["declined"] is True and last["metadata"]["gave_up"] is True
    assert [b["payload"] for b in last["buttons"]] == ["/track_order", "/contact_human_agent"]
    # the form's own text; a no to the yes/no question is still its answer
    own = BOT.replace("    give_up: Sorry, I still", "    declined: Fine, ask me again when you have the {slot}.\n"
                                                     "    give_up: Sorry, I still")
    bot, dialogue = shop(tmp_path, bot_yml=own)
    assert (await play(bot, dialogue, [track, dont_know]))[-1] == ["Fine, ask me again when you have the order number."]
    assert await play(bot, dialogue, [CANCEL, ("no", "deny", 0.98)]) == [
        [ASK_CONFIRM], ["Cancel order 12345: no."]]
    # an answer that is not a no is still told why it is refused
    assert (await play(bot, dialogue, [track, ("A-12", "nlu_fallback", 0.3)]))[-1] == [
        "Order numbers are digits only, like 12345.", "What is the order number?"]


class _Known:
    """An answer provider that knows one question (as retrieval knows the bot's questions); nothing else fits."""

    async def answer(self, kind: Any, text: str, understanding: Understanding, values: Any, *,
                     partial: Any = None) -> Any:
        from bots.types import BotResponse

        return BotResponse(text="We accept cards and PayPal.", source="retrieval") if "pay" in text else None

    async def follow_up(self, text: str, previous: str, understanding: Understanding, values: Any) -> Any:
        return None


async def test_a_question_not_understood_inside_a_form_is_answered_when_the_bot_knows_the_answer(
        tmp_path: Path) -> None:
    """"can I pay with apple pay?" (nlu_fallback) when an order number was asked was told "Order numbers are digits
    only": a not-understood message that reads as a question is put to the answer provider; answered, the form asks
    again (a failed answer towards max_attempts, as an out-of-scope one); unanswered, or not a question, it stays
    a failed answer with the slot's reason."""
    bot, dialogue = shop(tmp_path)
    services = Services(answers=_Known())
    track = ("where is my order", "track_order", 0.95)
    apple = ("can I pay with apple pay?", "nlu_fallback", 0.37)
    assert await play(bot, dialogue, [track, apple, ("12345", "track_order", 0.4)], services) == [
        ["What is the order number?"], ["We accept cards and PayPal.", "What is the order number?"],
        ["Order 12345 is on its way."]]
    reason = "Order numbers are digits only, like 12345."
    assert (await play(bot, dialogue, [track, ("what do I do now?", "nlu_fallback", 0.3)], services))[-1] == [
        reason, "What is the order number?"]  # a question nothing answers
    assert (await play(bot, dialogue, [track, ("paypal thing", "nlu_fallback", 0.3)], services))[-1] == [
        reason, "What is the order number?"]  # not a question
    assert (await play(bot, dialogue, [track, apple], Services()))[-1] == [reason, "What is the order number?"]
    # counted: a second one ends the form with its way on
    assert (await play(bot, dialogue, [track, apple, apple], services))[-1] == [
        reason, "Sorry, I still can't use that as the order number."]
