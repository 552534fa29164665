"""``switchboard test``'s runner (connectors/story_test.py) on the Rasa fixture projects, with a fixed NLU.

The intent model here is a lookup of the project's own NLU examples (no training), so that each test
decides exactly what the NLU answers and checks what the runner makes of the bot's turns: the pairs it
scores, the checks of slot_was_set/active_loop, and the failed stories it writes back. The trained model
end to end is tests/training/test_story_cli.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from bots.botspec import BotSpec
from bots.dialogue.rasa_data import read_test_stories
from bots.errors import ArtifactError, ConfigError
from bots.settings import Settings
from bots.types import Entity
from connectors.story_test import NONE, StoryTestResults, annotated, run_story_tests, story_files
from tests.bots.lookup_model import LookupModel, project

# moodbot's test texts that are not among its examples
MOOD: dict[str, tuple[str, tuple[Entity, ...]]] = {
    "hello there!": ("greet", ()), "bye-bye!": ("goodbye", ()), "very terrible": ("mood_unhappy", ())}


async def run(bot_dir: Path, overrides: Mapping[str, tuple[str, tuple[Entity, ...]]] | None = None,
              paths: Sequence[Path] = ()) -> StoryTestResults:
    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, overrides or {})

    return await run_story_tests(bot_dir, paths, settings=Settings(nlu_max_wait_ms=0.0), model_loader=loader)


async def test_moodbot_stories_pass_and_every_bot_turn_ends_listening(tmp_path: Path) -> None:
    results = await run(project(tmp_path, "moodbot"), MOOD)
    assert [s.name for s in results.stories] == ["happy path 1", "happy path 2", "sad path 1", "sad path 2",
                                                "sad path 3", "say goodbye", "bot challenge"]
    assert all(s.passed for s in results.stories), [f for s in results.stories for f in s.failures]
    assert results.conversation_accuracy == 1.0 and results.action_accuracy == 1.0
    # happy path 1: two user turns, each answered by one action and the listen that ends the turn
    assert results.action_targets[:4] == ["utter_greet", "action_listen", "utter_happy", "action_listen"]
    assert results.action_targets == results.action_predictions
    assert results.intent_targets == results.intent_predictions and len(results.intent_targets) == 16
    assert len(results.turn_seconds) == 16
    assert results.failed_stories_yaml() == "# None of the test stories failed - all good!\n"


async def test_a_wrong_intent_fails_the_story_and_is_written_back_as_rasa_does(tmp_path: Path) -> None:
    results = await run(project(tmp_path, "moodbot"), {**MOOD, "not good": ("mood_great", ())})
    failed = {s.name for s in results.failed}
    assert failed == {"sad path 1", "sad path 2"}  # "very terrible" (sad path 3) is not the overridden text
    story = next(s for s in results.failed if s.name == "sad path 1")
    assert any("intent 'mood_unhappy' expected, the NLU predicted 'mood_great'" in f for f in story.failures)
    yaml = results.failed_stories_yaml()
    assert yaml.startswith('version: "3.1"\nstories:\n- story: "sad path 1 (')
    assert "    intent: mood_unhappy  # predicted: mood_great: not good\n" in yaml
    # The bot went the happy way: it said utter_happy where the story cheers up, and then listened.
    assert "  - action: utter_cheer_up  # predicted: utter_happy\n" in yaml
    assert "  - action: utter_did_that_help  # predicted: action_listen\n" in yaml
    assert ("utter_did_that_help", "action_listen") in zip(results.action_targets, results.action_predictions,
                                                            strict=True)
    assert results.conversation_accuracy == pytest.approx(5 / 7)
    # Rasa can read the failed stories back: the same steps, the comments being comments.
    written = tmp_path / "failed_test_stories.yml"
    written.write_text(yaml, encoding="utf-8")
    again = read_test_stories([written])
    assert [s.name for s in again] == [f"{s.name} ({s.source})" for s in results.failed]
    assert [(x.kind, x.name) for x in again[0].steps][:4] == [("intent", "greet"), ("action", "utter_greet"),
                                                              ("intent", "mood_unhappy"), ("action", "utter_cheer_up")]


async def test_an_extra_action_is_reported_where_the_bot_should_have_listened(tmp_path: Path) -> None:
    tests = """\
stories:
- story: greeting only
  steps:
  - user: |
      not good
    intent: mood_unhappy
  - action: utter_cheer_up
"""
    results = await run(project(tmp_path, "moodbot", tests))
    (story,) = results.failed
    assert list(zip(results.action_targets, results.action_predictions, strict=True)) == [
        ("utter_cheer_up", "utter_cheer_up"), ("action_listen", "utter_did_that_help")]
    assert story.yaml.endswith("  - action: utter_cheer_up\n  - action: action_listen  # predicted: "
                               "utter_did_that_help\n")


async def test_intent_steps_are_given_directly_and_missing_actions_pair_with_none(tmp_path: Path) -> None:
    tests = """\
stories:
- story: intents given
  steps:
  - intent: greet
  - action: utter_greet
  - action: utter_happy
"""
    results = await run(project(tmp_path, "moodbot", tests), {"/greet": ("goodbye", ())})
    # "/greet" is a payload: the NLU (which would say goodbye here) is not asked
    assert list(zip(results.action_targets, results.action_predictions, strict=True)) == [
        ("utter_greet", "utter_greet"), ("utter_happy", "action_listen"), ("action_listen", NONE)]
    assert results.intent_targets == []


FORM_STORIES = """\
stories:
- story: book a table
  steps:
  - user: |
      I'd like to book a table
    intent: request_restaurant
  - action: restaurant_form
  - active_loop: restaurant_form
  - slot_was_set:
    - requested_slot: cuisine
  - user: |
      [italian](cuisine) food
    intent: inform
  - action: restaurant_form
  - slot_was_set:
    - cuisine: italian
  - slot_was_set:
    - requested_slot: num_people
  - user: |
      [5](number) people
    intent: inform
  - action: restaurant_form
  - slot_was_set:
    - num_people: 5
    - requested_slot: outdoor_seating
  - user: |
      yes
    intent: affirm
  - action: restaurant_form
  - slot_was_set:
    - outdoor_seating: true
  - user: |
      a quiet corner
    intent: inform
  - action: restaurant_form
  - slot_was_set:
    - preferences
    - requested_slot: feedback
  - user: |
      the food was [great](feedback)
    intent: inform
  - action: restaurant_form
  - active_loop: null
  - slot_was_set:
    - requested_slot: null
  - action: utter_submit
  - action: utter_slots_values
"""


async def test_a_form_with_its_validation_action_in_process(tmp_path: Path) -> None:
    results = await run(project(tmp_path, "forms", FORM_STORIES), {"a quiet corner": ("inform", ())})
    assert [f for s in results.stories for f in s.failures] == []
    assert results.action_targets.count("restaurant_form") == 6


async def test_slot_and_loop_checks_fail_with_what_the_bot_has(tmp_path: Path) -> None:
    wrong = FORM_STORIES.replace("    - cuisine: italian", "    - cuisine: chinese").replace(
        "  - active_loop: null", "  - active_loop: restaurant_form")
    results = await run(project(tmp_path, "forms", wrong), {"a quiet corner": ("inform", ())})
    (story,) = results.failed
    assert len(story.failures) == 2
    assert "slot 'cuisine' = 'chinese' expected, the bot has 'italian'" in story.failures[0]
    assert "active_loop 'restaurant_form' expected, the bot has None" in story.failures[1]
    assert '    - cuisine: "chinese"  # predicted: cuisine: "italian"\n' in story.yaml
    assert "  - active_loop: restaurant_form  # predicted: active_loop: null\n" in story.yaml
    assert results.action_accuracy == 1.0  # the actions were right; the story still failed


async def test_wrong_entities_fail_the_user_turn(tmp_path: Path) -> None:
    results = await run(project(tmp_path, "forms", FORM_STORIES), {
        "a quiet corner": ("inform", ()),
        "the food was great": ("inform", (Entity("cuisine", "food", 4, 8),))})
    (story,) = results.failed
    assert any("entities feedback='great' expected, the NLU found cuisine='food'" in f for f in story.failures)
    assert "    intent: inform  # predicted: inform: the [food](cuisine) was great\n" in story.yaml


def test_annotations_are_written_as_rasa_writes_them() -> None:
    assert annotated("fly from Paris to Rome", [("city", "Rome", 18, 22), ("city", "Paris", 9, 14)]) == \
        "fly from [Paris](city) to [Rome](city)"
    assert annotated("italiano please", [("cuisine", "italian", 0, 8)]) == \
        '[italiano]{"entity": "cuisine", "value": "italian"} please'
    assert annotated("no entities", [("x", "y", None, None)]) == "no entities"
    # roles and groups are written as Rasa's TrainingDataWriter.generate_entity writes them (a public project,
    # Crowd-Computing-Oulu/drs, annotates [red triangle]{"entity": "landmark", "role": "destination"}: its
    # failed stories lost the role, "[red triangle](landmark)")
    assert annotated("to the red triangle", [("landmark", "red triangle", 7, 19, "destination", None)]) == \
        'to the [red triangle]{"entity": "landmark", "role": "destination"}'
    assert annotated("2 pizzas", [("size", "large", 2, 8, None, "1")]) == \
        '2 [pizzas]{"entity": "size", "group": "1", "value": "large"}'


async def test_bad_test_stories_name_the_file_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tests = """\
stories:
- story: unknown things
  steps:
  - intent: greet
  - action: utter_hello
  - intent: order_pizza
  - active_loop: pizza_form
"""
    with pytest.raises(ConfigError) as raised:   # a loop that is no form: Rasa's policies would predict it
        await run(project(tmp_path, "moodbot", tests))
    assert [p.split("test_stories.yml:", 1)[1] for p in raised.value.problems] == [
        "7: test story 'unknown things': active_loop 'pizza_form' is not a form of the domain"]
    # an action or intent the bot lacks is warned about at its line (the story is run: rasa test runs it too)
    assert any(m.endswith("test_stories.yml:5: test story 'unknown things': action 'utter_hello' is not in the "
                          "domain: this step can never pass (rasa test runs the story too and counts the step "
                          "wrong)") for m in caplog.messages), caplog.messages
    assert any("test_stories.yml:6:" in m and "intent 'order_pizza'" in m for m in caplog.messages)
    with pytest.raises(ConfigError) as raised:
        (tmp_path / "broken.yml").write_text("stories:\n- story: x\n  steps:\n  - dance: now\n", encoding="utf-8")
        await run(project(tmp_path, "forms"), paths=[tmp_path / "broken.yml"])
    assert any("broken.yml:4:" in p for p in raised.value.problems), raised.value.problems


def test_test_files_default_to_tests_test_star_and_missing_ones_are_refused(tmp_path: Path) -> None:
    bot_dir = project(tmp_path, "moodbot")
    assert story_files(bot_dir) == [bot_dir / "tests" / "test_stories.yml"]
    assert story_files(bot_dir, [bot_dir / "tests"]) == [bot_dir / "tests" / "test_stories.yml"]
    with pytest.raises(ConfigError, match="no such file or folder"):
        story_files(bot_dir, [bot_dir / "nope.yml"])
    shutil.rmtree(bot_dir / "tests")
    with pytest.raises(ConfigError, match=r"no test stories \(tests/test_\*\.yml"):
        story_files(bot_dir)


async def test_a_bot_without_a_model_is_refused(tmp_path: Path) -> None:
    bot_dir = project(tmp_path, "moodbot")
    shutil.rmtree(bot_dir / "models")
    with pytest.raises(ArtifactError):
        await run_story_tests(bot_dir, settings=Settings())


async def test_a_test_file_without_stories_is_noted_and_a_run_of_nothing_refused(tmp_path: Path) -> None:
    # A public weather bot writes its tests under 'test_stories:', a key Rasa does not read: the file was read
    # as nothing and `switchboard test` said "stories: 0/0 passed", exit 0.
    tests = 'version: "3.1"\n\ntest_stories:\n  - story: greet\n    steps:\n      - intent: greet\n' \
            '      - action: utter_greet\n'
    bot_dir = project(tmp_path, "moodbot", tests)
    notes: list[str] = []
    assert read_test_stories([bot_dir / "tests" / "test_stories.yml"], notes) == ()
    assert notes == [f"{bot_dir / 'tests' / 'test_stories.yml'}:1: no 'stories' or 'rules' here (top-level keys: "
                     "'version', 'test_stories'): not test stories, not read (Rasa reads test stories under "
                     "'stories:')"]
    with pytest.raises(ConfigError, match=r"no test stories in .*test_stories\.yml \(a test story file has "
                                          r"'stories:' or 'rules:'"):
        await run(bot_dir)


async def test_rules_in_a_test_file_are_noted_as_not_tested_and_rules_alone_are_no_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A public project keeps tests/test_rules.yml beside its test stories. `rasa test` leaves rules out
    # (generate_story_trackers), and so does switchboard test, silently; a file of rules alone passed
    # with nothing tested. Now each such file is noted, and rules alone are refused as no test stories.
    rules = ('version: "3.1"\nrules:\n- rule: greet\n  steps:\n  - user: |\n      hello\n    intent: greet\n'
             '  - action: utter_greet\n')
    bot_dir = project(tmp_path, "moodbot")
    (bot_dir / "tests" / "test_rules.yml").write_text(rules)
    results = await run(bot_dir)
    assert results.stories and "greet" not in [s.name for s in results.stories]  # the stories ran, not the rule
    assert f"{bot_dir / 'tests' / 'test_rules.yml'}:3: 1 rule(s) in this file are not tested: test stories are " \
           "the 'stories:' (rasa test leaves rules out too)" in caplog.messages
    with pytest.raises(ConfigError, match=r"no test stories in .*test_rules\.yml .*only its stories are tested"):
        await run(bot_dir, paths=[bot_dir / "tests" / "test_rules.yml"])


async def test_a_story_naming_an_intent_or_action_the_bot_lacks_is_run_and_fails_there(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Round 12 (ZetaReticuli844/Dl-Creator-YS): test stories naming intents and actions the domain lacks
    # (`provide_license_number`, `utter_ask_license_number`, `action_validate_license`) refused the whole
    # `switchboard test` run, the 7 stories that name none untested. Rasa runs them: its story reader warns
    # ("Found intent ... in stories which is not part of the domain"), `rasa test` warns of a bot utterance
    # "which is not part of the training data / domain", compares the names and counts the steps wrong.
    tests = """\
stories:
- story: asks what the bot never asks
  steps:
  - user: |
      hello there!
    intent: greet
  - action: utter_ask_license_number
  - user: |
      ABC123456
    intent: provide_license_number
  - action: action_validate_license
- story: bot challenge
  steps:
  - user: |
      are you a bot?
    intent: bot_challenge
  - action: utter_iamabot
"""
    bot_dir = project(tmp_path, "moodbot", tests)
    source = bot_dir / "tests" / "test_stories.yml"
    never = "this step can never pass (rasa test runs the story too and counts the step wrong)"

    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, {**MOOD, "ABC123456": ("deny", ())})

    for replay in (False, True):
        caplog.clear()
        results = await run_story_tests(bot_dir, settings=Settings(nlu_max_wait_ms=0.0), model_loader=loader,
                                        replay=replay)
        notes = [m for m in caplog.messages if never in m]
        assert notes == [
            f"{source}:7: test story 'asks what the bot never asks': action 'utter_ask_license_number' is not in "
            f"the domain: {never}",
            f"{source}:8: test story 'asks what the bot never asks': intent 'provide_license_number' is not one "
            f"of the bot's intents: {never}",
            f"{source}:11: test story 'asks what the bot never asks': action 'action_validate_license' is not in "
            f"the domain: {never}"], replay
        assert [(s.name, s.passed) for s in results.stories] == [
            ("asks what the bot never asks", False), ("bot challenge", True)], replay
        pairs = list(zip(results.action_targets, results.action_predictions, strict=True))
        assert pairs[0] == ("utter_ask_license_number", "utter_greet"), replay
        assert ("action_validate_license", "action_validate_license") not in pairs
        assert ("provide_license_number", "deny") in zip(results.intent_targets, results.intent_predictions,
                                                         strict=True)
        assert pairs[-2:] == [("utter_iamabot", "utter_iamabot"), ("action_listen", "action_listen")], replay


async def test_a_story_may_expect_rasas_default_intent_nlu_fallback(tmp_path: Path) -> None:
    # Rasa's domain always holds its default intents (nlu_fallback, out_of_scope, ...): a test story may expect a
    # text not understood to be nlu_fallback (public projects' test stories do). Switchboard refused such a file:
    # "intent 'nlu_fallback' is not one of the bot's intents".
    tests = """\
stories:
- story: not understood, twice
  steps:
  - user: |
      blorp quux
    intent: nlu_fallback
  - action: action_default_fallback
  - user: |
      hello
    intent: greet
  - action: utter_greet
"""
    results = await run(project(tmp_path, "fallback_override", tests))   # an unknown text: confidence 0.1 < 0.5
    assert [f for s in results.stories for f in s.failures] == []
    assert results.intent_predictions == ["nlu_fallback", "greet"]
    # given without a text it is sent as the payload '/nlu_fallback' (a default intent: every bot reads it)
    alone = "stories:\n- story: x\n  steps:\n  - intent: nlu_fallback\n  - action: action_default_fallback\n"
    sent = await run(project(tmp_path / "alone", "fallback_override", alone))
    assert [f for s in sent.stories for f in s.failures] == [] and len(sent.stories) == 1
    assert sent.action_targets == ["action_default_fallback", "action_listen"]
    # a name that is neither the bot's intent nor a default one is warned about and the story is run, as `rasa
    # test` runs it (test_a_story_naming_an_intent_or_action_the_bot_lacks_is_run_and_fails_there); sent as
    # the payload '/nlu_fallbak', which names no intent of the bot, it is read as a text not understood
    other = await run(project(tmp_path / "other", "fallback_override", alone.replace("nlu_fallback", "nlu_fallbak")))
    assert len(other.stories) == 1 and other.action_targets == ["action_default_fallback", "action_listen"]
    # replayed, as rasa test evaluates it, the story's intent is given directly: the rule answers it
    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, {})

    replayed = await run_story_tests(project(tmp_path / "replayed", "fallback_override", alone),
                                     settings=Settings(nlu_max_wait_ms=0.0), model_loader=loader, replay=True)
    assert [f for s in replayed.stories for f in s.failures] == []
    assert replayed.action_targets == ["action_default_fallback", "action_listen"]
