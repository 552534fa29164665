"""A tiny bot to train on: four intents with 8 examples each, one entity type, one synonym; and the Rasa
fixture projects (tests/data/rasa), each trained with ``--fast`` once per session when a test asks for it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

RASA = Path(__file__).resolve().parents[1] / "data" / "rasa"

TINY_BOT = """\
name: tiny
fallback_threshold: 0.3
synonyms:
  express:
    - expedited
    - fast
intents:
  greet:
    examples:
      - hello
      - hi there
      - good morning
      - hey
      - hello, anyone here?
      - hi!
      - good evening
      - hey there
    response: Hello!
  cancel_order:
    examples:
      - cancel order [12345](order_id)
      - I want to cancel order [98765](order_id)
      - please cancel my order [55512](order_id)
      - cancel my purchase [40404](order_id)
      - stop order [31337](order_id) please
      - I need to cancel [77001](order_id)
      - can you cancel order number [24680](order_id)
      - cancel the order [13579](order_id) now
    response: Order {order_id} is cancelled.
  track_order:
    examples:
      - where is my package
      - track my order
      - when will my parcel arrive
      - has my order shipped yet
      - where is my delivery
      - tracking status of my shipment
      - my package has not arrived
      - how long until my order arrives
    response: It is on its way.
  shipping_speed:
    examples:
      - I want [express](shipping) shipping
      - can I get [expedited](shipping:express) delivery
      - use [standard](shipping) shipping please
      - switch to [fast](shipping:express) shipping
      - send it with [standard](shipping) delivery
      - I prefer [express](shipping) delivery
      - is [standard](shipping) shipping free
      - upgrade to [express](shipping) shipping
    response: Shipping set.
"""


@pytest.fixture(scope="session")
def tiny_bot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_bot")
    (directory / "bot.yml").write_text(TINY_BOT, encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def trained_rasa(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``trained_rasa(NAME)``: a copy of tests/data/rasa/NAME trained by ``switchboard train --fast`` (once per
    session and project, so that the tests of several files share the few seconds each costs)."""
    from training.cli import main as training_main

    cache: dict[str, Path] = {}

    def trained(name: str) -> Path:
        if name not in cache:
            bot_dir = tmp_path_factory.mktemp("rasa") / name
            shutil.copytree(RASA / name, bot_dir, ignore=shutil.ignore_patterns("__pycache__", "models", "results"))
            assert training_main(["train", str(bot_dir), "--fast"]) == 0, f"training the {name} fixture failed"
            cache[name] = bot_dir
        return cache[name]

    return trained
