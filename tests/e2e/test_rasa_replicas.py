"""Two replicas serving a Rasa project answer like one bot: exactly once, in order, with stories and actions.

The forms fixture (tests/data/rasa/forms: a form validated by a rasa-sdk ``FormValidationAction``, an
``action_ask_*`` with buttons, a custom slot mapping run by a custom action at every message, rules, stories
joined by a checkpoint, a conditional response variation) is served by two ``Runtime`` s sharing one store
(the MongoDB-protocol server, and one SQLite file) and nothing else; its actions run in process on whichever
replica answers. Many conversations' messages are accepted in arrival order on both replicas, then processed
concurrently on both (as tests/bots/test_ordering.py does with a bot.yml bot): every answer depends on the
messages before it, so the replies, the stored turns, the slots each conversation ends with and the custom
actions run are those of one bot answering the messages one by one only if each message is processed once,
in its conversation's order. The NLU is the fixture's own examples (tests/bots/lookup_model.py), so the
comparison is about the dialogue, not the model.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bots.botspec import BotSpec
from bots.dialogue.rasa_protocol import ActionOutcome, ActionRunner
from bots.dialogue.state import State
from bots.events import NLU, USER
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.base import ConversationStore, Turn
from bots.store.mongo import MongoStore
from bots.store.sqlite import SQLiteStore
from bots.types import BotResponse, Entity, Understanding, UserMessage
from tests.bots.keyword_model import message
from tests.bots.lookup_model import LookupModel, project

BOT = "forms"
# Texts the fixture's examples do not have, as its NLU would read them.
OVERRIDES: dict[str, tuple[str, tuple[Entity, ...]]] = {
    "two of us": ("inform", (Entity("number", "two", 0, 3),)),  # refused by validate_restaurant_form
    "tell me a joke": ("chitchat", ()),
    "by the window": ("inform", ()),
    "we are 9": ("inform", (Entity("number", "9", 7, 8),)),
}
GREAT, BAD = '/inform{"feedback": "great"}', '/inform{"feedback": "bad"}'
# Each script is one conversation; a text starting with "/" is a button's payload (a click).
SCRIPTS: dict[str, tuple[str, ...]] = {
    # the form from greeting to submit: a value the validation action refuses, button clicks, the conditional
    # response variation (outside), thanks
    "happy": ("hello", "I'd like to book a table", "italian food", "two of us", "5 people", "/affirm",
              "by the window", GREAT, "thanks"),
    # chitchat inside the form (the form rejects it, a rule answers, the form asks again); inside: the plain
    # variation
    "chitchat": ("can you find me a restaurant", "tell me a joke", "mexican", "we are 9", "/deny", "a quiet table",
                 BAD),
    # story "stop the form and go on" (memoised): the answer to "go on?" is not the cuisine (the form stands
    # rejected, as in Rasa), the form asks again; then the rest of the form
    "stop_go": ("I'd like to book a table", "stop", "italian please", "italian food", "two of us", "2 people", "yes",
                "somewhere with a view", "the food was great"),
    # stories "stop the form and leave" and "thanks after leaving the form", joined by a checkpoint
    "stop_leave": ("I'd like to book a table", "I don't want to go on", "never mind", "thank you", "are you a bot?"),
    # the number given with the request (slot filled before the form asks), then the rest
    "with_number": ("hi", "book a table for 4", "chinese please", "no", "a table inside", GREAT),
}
COPIES = 3  # conversations per script


def conversations() -> list[tuple[str, tuple[str, ...]]]:
    return [(f"{name}-{n}", script) for n in range(COPIES) for name, script in SCRIPTS.items()]


def user_message(conversation: str, step: int, text: str) -> UserMessage:
    click = text.startswith("/")
    return message("" if click else text, conversation, message_id=f"{conversation}:{step}", bot=BOT,
                   payload=text if click else None)


class CountingNLU(LookupModel):
    """The fixture's examples as the NLU, counting the texts it was asked about (= messages processed)."""

    def __init__(self, spec: BotSpec) -> None:
        super().__init__(spec, OVERRIDES)
        self.calls: list[str] = []

    def predict(self, texts: Sequence[str]) -> list[Understanding]:
        self.calls.extend(texts)
        return super().predict(texts)


@dataclass(frozen=True)
class ActionCall:
    conversation: str
    action: str
    message_id: str


class RecordingActions:
    """The bot's own (in-process rasa-sdk) action runner, recording every run into ``log``."""

    def __init__(self, inner: ActionRunner, log: list[ActionCall]) -> None:
        self.inner = inner
        self.log = log

    def names(self) -> set[str] | None:
        return self.inner.names()

    async def run(self, name: str, tracker: dict[str, Any]) -> ActionOutcome:
        # The message the action runs for, as Rasa gives it: the latest user event's id and latest_message's.
        users = [e for e in tracker["events"] if e.get("event") == "user"]
        message_id = tracker["latest_message"].get("message_id")
        assert message_id is not None and users, (name, tracker["latest_message"])
        assert users[-1].get("message_id") == users[-1]["parse_data"].get("message_id") == message_id, (
            name, users[-1:], tracker["latest_message"])
        self.log.append(ActionCall(str(tracker["sender_id"]), name, str(message_id)))
        return await self.inner.run(name, tracker)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port that refuses connections for the whole test (bound, never listening): the fixture's
    DucklingEntityExtractor is pointed there, so the test never depends on what listens on port 8000."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def forms_project(tmp_path: Path, duckling_port: int) -> Path:
    """A copy of the forms fixture (with a fake artifact: its NLU is ``LookupModel``) whose Duckling is
    ``duckling_port``."""
    bot_dir = project(tmp_path, BOT)
    config = bot_dir / "config.yml"
    text = config.read_text(encoding="utf-8")
    assert "url: http://127.0.0.1:8000" in text
    config.write_text(text.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{duckling_port}"), encoding="utf-8")
    return bot_dir


@pytest.fixture
def bot_dir(tmp_path: Path, refused_port: int) -> Path:
    return forms_project(tmp_path, refused_port)


async def serve(bot_dir: Path, store: ConversationStore, data_dir: Path, actions: list[ActionCall]) -> Runtime:
    await store.start()
    settings = Settings(data_dir=data_dir, nlu_max_wait_ms=0.0, lease_ttl_s=10.0)
    runtime = Runtime(settings, store, model_loader=lambda artifact, spec, s: CountingNLU(spec))
    bot = await runtime.load_bot(bot_dir)
    assert bot.actions is not None, "the fixture's actions/ package was not loaded"
    bot.actions = RecordingActions(bot.actions, actions)
    return runtime


def shown(responses: Sequence[BotResponse]) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.text, tuple(b.payload for b in r.buttons)) for r in responses]


@dataclass
class Reference:
    answers: dict[str, list[tuple[str, tuple[str, ...]]]]   # message id -> replies
    slots: dict[str, tuple[dict[str, Any], str | None]]     # conversation -> (slots, active form)
    actions: list[ActionCall]


async def final_state(store: ConversationStore, conversation: str) -> tuple[dict[str, Any], str | None]:
    loaded = await store.load(BOT, conversation)
    assert loaded is not None
    state = State.from_events(loaded.events, sender_id=conversation)
    return dict(state.slots), state.active_form


@pytest.fixture
async def reference(bot_dir: Path, tmp_path: Path) -> AsyncIterator[Reference]:
    """One bot answering every conversation's messages one by one."""
    actions: list[ActionCall] = []
    runtime = await serve(bot_dir, SQLiteStore(tmp_path / "reference.db"), tmp_path, actions)
    answers: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    slots = {}
    try:
        for conversation, script in conversations():
            for step, text in enumerate(script):
                msg = user_message(conversation, step, text)
                answers[msg.message_id] = shown(await runtime.handle(msg))
            slots[conversation] = await final_state(runtime.store, conversation)
    finally:
        await runtime.aclose()
    yield Reference(answers, slots, actions)


def test_the_reference_conversations_are_the_fixtures_behaviour(reference: Reference) -> None:
    """What the replicas are held to: the form, its validation action, its buttons, the conditional variation
    and the stories, as the fixture says (so a broken engine cannot make both sides agree on nonsense)."""
    said = {mid: [text for text, _ in replies] for mid, replies in reference.answers.items()}
    assert said["happy-0:3"] == ["Please give the number of people as a number.", "For how many people?"]
    assert reference.answers["happy-0:4"] == [("Do you want to sit outside?", ("/affirm", "/deny"))]
    assert reference.answers["happy-0:6"] == [("How was your last visit?", (GREAT, BAD))]
    assert said["happy-0:7"] == ["All done! Your table is outside.",
                                 "A table for 5 (italian), outside: yes, wishes: by the window."]
    assert said["chitchat-0:1"] == ["Let's get back to your table.", "What cuisine would you like?"]
    assert said["chitchat-0:6"] == ["All done!", "A table for 9 (mexican), outside: no, wishes: a quiet table."]
    assert said["stop_go-0:1"] == ["Do you want to go on with the booking?"]
    assert said["stop_go-0:2"] == ["What cuisine would you like?"]
    assert said["stop_go-0:3"] == ["For how many people?"]
    assert said["stop_leave-0:2"] == []  # action_deactivate_loop, then listen
    assert said["stop_leave-0:3"] == ["You're welcome :)"]
    assert said["with_number-0:2"] == ["Do you want to sit outside?"]
    assert reference.slots["happy-0"] == ({"cuisine": "italian", "num_people": 5.0, "party_size": "small",
                                           "outdoor_seating": True, "preferences": "by the window",
                                           "feedback": ["great"]}, None)
    assert reference.slots["chitchat-0"][0]["party_size"] == "large"  # action_set_party_size: 9 people
    assert reference.slots["stop_leave-0"] == ({}, None)
    validations = [c for c in reference.actions if c.action == "validate_restaurant_form"]
    assert ActionCall("happy-0", "validate_restaurant_form", "happy-0:3") in validations
    assert {c.action for c in reference.actions} == {"validate_restaurant_form", "action_ask_feedback",
                                                     "action_set_party_size"}


def _assert_answered_once_in_order(turns: Sequence[Turn], script: Sequence[str], conversation: str) -> None:
    user_turns = [t for t in turns if t.message_id is not None]
    assert [t.message_id for t in user_turns] == [f"{conversation}:{i}" for i in range(len(script))]
    assert [t.seq for t in user_turns] == list(range(1, len(script) + 1))
    assert all(t.status == "done" for t in user_turns)
    for t in user_turns:
        kinds = [e.kind for e in t.events]
        assert kinds.count(USER) == 1 and kinds.count(NLU) == 1, (t.message_id, kinds)  # processed exactly once
    completed = [t.completed_at or 0.0 for t in user_turns]
    assert completed == sorted(completed), f"{conversation}: a later message was answered before an earlier one"


@pytest.fixture(params=["mongodb", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ConversationStore, ConversationStore]:
    """Two store clients (one per replica) on one database."""
    if request.param == "mongodb":
        uri = request.getfixturevalue("mongo_uri")
        return MongoStore(uri), MongoStore(uri)
    return SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")


async def test_two_replicas_answer_like_one_sequential_bot(
        bot_dir: Path, tmp_path: Path, reference: Reference,
        stores: tuple[ConversationStore, ConversationStore]) -> None:
    actions: list[ActionCall] = []
    a = await serve(bot_dir, stores[0], tmp_path, actions)
    b = await serve(bot_dir, stores[1], tmp_path, actions)
    replicas = (a, b)
    rng = random.Random(13)
    try:
        # Arrival: the conversations' messages interleaved, each conversation's in its order, accepted by
        # either replica (the channel's request landed there); this order is each conversation's seq order.
        pending = [[user_message(c, i, t) for i, t in enumerate(script)] for c, script in conversations()]
        arrived: list[tuple[UserMessage, Turn]] = []
        while any(pending):
            queue = rng.choice([q for q in pending if q])
            msg = queue.pop(0)
            arrived.append((msg, await rng.choice(replicas).accept(msg)))
        # Processing: all at once, each message on either replica, in a shuffled order.
        rng.shuffle(arrived)
        results = await asyncio.gather(*(rng.choice(replicas).process(msg, turn) for msg, turn in arrived))
        answered = {msg.message_id: shown(res) for (msg, _), res in zip(arrived, results, strict=True)}
        assert answered == reference.answers

        for conversation, script in conversations():
            loaded = await a.store.load(BOT, conversation)
            assert loaded is not None
            _assert_answered_once_in_order(loaded.turns, script, conversation)
            said = [shown([BotResponse.from_dict(r) for r in t.responses()]) for t in loaded.turns]
            assert said == [reference.answers[f"{conversation}:{i}"] for i in range(len(script))]
            assert await final_state(b.store, conversation) == reference.slots[conversation]
        # Every message understood once, by one replica or the other; every custom action run once, for the
        # same message, in the same order within its conversation, as the one bot ran it.
        models = [rt.bots[BOT].model for rt in replicas]
        assert isinstance(models[0], CountingNLU) and isinstance(models[1], CountingNLU)
        typed = [t for _, script in conversations() for t in script if not t.startswith("/")]  # clicks: no NLU
        understood = Counter(models[0].calls + models[1].calls)
        assert understood == Counter(typed), (understood - Counter(typed), Counter(typed) - understood)
        assert models[0].calls and models[1].calls, "one replica answered everything: nothing was concurrent"
        for conversation, _ in conversations():
            ran = [c for c in actions if c.conversation == conversation]
            assert ran == [c for c in reference.actions if c.conversation == conversation], conversation

        # Redelivered (a channel's retry), to the other replica or both at once: the stored answer, nothing run.
        before = (len(actions), len(models[0].calls) + len(models[1].calls))
        again = [user_message("happy-1", 3, "two of us"), user_message("stop_go-2", 2, "italian please")]
        for msg in again:
            replies = await asyncio.gather(a.handle(msg), b.handle(msg))
            assert [shown(r) for r in replies] == [reference.answers[msg.message_id]] * 2
        assert (len(actions), len(models[0].calls) + len(models[1].calls)) == before
        duplicates = sum(rt.metrics.registry.get_sample_value(
            "switchboard_duplicate_messages_total", {"bot": BOT, "channel": "web"}) or 0 for rt in replicas)
        assert duplicates == 4
    finally:
        await a.aclose()
        await b.aclose()
