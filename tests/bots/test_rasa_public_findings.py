"""Regressions found by running real public Rasa 3.x projects (bench/RESULTS.md, "Public Rasa projects"),
each on a small fixture of our own under tests/data/rasa/."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bots.botspec import BotSpec, fill_template
from bots.dialogue.actions import InProcessActions, RemoteActions, load_actions
from bots.dialogue.check import check_bot_folder
from bots.dialogue.domain import REQUESTED_SLOT, Step, Story, StoryEntity
from bots.dialogue.engine import policies_for
from bots.dialogue.policies import Ensemble, Prediction, Tracker, simulate, slot_feature
from bots.dialogue.rasa_data import read_test_stories
from bots.errors import ConfigError
from bots.events import NLU, Event
from bots.loader import load_bot_folder
from bots.nlu.model import _word_spans
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from bots.types import Entity, IntentScore, Understanding
from tests.bots.keyword_model import message, say
from tests.bots.lookup_model import LookupModel, lookup_runtime, lookup_story_tests, project

RASA = Path(__file__).resolve().parents[1] / "data" / "rasa"


def _copy(tmp_path: Path, name: str) -> Path:
    bot_dir = tmp_path / name
    shutil.copytree(RASA / name, bot_dir, ignore=shutil.ignore_patterns("__pycache__", "models", "results"))
    return bot_dir


def _mentioning(lines: list[str], text: str) -> list[str]:
    return [line for line in lines if text in line]


def test_a_declared_action_nothing_runs_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    # The escape-room project declares action_set_game_started and never writes it: Rasa trains and
    # serves it (the action server would answer 404 only if it ran). Serve refused it, and check passed.
    bot_dir = _copy(tmp_path, "declared_actions")
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    assert _mentioning(report.warnings, "action_never_written") == [
        f"{bot_dir / 'domain.yml'}:9: action 'action_never_written' is declared but not defined "
        f"({bot_dir / 'actions.py'} defines action_give_hint); no story, rule or form runs it, so it is never "
        f"run (define it, or remove it from the domain)"]
    spec, dialogue = load_bot_folder(bot_dir)
    runner = load_actions(spec, dialogue)  # without the fix: ConfigError "unknown action 'action_never_written'"
    assert isinstance(runner, InProcessActions)
    assert runner.names() == {"action_give_hint"}


def test_an_undefined_action_a_rule_runs_is_refused_by_check_as_by_serve(tmp_path: Path) -> None:
    bot_dir = _copy(tmp_path, "declared_actions")
    rules = bot_dir / "data" / "rules.yml"
    rules.write_text(rules.read_text().replace("action: action_give_hint", "action: action_never_written"))
    report = check_bot_folder(bot_dir)  # without the fix check passed, and serve refused the bot
    assert report.errors == [
        f"{bot_dir / 'domain.yml'}:9: unknown action 'action_never_written' ({bot_dir / 'actions.py'} defines "
        f"action_give_hint)"]
    spec, dialogue = load_bot_folder(bot_dir)
    with pytest.raises(ConfigError, match="unknown action 'action_never_written'"):
        load_actions(spec, dialogue)


def test_check_lists_a_declared_only_action_beside_a_missing_action_a_rule_runs(tmp_path: Path) -> None:
    # A public project (horiaomar25/historicalfigures-ai-chat-app) lists Rasa's default actions under 'actions:'
    # (its own overrides, as Rasa runs them, which its package does not define: errors) and
    # action_revert_fallback_events, which nothing runs. check showed only the errors: the warning for the action
    # the domain merely declares was lost with them.
    bot_dir = _copy(tmp_path, "declared_actions")
    rules = bot_dir / "data" / "rules.yml"
    rules.write_text(rules.read_text().replace("action: action_give_hint", "action: action_never_written"))
    domain = bot_dir / "domain.yml"
    domain.write_text(domain.read_text().replace("  - action_never_written\n",
                                                 "  - action_never_written\n  - action_only_declared\n"))
    report = check_bot_folder(bot_dir)
    defined = f"({bot_dir / 'actions.py'} defines action_give_hint)"
    assert report.errors == [f"{bot_dir / 'domain.yml'}:9: unknown action 'action_never_written' {defined}"]
    assert _mentioning(report.warnings, "action_only_declared") == [
        f"{bot_dir / 'domain.yml'}:10: action 'action_only_declared' is declared but not defined {defined}; no "
        f"story, rule or form runs it, so it is never run (define it, or remove it from the domain)"]


@pytest.fixture
async def override_runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    # the lookup model: an unknown text has confidence 0.1, below the fixture's fallback threshold
    async with lookup_runtime(tmp_path, "fallback_override") as runtime:
        yield runtime


async def test_a_default_action_the_domain_lists_runs_the_projects_own_action(override_runtime: Runtime) -> None:
    # The eco-travel project lists action_default_fallback under actions and writes its own (a two-stage
    # fallback that asks before handing over). Rasa runs the project's action; Switchboard ran its built-in
    # one, whose second fallback in a row handed the conversation to a person: the bot went silent.
    bot = "fallback_override"
    assert await say(override_runtime, "blorp quux", bot=bot) == ["Sorry, I did not get that (1)."]
    assert await say(override_runtime, "zzz qqq", bot=bot) == ["Sorry, I did not get that (2)."]
    assert await say(override_runtime, "hello", bot=bot) == ["Hello!"]  # not handed off


def test_a_listed_default_action_is_a_custom_action_the_module_must_define(tmp_path: Path) -> None:
    bot_dir = _copy(tmp_path, "fallback_override")
    domain = bot_dir / "domain.yml"
    domain.write_text(domain.read_text().replace("  - action_default_fallback\n",
                                                 "  - action_default_fallback\n  - action_restart\n"))
    report = check_bot_folder(bot_dir)  # Rasa would call the action server for action_restart, and fail
    assert report.errors == [
        f"{domain}:8: unknown action 'action_restart' ({bot_dir / 'actions.py'} defines action_default_fallback)"]


def test_an_entity_is_whole_words_as_rasas_tokenizers_cut_them() -> None:
    # The Italian restaurant project's "01/01/2020" came back as two dates, '01/' and '/2020' (the word pieces
    # around the middle "01" were tagged, it was not), and "Test User" as an e-mail: a slot got '01/'. Rasa's
    # WhitespaceTokenizer keeps "01/01/2020" and "ann@example.com" one token, and DIET tags whole tokens.
    date = "01/01/2020"
    assert _word_spans(date, [("date", 0, 3, [0.9]), ("date", 5, 10, [0.7])]) == [("date", 0, 10, [0.9, 0.7])]
    mail = "write to ann@example.com today"
    assert _word_spans(mail, [("email", 9, 12, [0.8])]) == [("email", 9, 24, [0.8])]
    # a word is one entity, of the type covering most of it by confidence ('mario.rossi@email.com': name on
    # "mario" and "rossi", e-mail on "@email.com"); punctuation alone is no entity; words apart stay apart
    address = "mario.rossi@email.com"
    pieces = [("name", 0, 5, [0.5]), ("email", 5, 6, [1.0]), ("name", 6, 11, [0.98]), ("email", 11, 21, [0.94])]
    assert _word_spans(address, pieces) == [("email", 0, 21, [0.94])]  # "." alone counts for nothing
    assert _word_spans(date, [("date", 0, 3, [0.9]), ("time", 5, 10, [0.7])]) == [("time", 0, 10, [0.7])]
    assert _word_spans("bye-bye!", [("movie", 7, 8, [1.0])]) == []
    assert _word_spans("from Paris to Rome!", [("city", 5, 10, [1.0]), ("city", 14, 18, [1.0])]) == [
        ("city", 5, 10, [1.0]), ("city", 14, 18, [1.0])]


def test_an_entity_leaves_out_the_punctuation_rasas_tokenizer_strips_from_a_words_edges() -> None:
    # Round 12: "is it ORD-10001 or ORD-10002?" (yoonjun1204/chatbot-frontend) gave order_id 'ORD-10002?', and
    # "My new contact is 555-123-4567." (ZetaReticuli844/Dl-Creator-YS) new_contact '555-123-4567.': the
    # encoder's subword pieces tag the trailing "?" or "." with the word, and the slot took them. Rasa's
    # WhitespaceTokenizer strips such punctuation from a word's edges before DIET tags the word.
    order = "is it ORD-10001 or ORD-10002?"
    assert _word_spans(order, [("order_id", 6, 15, [0.9]), ("order_id", 19, 29, [0.8])]) == [
        ("order_id", 6, 15, [0.9]), ("order_id", 19, 28, [0.8])]
    contact = "My new contact is 555-123-4567."
    assert _word_spans(contact, [("new_contact", 18, 31, [0.9])]) == [("new_contact", 18, 30, [0.9])]
    assert _word_spans("(bus) license", [("vehicle", 0, 5, [0.7])]) == [("vehicle", 1, 4, [0.7])]
    # what the tokenizer keeps: a sign before a digit, '#', '@', '&', punctuation inside a word
    assert _word_spans("-5 degrees", [("temp", 0, 2, [0.6])]) == [("temp", 0, 2, [0.6])]
    assert _word_spans("tag #rasa!", [("tag", 4, 10, [0.6])]) == [("tag", 4, 9, [0.6])]
    assert _word_spans("St. Louis", [("city", 0, 9, [0.6])]) == [("city", 0, 9, [0.6])]
    assert _word_spans("ends with ok?!", [("word", 10, 14, [0.6])]) == [("word", 10, 12, [0.6])]


def test_after_a_custom_restart_the_bot_listens_whatever_the_learned_policy_guesses() -> None:
    # Round 12 (yoonjun1204/chatbot-frontend): its own action_restart returns Restarted(); the empty state after
    # it went to the learned policy, which had never seen it and guessed utter_show_quick_replies (0.99): the
    # bot showed its menu after "start a new chat". Rasa's policies learn "listen" for that state from every
    # story that starts with a message (action_listen comes first), and its MemoizationPolicy predicts it.
    _, dialogue = load_bot_folder(RASA / "moodbot")

    class Guess:
        priority = 1

        def predict(self, tracker: Tracker, current: frozenset[str], excluded: frozenset[str]) -> Prediction:
            return Prediction("utter_greet", 0.99, "LearnedPolicy")

    ensemble = replace(policies_for(dialogue), learned=Guess())
    tracker = Tracker(dialogue.domain)
    tracker.new_session(False)
    tracker.user("greet", ())
    tracker.action("utter_greet")
    tracker.action("action_restart")
    tracker.new_session(False)   # the Restarted event
    assert ensemble.predict(tracker, latest_action="action_restart").action == "action_listen"
    tracker.user("mood_great", ())  # after a message the policies decide as before
    assert ensemble.predict(tracker, latest_action="action_listen").action == "utter_happy"


async def test_doubled_braces_in_a_response_are_literal_braces_and_a_payload_is_filled(tmp_path: Path) -> None:
    # The eco-travel project's buttons say '/inform_sustainability_preference{{"sustainability_level": ...}}':
    # Rasa's interpolation (str.format) sends /inform_sustainability_preference{"sustainability_level": ...}.
    # Switchboard sent the doubled braces, the payload did not parse, the click was read as typed text and the
    # form asked again.
    bot = "button_payloads"
    async with lookup_runtime(tmp_path, bot) as runtime:
        [question] = await runtime.handle(message("hello", bot=bot))
        assert question.text == "Which size? {S} or {L}"
        assert [(b.title, b.payload) for b in question.buttons] == [
            ("Small {S}", '/choose_size{"size": "small"}'), ("Large {L}", '/choose_size{"size": "large"}')]
        answer = await runtime.handle(message("Large {L}", bot=bot, payload=question.buttons[1].payload))
        assert [r.text for r in answer] == ["A large shirt, noted."]


async def test_actions_import_the_projects_own_modules_as_under_rasas_action_server(tmp_path: Path) -> None:
    # The weather project's actions say `from config import API_KEY` (config.py beside domain.yml): Rasa's
    # action server runs in the project folder, which is on sys.path there. Switchboard imported the package
    # without it: "importing the actions module failed: ModuleNotFoundError: No module named 'config'", so
    # check refused the bot and train did not start.
    bot = "project_modules"
    report = check_bot_folder(_copy(tmp_path / "check", bot))
    assert report.errors == []
    async with lookup_runtime(tmp_path, bot) as runtime:
        assert await say(runtime, "hello", bot=bot) == ["Welcome to the Corner Shop!"]
        # a class imported from `actions.hours` by its absolute name is registered, and imports at run time
        assert await say(runtime, "opening hours", bot=bot) == ["the Corner Shop is open from 9 to 5."]


def test_a_module_another_bot_folder_loaded_is_imported_again_from_this_one(tmp_path: Path) -> None:
    # Two bots served by one process, each with its own settings.py: each bot's actions get their own, and a
    # reload (a newer model swapped in) imports the project's modules afresh.
    first, second = _copy(tmp_path / "a", "project_modules"), _copy(tmp_path / "b", "project_modules")
    (second / "settings.py").write_text('SHOP_NAME = "the Night Shop"\nHOURS = "from 6 to 2"\n')

    def shop_name(bot_dir: Path) -> str:
        spec, dialogue = load_bot_folder(bot_dir)
        runner = load_actions(spec, dialogue)
        assert isinstance(runner, InProcessActions)
        assert runner.names() == {"action_greet", "action_opening_hours"}
        greet_module = type(runner.executor.actions["action_greet"].__self__).__module__
        return str(sys.modules[greet_module].SHOP_NAME)

    assert shop_name(first) == "the Corner Shop"
    (first / "settings.py").write_text('SHOP_NAME = "the Corner Shop 2"\nHOURS = "from 9 to 5"\n')
    assert shop_name(first) == "the Corner Shop 2"
    assert shop_name(second) == "the Night Shop"
    assert shop_name(first) == "the Corner Shop 2"


async def test_a_form_fills_only_the_slot_it_asks_for_and_an_ignored_intent_fills_none(tmp_path: Path) -> None:
    # Rasa's ActionExtractSlots, while a form is active: a required slot's from_entity mapping that another
    # required slot shares (departure and arrival city, both from `city`) fills only the slot the form asks
    # for (_fails_unique_entity_mapping_check), and the form's ignored_intents block every slot's mapping
    # that does not name another form (SlotMapping.intent_is_desired). Switchboard filled both cities from
    # "Paris" (the form ended with a trip from Paris to Paris) and filled `seat` from a chitchat in the form.
    results = await lookup_story_tests(project(tmp_path, "trip_form"))
    assert [s.name for s in results.stories] == ["one city fills the slot the form asks for",
                                                "an ignored intent fills no slot while the form is active"]
    assert [f for s in results.stories for f in s.failures] == []
    assert results.conversation_accuracy == 1.0


def test_with_an_action_server_actions_that_do_not_import_here_run_on_it(tmp_path: Path) -> None:
    # A Rasa server never imports its project's actions: the action server of endpoints.yml runs them, in a
    # process (often an image) of its own with the actions' dependencies. The restaurant project's actions
    # import psycopg2, and several public projects' import openai or sqlalchemy, none installed here:
    # Switchboard refused such a project at check (so train never started) although its endpoints.yml names
    # the server that runs them. Now that is a warning and every action goes to the server; without an
    # action server the actions must import here (serve runs them in process), so that stays an error.
    bot_dir = _copy(tmp_path, "forms")
    module = bot_dir / "actions" / "database.py"
    module.write_text("import os\n\nimport psycopg_not_installed_here\n")
    failed = f"{module}:3: importing the actions module failed: ModuleNotFoundError: No module named " \
             f"'psycopg_not_installed_here'"
    with_server = check_bot_folder(bot_dir)
    assert with_server.errors == []
    assert _mentioning(with_server.warnings, "database.py") == [
        f"{failed}; every custom action runs on the action server (endpoints.yml: action_endpoint), as Rasa runs them"]
    assert isinstance(load_actions(*load_bot_folder(bot_dir)), RemoteActions)
    (bot_dir / "endpoints.yml").unlink()
    assert _mentioning(check_bot_folder(bot_dir).errors, "database.py") == [failed]


def test_a_user_turn_no_action_follows_teaches_the_bot_to_listen_as_rasa_reads_stories() -> None:
    # Round 13 (Dermoplasto/Chatbot_test): interactive-learning stories give `give_email` twice in a row (the first
    # without the address, the second with it, then action_email), and one story is a lone `give_email`. Rasa's
    # story reader puts the bot's listen before every user turn and at the story's end unless the story has just
    # listened (StoryStep._add_action_listen), so after the first message its MemoizationPolicy predicts
    # action_listen. Switchboard merged the two turns into the second: "I want to give you my email" had no
    # story state, and the learned policy ran action_email (0.97) before the customer gave the address.
    _, dialogue = load_bot_folder(RASA / "moodbot")
    story = Story("two messages in a row", (
        Step("intent", "greet"), Step("action", "utter_greet"), Step("intent", "deny"),
        Step("intent", "affirm"), Step("action", "utter_happy")))
    t = simulate(dialogue.domain, story, story.steps)
    assert t.actions == ("utter_greet", "action_listen", "action_listen", "utter_happy", "action_listen")
    assert "intent:deny" in t.queries[2] and "intent:affirm" in t.queries[3]
    lone = Story("a lone message", (Step("intent", "greet"),))
    assert simulate(dialogue.domain, lone, lone.steps).actions == ("action_listen",)
    explicit = Story("an explicit listen", (Step("intent", "greet"), Step("action", "action_listen"),
                                            Step("intent", "affirm"), Step("action", "utter_happy")))
    assert simulate(dialogue.domain, explicit, explicit.steps).actions == (
        "action_listen", "utter_happy", "action_listen")  # no second listen after the story's own

    ensemble = Ensemble.build(dialogue.domain, (*dialogue.stories, story), dialogue.policy)
    tracker = Tracker(dialogue.domain)
    tracker.new_session(False)
    tracker.user("greet", ())
    tracker.action("utter_greet")
    tracker.action("action_listen")
    tracker.user("deny", ())
    prediction = ensemble.predict(tracker, latest_action="action_listen")
    assert prediction is not None and prediction.action == "action_listen"
    tracker.action("action_listen")
    tracker.user("affirm", ())
    prediction = ensemble.predict(tracker, latest_action="action_listen")
    assert prediction is not None and prediction.action == "utter_happy"


def test_a_rasa_project_without_config_yml_is_refused_as_rasa_train_refuses_it(tmp_path: Path) -> None:
    # Round 13 (Armoredbrain/rasa_nlu_server): its rasa/ folder has a domain, NLU data, stories and test stories but
    # no config.yml. rasa train exits ("The config file 'config.yml' does not exist. Use '--config' to specify a
    # valid config file."); Switchboard checked it clean (0 errors, 0 notes) and trained a bot on defaults it
    # assumed. A bot.yml pointing at Rasa files may still leave config.yml out (its default: "when present").
    bot_dir = _copy(tmp_path, "moodbot")
    (bot_dir / "config.yml").unlink()
    report = check_bot_folder(bot_dir)
    assert _mentioning(report.errors, "config.yml") == [
        f"{bot_dir / 'config.yml'}: no config.yml: a Rasa project needs one, and rasa train refuses a project "
        f"without it (\"The config file 'config.yml' does not exist\"); add one (rasa init's, with `language: en` "
        f"and its pipeline and policies commented out, trains Rasa's defaults)"]
    with pytest.raises(ConfigError, match=r"no config\.yml"):
        load_bot_folder(bot_dir)
    (bot_dir / "bot.yml").write_text("name: mood\nrasa: .\n")
    spec, dialogue = load_bot_folder(bot_dir)
    assert spec.name == "mood" and dialogue.stories


def test_a_storys_entities_fill_the_slots_inside_a_form_as_the_engine_does() -> None:
    # Training and check play the stories with the same extraction: in a story, "Paris" answering the
    # departure city fills only that slot, and a chitchat's seat inside the form fills nothing (here with the
    # slots made features, so that the frames the policies learn from show them).
    _spec, dialogue = load_bot_folder(RASA / "trip_form")
    domain = replace(dialogue.domain, slots={name: replace(slot, influence_conversation=True)
                                             for name, slot in dialogue.domain.slots.items()})
    story = Story("trip", (
        Step("intent", "book_trip"), Step("action", "trip_form"), Step("active_loop", "trip_form"),
        Step("slot_was_set", slots=((REQUESTED_SLOT, "departure_city"),)),
        Step("intent", "inform", entities=(StoryEntity("city", "Paris"),)), Step("action", "trip_form"),
        Step("intent", "chitchat", entities=(StoryEntity("seat", "window"),)), Step("action", "utter_chitchat")))
    t = simulate(domain, story, story.steps)
    asked = [i for i, action in enumerate(t.actions) if action == "trip_form"][1]
    assert "slot:departure_city:set" in t.queries[asked] and "slot:arrival_city:set" not in t.queries[asked]
    chitchat = t.actions.index("utter_chitchat")
    assert not any(f.startswith("slot:seat") for f in t.queries[chitchat])


@pytest.mark.parametrize("replay", [False, True])
async def test_a_rejected_form_stays_rejected_until_it_runs_again(tmp_path: Path, replay: bool) -> None:
    # Rasa's rejected loop lasts until the loop runs again (DialogueStateTracker.set_latest_action): after "stop"
    # inside the form and the story's "Do you want to continue?", "no" is the answer to that question. Rasa does not
    # predict the form by its happy path (RulePolicy._find_action_from_loop_happy_path), ActionExtractSlots skips
    # the conditioned mapping of the slot the form asked for (_matches_mapping_conditions), and the form, run again
    # after the interruption, asks again instead of validating (LoopInterrupted). Switchboard forgot the rejection
    # at the next message: the form ran first and took "no" as its answer (wants_newsletter: false), and the
    # newsletter was "noted" instead of stopped. Found with the restaurant project's formbot-style stop story.
    # (Replayed as rasa test does, the stories passed already: the replay emulates the rejection when a story
    # says so; both ways must agree.)
    results = await lookup_story_tests(project(tmp_path, "stop_form"), replay=replay)
    assert len(results.stories) == 2
    assert [f for s in results.stories for f in s.failures] == []


async def test_a_form_run_after_an_interruption_keeps_what_the_message_filled(tmp_path: Path) -> None:
    # Run first after an interruption (Rasa's LoopInterrupted), a form does not validate: a slot the message
    # filled through a mapping not conditioned on the asked slot stays filled, and the form asks for its next
    # empty slot (Rasa's FormAction._validate_if_required). The forms fixture with its cuisine mapping
    # unconditioned: "italian please" after "stop" and "Do you want to go on?" is kept, not asked again.
    tests = """version: "3.1"
stories:
- story: stop, then the cuisine
  steps:
  - intent: request_restaurant
  - action: restaurant_form
  - active_loop: restaurant_form
  - user: |
      stop
    intent: stop
  - action: utter_ask_continue
  - user: |
      [italian](cuisine) please
    intent: inform
  - action: restaurant_form
  - slot_was_set:
    - cuisine: italian
    - requested_slot: num_people
"""
    bot_dir = project(tmp_path, "forms", tests)
    domain = bot_dir / "domain.yml"
    domain.write_text(domain.read_text().replace(
        "        entity: cuisine\n        conditions:\n          - active_loop: restaurant_form\n"
        "            requested_slot: cuisine\n", "        entity: cuisine\n"))

    results = await lookup_story_tests(bot_dir, {"italian please": ("inform", (Entity("cuisine", "italian", 0, 7),))})
    assert [f for s in results.stories for f in s.failures] == []
    assert results.conversation_accuracy == 1.0


async def test_an_actions_folder_without_init_is_imported_as_rasa_sdk_imports_it(tmp_path: Path) -> None:
    # A public project's actions/ folder has no __init__.py: `python -m rasa_sdk --actions actions` imports
    # it as a namespace package and registers the Action classes of its modules. Switchboard looked only for
    # actions/__init__.py or actions.py, so check refused the bot: "custom action ... has nothing to run it".
    tests = """version: "3.1"
stories:
- story: the actions of both modules run
  steps:
  - intent: greet
  - action: action_greet
  - intent: hours
  - action: action_opening_hours
"""
    bot_dir = project(tmp_path, "project_modules", tests)
    (bot_dir / "actions" / "__init__.py").unlink()
    # another bot folder loaded first has an actions.py: it must not shadow this folder's `actions` package
    assert check_bot_folder(_copy(tmp_path / "other", "declared_actions")).errors == []
    assert check_bot_folder(bot_dir).errors == []
    assert load_bot_folder(bot_dir)[1].actions_module == bot_dir / "actions"

    results = await lookup_story_tests(bot_dir)
    assert [f for s in results.stories for f in s.failures] == []
    assert results.conversation_accuracy == 1.0


def test_a_custom_nlu_component_in_the_actions_package_is_not_imported_with_the_actions(tmp_path: Path) -> None:
    # The same project keeps a custom NLU component in its actions package (`actions.intent_classifier.
    # IntentClassifier` in config.yml's pipeline), which imports rasa and tensorflow: Rasa's server runs it.
    # Switchboard's NLU replaces the pipeline, yet it imported the module with the actions and refused the bot:
    # "importing the actions module failed: ModuleNotFoundError: No module named 'rasa'".
    bot_dir = _copy(tmp_path, "project_modules")
    (bot_dir / "actions" / "intent_classifier.py").write_text(
        "from rasa.engine.graph import GraphComponent\n\n\nclass IntentClassifier(GraphComponent):\n    pass\n")
    config = bot_dir / "config.yml"
    config.write_text(config.read_text() + "\npipeline:\n  - name: WhitespaceTokenizer\n"
                                           "  - name: actions.intent_classifier.IntentClassifier\n")
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    spec, dialogue = load_bot_folder(bot_dir)
    assert dialogue.component_modules == ("actions.intent_classifier",)
    runner = load_actions(spec, dialogue)
    assert isinstance(runner, InProcessActions)
    assert runner.names() == {"action_greet", "action_opening_hours"}
    # a module of the package config.yml does not name still fails the import, at its line
    (bot_dir / "actions" / "other.py").write_text("import rasa\n")
    assert _mentioning(check_bot_folder(bot_dir).errors, "other.py") == [
        f"{bot_dir / 'actions' / 'other.py'}:1: importing the actions module failed: ModuleNotFoundError: "
        f"No module named 'rasa'"]


@pytest.mark.parametrize("replay", [False, True])
async def test_a_payload_user_text_expects_the_payloads_entities(tmp_path: Path, replay: bool) -> None:
    # A public project's test story sends `/share_location{"latitude": 52.52, "longitude": 13.4}` as the
    # user's text. Rasa's reader takes a `/` text as a payload and its entities as the step's target
    # (YAMLStoryReader._parse_raw_user_utterance, unpack_regex_message); Switchboard expected none, so the
    # story failed on "entities none expected, the NLU found latitude='52.52', longitude='13.4'".
    tests = """version: "3.1"
stories:
- story: the cities as payloads
  steps:
  - user: |
      I want to book a trip
    intent: book_trip
  - action: trip_form
  - active_loop: trip_form
  - user: |
      /inform{"city": "Paris"}
    intent: inform
  - action: trip_form
  - slot_was_set:
    - departure_city: Paris
  - user: |
      /inform{"city": "Rome"}
    intent: inform
  - action: trip_form
  - slot_was_set:
    - arrival_city: Rome
  - active_loop: null
  - action: utter_trip
"""

    results = await lookup_story_tests(project(tmp_path, "trip_form", tests), replay=replay)
    assert [f for s in results.stories for f in s.failures] == []
    assert results.conversation_accuracy == 1.0


def test_a_payload_user_text_that_is_not_json_is_an_error_at_its_line(tmp_path: Path) -> None:
    bot_dir = project(tmp_path, "trip_form", """version: "3.1"
stories:
- story: a broken payload
  steps:
  - user: |
      /inform{"city": Paris}
    intent: inform
  - action: trip_form
""")
    with pytest.raises(ConfigError) as raised:
        read_test_stories([bot_dir / "tests" / "test_stories.yml"])
    assert raised.value.problems == [
        f"{bot_dir / 'tests' / 'test_stories.yml'}:5: story 'a broken payload': the payload's entities are not "
        f"JSON (Expecting value): '/inform{{\"city\": Paris}}'"]


def test_an_example_line_without_a_dash_is_skipped_with_a_note_as_rasa_skips_it(tmp_path: Path) -> None:
    # A public project (metheAnkit/Support-Dashboard) writes its regexes' patterns without "- ": Rasa's
    # reader warns and skips such a line (RasaYAMLReader._parse_multiline_example) and trains the project;
    # `switchboard check` refused it ("example lines must start with '- '"), so train did too.
    bot_dir = _copy(tmp_path, "parcel")
    nlu = bot_dir / "data" / "nlu.yml"
    lines = nlu.read_text().splitlines()
    lines[6:6] = ["    hello without a dash"]  # inside greet's examples, after "- hello"
    lines += ["", "- regex: parcel_code", "  examples: |", "    \\b[A-Z]{2}\\d{3}\\b"]
    nlu.write_text("\n".join(lines) + "\n")
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    assert _mentioning(report.notes, "does not start with") == [
        f"{nlu}:7: intent 'greet': this line does not start with '- ': skipped, as Rasa skips it",
        f"{nlu}:{len(lines)}: regex 'parcel_code': this line does not start with '- ': skipped, as Rasa skips it"]
    assert _mentioning(report.notes, "no example left") == [
        f"{nlu}:{len(lines) - 2}: regex 'parcel_code' has no example left: it matches nothing, as in Rasa"]
    spec, _ = load_bot_folder(bot_dir)
    assert [e.text for e in spec.intents["greet"].examples] == ["hi", "hello", "good morning", "hey there",
                                                                 "hello bot"]
    assert "parcel_code" not in spec.regexes


async def test_slots_a_test_story_sets_before_its_first_message_are_the_conversations_start(
        tmp_path: Path) -> None:
    # A public project's test stories (virtualkitchenco/conversational-ai) begin with slot_was_set steps: the
    # order the customer is in, before they say anything. rasa test applies a story's SlotSet events as given
    # (it predicts only actions); end to end, Switchboard checked them as the bot's work and failed every
    # story on "slot 'item_to_sub' = 'Gilroy Garlic Mac' expected, the bot has None".
    tests = """version: "3.1"
stories:
- story: the departure is known before the customer writes
  steps:
  - slot_was_set:
    - departure_city: Paris
  - user: |
      I want to book a trip
    intent: book_trip
  - action: trip_form
  - active_loop: trip_form
  - user: |
      /inform{"city": "Rome"}
    intent: inform
  - action: trip_form
  - slot_was_set:
    - arrival_city: Rome
  - active_loop: null
  - bot: A trip from Paris to Rome.
"""

    results = await lookup_story_tests(project(tmp_path, "trip_form", tests))
    assert [f for s in results.stories for f in s.failures] == []
    assert results.action_targets == ["trip_form", "action_listen", "trip_form", "A trip from Paris to Rome.",
                                      "action_listen"]


async def test_an_undeclared_entity_in_a_mapping_or_a_story_is_skipped_as_rasa_skips_it(tmp_path: Path) -> None:
    # A public crisis-response project maps three bool slots from entities its NLU data annotates but its
    # domain does not declare, and its stories annotate one of them. Rasa trains and serves it: the mapping
    # is skipped with a warning (SlotMapping.check_mapping_validity, "Skipping slot extraction because of
    # invalid mapping") and an undeclared entity is no feature of the dialogue state (the intents' used
    # entities are the domain's: Domain._get_featurized_entities). check refused the project with five
    # errors, so train did too.
    bot_dir = _copy(tmp_path, "undeclared_entity")
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    assert _mentioning(report.warnings, "fire_under_control") == [
        *(f"{bot_dir / 'data' / 'nlu.yml'}:{line}: entity 'fire_under_control' is annotated but not declared in the "
          f"domain's entities: it is extracted, but no slot mapping or story can use it" for line in (13, 14)),
        f"{bot_dir / 'domain.yml'}:21: slot 'fire_controlled': the from_entity mapping uses entity "
        f"'fire_under_control', which is not declared in the domain's entities: the mapping never fills the slot "
        f"(Rasa skips it as invalid)",
        f"{bot_dir / 'data' / 'stories.yml'}:9: entity 'fire_under_control' (in story 'a fire, then how it is "
        f"going') is not declared in the domain's entities: it is left out of the dialogue state, as Rasa leaves "
        f"it out",
    ]
    _, dialogue = load_bot_folder(bot_dir)
    tracker = Tracker(dialogue.domain)
    tracker.user("fire_status", ["fire_under_control", "disaster"])
    assert sorted(f for f in tracker.frame() if f.startswith("entity:")) == ["entity:disaster"]
    (tmp_path / "served").mkdir()
    async with lookup_runtime(tmp_path / "served", "undeclared_entity") as runtime:
        bot = "undeclared_entity"
        assert await say(runtime, "there is a fire", bot=bot) == ["Where is the fire?"]
        # the NLU extracts fire_under_control; its mapping is skipped, so the slot stays unset
        assert await say(runtime, "it is under control", bot=bot) == ["Tell me more."]


def test_two_classes_of_one_action_name_the_one_rasa_sdk_registers_last_runs(tmp_path: Path) -> None:
    # A public project (michaeltadzoka-mcmikey/harare-city-ai-platform) defines `action_submit_report` twice:
    # in actions/forms/report_issue_form.py, which actions/__init__.py imports, and in actions/actions.py.
    # rasa-sdk registers every Action subclass in the order Python created them (`_register_all_actions`,
    # `utils.all_subclasses`), so the second definition, actions/actions.py's, is re-registered over the first
    # and runs. Switchboard registered them sorted by class and module name, and ran the other one.
    bot_dir = _copy(tmp_path, "project_modules")
    (bot_dir / "actions" / "early.py").write_text(
        "from rasa_sdk import Action\n\n\nclass ActionGreet(Action):\n    def name(self):\n"
        "        return \"action_greet\"\n\n    def run(self, dispatcher, tracker, domain):\n"
        "        dispatcher.utter_message(text=\"the first definition\")\n        return []\n")
    (bot_dir / "actions" / "__init__.py").write_text("from actions.early import *  # noqa: F403\n")
    spec, dialogue = load_bot_folder(bot_dir)
    runner = load_actions(spec, dialogue)
    assert isinstance(runner, InProcessActions)
    run = runner.executor.actions["action_greet"]
    assert Path(run.__code__.co_filename) == bot_dir / "actions" / "actions.py"  # without the fix: early.py


def test_a_project_without_nlu_examples_is_refused_naming_the_training_files_outside_data(tmp_path: Path) -> None:
    # A public project (Kaushik-Puttaswamy/flight-booking-chatbot) keeps nlu.yml, stories.yml and rules.yml
    # beside domain.yml, not under data/. Rasa reads data/ (`rasa train --data` defaults to it), finds nothing and
    # refuses: "No training data given" (model_training.train). Switchboard's check passed with warnings only and
    # `switchboard train` crashed in the intent classifier ("Found array with 0 sample(s)").
    bot_dir = _copy(tmp_path, "moodbot")
    for name in ("nlu.yml", "stories.yml", "rules.yml"):
        if (bot_dir / "data" / name).exists():
            (bot_dir / "data" / name).rename(bot_dir / name)
    errors = check_bot_folder(bot_dir).errors
    assert len(errors) == 1 and errors[0].startswith(f"{bot_dir / 'data'}: no training data: ")
    assert "nlu.yml" in errors[0] and "stories.yml" in errors[0] and "outside data/" in errors[0]
    with pytest.raises(ConfigError):
        load_bot_folder(bot_dir)
    # stories under data/ but no NLU example: Rasa would train its dialogue model alone; refused here, said so
    (bot_dir / "stories.yml").rename(bot_dir / "data" / "stories.yml")
    errors = check_bot_folder(bot_dir).errors
    assert len(errors) == 1 and "no NLU example: Rasa would train its dialogue model alone" in errors[0]
    assert "nlu.yml" in errors[0] and "stories.yml" not in errors[0]


def _two_intents(tmp_path: Path, pipeline_tail: str) -> Path:
    bot_dir = project(tmp_path, "fallback_override")
    (bot_dir / "domain.yml").write_text((bot_dir / "domain.yml").read_text().replace(
        "  - greet\n", "  - greet\n  - goodbye\n") + "  utter_goodbye:\n    - text: \"Bye!\"\n")
    with (bot_dir / "data" / "nlu.yml").open("a") as f:
        f.write("  - intent: goodbye\n    examples: |\n      - bye\n      - see you\n")
    with (bot_dir / "data" / "rules.yml").open("a") as f:
        f.write("\n  - rule: goodbye\n    steps:\n      - intent: goodbye\n      - action: utter_goodbye\n")
    config = bot_dir / "config.yml"
    config.write_text(config.read_text().replace("    threshold: 0.5\n", pipeline_tail))
    return bot_dir


class _TornModel(LookupModel):
    """Reads every text as greet at 0.52, goodbye second at 0.44 (0.08 apart), or 0.30 with 'clearly'."""

    def _one(self, text: str) -> Understanding:
        second = 0.30 if "clearly" in text else 0.44
        return Understanding("greet", 0.52, (IntentScore("greet", 0.52), IntentScore("goodbye", second)))


@pytest.mark.parametrize(("tail", "ambiguity"), [("    threshold: 0.5\n", 0.1),   # Rasa's default
                                                 ("    threshold: 0.5\n    ambiguity_threshold: 0.05\n", 0.05)])
async def test_two_intents_closer_than_the_ambiguity_threshold_are_not_understood(
        tmp_path: Path, tail: str, ambiguity: float) -> None:
    # The quotes project (Arpit955-ux/CHATBOT) sets FallbackClassifier's ambiguity_threshold: 0.1, which
    # Switchboard noted as not supported and ignored, as it ignored Rasa's default 0.1 in every pipeline with a
    # FallbackClassifier: a message torn between two intents got the first one's answer. Rasa's
    # FallbackClassifier._nlu_prediction_ambiguous reads it as nlu_fallback when the two best confidences differ
    # by less than ambiguity_threshold.
    bot_dir = _two_intents(tmp_path, tail)
    assert "ambiguity_threshold" not in "\n".join(check_bot_folder(bot_dir).notes)
    _, dialogue = load_bot_folder(bot_dir)
    assert dialogue.domain.nlu_ambiguity_threshold == ambiguity

    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return _TornModel(spec, {})

    store = SQLiteStore(tmp_path / "store.db")
    await store.start()
    runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0), store, model_loader=loader)
    try:
        await runtime.load_bot(bot_dir)
        torn = await say(runtime, "hello bye", bot="fallback_override")
        clear = await say(runtime, "clearly hello", bot="fallback_override")
    finally:
        await runtime.aclose()
    # 0.08 apart: the project's own fallback under Rasa's 0.1, greet under 0.05; 0.22 apart: greet either way
    assert torn == (["Sorry, I did not get that (1)."] if ambiguity > 0.08 else ["Hello!"])
    assert clear == ["Hello!"]


def test_a_pipeline_without_fallback_classifier_never_reads_an_ambiguous_message_as_not_understood() -> None:
    _, dialogue = load_bot_folder(RASA / "retrieval")  # its pipeline has no FallbackClassifier
    assert dialogue.domain.nlu_ambiguity_threshold == 0.0
    # no pipeline at all: Rasa's default one, whose FallbackClassifier has ambiguity_threshold 0.1
    assert load_bot_folder(RASA / "moodbot")[1].domain.nlu_ambiguity_threshold == 0.1
    tracker = Tracker.replay(dialogue.domain, [Event(NLU, {
        "intent": "greet", "confidence": 0.5, "ranking": [{"name": "greet", "confidence": 0.5},
                                                          {"name": "goodbye", "confidence": 0.49}]}, 0)])
    assert tracker.intent == "greet"
    torn = Tracker.replay(replace(dialogue.domain, nlu_ambiguity_threshold=0.1), [Event(NLU, {
        "intent": "greet", "confidence": 0.5, "ranking": [{"name": "greet", "confidence": 0.5},
                                                          {"name": "goodbye", "confidence": 0.49}]}, 0)])
    assert torn.intent == "nlu_fallback"


async def test_an_intent_the_domain_does_not_list_is_a_warning_and_served_as_rasa_serves_it(tmp_path: Path) -> None:
    # Two public projects (Crowd-Computing-Oulu/drs: NLU examples of want_cookie and meaning_of_life and a story
    # of favourite_colour, none in the domain; ManojGTReddy/chatbot: NLU examples of deny) were refused by
    # check, so by train. Rasa trains them with warnings: the story reader warns "Found intent ... in stories
    # which is not part of the domain" and keeps the step, DIET learns every intent of the NLU data, and a
    # parsed intent the domain lacks is warned about (MessageProcessor._check_for_unseen_features) and kept in
    # the dialogue state by its name (Domain._get_user_sub_state), so a story with it is followed.
    bot_dir = _copy(tmp_path, "undeclared_intent")
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    assert _mentioning(report.warnings, "want_cookie") == [
        f"{bot_dir / 'data' / 'nlu.yml'}:13: intent 'want_cookie' has NLU examples but is not in the domain's "
        f"intents: the NLU is trained on it and may predict it, as Rasa's is (Rasa warns \"Parsed an intent which "
        f"is not defined in the domain\"); add it to the domain",
        f"{bot_dir / 'data' / 'stories.yml'}:7: intent 'want_cookie' (in story 'a cookie after the greeting') is "
        f"not declared in the domain's intents: the story is trained as it is, as Rasa trains it (with the warning "
        f"\"Found intent in stories which is not part of the domain\")",
    ]
    (tmp_path / "served").mkdir()
    async with lookup_runtime(tmp_path / "served", "undeclared_intent") as runtime:
        bot = "undeclared_intent"
        assert await say(runtime, "hello", bot=bot) == ["Hello!"]
        assert await say(runtime, "do you want a cookie?", bot=bot) == ["No, thank you."]
        assert await say(runtime, "bye", bot=bot) == ["Bye!"]


@pytest.mark.parametrize("replay", [False, True])
async def test_a_test_story_setting_a_slot_the_domain_lacks_is_run_without_it(
        tmp_path: Path, replay: bool, caplog: pytest.LogCaptureFixture) -> None:
    # A public project's test story (Crowd-Computing-Oulu/drs) indents an action under its slot_was_set, so
    # 'action' reads as a slot the domain does not have. Rasa runs the story: its tracker ignores a slot it
    # does not have (DialogueStateTracker._set_slot logs "Tried to set non existent slot") and rasa test
    # applies slot events without comparing them. switchboard test refused the whole run at that line.
    tests = """version: "3.1"
stories:
  - story: a greeting, then a good mood
    steps:
      - user: |
          hello
        intent: greet
      - action: utter_greet
      - slot_was_set:
          - action: utter_happy
      - user: |
          amazing
        intent: mood_great
      - action: utter_happy
"""
    bot_dir = project(tmp_path, "moodbot", tests)
    results = await lookup_story_tests(bot_dir, replay=replay)
    assert [f for s in results.stories for f in s.failures] == []
    assert results.conversation_accuracy == 1.0
    assert f"{bot_dir / 'tests' / 'test_stories.yml'}:9: test story 'a greeting, then a good mood': slot 'action' " \
           f"is not in the domain: this slot_was_set sets and expects nothing (Rasa's tracker ignores a slot it " \
           f"does not have)" in [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("replay", [False, True])
async def test_a_test_story_expecting_an_action_the_domain_lacks_is_tested_and_that_step_fails(
        tmp_path: Path, replay: bool, caplog: pytest.LogCaptureFixture) -> None:
    # A public project's test stories (Droze-svj/MOTTO-VISON) expect utter_ask_help, utter_reminder_set, ...,
    # which its domain does not have. rasa test reads a story's action steps without checking them against the
    # domain and evaluates the story: such a step is a wrong prediction (no policy can predict it). switchboard
    # test refused the whole run at that line.
    tests = """version: "3.1"
stories:
  - story: a greeting answered with a response the domain lacks
    steps:
      - user: |
          hello
        intent: greet
      - action: utter_not_in_the_domain
  - story: a good mood
    steps:
      - user: |
          amazing
        intent: mood_great
      - action: utter_happy
"""
    bot_dir = project(tmp_path, "moodbot", tests)
    results = await lookup_story_tests(bot_dir, replay=replay)
    failures = [f for s in results.stories for f in s.failures]
    assert len(failures) == 1 and "'utter_not_in_the_domain' expected" in failures[0]
    assert results.conversation_accuracy == 0.5
    assert f"{bot_dir / 'tests' / 'test_stories.yml'}:8: test story 'a greeting answered with a response the " \
           f"domain lacks': action 'utter_not_in_the_domain' is not in the domain: this step can never pass (rasa " \
           f"test runs the story too and counts the step wrong)" in [r.getMessage() for r in caplog.records]


def test_a_top_level_domain_key_rasa_does_not_read_is_a_note_not_a_refusal(tmp_path: Path) -> None:
    # A public project (DelGaudioNunzioSE/Pepper_in_a_Mall) writes its synonyms under 'synonyms:' in domain.yml.
    # Rasa's domain schema takes any top-level key (allowempty) and Domain.from_dict reads only its own, so Rasa
    # trains the project (without those synonyms); check refused it ("domain: unknown key 'synonyms'").
    bot_dir = _copy(tmp_path, "moodbot")
    domain = bot_dir / "domain.yml"
    domain.write_text(domain.read_text() + "\nsynonyms:\n  happy:\n    - glad\n")
    line = domain.read_text().splitlines().index("synonyms:") + 1
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    assert _mentioning(report.notes, "'synonyms'") == [
        f"{domain}:{line}: domain: 'synonyms' is not a domain key (version, intents, entities, slots, responses, "
        f"forms, actions, session_config): not read, as Rasa does not read it; Rasa reads synonyms from the NLU "
        f"data ('- synonym: NAME' items under 'nlu:' in data/)"]
    spec, _ = load_bot_folder(bot_dir)
    assert "glad" not in spec.synonyms


_ACTIONS_READING_THE_PROJECTS_FILES = '''import asyncio
import json

from rasa_sdk import Action


class ActionGiveHint(Action):
    def name(self):
        return "action_give_hint"

    def run(self, dispatcher, tracker, domain):
        with open("./files/hints.json", encoding="utf-8") as file:
            dispatcher.utter_message(text=json.load(file)["hint"])
        return []


class ActionNeverWritten(Action):
    def name(self):
        return "action_never_written"

    async def run(self, dispatcher, tracker, domain):
        await asyncio.sleep(0.01)  # another coroutine runs meanwhile; this one resumes in its folder
        with open("files/hints.json", encoding="utf-8") as file:
            dispatcher.utter_message(text=json.load(file)["later"])
        return []
'''


async def test_actions_run_in_the_project_folder_as_rasa_s_action_server_does(tmp_path: Path) -> None:
    # A public project's actions (DelGaudioNunzioSE/Pepper_in_a_Mall) read open('./files/results.txt'): Rasa's
    # action server runs in the project folder (`rasa run actions` there, which imports the package from it).
    # Run in Switchboard's process, every such action raised FileNotFoundError wherever switchboard was started.
    bot_dir = project(tmp_path, "declared_actions")
    (bot_dir / "actions.py").write_text(_ACTIONS_READING_THE_PROJECTS_FILES, encoding="utf-8")
    (bot_dir / "files").mkdir()
    (bot_dir / "files" / "hints.json").write_text('{"hint": "Behind the clock.", "later": "Under the rug."}')
    spec, dialogue = load_bot_folder(bot_dir)
    runner = load_actions(spec, dialogue)
    assert isinstance(runner, InProcessActions)
    here = Path.cwd()
    assert here != bot_dir.resolve()
    seen: list[Path] = []

    async def meanwhile() -> None:  # the event loop's other coroutines keep the process's working directory
        await asyncio.sleep(0.005)
        seen.append(Path.cwd())

    tracker = {"sender_id": "c1", "slots": {}, "latest_message": {"text": "hint", "intent": {"name": "hint"}},
               "events": [], "paused": False, "followup_action": None, "active_loop": {},
               "latest_action_name": "action_listen"}
    hint = await runner.run("action_give_hint", tracker)
    later, _ = await asyncio.gather(runner.run("action_never_written", tracker), meanwhile())
    assert [m.get("text") for m in hint.responses] == ["Behind the clock."]  # without the fix: FileNotFoundError
    assert [m.get("text") for m in later.responses] == ["Under the rug."]
    assert seen == [here]
    assert Path.cwd() == here


async def test_a_slot_value_rasa_cannot_featurise_leaves_the_slot_out_of_the_state(tmp_path: Path) -> None:
    # Round 14 (Ymir-badam/Eco-travel-assignment): its float slot distance_km is filled from the text of every
    # message outside the form (from_text, `active_loop: null`). Rasa's FloatSlot cannot featurise "hello"
    # (`_as_feature` gives [0.0, 0.0]) and Domain._get_slots_sub_state leaves a slot whose features are all zero
    # out of the state, so the policies see it unset and the stories' memoisation applies. Switchboard made it a
    # "set" feature: no story had it, memoisation missed, and the bot said its fallback.
    bot = "float_text_slot"
    async with lookup_runtime(tmp_path, bot) as runtime:
        assert await say(runtime, "hello", bot=bot) == ["Hi! Where are you travelling?"]
        assert await say(runtime, "what's the greenest way to go", bot=bot) == [
            "The train is the greenest way to go."]
    _, dialogue = load_bot_folder(RASA / bot)
    distance = dialogue.domain.slots["distance_km"]
    assert slot_feature(distance, "hello") is None
    assert slot_feature(distance, "600") == slot_feature(distance, 600.0) == "slot:distance_km:0.3"
    # a bool slot as Rasa's bool_from_any reads it: "yes" is true, 2 is not 1, "maybe" is no value at all
    flag = replace(distance, name="flag", type="bool")
    assert [slot_feature(flag, v) for v in ("yes", "No", "1", 2, True, "maybe", [1])] == [
        "slot:flag:True", "slot:flag:False", "slot:flag:True", "slot:flag:False", "slot:flag:True", None, None]


def test_a_rasa_1_markdown_file_named_yml_is_refused_saying_it_is_markdown(tmp_path: Path) -> None:
    # Round 14 (raksansuseendran/Chatbot): its data/nlu.yml is `## intent:greet` sections and its
    # tests/test_stories.yml `## happy path` stories with `* greet` lines, Rasa 1's Markdown under a .yml name.
    # Rasa 3's YAML reader refuses both (YamlSyntaxException), as Switchboard does; the error only said
    # "expected <block end>, but found '-'", which does not tell a Rasa user what is wrong with the file.
    bot = _copy(tmp_path, "moodbot")
    (bot / "data" / "nlu.yml").write_text('version: "3.1"\n\n## intent:greet\n- hi\n- hello\n', encoding="utf-8")
    (bot / "tests" / "test_stories.yml").write_text("## happy path\n* greet\n  - utter_greet\n", encoding="utf-8")
    [error] = [e for e in check_bot_folder(bot).errors if "nlu.yml" in e]
    assert error.startswith(f"{bot / 'data' / 'nlu.yml'}:4: invalid YAML: ") and "Rasa 1's Markdown format" in error
    with pytest.raises(ConfigError) as raised:
        read_test_stories([bot / "tests" / "test_stories.yml"])
    assert ":2: invalid YAML: " in str(raised.value) and "Rasa 1's Markdown format" in str(raised.value)
    # a YAML mistake in a file that is no Markdown gets no such hint
    broken = 'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n  - hi\n'
    (bot / "data" / "nlu.yml").write_text(broken, encoding="utf-8")
    assert not any("Markdown" in e for e in check_bot_folder(bot).errors)


async def test_a_response_fills_a_placeholder_of_any_slot_name_as_rasas_interpolator(tmp_path: Path) -> None:
    # Round 14 (v1lton/chatbot, read, not run): an ATIS flight bot whose slots are named after its entities,
    # `fromloc.city_name`, and whose response says "from {fromloc.city_name} to {toloc.city_name}". Rasa's
    # interpolator (rasa/core/nlg/interpolator.py, interpolate_text) takes any name without a newline or brace
    # between the braces ({0[fromloc.city_name]}) and fills it; Switchboard's placeholders were identifiers
    # only, so the customer read the braces and names.
    bot = "dotted_slots"
    async with lookup_runtime(tmp_path, bot) as runtime:
        assert await say(runtime, "how many flights from boston to dallas", bot=bot) == [
            "Flights from boston to dallas?"]
        # the form asks with utter_ask_<slot> for a dotted slot name too
        assert await say(runtime, "book a flight", bot=bot, conversation="c2") == [
            "Where is the origin of your flight?"]
        assert await say(runtime, "from denver", bot=bot, conversation="c2") == ["Where to, from denver?"]
        assert await say(runtime, "to atlanta", bot=bot, conversation="c2") == ["Booking denver to atlanta."]
    # a brace around other text stays as it is written, as in Rasa (its KeyError leaves the response unchanged)
    assert fill_template(["{a.b} per {unit.} or {x..y}"], {"a.b": "1"}) == "1 per {unit.} or {x..y}"


@pytest.mark.parametrize("replay", [False, True])
async def test_a_user_text_without_an_intent_fails_its_story_as_rasa_test_compares_it_with_none(
        tmp_path: Path, replay: bool) -> None:
    # Round 14 (motin/autonomous-engineer): its test stories give `user:` texts without `intent:` ("Hi",
    # "split pane", "/greet"). Rasa's reader gives such a step no intent (YAMLStoryReader._parse_user_utterance:
    # intent None) and `rasa test` (which sets e2e: rasa/cli/test.py) compares the NLU's intent with that none
    # (_collect_user_uttered_predictions), so the story fails there. Switchboard compared nothing and passed it.
    tests = """stories:
- story: no intent given
  steps:
  - user: |
      hello
  - action: utter_greet
- story: intent given
  steps:
  - user: |
      hello
    intent: greet
  - action: utter_greet
"""
    bot_dir = project(tmp_path, "float_text_slot", tests)
    results = await lookup_story_tests(bot_dir, replay=replay)
    assert [(s.name, s.passed) for s in results.stories] == [("no intent given", False), ("intent given", True)]
    assert results.stories[0].failures[0] == (
        f"{bot_dir / 'tests' / 'test_stories.yml'}:4: story 'no intent given': no intent given with the text: the NLU "
        "predicted 'greet', and rasa test compares it with none and fails the story (give the step its 'intent:')")
    assert (results.intent_targets, results.intent_predictions) == (["None", "greet"], ["greet", "greet"])
    # end to end the bot answers the NLU's intent; replayed, the history holds the story's (none) intent, as Rasa's
    # (WronglyClassifiedUserUtterance keeps the story's), and no rule applies to it
    assert results.action_accuracy == (0.75 if replay else 1.0)


def test_an_action_endpoint_key_rasa_keeps_and_never_uses_is_a_note_not_a_refusal(tmp_path: Path) -> None:
    # A public project (Akshata19/chatbots) gives its action endpoint 'cors: ["*"]' (a setting of the action
    # server, not of the endpoint). Rasa's EndpointConfig.from_dict takes any key (EndpointConfig(**data) keeps
    # the others in kwargs) and its call to the action server never reads them, so Rasa trains and serves the
    # project; check refused it ("'action_endpoint': unknown key 'cors' (known: url, timeout)").
    bot_dir = _copy(tmp_path, "moodbot")
    endpoints = bot_dir / "endpoints.yml"
    endpoints.write_text('action_endpoint:\n  url: "http://localhost:5055/webhook"\n  cors:\n    - "*"\n'
                         "  params:\n    key: value\n")
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    assert _mentioning(report.notes, "'cors'") == [
        f"{endpoints}:3: 'action_endpoint': 'cors' is not a setting of it: not read (Rasa's EndpointConfig keeps "
        f"any other key and its action server call never uses it)"]
    assert _mentioning(report.notes, "'params'") == [
        f"{endpoints}:5: not supported: 'action_endpoint': 'params' (query parameters to the action server)"]
    _, dialogue = load_bot_folder(bot_dir)
    assert dialogue.action_endpoint is not None
    assert dialogue.action_endpoint.url == "http://localhost:5055/webhook"


_ACTIONS_READING_A_FILE_AT_IMPORT = '''import json

from rasa_sdk import Action

with open("files/hints.json", encoding="utf-8") as file:
    HINTS = json.load(file)


class ActionGiveHint(Action):
    def name(self):
        return "action_give_hint"

    def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text=HINTS["hint"])
        return []
'''


async def test_actions_are_imported_in_the_project_folder_as_rasa_s_action_server_imports_them(
        tmp_path: Path) -> None:
    # A public project's actions module (Mansukh-Singh/Basic-Teacher-Recommender-Chatbot-Rasa-Project) reads
    # open("teacher.json") when it is imported: `rasa run actions` imports the package in the project folder it
    # runs in. Switchboard ran the actions there but imported them wherever it was started, so check refused the
    # project ("importing the actions module failed: FileNotFoundError") and serve could not load it.
    bot_dir = project(tmp_path, "declared_actions")
    (bot_dir / "actions.py").write_text(_ACTIONS_READING_A_FILE_AT_IMPORT, encoding="utf-8")
    (bot_dir / "files").mkdir()
    (bot_dir / "files" / "hints.json").write_text('{"hint": "Behind the clock."}')
    here = Path.cwd()
    assert here != bot_dir.resolve()
    report = check_bot_folder(bot_dir)
    assert _mentioning(report.errors, "actions.py") == []  # without the fix: FileNotFoundError at actions.py:5
    spec, dialogue = load_bot_folder(bot_dir)
    runner = load_actions(spec, dialogue)
    assert isinstance(runner, InProcessActions)
    assert Path.cwd() == here
    tracker = {"sender_id": "c1", "slots": {}, "latest_message": {"text": "hint", "intent": {"name": "hint"}},
               "events": [], "paused": False, "followup_action": None, "active_loop": {},
               "latest_action_name": "action_listen"}
    hint = await runner.run("action_give_hint", tracker)
    assert [m.get("text") for m in hint.responses] == ["Behind the clock."]
