"""Forms: slots asked in order, answers checked (type, bounds, regex, a rasa-sdk validation action)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.dialogue.forms import check_value
from bots.dialogue.spec import SlotSpec
from bots.dialogue.state import State
from bots.events import FORM, PAUSE, SLOT
from bots.runtime import Runtime
from tests.bots.keyword_model import copy_bot, say, start_runtime


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await start_runtime(copy_bot(tmp_path), tmp_path / "store.db")
    yield rt
    await rt.aclose()


async def _state(runtime: Runtime, conversation: str = "c1") -> State:
    loaded = await runtime.store.load("shop", conversation)
    assert loaded is not None
    return State.from_events(loaded.events, sender_id=conversation)


async def test_form_filled_over_several_turns_with_invalid_answers(runtime: Runtime) -> None:
    assert await say(runtime, "I want to change my order") == [
        "Which order would you like to change? Please give me the order number."]
    # Not digits: refused with the slot's own reason, and asked again.
    assert await say(runtime, "the blue one") == [
        "Order numbers are digits only, like 12345.",
        "Which order would you like to change? Please give me the order number."]
    # Digits, but the rasa-sdk validation action refuses it with its reason.
    assert await say(runtime, "99999") == [
        "Order 99999 was cancelled, so it can't be changed.",
        "Which order would you like to change? Please give me the order number."]
    assert await say(runtime, "12345") == ["How many items of order 12345 should it be?"]
    assert await say(runtime, "a few") == ["Please answer with a number for the quantity.",
                                           "How many items of order 12345 should it be?"]
    assert await say(runtime, "20") == ["Please give a quantity between 1 and 10.",
                                        "How many items of order 12345 should it be?"]
    assert await say(runtime, "3") == ["What else would you like to change in order 12345?"]
    assert await say(runtime, "gift wrapping please") == [
        "Thanks! I've passed the change to order 12345 (3 items, gift wrapping please) to our team."]
    state = await _state(runtime)
    assert state.slots == {"order_id": "12345", "quantity": 3, "order_change": "gift wrapping please"}
    assert state.active_form is None and state.requested_slot is None
    # The refused answers never became slot values.
    loaded = await runtime.store.load("shop", "c1")
    assert loaded is not None
    assert [e.data["value"] for e in loaded.events if e.kind == SLOT and e.data["name"] == "order_id"] == ["12345"]
    # After the form, the bot answers normally again.
    assert await say(runtime, "hello") == ["Hello! How can I help you today?"]


ENDING_VALIDATION = """
from rasa_sdk.events import ActiveLoop


class ValidateChangeOrderForm(ValidateChangeOrderForm):  # noqa: F811
    def validate_order_id(self, slot_value, dispatcher, tracker, domain):
        if ORDERS.get(slot_value) == "delivered":  # nothing to change: the form ends, one way or the other
            dispatcher.utter_message(text=f"Order {slot_value} has arrived: return it instead.")
            return {"order_id": None, "requested_slot": None}
        if ORDERS.get(slot_value) == "shipped":
            dispatcher.utter_message(text=f"Order {slot_value} has shipped.")
            return {"order_id": None, "active_loop_ends": True}
        return super().validate_order_id(slot_value, dispatcher, tracker, domain)

    async def run(self, dispatcher, tracker, domain):
        events = await super().run(dispatcher, tracker, domain)
        if any(e.get("name") == "active_loop_ends" for e in events):
            return [e for e in events if e.get("name") != "active_loop_ends"] + [ActiveLoop(None)]
        return events
"""


@pytest.mark.parametrize("order", ["55555", "12345"])
async def test_the_validation_action_ends_the_form_without_its_submit(tmp_path: Path, order: str) -> None:
    """A validation action ends the form by setting requested_slot to None or returning ActiveLoop(None) (Rasa's
    LoopAction.is_done): the form asks nothing more, and a bot.yml form's submit, what it does with all its slots,
    does not run (before, ActiveLoop(None) was overridden and the form asked its question again)."""
    bot = copy_bot(tmp_path)
    actions = bot / "actions.py"
    actions.write_text(actions.read_text(encoding="utf-8") + ENDING_VALIDATION, encoding="utf-8")
    rt = await start_runtime(bot, tmp_path / "store.db")
    try:
        assert await say(rt, "I want to change my order") == [
            "Which order would you like to change? Please give me the order number."]
        said = {"55555": "Order 55555 has arrived: return it instead.", "12345": "Order 12345 has shipped."}
        assert await say(rt, order) == [said[order]]
        state = await _state(rt)
        assert state.active_form is None and state.requested_slot is None and "order_id" not in state.slots
        assert await say(rt, "hello") == ["Hello! How can I help you today?"]
    finally:
        await rt.aclose()


async def test_entities_fill_form_slots_before_they_are_asked(runtime: Runtime) -> None:
    assert await say(runtime, "please change order 55555") == ["How many items of order 55555 should it be?"]
    state = await _state(runtime)
    assert state.active_form == "change_order_form" and state.requested_slot == "quantity"
    assert state.slots["order_id"] == "55555"


async def test_an_invalid_entity_does_not_fill_a_slot(runtime: Runtime) -> None:
    # "12" is too short for the order_id regex: the form asks for it instead.
    assert await say(runtime, "change order 12") == [
        "Which order would you like to change? Please give me the order number."]
    assert "order_id" not in (await _state(runtime)).slots


async def test_stop_intent_leaves_the_form(runtime: Runtime) -> None:
    await say(runtime, "I want to change my order")
    assert await say(runtime, "bye") == ["Goodbye, and thanks for visiting!"]
    state = await _state(runtime)
    assert state.active_form is None
    loaded = await runtime.store.load("shop", "c1")
    assert loaded is not None and any(e.kind == FORM and e.data["name"] is None for e in loaded.events)


async def test_asking_for_a_human_inside_a_form_hands_off(runtime: Runtime) -> None:
    await say(runtime, "I want to change my order")
    assert await say(runtime, "let me talk to a human") == [
        "Of course, I'll connect you with a colleague. Please stay in this chat."]
    state = await _state(runtime)
    assert state.paused and state.active_form is None
    summary = await runtime.store.summary("shop", "c1")
    assert summary is not None and summary.handoff
    loaded = await runtime.store.load("shop", "c1")
    assert loaded is not None and loaded.events[-1].kind == PAUSE


def test_check_value_types_bounds_choices_and_regex() -> None:
    integer = SlotSpec("quantity", type="integer", minimum=1, maximum=10)
    assert check_value(integer, "4").value == 4
    assert check_value(integer, "4.0").value == 4
    assert check_value(integer, "4.5").reason == "Please answer with a whole number for the quantity."
    assert check_value(integer, "0").reason == "Please give a quantity between 1 and 10."
    price = SlotSpec("price", type="float", minimum=0)
    assert check_value(price, "2,50").value == 2.5
    assert check_value(price, "-1").reason == "Please give a price of at least 0."
    confirm = SlotSpec("confirm", type="bool")
    assert check_value(confirm, "Yes!").value is True
    assert check_value(confirm, "nope").value is False
    assert check_value(confirm, "maybe").reason == "Please answer yes or no."
    assert check_value(confirm, "yes please").value is True  # the first word answers
    assert check_value(confirm, "No, I wanted to track it").value is False
    assert check_value(confirm, "not sure").reason == "Please answer yes or no."
    assert check_value(confirm, "ok wait, which order?").reason == "Please answer yes or no."  # not a plain yes
    speed = SlotSpec("speed", type="categorical", choices=("standard", "express"))
    assert check_value(speed, "EXPRESS").value == "express"
    assert check_value(speed, "overnight").reason == "Please choose one of: standard, express."
    order = SlotSpec("order_id", regex=re.compile(r"\d{3,12}"), invalid="Digits only, please.")
    assert check_value(order, " 12345 ").value == "12345"
    assert check_value(order, "12345x").reason == "Digits only, please."
    assert check_value(SlotSpec("note"), "   ").reason == "I still need the note."
