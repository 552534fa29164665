"""A Rasa form's unhappy paths, as Rasa follows them (found by ``switchboard test`` on the forms fixture).

* Rasa's ``FormAction`` validates the message only when it runs right after ``action_listen``; run again in
  the same turn (the fixture's rule "Chitchat inside the form": ``utter_chitchat``, then
  ``restaurant_form``), it asks for the slot it still needs instead of rejecting the message a second time.
* ``requested_slot`` is no feature of the dialogue state unless the domain declares it (Rasa 3 adds it as a
  text slot with ``influence_conversation: false``): stories that never name it match a form that asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.dialogue.domain import REQUESTED_SLOT, Domain, Form, Slot
from bots.dialogue.policies import Tracker
from bots.events import ACTION, REJECTED
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from tests.bots.keyword_model import message
from tests.bots.lookup_model import LookupModel, lookup_runtime, project


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with lookup_runtime(tmp_path, "forms", {"tell me a joke": ("chitchat", ())}) as rt:
        yield rt


async def _say(runtime: Runtime, text: str) -> tuple[list[str], list[str]]:
    """What the bot answered, and the turn's actions and rejections."""
    msg = message(text, bot="forms")
    answered = [r.text for r in await runtime.handle(msg)]
    turn = await runtime.store.get_turn("forms", "c1", msg.message_id)
    assert turn is not None
    return answered, [f"{e.kind}:{e.data['name']}" for e in turn.events if e.kind in (ACTION, REJECTED)]


async def test_the_form_asks_again_after_the_chitchat_rule(runtime: Runtime) -> None:
    assert await _say(runtime, "I'd like to book a table") == (
        ["What cuisine would you like?"], ["action:restaurant_form", "action:action_listen"])
    # chitchat is an ignored intent of the form: the form rejects it, the rule answers, the form asks again
    assert await _say(runtime, "tell me a joke") == (
        ["Let's get back to your table.", "What cuisine would you like?"],
        ["rejected:restaurant_form", "action:utter_chitchat", "action:restaurant_form", "action:action_listen"])
    assert await _say(runtime, "italian food") == (
        ["For how many people?"], ["action:restaurant_form", "action:action_listen"])


LOOP_STORY = """version: "3.1"
stories:
- story: a story that goes on after the form asked again
  steps:
  - intent: request_restaurant
  - action: restaurant_form
  - active_loop: restaurant_form
  - intent: bot_challenge
  - action: utter_iamabot
  - action: restaurant_form
  - action: utter_iamabot
"""


async def test_after_an_unhappy_path_the_form_asks_again_and_the_bot_listens(tmp_path: Path) -> None:
    # A public car-rental project: "Bonjour" inside its form (an ignored intent) was rejected, its general rule
    # answered and gave the turn back to the form, which asked again; then its learned policy answered the
    # greeting a second time instead of listening: the form's rejection still held for the rest of the turn, so
    # the loop's happy path (it ran: listen) was skipped. Rasa resets the rejection when the loop runs
    # (``DialogueStateTracker.set_latest_action``), and the happy path outranks every other policy: here a
    # story the memoization would follow.
    bot_dir = project(tmp_path, "forms")
    (bot_dir / "data" / "stories_loop.yml").write_text(LOOP_STORY, encoding="utf-8")
    store = SQLiteStore(tmp_path / "store.db")
    await store.start()
    runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0), store,
                      model_loader=lambda artifact, spec, settings: LookupModel(spec, {}))
    try:
        await runtime.load_bot(bot_dir)
        await _say(runtime, "I'd like to book a table")
        assert await _say(runtime, "is this a robot?") == (   # the rule "Bot challenge" does not name the form
            ["I am a bot.", "What cuisine would you like?"],
            ["rejected:restaurant_form", "action:utter_iamabot", "action:restaurant_form", "action:action_listen"])
        assert await _say(runtime, "italian food") == (
            ["For how many people?"], ["action:restaurant_form", "action:action_listen"])
    finally:
        await runtime.aclose()


async def test_a_story_that_never_names_requested_slot_matches_a_form_that_asked_for_one(runtime: Runtime) -> None:
    # The fixture's story "stop the form and leave" says nothing of requested_slot; the live form has asked for
    # the cuisine. Rasa does not featurise requested_slot unless the domain declares it: the story matches.
    msg = message("I'd like to book a table", bot="forms")
    await runtime.handle(msg)
    stop = message("stop", bot="forms")
    assert [r.text for r in await runtime.handle(stop)] == ["Do you want to go on with the booking?"]
    turn = await runtime.store.get_turn("forms", "c1", stop.message_id)
    assert turn is not None
    assert [(e.data["name"], e.data.get("policy")) for e in turn.events if e.kind == ACTION] == [
        ("utter_ask_continue", "MemoizationPolicy"), ("action_listen", None)]
    leave = message("never mind", bot="forms")
    await runtime.handle(leave)
    turn = await runtime.store.get_turn("forms", "c1", leave.message_id)
    assert turn is not None
    assert [e.data["name"] for e in turn.events if e.kind == ACTION] == ["action_deactivate_loop", "action_listen"]


def test_requested_slot_is_a_feature_only_where_the_domain_declares_it() -> None:
    plain = Domain(slots={"cuisine": Slot("cuisine", influence_conversation=False)},
                   forms={"f": Form("f", ("cuisine",))})
    tracker = Tracker(plain, slots={REQUESTED_SLOT: "cuisine"}, loop="f")
    assert tracker.frame() == frozenset({"loop:f"})
    declared = Domain(slots={**plain.slots, REQUESTED_SLOT: Slot(REQUESTED_SLOT, "categorical", values=("cuisine",))},
                      forms=plain.forms)
    tracker = Tracker(declared, slots={REQUESTED_SLOT: "cuisine"}, loop="f")
    assert tracker.frame() == frozenset({"loop:f", f"slot:{REQUESTED_SLOT}:cuisine"})
