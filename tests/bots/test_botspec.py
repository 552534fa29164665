from __future__ import annotations

from pathlib import Path

import pytest

from bots.botspec import fill_template, load_bot, parse_example
from bots.errors import ConfigError
from tests.conftest import TINY_BOT


def write_bot(tmp_path: Path, text: str) -> Path:
    (tmp_path / "bot.yml").write_text(text, encoding="utf-8")
    return tmp_path


def test_tiny_bot_loads_with_entities_and_responses() -> None:
    bot = load_bot(TINY_BOT)
    assert bot.name == "tiny"
    assert bot.fallback_threshold == 0.5
    assert bot.channels == ("web", "slack", "telegram")
    cancel = bot.intents["cancel_order"]
    first = cancel.examples[0]
    assert first.text == "I want to cancel my order 123"
    assert [(e.entity, e.value, first.text[e.start:e.end]) for e in first.entities] == [("order_id", "123", "123")]
    assert cancel.responses[0] == "Order {order_id} is being cancelled."


@pytest.mark.parametrize(
    ("raw", "text", "entities"),
    [
        ("no entities here", "no entities here", []),
        ("fly to [New York](city) today", "fly to New York today", [("city", "New York", 7, 15)]),
        ("[NYC](city:New York) please", "NYC please", [("city", "New York", 0, 3)]),
        ('a [big apple]{"entity": "city", "value": "New York"}', "a big apple", [("city", "New York", 2, 11)]),
        ("[1](a) and [2](b)", "1 and 2", [("a", "1", 0, 1), ("b", "2", 6, 7)]),
    ],
)
def test_parse_example(raw: str, text: str, entities: list[tuple[str, str, int, int]]) -> None:
    example = parse_example(raw)
    assert example.text == text
    assert [(e.entity, e.value, e.start, e.end) for e in example.entities] == entities


def test_fill_template_picks_first_variant_with_known_values() -> None:
    variants = ("Order {order_id} cancelled.", "Which order?")
    assert fill_template(variants, {"order_id": "42"}) == "Order 42 cancelled."
    assert fill_template(variants, {}) == "Which order?"
    assert fill_template(("Order {order_id}",), {}) is None


def test_rasa_block_examples(tmp_path: Path) -> None:
    bot = load_bot(write_bot(tmp_path, """
name: b
intents:
  a:
    examples: |
      - hello [x](e)
      - hi
    response: A
  b:
    examples: [bye]
    response: B
"""))
    assert [ex.text for ex in bot.intents["a"].examples] == ["hello x", "hi"]


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_bot(write_bot(tmp_path, text))
    return info.value.problems


def test_every_problem_reported_with_file_and_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """name: bad name!
fallback_threshold: 2
channels: [web, fax]
colour: blue
retention_days: soon
intents:
  greet:
    examples: []
    response: ""
  bye:
    exmples: [bye]
""")
    path = str(tmp_path / "bot.yml")
    joined = "\n".join(problems)
    assert f"{path}:1: 'name' must be" in joined
    assert f"{path}:2: 'fallback_threshold' must be a number between 0 and 1" in joined
    assert f"{path}:3: unknown channel 'fax'" in joined
    assert f"{path}:4: unknown key 'colour'" in joined
    assert f"{path}:5: 'retention_days' must be a positive number of days" in joined
    assert f"{path}:8: intent 'greet' needs at least one example" in joined
    assert f"{path}:9: intent 'greet': a response must be non-empty text" in joined
    assert f"{path}:11: intent 'bye': unknown key 'exmples'" in joined
    assert f"{path}:11: intent 'bye' has no 'examples'" in joined


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "name: x\nintents:\n  a: [unclosed\n")
    assert problems[0].startswith(f"{tmp_path / 'bot.yml'}:")
    assert "invalid YAML" in problems[0]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "name: x\nname: y\nintents: {}\n")
    assert "duplicate key 'name' (first at line 1)" in problems[0]


def test_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a bot folder"):
        load_bot(tmp_path / "nope")
    with pytest.raises(ConfigError, match="file not found"):
        load_bot(tmp_path)


def test_broken_annotation_reported(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """name: x
intents:
  a:
    examples:
      - 'hi [there]{"value": 1}'
    response: A
  b:
    examples: [bye]
    response: B
""")
    assert any(p.startswith(f"{tmp_path / 'bot.yml'}:5:") and '"entity" key' in p for p in problems)


def test_lone_surrogate_escape_is_reported(tmp_path: Path) -> None:
    text = 'name: x\nintents:\n  a:\n    examples: [hi]\n    response: "smile \\ud83d\\ude00"\n'
    problems = problems_of(tmp_path, text)
    assert problems == [f"{tmp_path / 'bot.yml'}:5: text contains a lone UTF-16 surrogate (e.g. an escaped emoji half "
                        "like \\ud83d): write the character itself"]


# -- YAML 1.1 booleans (issue 14, item 5) ----------------------------------------------------------------
_YES_NO_BOT = """name: yesno
intents:
  yes:
    examples: [yes, yep, sure, y]
    response: Great, done.
  no:
    examples: [no, nope, n, off]
    response: no
  on:
    examples: [turn it on, switch on]
    response: on
  off:
    examples: [turn it off, switch off]
    response: [off, "Switched off."]
  y:
    examples: [why]
    response: Because.
  n:
    examples: [and]
    response: And?
  true:
    examples: [that is true, correct]
    response: Noted.
  false:
    examples: [that is false, wrong]
    response: Noted, wrong.
"""


def test_yaml_booleans_as_intent_names_and_values_are_the_words_written(tmp_path: Path) -> None:
    """`yes:` once became the intent True (YAML 1.1): bot.yml is read as YAML 1.2, keys as written."""
    from bots.loader import load_bot_folder

    for bot in (load_bot(write_bot(tmp_path, _YES_NO_BOT)), load_bot_folder(tmp_path)[0]):
        assert list(bot.intents) == ["yes", "no", "on", "off", "y", "n", "true", "false"]
        assert [e.text for e in bot.intents["yes"].examples] == ["yes", "yep", "sure", "y"]
        assert [e.text for e in bot.intents["no"].examples] == ["no", "nope", "n", "off"]
        assert bot.intents["no"].responses == ("no",)
        assert bot.intents["on"].responses == ("on",)
        assert bot.intents["off"].responses == ("off", "Switched off.")


def test_a_boolean_where_text_is_expected_is_refused_at_its_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """name: x
intents:
  a:
    examples: [hi, true]
    response: true
  b:
    examples: [bye]
    response: B
""")
    path = tmp_path / "bot.yml"
    assert f"{path}:4: intent 'a': each example must be non-empty text (YAML reads true as a boolean: write it " \
           'in quotes, "true", to mean the word)' in problems
    assert f"{path}:5: intent 'a': a response must be non-empty text (YAML reads true as a boolean" in problems[1]


def test_a_null_key_is_refused_with_its_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "name: x\nintents:\n  ~:\n    examples: [a]\n    response: A\n")
    assert problems == [f"{tmp_path / 'bot.yml'}:3: mapping keys must be plain names"]
