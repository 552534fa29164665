"""A bot.yml form starts only on an intent the model is sure enough of (QA of the example bot, issue 14): "my package
arrived broken", read as track_order 0.39, started the order form ("What is the order number?") although the model
was torn between intents. The example bot serves a knn_softmax operating point (0.61 of similarity to the nearest
training example plus a quarter of 0.39 passed its 0.705) and has no fallback_threshold; a form's starting intent is
now held to the point's softmax floor (the softmax threshold calibrated for the same target: 0.585 there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bots.dialogue.engine import Services
from bots.events import NLU, SLOT
from tests.bots.keyword_model import say
from tests.bots.test_form_answers import BOT, play, serve, shop

NOT_UNDERSTOOD = "Sorry, I didn't understand that. Did you mean one of these?"
ASK = "What is the order number?"


async def test_a_form_does_not_start_on_an_intent_under_the_floor(tmp_path: Path) -> None:
    bot, dialogue = shop(tmp_path)
    floor = Services(form_floor=0.585)
    unsure = ("my package arrived broken", "track_order", 0.39)
    assert await play(bot, dialogue, [unsure], floor) == [[NOT_UNDERSTOOD]]  # its buttons start the form
    assert await play(bot, dialogue, [unsure]) == [[ASK]]  # (without a floor: as before)
    assert await play(bot, dialogue, [("where is my order", "track_order", 0.6)], floor) == [[ASK]]
    # an intent that starts no form is not held to it
    assert await play(bot, dialogue, [("is there a fee", "check_fee", 0.39)], floor) == [["Cancelling is free."]]


CALIBRATED: dict[str, Any] = {"method": "knn_softmax", "threshold": 0.7052, "source": "calibrated",
                              "methods": {"softmax": {"threshold": 0.585}}}


@pytest.mark.parametrize(("oos", "yaml", "floor"), [
    (CALIBRATED, "", 0.585),                                  # the calibrated point's softmax threshold
    (CALIBRATED, "fallback_threshold: 0.45\n", 0.45),          # the bot's override: its own threshold
])
async def test_the_served_bot_holds_a_form_to_its_models_softmax_floor(tmp_path: Path, oos: dict[str, Any],
                                                                      yaml: str, floor: float) -> None:
    reads = {"my package arrived broken": ("track_order", 0.39), "where is my order": ("track_order", 0.97),
             "track it please": ("track_order", 0.5)}
    async with serve(tmp_path, BOT.replace("channels:", yaml + "channels:"), reads, oos) as runtime:
        assert runtime.bots["shop"].form_floor == pytest.approx(floor)
        assert await say(runtime, "my package arrived broken") == [NOT_UNDERSTOOD]
        assert await say(runtime, "where is my order", "c2") == [ASK]
        assert await say(runtime, "track it please", "c3") == [NOT_UNDERSTOOD if floor > 0.5 else ASK]
        loaded = await runtime.store.load("shop", "c1")
        assert loaded is not None and not any(e.kind == SLOT for e in loaded.events)
        # the stored turn keeps what the model said; the dialogue's reading is replayed from it
        assert [e.data["intent"] for e in loaded.events if e.kind == NLU] == ["track_order"]
