"""A Rasa project's entities served end to end (tests/data/rasa/transfer, trained with ``train --fast``):
the runtime's understanding step runs the trained model (entity roles learned from the annotations), then
the config.yml pipeline (lookup table, Duckling in process or by ``url``, synonyms); the slots the
domain maps from them, the in-process rasa-sdk action reading Rasa's entity shapes, the response with
``{amount-of-money}``, and ``switchboard evaluate`` scoring what is served."""

from __future__ import annotations

import ast
import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bots.events import NLU, SLOT
from bots.nlu.model import entity_label, split_label
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from bots.types import ConversationRef, UserMessage
from tests.fixtures.fake_duckling import FakeDuckling
from tests.fixtures.fake_duckling import duckling as duckling  # the fixture
from training.cli import main as training_main
from training.data import from_bot

TRANSFER = Path(__file__).resolve().parents[1] / "data" / "rasa" / "transfer"
REF = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)  # the message's arrival: "tomorrow" in Berlin is 2026-12-02
TOMORROW = "2026-12-02T00:00:00.000+01:00"
TEXT = "send 20 dollars to Berlin from Paris tomorrow"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(module_tmp: Callable[[str], Path]) -> Path:
    bot = module_tmp("rasa") / "transfer"
    shutil.copytree(TRANSFER, bot)
    assert training_main(["train", str(bot), "--fast", "--seed", "0", "--no-quantize"]) == 0
    return bot


async def serve(bot: Path, data: Path) -> Runtime:
    data.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(data / "conversations.sqlite")
    await store.start()
    runtime = Runtime(Settings(data_dir=data, nlu_max_wait_ms=0.0), store)
    await runtime.load_bot(bot)
    return runtime


async def say(runtime: Runtime, text: str, conversation: str) -> tuple[list[str], dict[str, Any], list[Any]]:
    """The replies, the slots the turn set, and the stored entities (as ``Entity.to_dict``)."""
    message = UserMessage(ConversationRef("transfer", "web", conversation), f"m-{time.monotonic_ns()}", text,
                          received_at=REF.timestamp())
    replies = [r.text for r in await runtime.handle(message)]
    stored = await runtime.store.load("transfer", conversation)
    assert stored is not None
    events = [e for t in stored.turns for e in t.events]
    slots = {e.data["name"]: e.data["value"] for e in events if e.kind == SLOT}
    (nlu,) = [e.data for e in events if e.kind == NLU]
    return replies, slots, nlu["entities"]


def test_roles_and_groups_are_labels_of_the_entity_head() -> None:
    assert entity_label("city", "from") == "city#role=from"
    assert entity_label("city", None, "2") == "city#group=2"
    for label in ("city", "city#role=from", "city#group=2", "city#role=to#group=1", "amount-of-money"):
        assert entity_label(*split_label(label)) == label
    from bots.loader import load_bot_folder

    data = from_bot(load_bot_folder(TRANSFER)[0])
    assert data.entity_types == ["city#role=from", "city#role=to"]


async def test_a_message_fills_the_slots_its_entities_map_to(trained: Path, tmp_path: Path) -> None:
    runtime = await serve(trained, tmp_path / "data")
    try:
        replies, slots, entities = await say(runtime, TEXT, "c1")
    finally:
        await runtime.aclose()
    assert slots == {"amount-of-money": 20, "source": "Paris", "destination": "Berlin", "date": TOMORROW,
                     "cities": ["Berlin", "Paris"]}
    shown = [(e["entity"], TEXT[e["start"]:e["end"]], e.get("role"), e.get("extractor", "")) for e in entities]
    assert shown == [("city", "Berlin", "to", ""), ("city", "Paris", "from", ""),
                     ("city", "Berlin", None, "RegexEntityExtractor"), ("city", "Paris", None, "RegexEntityExtractor"),
                     ("amount-of-money", "20 dollars", None, "DucklingEntityExtractor"),
                     ("time", "tomorrow", None, "DucklingEntityExtractor")]
    # the in-process rasa-sdk action read Rasa's shapes: a number with its unit, roles, the numeric slot
    action_said = ast.literal_eval(replies[0])
    assert action_said == {"money": [(20, "USD", "DucklingEntityExtractor")], "to": ["Berlin"], "from": ["Paris"],
                           "slot_amount": 20}
    assert replies[1] == f"Sending 20 from Paris to Berlin on {TOMORROW}."  # {amount-of-money} interpolated


async def test_synonyms_map_the_models_and_the_lookups_cities(trained: Path, tmp_path: Path) -> None:
    runtime = await serve(trained, tmp_path / "data")
    try:
        _, slots, _ = await say(runtime, "send 50 euros from NYC to Rome", "c2")
    finally:
        await runtime.aclose()
    assert slots == {"amount-of-money": 50, "source": "New York", "destination": "Rome",
                     "cities": ["New York", "Rome"]}


async def test_duckling_by_url_is_asked_for_every_message(trained: Path, tmp_path: Path,
                                                          duckling: tuple[FakeDuckling, str]) -> None:
    fake, url = duckling
    bot = tmp_path / "transfer"
    shutil.copytree(trained, bot)
    config = (bot / "config.yml").read_text()
    (bot / "config.yml").write_text(config.replace("    timezone: Europe/Berlin",
                                                   f"    timezone: Europe/Berlin\n    url: {url}"))
    runtime = await serve(bot, tmp_path / "data")
    try:
        _, slots, entities = await say(runtime, TEXT, "c3")
    finally:
        await runtime.aclose()
    assert fake.requests == [{"text": TEXT, "locale": "en_US", "tz": "Europe/Berlin",
                              "reftime": str(int(REF.timestamp() * 1000)), "dims": '["amount-of-money", "time"]'}]
    assert slots["amount-of-money"] == 20 and slots["date"] == TOMORROW
    assert slots["source"] == "Paris" and slots["destination"] == "Berlin"
    assert [e["extractor"] for e in entities if e["entity"] != "city"] == ["DucklingEntityExtractor"] * 2


def test_evaluate_scores_what_is_served(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports"
    assert training_main(["evaluate", str(trained), str(trained), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "with RegexEntityExtractor, DucklingEntityExtractor, EntitySynonymMapper" in summary
    report = json.loads((out / "entity_report.json").read_text())
    # Duckling's types are annotated nowhere in the data: not judged; the lookup's cities on the spans where
    # the model found them are not scored twice (the model's, with their roles, are)
    assert set(report) == {"city", "micro avg"}
    assert report["city"]["support"] == 26
    assert report["city"]["precision"] == report["city"]["recall"] == 1.0
    assert json.loads((out / "entity_errors.json").read_text()) == []
    assert "entity F1 1.0000" in capsys.readouterr().out
