"""The example bot in examples/support: complete, consistent, and exactly what build.py generates."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bots.botspec import BotSpec, fill_template, load_bot, placeholders

REPO = Path(__file__).resolve().parents[1]
BOT_DIR = REPO / "examples" / "support"
SOURCE = REPO.parent / "shared" / "data" / "bitext" / "customer_support_responses.csv"
ENTITY_INTENTS = {
    "cancel_order": {"order_id"}, "change_order": {"order_id"}, "track_order": {"order_id"},
    "check_invoice": {"invoice_id", "person_name"}, "get_invoice": {"invoice_id", "person_name"},
    "create_account": {"account_type"}, "delete_account": {"account_type"}, "edit_account": {"account_type"},
    "switch_account": {"account_type"}, "get_refund": {"refund_amount"},
    "delivery_options": {"delivery_city", "delivery_country"},
    "give_order_number": {"order_id"},  # smalltalk.yml: an order number on its own
}


@pytest.fixture(scope="module")
def bot() -> BotSpec:
    return load_bot(BOT_DIR)


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("support_build", BOT_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def test_settings(bot: BotSpec) -> None:
    assert bot.name == "support"
    assert bot.description
    assert bot.fallback_threshold is None  # the calibrated out-of-scope point decides (docs/out-of-scope.md)
    assert bot.channels == ("web", "slack", "telegram")
    assert bot.synonyms["premium account"] == "premium"


SMALLTALK = {"greet", "goodbye", "thanks", "bot_challenge", "affirm", "deny", "stop", "out_of_scope",
             "give_order_number"}  # the hand-written intents of smalltalk.yml
# Shop questions Bitext has no intent for, written by hand in smalltalk.yml and answered from the knowledge base.
SHOP = {"damaged_item", "email_not_received", "visit_store"}


def test_all_27_intents_have_many_examples_and_an_answer(bot: BotSpec) -> None:
    assert len(bot.intents) == 27 + len(SMALLTALK) + len(SHOP) and SMALLTALK | SHOP <= set(bot.intents)
    for name, intent in bot.intents.items():
        assert len(intent.examples) >= (20 if name in SMALLTALK else 8 if name in SHOP else 100), name
        assert intent.responses, name
        assert len({e.text for e in intent.examples}) == len(intent.examples), f"{name}: duplicate examples"
    assert sum(len(i.examples) for i in bot.intents.values() if i.name not in SMALLTALK | SHOP) > 4400


def test_every_intent_has_a_human_title(bot: BotSpec) -> None:
    """What a "Did you mean ...?" button shows: written for customers, never the intent's name."""
    for name, intent in bot.intents.items():
        assert intent.title and "_" not in intent.title and intent.title[0].isupper(), name
    assert bot.intents["contact_human_agent"].shown == "Talk to a person"


def test_smalltalk_file_errors_name_the_file(tmp_path: Path) -> None:
    build = _build_module()
    bad = tmp_path / "smalltalk.yml"
    bad.write_text("greet:\n  examples: [hi]\n", encoding="utf-8")
    with pytest.raises(build.BuildError, match=f"{bad}: intent 'greet' needs exactly title, response, examples"):
        build.read_smalltalk(bad)
    bad.write_text("cancel_order:\n  title: x\n  response: x\n  examples: [x]\n", encoding="utf-8")
    with pytest.raises(build.BuildError, match="is a Bitext intent"):
        build.read_smalltalk(bad)


def test_entity_spans_match_their_values(bot: BotSpec) -> None:
    found: dict[str, set[str]] = {}
    for name, intent in bot.intents.items():
        for example in intent.examples:
            for entity in example.entities:
                shown = example.text[entity.start:entity.end]
                assert shown == entity.value or bot.synonyms.get(shown.lower()) == entity.value, (name, example)
                assert shown.strip() == shown and shown, (name, example)
                found.setdefault(name, set()).add(entity.entity)
    assert found == ENTITY_INTENTS


def test_responses_use_only_the_intents_entities(bot: BotSpec) -> None:
    for name, intent in bot.intents.items():
        entity_types = {e.entity for example in intent.examples for e in example.entities}
        for response in intent.responses:
            assert "{{" not in response and "}}" not in response, (name, response)
            assert placeholders(response) <= entity_types, (name, response)
        # The last variant always answers, whatever was (not) extracted.
        assert not placeholders(intent.responses[-1]), name
        assert fill_template(intent.responses, {}) is not None, name
        if entity_types:
            assert placeholders(intent.responses[0]), f"{name}: the first variant should use an entity"


def test_cancel_order_answer_is_about_cancelling(bot: BotSpec) -> None:
    responses = bot.intents["cancel_order"].responses
    filled = fill_template(responses, {"order_id": "123"})
    assert filled is not None and "cancel" in filled.lower() and "123" in filled
    generic = fill_template(responses, {})
    assert generic is not None and "cancel" in generic.lower() and "{" not in generic
    others = {n: fill_template(i.responses, {}) for n, i in bot.intents.items() if n != "cancel_order"}
    assert generic not in others.values()


def test_build_fixes_offsets_and_keeps_the_text_as_written(tmp_path: Path) -> None:
    build = _build_module()
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text(
        "instruction,intent,entity_type,entity_value,start_offset,end_offset,response\n"
        "cancel purchase 3707955617,cancel_order,order_id,3707955617,16,28,x\n"        # end past the text
        "cancel order 00004587345,cancel_order,order_id,4587345,13,24,x\n"             # value truncated
        "open a platinum account,create_account,account_type,Platinum,7,15,x\n"        # case differs
        "edit order 12345 now,change_order,order_id,99999,11,16,x\n"                   # value not in text
        "cancel  [my] order,cancel_order,,,,,x\n"                                       # markup characters
        "cancel  [my] order ,cancel_order,,,,,x\n",                                     # duplicate
        encoding="utf-8",
    )
    examples, report = build.read_examples(csv_file)
    assert examples == {
        "cancel_order": ["cancel purchase [3707955617](order_id)", "cancel order [00004587345](order_id)",
                         "cancel (my) order"],
        "create_account": ["open a [platinum](account_type) account"],
        "change_order": ["edit order 12345 now"],
    }
    assert (report.relocated, report.value_truncated, report.case_only, report.dropped) == (1, 1, 1, 1)
    assert (report.duplicates, report.sanitised, report.entities) == (1, 2, 3)


def test_build_reports_bad_input_with_the_file(tmp_path: Path) -> None:
    script = str(BOT_DIR / "build.py")
    missing = tmp_path / "nope.csv"
    run = subprocess.run([sys.executable, script, "--source", str(missing), "--output", str(tmp_path / "b.yml")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2 and str(missing) in run.stderr and not (tmp_path / "b.yml").exists()
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("text,label\nhello,greet\n", encoding="utf-8")
    run = subprocess.run([sys.executable, script, "--source", str(wrong), "--output", str(tmp_path / "b.yml")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2 and f"{wrong}:1: missing column(s) instruction" in run.stderr
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("instruction,intent,entity_type,entity_value,start_offset,end_offset\n"
                       "hi,greet,,,,\n", encoding="utf-8")
    run = subprocess.run([sys.executable, script, "--source", str(unknown), "--output", str(tmp_path / "b.yml")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2 and f"{unknown}:2: intent 'greet'" in run.stderr


@pytest.mark.skipif(not SOURCE.parent.parent.is_dir(),
                    reason=f"data sets not present at {SOURCE.parent.parent} (checked out without ../shared/data)")
def test_build_regenerates_the_committed_bot_yml(tmp_path: Path) -> None:
    assert SOURCE.is_file(), f"{SOURCE} is missing although {SOURCE.parent.parent} exists"
    out = tmp_path / "bot.yml"
    run = subprocess.run([sys.executable, str(BOT_DIR / "build.py"), "--source", str(SOURCE), "--output", str(out)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "examples written: 4508 in 27 intents" in run.stdout
    assert out.read_text(encoding="utf-8") == (BOT_DIR / "bot.yml").read_text(encoding="utf-8"), (
        "examples/support/bot.yml is out of date: run python examples/support/build.py")
