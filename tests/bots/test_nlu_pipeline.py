"""The NLU pipeline after the model (bots/nlu/pipeline.py): RegexEntityExtractor over lookup and regex tables,
DucklingEntityExtractor in process and by ``url`` (a fake Duckling server on 127.0.0.1), EntitySynonymMapper
in its pipeline position, the options of each, failures that cost a step and never the message, and the
slots, rasa-sdk shapes and button payloads that come of the entities (fixture: tests/data/rasa/transfer)."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bots.botspec import BotSpec, PipelineComponent
from bots.dialogue.engine import Message, decide
from bots.dialogue.rasa_data import read_nlu_file
from bots.dialogue.rasa_protocol import entity_json, parse_data
from bots.dialogue.rasa_yaml import Findings
from bots.dialogue.spec import DialogueSpec
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.events import SLOT
from bots.loader import load_bot_folder, read_bot_folder
from bots.nlu.extractors import DucklingHTTPExtractor
from bots.nlu.pipeline import DucklingStep, NluPipeline, RegexStep, check_component, synonyms_of
from bots.runtime import parse_payload
from bots.types import Entity, IntentScore, Understanding
from tests.fixtures.fake_duckling import FakeDuckling
from tests.fixtures.fake_duckling import duckling as duckling  # the fixture

TRANSFER = Path(__file__).resolve().parents[1] / "data" / "rasa" / "transfer"
REF = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)  # a Tuesday; "tomorrow" in Berlin is 2026-12-02
TEXT = "send 20 dollars to Berlin from Paris tomorrow"


@pytest.fixture(scope="module")
def transfer() -> tuple[BotSpec, DialogueSpec]:
    return load_bot_folder(TRANSFER)


def model_says(text: str, *entities: tuple[str, str, str | None]) -> Understanding:
    """What an NLU model would answer: transfer_money, with (entity, covered text, role) spans."""
    found = []
    for entity, shown, role in entities:
        start = text.index(shown)
        found.append(Entity(entity, shown, start, start + len(shown), 0.9, role=role))
    return Understanding("transfer_money", 0.95, (IntentScore("transfer_money", 0.95),), tuple(found))


def spans(u: Understanding) -> list[tuple[str, str, str | None, str]]:
    return [(e.entity, e.value, e.role, e.extractor) for e in u.entities]


def with_pipeline(spec: BotSpec, *components: tuple[str, dict[str, Any]]) -> BotSpec:
    """``spec`` with these components after the model's (``model_entities_at`` 0: DIETClassifier first)."""
    return replace(spec, pipeline=tuple(PipelineComponent(name, options, f"config.yml:{i}")
                                        for i, (name, options) in enumerate(components, 1)), model_entities_at=0)


# -- the fixture's pipeline, as config.yml lists it ------------------------------------------------------------

async def test_the_fixture_pipeline_adds_lookup_and_duckling_entities_after_the_models(
        transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, _ = transfer
    pipeline = NluPipeline.for_bot(spec)
    assert pipeline.names == ("RegexEntityExtractor", "DucklingEntityExtractor", "EntitySynonymMapper")
    u = await pipeline.process(TEXT, model_says(TEXT, ("city", "Berlin", "to"), ("city", "Paris", "from")),
                               reference_time=REF)
    assert spans(u) == [
        ("city", "Berlin", "to", ""), ("city", "Paris", "from", ""),                   # the model's, first
        ("city", "Berlin", None, "RegexEntityExtractor"), ("city", "Paris", None, "RegexEntityExtractor"),
        ("amount-of-money", "20", None, "DucklingEntityExtractor"),
        ("time", "2026-12-02T00:00:00.000+01:00", None, "DucklingEntityExtractor"),   # timezone: Europe/Berlin
    ]
    money = u.entities[4]
    assert money.rasa_value == 20 and money.additional_info == {"value": 20, "type": "value", "unit": "USD"}
    assert TEXT[money.start:money.end] == "20 dollars"
    assert u.intent == "transfer_money" and u.confidence == 0.95  # the model's intent is untouched


async def test_the_models_entities_join_where_config_yml_lists_its_entity_extractor(tmp_path: Path) -> None:
    # Round 12 (yoonjun1204/chatbot-frontend): config.yml lists RegexEntityExtractor before DIETClassifier, and
    # "is it ORD-10001 or ORD-10002?" is found by both. Rasa appends each extractor's entities in pipeline order
    # and a slot that is no list takes the last value (ActionExtractSlots: value[-1]): DIET's 'ORD-10002'.
    # Switchboard put the model's entities first whatever the order, and the slot took the regex's '10002'.
    import shutil
    bot_dir = tmp_path / "transfer"
    shutil.copytree(TRANSFER, bot_dir)
    config = (bot_dir / "config.yml").read_text(encoding="utf-8")
    diet = "  - name: DIETClassifier\n    epochs: 100\n"
    assert diet in config
    moved = config.replace(diet, "").replace("  - name: EntitySynonymMapper\n",
                                             diet + "  - name: EntitySynonymMapper\n")
    (bot_dir / "config.yml").write_text(moved, encoding="utf-8")
    spec, _ = load_bot_folder(bot_dir)
    assert spec.model_entities_at == 3   # CountVectorsFeaturizer, RegexEntityExtractor, DucklingEntityExtractor
    said = model_says(TEXT, ("city", "Berlin", "to"), ("city", "Paris", "from"))
    u = await NluPipeline.for_bot(spec).process(TEXT, said, reference_time=REF)
    assert [(e.entity, e.extractor) for e in u.entities] == [
        ("city", "RegexEntityExtractor"), ("city", "RegexEntityExtractor"),
        ("amount-of-money", "DucklingEntityExtractor"), ("time", "DucklingEntityExtractor"),
        ("city", ""), ("city", "")]                                   # the model's, where DIETClassifier is
    # listed last, after the mapper: the model's entities come last and are not mapped (Rasa's order)
    last = replace(with_pipeline(spec, ("RegexEntityExtractor", {}), ("EntitySynonymMapper", {})),
                   model_entities_at=2)
    text = "send 50 euros from nyc to Berlin"
    u = await NluPipeline.for_bot(last).process(text, model_says(text, ("city", "nyc", "from")))
    assert [(e.value, e.extractor) for e in u.entities] == [("New York", "RegexEntityExtractor"),
                                                            ("Berlin", "RegexEntityExtractor"), ("nyc", "")]
    # the fixture lists DIETClassifier first of the extractors: the model's entities first
    assert load_bot_folder(TRANSFER)[0].model_entities_at == 1


async def test_synonyms_map_what_came_before_the_mapper_case_insensitively(
        transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, _ = transfer
    text = "send 50 euros from nyc to the big apple"
    said = model_says(text, ("city", "nyc", "from"), ("city", "the big apple", "to"))
    u = await NluPipeline.for_bot(spec).process(text, said, reference_time=REF)
    assert spans(u)[:3] == [("city", "New York", "from", ""), ("city", "New York", "to", ""),
                            ("city", "New York", None, "RegexEntityExtractor")]  # the lookup's "NYC", any case
    # Rasa's mapper maps only what the components before it found: put Duckling after it.
    later = with_pipeline(spec, ("EntitySynonymMapper", {}), ("DucklingEntityExtractor", {"dimensions": ["number"]}))
    spec_50 = replace(later, synonyms={**later.synonyms, "50": "fifty"})
    u = await NluPipeline.for_bot(spec_50).process("50 please", Understanding("greet", 1.0), reference_time=REF)
    assert [(e.entity, e.value) for e in u.entities] == [("number", "50")]
    before = with_pipeline(spec_50, ("DucklingEntityExtractor", {"dimensions": ["number"]}),
                           ("EntitySynonymMapper", {}))
    (e,) = (await NluPipeline.for_bot(before).process("50 please", Understanding("greet", 1.0))).entities
    assert (e.value, e.rasa_value) == ("fifty", "fifty")  # Rasa's entity value is the synonym, as here


def test_synonyms_are_what_rasas_mapper_learns(transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, _ = transfer
    syn = synonyms_of(spec)
    assert syn["nyc"] == syn["the big apple"] == "New York"
    # a text annotated as its own value maps nothing (Rasa's _add_entities_if_synonyms: original != replacement)
    assert "new york" not in syn and "berlin" not in syn


def test_a_synonym_example_that_is_the_synonym_itself_maps_nothing(tmp_path: Path) -> None:
    # Rasa's reader keeps each synonym example as written and its mapper skips one equal to the synonym
    # (original == replacement): "NEW YORK" stays as typed; an example differing only in case ("Fire" of
    # synonym fire) maps, its key lower-cased.
    nlu = tmp_path / "nlu.yml"
    nlu.write_text('version: "3.1"\nnlu:\n- synonym: New York\n  examples: |\n    - New York\n    - NYC\n'
                   '- synonym: fire\n  examples: |\n    - Fire\n', encoding="utf-8")
    data, _ = read_nlu_file(nlu)
    assert data.synonyms == {"nyc": "New York", "fire": "fire"}


async def test_the_mapper_leaves_a_value_no_synonym_names_as_it_was_typed(
        transfer: tuple[BotSpec, DialogueSpec]) -> None:
    # A public project (Crowd-Computing-Oulu/drs) annotates [green circle] as a landmark; "take me to the Green
    # Circle" filled its slot with 'green circle', where Rasa's fills 'Green Circle': its EntitySynonymMapper
    # learns only texts whose value differs from them, and DIET's value is the text the entity covers.
    spec, _ = transfer
    mapper = NluPipeline.for_bot(with_pipeline(spec, ("EntitySynonymMapper", {})))
    text = "send money to BERLIN from nyc"
    u = await mapper.process(text, model_says(text, ("city", "BERLIN", "to"), ("city", "nyc", "from")))
    assert [e.value for e in u.entities] == ["BERLIN", "New York"]
    # a synonym whose example differs from it only in case still maps (a public crisis project: synonym
    # 'fire' with examples Fire and FIRE, its button payload "Fire"): Rasa keys it lower-cased
    fire = NluPipeline.for_bot(with_pipeline(replace(spec, synonyms={**spec.synonyms, "fire": "fire"}),
                                             ("EntitySynonymMapper", {})))
    text = "there is a Fire"
    u = await fire.process(text, model_says(text, ("city", "Fire", None)))
    assert [e.value for e in u.entities] == ["fire"]


async def test_model_values_are_the_text_they_cover_unless_the_mapper_maps_them(
        transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, _ = transfer
    text = "send money from NYC"
    start = text.index("NYC")
    mapped_by_model = Understanding("transfer_money", 0.9, (), (Entity("city", "New York", start, start + 3,
                                                                       role="from"),))
    no_mapper = with_pipeline(spec, ("RegexEntityExtractor", {}))
    u = await NluPipeline.for_bot(no_mapper).process(text, mapped_by_model)
    assert [e.value for e in u.entities] == ["NYC", "NYC"]  # as Rasa: no EntitySynonymMapper, no synonyms


async def test_a_bot_yml_bot_keeps_the_models_understanding_as_it_is(transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, _ = transfer
    plain = replace(spec, pipeline=())
    pipeline = NluPipeline.for_bot(plain)
    said = model_says(TEXT, ("city", "Berlin", "to"))
    assert pipeline.steps == () and await pipeline.process(TEXT, said) is said


# -- RegexEntityExtractor options -------------------------------------------------------------------------------

async def test_lookup_word_boundaries_and_case() -> None:
    spec, _ = load_bot_folder(TRANSFER)
    text = "from BERLIN to Berliner Platz, then parisian cafes"
    default = RegexStep.build(spec, {})
    assert [(e.entity, e.value) for e in default.extract(text)] == [("city", "BERLIN")]
    no_bounds = RegexStep.build(spec, {"use_word_boundaries": False})
    assert [e.value for e in no_bounds.extract(text)] == ["BERLIN", "Berlin", "paris"]
    case_sensitive = RegexStep.build(spec, {"case_sensitive": True})
    assert case_sensitive.extract(text) == []
    assert RegexStep.build(spec, {"use_lookup_tables": False}).patterns == ()


async def test_regexes_and_tables_named_after_no_annotated_entity(transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, _ = transfer
    spec = replace(spec, regexes={"city": (r"\bOslo\b",), "iban": (r"\bDE\d{20}\b",)},
                   lookups={**spec.lookups, "currency": ("euro",)})
    step = RegexStep.build(spec, {})
    assert [(e.entity, e.value) for e in step.extract("Oslo, DE12345678901234567890, euro, Rome")] == [
        ("city", "Oslo"), ("city", "Rome")]
    assert [(e.value) for e in RegexStep.build(spec, {"use_regexes": False}).extract("Oslo or Rome")] == ["Rome"]
    pipeline = NluPipeline.for_bot(with_pipeline(spec, ("RegexEntityExtractor", {})))
    assert pipeline.notes == ("config.yml:1: RegexEntityExtractor: regex 'iban', lookup 'currency' not used: no NLU "
                              "example annotates an entity of that name (Rasa uses only those too)",)


@pytest.mark.parametrize(("name", "options", "reason"), [
    ("RegexEntityExtractor", {"case_sensitive": "yes"}, "RegexEntityExtractor: 'case_sensitive' must be true or false"),
    ("DucklingEntityExtractor", {"timezone": "Mars/Olympus"}, "DucklingEntityExtractor: timezone 'Mars/Olympus'"),
    ("DucklingEntityExtractor", {"dimensions": ["time", "weather"]}, "DucklingEntityExtractor: dimensions: unknown"),
    ("DucklingEntityExtractor", {"url": "localhost:8000"}, "DucklingEntityExtractor: url 'localhost:8000'"),
    ("EntitySynonymMapper", {"lowercase": True}, "EntitySynonymMapper: not supported: lowercase"),
])
def test_bad_options_are_refused_with_the_reason(name: str, options: dict[str, Any], reason: str) -> None:
    found = check_component(name, options)
    assert found is not None and found.startswith(reason)


def test_bad_options_are_reported_at_load_with_config_line(tmp_path: Path) -> None:
    import shutil

    bot = tmp_path / "transfer"
    shutil.copytree(TRANSFER, bot)
    config = (bot / "config.yml").read_text()
    config = config.replace("timezone: Europe/Berlin", "timezone: Europe/Atlantis").replace(
        "use_word_boundaries: true", "use_word_boundaries: sometimes")
    (bot / "config.yml").write_text(config)
    findings = Findings()
    read_bot_folder(bot, findings)
    assert f"{bot / 'config.yml'}:12: RegexEntityExtractor: 'use_word_boundaries' must be true or false" \
        in findings.errors
    assert any(e.startswith(f"{bot / 'config.yml'}:16: DucklingEntityExtractor: timezone 'Europe/Atlantis'")
               for e in findings.errors), findings.errors
    with pytest.raises(ConfigError):
        NluPipeline.for_bot(with_pipeline(load_bot_folder(TRANSFER)[0],
                                          ("DucklingEntityExtractor", {"locale": 42})))


# -- how steps run -------------------------------------------------------------------------------------------------

async def test_cpu_work_runs_off_the_event_loop(transfer: tuple[BotSpec, DialogueSpec],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec, _ = transfer
    threads: list[int] = []
    original = RegexStep.extract

    def recording(self: RegexStep, text: str) -> list[Entity]:
        threads.append(threading.get_ident())
        return original(self, text)

    monkeypatch.setattr(RegexStep, "extract", recording)
    await NluPipeline.for_bot(spec).process(TEXT, model_says(TEXT), reference_time=REF)
    assert threads and threads[0] != threading.get_ident()


async def test_a_failing_step_costs_its_entities_only(transfer: tuple[BotSpec, DialogueSpec],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    spec, _ = transfer

    def broken(self: RegexStep, text: str) -> list[Entity]:
        raise RuntimeError("catastrophic backtracking")

    monkeypatch.setattr(RegexStep, "extract", broken)
    with caplog.at_level(logging.ERROR, logger="switchboard.nlu"):
        u = await NluPipeline.for_bot(spec).process(TEXT, model_says(TEXT, ("city", "Paris", "from")),
                                                    reference_time=REF)
    assert [e.extractor for e in u.entities] == ["", "DucklingEntityExtractor", "DucklingEntityExtractor"]
    assert "nlu step failed" in caplog.text and "catastrophic backtracking" in caplog.text


# -- DucklingEntityExtractor by url: a fake Duckling server on 127.0.0.1 -----------------------------------------

async def test_duckling_url_asks_the_server(transfer: tuple[BotSpec, DialogueSpec],
                                            duckling: tuple[FakeDuckling, str]) -> None:
    fake, url = duckling
    options = {"url": url, "dimensions": ["amount-of-money", "time"], "timezone": "Europe/Berlin", "timeout": 2}
    spec = with_pipeline(transfer[0], ("DucklingEntityExtractor", options))
    pipeline = NluPipeline.for_bot(spec)
    (step,) = pipeline.steps
    assert isinstance(step, DucklingStep) and isinstance(step.extractor, DucklingHTTPExtractor)
    try:
        u = await pipeline.process(TEXT, model_says(TEXT), reference_time=REF)
    finally:
        await pipeline.aclose()
    assert [(e.entity, e.rasa_value) for e in u.entities] == [("amount-of-money", 20),
                                                              ("time", "2026-12-02T00:00:00.000+01:00")]
    (form,) = fake.requests
    # locale from config.yml's `language: en`; the message's time as Duckling's reftime (ms)
    assert form == {"text": TEXT, "locale": "en_US", "tz": "Europe/Berlin", "reftime": str(int(REF.timestamp() * 1000)),
                    "dims": '["amount-of-money", "time"]'}


async def test_a_duckling_server_that_is_down_costs_only_its_entities(transfer: tuple[BotSpec, DialogueSpec],
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = with_pipeline(transfer[0], ("RegexEntityExtractor", {}),
                         ("DucklingEntityExtractor", {"url": f"http://127.0.0.1:{port}", "timeout": 1}))
    pipeline = NluPipeline.for_bot(spec)
    with caplog.at_level(logging.WARNING):
        u = await pipeline.process(TEXT, model_says(TEXT))
    await pipeline.aclose()
    assert [e.extractor for e in u.entities] == ["RegexEntityExtractor", "RegexEntityExtractor"]
    assert "ConnectError" in caplog.text


# -- what the entities become: slots, rasa-sdk shapes, button payloads ------------------------------------------

async def test_slots_from_roles_lists_numbers_and_times(transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, dialogue = transfer
    u = await NluPipeline.for_bot(spec).process(
        TEXT, model_says(TEXT, ("city", "Berlin", "to"), ("city", "Paris", "from")), reference_time=REF)
    decision = await decide(spec, dialogue, State(), Message(TEXT, u, REF.timestamp(), "web"))
    slots = {e.data["name"]: e.data["value"] for e in decision.events if e.kind == SLOT}
    assert slots == {"amount-of-money": 20, "source": "Paris", "destination": "Berlin",
                     "date": "2026-12-02T00:00:00.000+01:00", "cities": ["Berlin", "Paris"]}
    assert isinstance(slots["amount-of-money"], int)
    texts = [r.text for r in decision.responses]
    # {amount-of-money} in the response: a slot name with '-' is interpolated, as Rasa does
    assert "Sending 20 from Paris to Berlin on 2026-12-02T00:00:00.000+01:00." in texts


async def test_an_entity_with_a_role_fills_only_the_mapping_with_that_role(
        transfer: tuple[BotSpec, DialogueSpec]) -> None:
    spec, dialogue = transfer
    text = "send money from Rome to Madrid from Paris"
    u = model_says(text, ("city", "Rome", "from"), ("city", "Madrid", "to"), ("city", "Paris", "from"))
    decision = await decide(spec, dialogue, State(), Message(text, u, REF.timestamp(), "web"))
    slots = {e.data["name"]: e.data["value"] for e in decision.events if e.kind == SLOT}
    # Rasa: roles must match (the role-less `cities` takes none of them); one-value slots take the last
    assert slots == {"source": "Paris", "destination": "Madrid"}


def test_actions_get_entities_as_rasa_shapes() -> None:
    money = Entity("amount-of-money", "20", 5, 15, extractor="DucklingEntityExtractor",
                   additional_info={"value": 20, "type": "value", "unit": "USD"})
    city = Entity("city", "Paris", 31, 36, 0.91, role="from", group="1")
    assert entity_json(money.to_dict()) == {"entity": "amount-of-money", "value": 20, "start": 5, "end": 15,
                                            "confidence_entity": 1.0, "extractor": "DucklingEntityExtractor",
                                            "additional_info": {"value": 20, "type": "value", "unit": "USD"}}
    assert entity_json(city.to_dict()) == {"entity": "city", "value": "Paris", "start": 31, "end": 36,
                                           "confidence_entity": 0.91, "role": "from", "group": "1"}
    nlu = Understanding("transfer_money", 0.9, (), (money, city)).to_dict()
    assert [e["value"] for e in parse_data(nlu, TEXT)["entities"]] == [20, "Paris"]


def test_button_payloads_may_set_the_domains_entities(transfer: tuple[BotSpec, DialogueSpec],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    spec, dialogue = transfer
    with caplog.at_level(logging.WARNING, logger="switchboard.runtime"):
        u = parse_payload('/transfer_money{"amount-of-money": 20, "city": "Rome", "iban": "DE00"}', spec, dialogue)
    assert u is not None and u.intent == "transfer_money"
    assert [(e.entity, e.value) for e in u.entities] == [("amount-of-money", "20"), ("city", "Rome")]
    assert "button payload entity dropped" in caplog.text  # iban: not an entity of this bot
    listed = parse_payload('/transfer_money{"city": ["Rome", "Oslo", {"x": 1}]}', spec, dialogue)
    assert listed is not None  # a list is one entity per item (Rasa's unpack_regex_message); a bad item dropped
    assert [(e.entity, e.value) for e in listed.entities] == [("city", "Rome"), ("city", "Oslo")]
