"""One Rasa NLU reader: the same nlu.yml read as a Rasa project's data and given with ``--data``
(training.importers.load_data) gives the same examples, entities, synonyms, notes and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.errors import ConfigError
from bots.loader import load_bot_folder
from training.data import NluData, from_bot
from training.importers import load_data

NLU = """\
version: "3.1"
nlu:
- intent: "yes"
  examples: |
    - yes
    - sure thing
- intent: travel
  examples: |
    - fly from [Berlin]{"entity": "city", "role": "from"} to [Paris]{"entity": "city", "role": "to"}
    - I am moving to [NYC](city:New York)
    take me to Rome
    - take me to [the big apple](city)
- intent: faq/ask_price
  examples:
  - text: how much is it
    metadata:
      source: chat
- synonym: New York
  examples: |
    - the big apple
    - big apple
- regex: zipcode
  examples: |
    - \\d{5}
- lookup: city
  examples: |
    - Berlin
    - Paris
"""

DOMAIN = """\
version: "3.1"
intents: ["yes", travel, faq]
entities:
- city:
    roles: [from, to]
responses:
  utter_ok:
  - text: ok
"""


def _project(tmp_path: Path, nlu: str) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nlu.yml").write_text(nlu, encoding="utf-8")
    (tmp_path / "domain.yml").write_text(DOMAIN, encoding="utf-8")
    (tmp_path / "config.yml").write_text("language: en\n", encoding="utf-8")
    return tmp_path / "data" / "nlu.yml"


def _shape(data: NluData) -> list[tuple[str, str, list[tuple[str, str, str | None, int, int]], str]]:
    return sorted((s.intent, s.text, [(e.entity, e.value, e.role, e.start, e.end) for e in s.entities], s.source)
                  for s in data.samples)


def test_the_same_nlu_file_reads_the_same_as_a_project_and_as_data(tmp_path: Path) -> None:
    nlu = _project(tmp_path, NLU)
    bot, _ = load_bot_folder(tmp_path)
    project = from_bot(bot)
    given = load_data(nlu)

    assert _shape(given) == _shape(project)
    by_text = {s.text: s for s in given.samples}
    assert set(by_text) == {"yes", "sure thing", "fly from Berlin to Paris", "I am moving to NYC",
                            "take me to the big apple", "how much is it"}
    assert by_text["yes"].intent == "yes" and by_text["yes"].source == f"{nlu}:5"  # YAML 1.2: a name, not True
    fly = by_text["fly from Berlin to Paris"].entities
    assert [(e.value, e.role, e.start, e.end) for e in fly] == [("Berlin", "from", 9, 15), ("Paris", "to", 19, 24)]
    assert by_text["how much is it"].intent == "faq"  # a retrieval intent trains its intent, as in Rasa
    # synonyms of both forms: the synonym item, and the annotation's value
    assert given.synonyms == project.synonyms == {"the big apple": "New York", "big apple": "New York"}
    assert given.annotation_synonyms() == project.annotation_synonyms()
    assert given.annotation_synonyms()["nyc"] == "New York"
    # the regex and the lookup are read (and checked) by the one reader; the project serves them
    assert bot.regexes == {"zipcode": (r"\d{5}",)} and bot.lookups == {"city": ("Berlin", "Paris")}
    # the same notes, at the same lines: the line without '- ' is skipped, as Rasa skips it
    assert given.warnings == tuple(n for n in bot.notes if n.startswith(str(nlu))) == (
        f"{nlu}:11: intent 'travel': this line does not start with '- ': skipped, as Rasa skips it",
        f"{nlu}:16: not supported: intent 'faq/ask_price': example metadata (only custom NLU components read it)")


BROKEN = """\
nlu:
- intent: true
  examples: |
    - correct
- intent: greet
  synonym: hello
  examples: |
    - hi
- intent: ask
  exmaples: |
    - what
- regex: zipcode
  examples: |
    - [0-9
- intent: book
  examples: |
    - book [a table]{"entity": "thing", "colour": "red"}
    -
"""


def test_the_same_broken_nlu_file_is_refused_with_the_same_errors(tmp_path: Path) -> None:
    nlu = _project(tmp_path, BROKEN)
    with pytest.raises(ConfigError) as as_project:
        load_bot_folder(tmp_path)
    with pytest.raises(ConfigError) as as_data:
        load_data(nlu)
    expected = [
        f"{nlu}:2: the intent name must be a name (text): YAML reads true as a boolean (write the name in quotes)",
        f"{nlu}:5: an nlu item needs exactly one of intent, synonym, regex, lookup",
        f"{nlu}:10: intent 'ask': unknown key 'exmaples' (known: intent, examples, metadata)",
        f"{nlu}:9: intent 'ask' has no 'examples'",
        f"{nlu}:14: regex 'zipcode': invalid regular expression: unterminated character set at position 0",
        f"{nlu}:18: intent 'book': empty example",  # the lines are read, then each example's annotations
        f'{nlu}:17: entity annotation {{"entity": "thing", "colour": "red"}}: unknown key(s) colour (entity, value, '
        f'role, group)',
    ]
    assert as_data.value.problems == expected
    assert [p for p in as_project.value.problems if p.startswith(str(nlu))] == expected


def test_stories_in_a_data_file_are_noted_as_not_used(tmp_path: Path) -> None:
    nlu = tmp_path / "nlu.yml"
    nlu.write_text('nlu:\n- intent: greet\n  examples: |\n    - hi\nstories:\n- story: s\n  steps:\n'
                   '  - intent: greet\n', encoding="utf-8")
    data = load_data(nlu)
    assert [s.text for s in data.samples] == ["hi"]
    assert data.warnings == (f"{nlu}:5: 'stories' is not NLU examples: not used from a data file (put the file in "
                             "the Rasa project's data/ folder)",)


def test_bot_yml_block_examples_are_split_as_rasa_splits_them(tmp_path: Path) -> None:
    """bot.yml's ``examples: |`` block is split by the same function (bots.botspec.block_examples): ``-hello``
    is "hello" as in Rasa; a line without '-' is refused in bot.yml (it has no notes to say it was skipped)."""
    bot_yml = tmp_path / "bot.yml"
    bot_yml.write_text("name: b\nintents:\n  greet:\n    examples: |\n      - hi [there](who)\n      -hello\n"
                       "    response: Hi\n  bye:\n    examples: [bye]\n    response: Bye\n", encoding="utf-8")
    bot, _ = load_bot_folder(tmp_path)
    assert [(ex.text, [e.value for e in ex.entities]) for ex in bot.intents["greet"].examples] == \
        [("hi there", ["there"]), ("hello", [])]
    nlu = tmp_path / "nlu.yml"
    nlu.write_text("nlu:\n- intent: greet\n  examples: |\n    - hi [there](who)\n    -hello\n", encoding="utf-8")
    assert [(s.text, s.intent) for s in load_data(nlu).samples] == [("hi there", "greet"), ("hello", "greet")]
    bot_yml.write_text("name: b\nintents:\n  greet:\n    examples: |\n      - hi\n      hello\n      -\n"
                       "    response: Hi\n  bye:\n    examples: [bye]\n    response: Bye\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_bot_folder(tmp_path)
    assert info.value.problems == [f"{bot_yml}:6: intent 'greet': example lines must start with '- '",
                                   f"{bot_yml}:7: intent 'greet': empty example"]
