"""The policies' replay carried over from turn to turn (bots/dialogue/policies.py ``WindowReplay``, kept by
``State.replay``): at every turn it is exactly ``Tracker.replay`` of the state's window of events, as the window
grows, slides past 200 events, drops a session's or a restart's earlier events, and slots leave it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from bots.dialogue.policies import Tracker, WindowReplay, slot_features
from bots.dialogue.state import State
from bots.events import ACTION, BOT, FORM, NLU, RESTART, REWIND, SESSION_START, SLOT, UNDO, USER, Event
from bots.loader import load_bot_folder
from tests.bots.test_policies import DOMAIN, NLU_DATA, RESPONSES
from tests.bots.test_rasa_check import write

FORMS = """forms:
  city_form:
    required_slots: [city]
"""
INTENTS = ["greet", "bye", "ask", "inform", "confirm", "restart"]
ACTIONS = ["utter_greet", "utter_answer", "utter_city", "action_listen", "action_listen", "city_form"]


def _event(rng: random.Random, i: int) -> list[Event]:
    """A random step of a conversation: mostly user turns and the bot's actions, now and then a slot, a form,
    an undone action or message, rarely a new session or a restart."""
    roll = rng.random()
    if roll < 0.3:
        entities = [{"entity": "city", "value": "Paris", "role": rng.choice(["to", "from"])}] * rng.randint(0, 1)
        return [Event(USER, {"text": f"message {i}"}, i),
                Event(NLU, {"intent": rng.choice(INTENTS), "confidence": rng.random(), "entities": entities}, i)]
    if roll < 0.75:
        return [Event(ACTION, {"name": rng.choice(ACTIONS)}, i)]
    if roll < 0.82:
        return [Event(BOT, {"text": f"answer {i}"}, i)]
    if roll < 0.85:
        value: Any = rng.choice([True, False, None, "true", 1, "Paris"])
        return [Event(SLOT, {"name": rng.choice(["vip", "city", "requested_slot"]), "value": value}, i)]
    if roll < 0.88:
        return [Event(FORM, rng.choice([{"name": "city_form", "requested_slot": "city"}, {"name": None}]), i)]
    if roll < 0.99:
        return [Event(rng.choice([UNDO, REWIND]), {}, i)]
    if roll < 0.997:
        return [Event(SESSION_START, {"carry_over": rng.random() < 0.5}, i)]
    return [Event(RESTART, {}, i)]


def _seen(domain: Any, tracker: Tracker) -> tuple[Any, ...]:
    """What predictions read of a tracker (its slots through their features, all a frame reads of them)."""
    return (tracker.frames, tracker.queries, tracker.actions, tracker.session_start, tracker.intent,
            tracker.entities, tracker.prev_action, tracker.loop, set(slot_features(domain, tracker.slots)),
            tracker.frame())


def test_the_carried_over_replay_is_the_replay_of_the_window(tmp_path: Path) -> None:
    domain_yml = DOMAIN + "".join(f"  utter_{r}:\n  - text: {r}\n" for r in RESPONSES) + FORMS
    bot = write(tmp_path, {"domain.yml": domain_yml, "data/nlu.yml": NLU_DATA, "data/stories.yml": "stories: []\n",
                           "data/rules.yml": "rules: []\n", "config.yml": "language: en\n"})
    domain = load_bot_folder(bot)[1].domain
    assert "city_form" in domain.forms and domain.slots["vip"].influence_conversation
    rng = random.Random(17)
    state = State()
    cache = WindowReplay()
    carried = slid = full_window = 0
    previous: Tracker | None = None
    i = turns = 0
    while i < 10000:
        turns += 1
        for _ in range(rng.randint(1, 12)):  # a turn's worth of events, then the next turn's replay
            for event in _event(rng, i):
                state.apply(event)
            i += 1
        threshold = 0.3 if rng.random() < 0.98 else 0.5   # a bot reloaded with another threshold: replayed anew
        start_before = cache.start
        tracker = cache.tracker(domain, state.history, state.history_start, threshold)
        expected = Tracker.replay(domain, state.history, threshold)
        assert _seen(domain, tracker) == _seen(domain, expected), i
        if cache.replayed is previous:
            carried += 1
            slid += cache.start != start_before
        previous = cache.replayed
        full_window += len(state.history) == 200
        # the caller changes its tracker (as a turn does): the cache's own replay is not touched
        tracker.apply(Event(NLU, {"intent": "greet", "confidence": 1.0}, i))
        tracker.apply(Event(ACTION, {"name": "utter_greet"}, i))
        tracker.apply(Event(SLOT, {"name": "vip", "value": True}, i))
        assert _seen(domain, cache.tracker(domain, state.history, state.history_start, threshold)) == \
            _seen(domain, expected)
    # every path was taken: carried over as the window grew and as it slid, and replayed anew
    # every path was taken (carried over as the window grew and as it slid, replayed anew) and the window was full
    assert carried > 1000 and slid > 150 and full_window > 200 and turns - carried > 100


def test_a_working_copy_of_a_state_starts_without_its_replay(tmp_path: Path) -> None:
    state = State()
    state.replay = WindowReplay()
    assert state.copy().replay is None and state.copy().history_start == state.history_start
