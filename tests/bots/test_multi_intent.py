"""Two requests in one message (bots/nlu/multi.py): where a message is cut, when its parts count as two requests,
how the dialogue offers the second, and who gets it (bot.yml bots, not Rasa projects)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from bots.botspec import load_bot
from bots.dialogue.engine import ALSO_TEXT, Message, decide
from bots.dialogue.spec import parse_dialogue
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.nlu.model import OnnxNLU
from bots.nlu.multi import is_question, split
from bots.runtime import load_onnx_model
from bots.settings import Settings
from bots.types import Entity, IntentScore, Understanding
from tests.bots.test_form_answers import BOT


@pytest.mark.parametrize(("text", "parts"), [
    ("I want to cancel order 12345 and also update my email address",
     ("I want to cancel order 12345", "update my email address")),
    ("where is my order 98765 and how do i get an invoice for it?",
     ("where is my order 98765", "how do i get an invoice for it?")),
    ("I want to cancel order 12345. Also, how do I update my email?",
     ("I want to cancel order 12345", "how do I update my email?")),
    ("close my account, and then cancel all my orders", ("close my account", "cancel all my orders")),
    ("where is my order 98765? how do i get an invoice for it?",  # two questions
     ("where is my order 98765?", "how do i get an invoice for it?")),
    ("actually, where is my order? it's 3707955617", None),  # a question and its detail: one request
    ("My card is about to expire. How much does a new one cost?", None),  # a sentence boundary alone
    ("cancel it and thanks", None),  # fewer than 3 words on a side
    ("bread and butter pudding", None),
    ("where is my order", None),
])
def test_a_message_is_cut_at_its_first_conjunction(text: str, parts: tuple[str, str] | None) -> None:
    assert split(text) == parts


def test_what_reads_as_a_question() -> None:
    for text in ("can I pay with apple pay", "  What do I do now", "it was due Monday?", "Is it free ?"):
        assert is_question(text), text
    for text in ("12345", "it's 3707955617", "paypal thing", "I can't find it", "cancel order 12345 please"):
        assert not is_question(text), text


def _read(intent: str, confidence: float, *entities: Entity) -> Understanding:
    return Understanding(intent, confidence, (IntentScore(intent, confidence),), entities)


def _nlu(parts: dict[str, Understanding]) -> OnnxNLU:
    """An OnnxNLU whose reading of each part is given (the two-request rule alone, without a model)."""
    nlu = OnnxNLU.__new__(OnnxNLU)
    nlu.multi_intent = True
    nlu.predict_parts = lambda texts: [parts[t] for t in texts]  # type: ignore[method-assign]
    return nlu


def test_two_requests_need_two_confident_in_scope_intents() -> None:
    text = "I want to cancel order 12345 and also update my email address"
    order = Entity("order_id", "12345", 22, 27)
    whole = Understanding("change_shipping_address", 0.56, (IntentScore("change_shipping_address", 0.56),), (order,),
                          embedding=np.zeros(2), read_as="typed")
    cases = {
        ("cancel_order", 0.97, "edit_account", 0.93): ("cancel_order", ("edit_account",)),
        ("cancel_order", 0.97, "cancel_order", 0.95): ("change_shipping_address", ()),  # one request, said twice
        ("cancel_order", 0.97, "nlu_fallback", 0.95): ("change_shipping_address", ()),  # a part not understood
        ("cancel_order", 0.97, "out_of_scope", 0.99): ("change_shipping_address", ()),
        ("cancel_order", 0.97, "edit_account", 0.75): ("change_shipping_address", ()),  # below MIN_CONFIDENCE
        ("cancel_order", 0.80, "edit_account", 0.85): ("cancel_order", ("edit_account",)),  # at MIN_CONFIDENCE
    }
    for (a, ca, b, cb), (intent, also) in cases.items():
        nlu = _nlu({"I want to cancel order 12345": _read(a, ca), "update my email address": _read(b, cb)})
        decided = [whole, _read("greet", 0.99)]
        nlu._two_requests([text, "hi"], decided)
        assert decided[0].intent == intent and tuple(s.name for s in decided[0].also) == also, (a, b)
        assert decided[1] == _read("greet", 0.99)  # no conjunction: not read again
    nlu = _nlu({"I want to cancel order 12345": _read("cancel_order", 0.97),
                "update my email address": _read("edit_account", 0.93)})
    decided = [whole]
    nlu._two_requests([text], decided)
    first = decided[0]
    assert first.confidence == 0.97 and first.entities == (order,) and first.read_as == "typed"  # the whole's
    assert first.to_dict()["also"] == [{"name": "edit_account", "confidence": 0.93}]
    assert "also" not in whole.to_dict()


async def test_the_second_request_is_offered_after_the_first_is_answered(tmp_path: Path) -> None:
    (tmp_path / "bot.yml").write_text(BOT, encoding="utf-8")
    bot = load_bot(tmp_path)
    dialogue = parse_dialogue(bot)
    text = "where is my order 12345 and also is there a cancellation fee"
    u = Understanding("track_order", 0.97, (IntentScore("track_order", 0.97),),
                      (Entity("order_id", "12345", 18, 23),), also=(IntentScore("check_fee", 0.95),))
    decision = await decide(bot, dialogue, State(), Message(text, u, time.time(), "web"))
    said = [r for r in decision.responses]
    assert [r.text for r in said] == ["Order 12345 is on its way.", ALSO_TEXT.format(title="Check fee")]
    assert [(b.title, b.payload) for b in said[-1].buttons] == [("Check fee", "/check_fee")]
    assert said[-1].metadata == {"also": "check_fee"}
    # a Rasa project's stories decide everything it says: nothing is added
    rasa = dataclasses.replace(bot, rasa_project=True)
    decision = await decide(rasa, dialogue, State(), Message(text, u, time.time(), "web"))
    assert [r.text for r in decision.responses] == ["Order 12345 is on its way."]
    # while a human has the conversation, the bot says nothing
    handoff = Understanding("contact_human_agent", 0.97, (IntentScore("contact_human_agent", 0.97),),
                            also=(IntentScore("check_fee", 0.95),))
    decision = await decide(bot, dialogue, State(), Message("get me a person and also the fee", handoff, time.time(),
                                                            "web"))
    assert decision.handoff and not any(r.metadata.get("also") for r in decision.responses)


def test_multi_intent_is_a_bot_yml_switch(tmp_path: Path, tiny_bot_dir: Path) -> None:
    assert load_bot(tiny_bot_dir).multi_intent is True
    model = sorted((tiny_bot_dir / "models").iterdir())[-1]
    served = load_onnx_model(model, load_bot(tiny_bot_dir), Settings())
    assert isinstance(served, OnnxNLU) and served.multi_intent is True
    off = tmp_path / "off"
    off.mkdir()
    (off / "bot.yml").write_text((tiny_bot_dir / "bot.yml").read_text(encoding="utf-8") + "multi_intent: false\n",
                                 encoding="utf-8")
    assert load_bot(off).multi_intent is False
    served = load_onnx_model(model, dataclasses.replace(load_bot(tiny_bot_dir), rasa_project=True), Settings())
    assert isinstance(served, OnnxNLU) and served.multi_intent is False
    (off / "bot.yml").write_text((tiny_bot_dir / "bot.yml").read_text(encoding="utf-8") + "multi_intent: maybe\n",
                                 encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bot.yml:\d+: 'multi_intent' must be true or false"):
        load_bot(off)
