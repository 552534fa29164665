"""Rasa's retrieval intents (ResponseSelector) on the ``retrieval`` fixture (tests/data/rasa/retrieval, a
library FAQ of our own): ``faq/opening_hours``, ``faq/borrow_limit`` and ``faq/late_fee`` train the intent
``faq``; the rule answers it with ``utter_faq``, which says the response ``utter_faq/<key>`` of the key whose
examples are nearest the message (bots/dialogue/response_selector.py). Found with a public Rasa project
(bench/RESULTS.md): ``switchboard check`` refused ``utter_chitchat`` as a response missing from the domain."""

from __future__ import annotations

from pathlib import Path

from bots.botspec import BotSpec
from bots.dialogue.check import check_bot_folder
from bots.dialogue.rasa_project import load_rasa_project
from bots.dialogue.response_selector import ResponseSelector
from bots.settings import Settings
from connectors.story_test import run_story_tests
from tests.bots.lookup_model import RASA, LookupModel, project

# The test stories' questions are worded unlike any example: the intent is given, the key is the selector's.
QUESTIONS = {text: ("faq", ()) for text in ("how late are you open on saturday", "can I borrow ten books",
                                            "I returned my book late, what do I pay")}


def test_retrieval_intents_train_their_intent_and_keep_their_keys() -> None:
    spec, dialogue = load_rasa_project(RASA / "retrieval")
    assert sorted(spec.intents) == ["faq", "greet"] and len(spec.intents["faq"].examples) == 12
    assert sorted(dialogue.retrieval["faq"]) == ["borrow_limit", "late_fee", "opening_hours"]
    assert dialogue.retrieval["faq"]["late_fee"][0] == "what if I return a book late"
    assert "utter_faq" in dialogue.domain.action_names   # the retrieval action, as Rasa adds it
    assert check_bot_folder(RASA / "retrieval").errors == []


def test_the_selector_picks_the_key_of_the_nearest_example() -> None:
    selector = ResponseSelector({"faq": {"hours": ("when are you open", "what are your opening hours"),
                                         "fees": ("how much is the late fee", "do you charge for overdue books")},
                                 "chitchat": {"name": ("what is your name",)}})
    assert selector.select("faq", "are you open on sunday") == "hours"
    assert selector.select("faq", "what do overdue books cost me") == "fees"
    assert selector.select("chitchat", "anything at all") == "name"   # one key: always it
    assert selector.select("greet", "hello") is None                  # not a retrieval intent


async def test_utter_faq_says_the_response_of_the_picked_key_end_to_end_and_replayed(tmp_path: Path) -> None:
    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, QUESTIONS)

    bot = project(tmp_path, "retrieval")
    # replayed (rasa test's way): a bot: text is right when the predicted retrieval action can say it; the
    # replay compared it with utter_faq's own responses only (there are none: utter_faq/<key> say them)
    for replay in (False, True):
        results = await run_story_tests(bot, settings=Settings(nlu_max_wait_ms=0.0), model_loader=loader,
                                        replay=replay)
        assert [f for s in results.stories for f in s.failures] == []
        assert results.action_targets == [
            "utter_greet", "action_listen", "We are open Monday to Saturday, 9:00 to 19:00.", "action_listen",
            "You can borrow up to 10 items for three weeks.", "action_listen", "utter_faq", "action_listen"]


def test_check_names_a_response_no_example_can_pick_and_a_key_without_response(tmp_path: Path) -> None:
    bot = project(tmp_path, "retrieval")
    domain = bot / "domain.yml"
    domain.write_text(domain.read_text(encoding="utf-8").replace("utter_faq/late_fee:", "utter_faq/late_fees:"),
                      encoding="utf-8")
    report = check_bot_folder(bot)
    line = domain.read_text(encoding="utf-8").splitlines().index("  utter_faq/late_fees:") + 1
    assert report.errors == [f"{domain}:{line + 1}: response 'utter_faq/late_fees' has no NLU examples of the "
                             f"retrieval intent 'faq/late_fees': 'utter_faq' can never pick it"]
    nlu = bot / "data" / "nlu.yml"
    first = nlu.read_text(encoding="utf-8").splitlines().index("    - what if I return a book late") + 1
    assert f"{nlu}:{first}: retrieval intent 'faq/late_fee' has no response 'utter_faq/late_fee': 'utter_faq' " \
           f"says nothing when it picks it" in report.warnings


async def test_responses_in_a_data_file_join_the_domain_and_win_over_its_own(tmp_path: Path) -> None:
    """Rasa reads ``responses:`` in a data file (data/responses.yml) as NLU data and merges them into the domain,
    a data response winning over a same-named domain one (its importer merges with override). They were noted
    as unsupported and dropped: ``utter_faq`` had no key to say. Found reading a public retail bot that keeps its
    retrieval responses in data/responses/responses.yml (bench/RESULTS.md, fourth round)."""
    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, QUESTIONS)

    bot = project(tmp_path, "retrieval")
    domain = bot / "domain.yml"
    text = domain.read_text(encoding="utf-8")
    start = text.index("  # Retrieval intent faq")
    domain.write_text(text[:start], encoding="utf-8")   # the utter_faq/<key> responses leave the domain...
    responses = bot / "data" / "responses.yml"          # ...for a data file, with utter_greet said otherwise
    responses.write_text('version: "3.1"\nresponses:\n  utter_greet:\n  - text: "Hello from the data!"\n'
                         + text[start:], encoding="utf-8")
    spec, dialogue = load_rasa_project(bot)
    assert dialogue.domain.responses["utter_faq/late_fee"][0].text == "A late item costs 20 cents a day."
    assert dialogue.domain.responses["utter_faq/late_fee"][0].where.startswith(f"{responses}:")
    assert dialogue.domain.responses["utter_greet"][0].text == "Hello from the data!"
    assert f"{responses}:3: response 'utter_greet' is also defined in the domain; this one (the training " \
           f"data's) is used, as Rasa merges them" in spec.notes
    report = check_bot_folder(bot)
    assert report.errors == [] and not [w for w in report.warnings if "has no response" in w]
    results = await run_story_tests(bot, settings=Settings(nlu_max_wait_ms=0.0), model_loader=loader)
    assert [f for s in results.stories for f in s.failures] == []
    assert results.action_targets[2:6] == ["We are open Monday to Saturday, 9:00 to 19:00.", "action_listen",
                                           "You can borrow up to 10 items for three weeks.", "action_listen"]
