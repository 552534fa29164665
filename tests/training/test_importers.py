"""Rasa, CSV and Bitext files load into training data; broken files name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.errors import ConfigError
from training.data import clean, merge
from training.importers import load_data

RASA = Path(__file__).parent / "data" / "rasa"


def test_rasa_nlu_loads_unchanged() -> None:
    data = load_data(RASA / "nlu.yml")
    by_text = {s.text: s for s in data.samples}
    assert len(data.samples) == 9 and data.intents == ["check_balance", "greet", "inform_city"]
    (berlin,) = by_text["I live in Berlin"].entities
    assert (berlin.entity, berlin.value, berlin.start, berlin.end) == ("city", "Berlin", 10, 16)
    assert by_text["I am moving to NYC"].entities[0].value == "New York"
    sf = by_text["ship it to San Francisco"].entities[0]
    assert (sf.value, sf.start, sf.end) == ("SF", 11, 24)
    assert "what is my balance" in by_text
    assert data.synonyms == {"the big apple": "New York", "big apple": "New York"}
    assert by_text["hello there"].source == f"{RASA / 'nlu.yml'}:7"
    assert data.annotation_synonyms()["nyc"] == "New York"


def test_rasa_domain_declares_intents() -> None:
    data = clean(merge([load_data(RASA / "nlu.yml"), load_data(RASA / "domain.yml")]), min_examples=1)
    nlu = RASA / "nlu.yml"
    assert data.warnings == (  # the notes a Rasa project gets for the same file, then the domain's
        f"{nlu}:18: not supported: intent 'check_balance': metadata (only custom NLU components read it)",
        f"{nlu}:22: not supported: intent 'check_balance': example metadata (only custom NLU components read it)",
        "intent 'goodbye' is declared but has no examples; the model cannot predict it")


def test_broken_rasa_file_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "nlu.yml"
    bad.write_text('nlu:\n- intent: greet\n  examples: |\n    - hi\n    -\n- intnt: x\n  examples: "- y"\n')
    with pytest.raises(ConfigError) as err:
        load_data(bad)
    assert err.value.problems == [f"{bad}:5: intent 'greet': empty example",
                                  f"{bad}:6: an nlu item needs exactly one of intent, synonym, regex, lookup"]


def test_a_rasa_example_line_without_a_dash_is_skipped_with_a_warning(tmp_path: Path) -> None:
    # as Rasa's reader does (RasaYAMLReader._parse_multiline_example), and as a Rasa project's loader does
    nlu = tmp_path / "nlu.yml"
    nlu.write_text('nlu:\n- intent: greet\n  examples: |\n    - hi\n    hello\n    # - hey\n')
    data = load_data(nlu)
    assert [s.text for s in data.samples] == ["hi"]
    assert data.warnings == (f"{nlu}:5: intent 'greet': this line does not start with '- ': skipped, as Rasa skips it",
                             f"{nlu}:6: intent 'greet': this line does not start with '- ': skipped, as Rasa skips it")


def test_csv_with_intent_or_category_column(tmp_path: Path) -> None:
    f = tmp_path / "b77.csv"
    f.write_text('text,category\nI am still waiting on my card?,card_arrival\n"Hi, where is it",card_arrival\n')
    data = load_data(f)
    assert [(s.text, s.intent) for s in data.samples] == [("I am still waiting on my card?", "card_arrival"),
                                                          ("Hi, where is it", "card_arrival")]
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhi,greet\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:1: CSV header must name a 'text'"):
        load_data(bad)


def test_bitext_csv_with_entity_offsets(tmp_path: Path) -> None:
    f = tmp_path / "bitext.csv"
    f.write_text(
        "instruction,intent,entity_type,entity_value,start_offset,end_offset,category,response\n"
        "how can I cancel purchase 00004587345?,cancel_order,order_id,4587345,26,37,ORDER,sure\n"
        "I want a refund,get_refund,,,,,REFUND,\"multi\nline\"\n"
        "where is order 123,track_order,order_id,123,99,102,ORDER,x\n")
    with pytest.raises(ConfigError) as err:
        load_data(f)
    assert err.value.problems == [f"{f}:5: entity offsets 99..102 fall outside the text"]
    f.write_text(f.read_text().replace("99,102", "15,18"))
    cancel, refund, track = load_data(f).samples
    (order,) = cancel.entities
    assert (order.entity, order.value, order.start, order.end) == ("order_id", "00004587345", 26, 37)
    assert refund.entities == () and track.entities[0].value == "123"


def test_unknown_file_kinds(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ConfigError, match="unsupported data file"):
        load_data(tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="file not found"):
        load_data(tmp_path / "missing.csv")
    (tmp_path / "stories.yml").write_text("stories: []\n")
    with pytest.raises(ConfigError, match="not Rasa training data"):
        load_data(tmp_path / "stories.yml")


def test_rasa_intents_named_like_yaml_booleans_stay_names(tmp_path: Path) -> None:
    """Rasa reads its files as YAML 1.2: `- intent: yes` is the intent "yes", never True."""
    nlu = tmp_path / "nlu.yml"
    nlu.write_text('nlu:\n- intent: yes\n  examples: |\n    - yes\n    - sure\n- intent: off\n  examples: |\n'
                   '    - switch off\n- intent: true\n  examples: |\n    - correct\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_data(nlu)
    assert info.value.problems == [f"{nlu}:9: the intent name must be a name (text): YAML reads true as a boolean "
                                   "(write the name in quotes)"]
    nlu.write_text(nlu.read_text(encoding="utf-8").replace("intent: true", 'intent: "true"'), encoding="utf-8")
    data = load_data(nlu)
    assert [(s.text, s.intent) for s in data.samples] == [("yes", "yes"), ("sure", "yes"), ("switch off", "off"),
                                                          ("correct", "true")]


def test_a_rasa_domain_is_read_as_a_project_reads_it(tmp_path: Path) -> None:
    """Its intents by the domain reader of a Rasa project (bots/dialogue/rasa_domain.py): notes as warnings,
    a boolean name refused at its line (it was read as the intent "True")."""
    domain = tmp_path / "domain.yml"
    domain.write_text('version: "3.1"\nintents:\n- yes\n- greet:\n    triggers: utter_hi\n', encoding="utf-8")
    data = load_data(domain)
    assert data.declared_intents == ("yes", "greet")
    assert data.warnings == (f"{domain}:5: not supported: intent 'greet': 'triggers' (Rasa 2's MappingPolicy; write "
                             "a rule instead)",)
    domain.write_text('version: "3.1"\nintents:\n- yes\n- true\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_data(domain)
    assert info.value.problems == [f"{domain}:4: an intent must be a name (text): YAML reads true as a boolean "
                                   "(write the name in quotes)"]
