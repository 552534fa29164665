"""Rasa 3.x semantics found missing by running real public Rasa projects (bench/RESULTS.md, "Public Rasa
projects"), each on the ``parcel`` fixture (tests/data/rasa/parcel, a small form project of our own):

* ``config.yml`` may carry keys Rasa does not read (its schema takes any key): noted, not refused.
* A test story's ``user:`` step takes its entities from the text's annotations; an ``entities:`` list beside
  it is not read (Rasa's reader ignores it): noted, not refused.
* A general rule (one that does not state the active loop) that waits for the user inside a form gives the
  turn back to the form (Rasa's RulePolicy: "rules might not explicitly switch back to the loop").
* ``switchboard test --replay`` evaluates as ``rasa test`` does: the story's own events are the history and
  the policies predict its actions, nothing runs; test stories written for Rasa pass as they pass there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bots.botspec import BotSpec
from bots.dialogue.rasa_data import read_test_stories
from bots.dialogue.rasa_project import load_rasa_project
from bots.settings import Settings
from connectors.story_test import StoryTestResults, run_story_tests
from tests.bots.lookup_model import RASA, LookupModel, project

PARCEL = RASA / "parcel"


async def run(bot_dir: Path, paths: Sequence[Path], *, replay: bool = False) -> StoryTestResults:
    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, {})

    return await run_story_tests(bot_dir, paths, settings=Settings(nlu_max_wait_ms=0.0), model_loader=loader,
                                 replay=replay)


def test_config_yml_keys_rasa_does_not_read_are_noted_not_refused() -> None:
    spec, _ = load_rasa_project(PARCEL)  # a ConfigError ("unknown key 'session_config'") before
    config = PARCEL / "config.yml"
    line = config.read_text(encoding="utf-8").splitlines().index("session_config:") + 1
    assert f"{config}:{line}: config.yml: 'session_config' is not a config.yml key (recipe, language, pipeline, " \
           f"policies, assistant_id): not read, as Rasa does not read it" in spec.notes


def test_entities_beside_a_user_step_are_read_from_its_text_as_rasa_does() -> None:
    notes: list[str] = []
    path = PARCEL / "tests" / "test_stories.yml"
    stories = read_test_stories([path], notes)  # a ConfigError before
    step = next(s for s in stories[1].steps if s.user_text == "it is QK554")
    (entity,) = step.entities
    assert (entity.entity, entity.value, entity.start, entity.end) == ("parcel_id", "QK554", 6, 11)  # the text's
    line = path.read_text(encoding="utf-8").splitlines().index("    entities:") + 1
    assert notes == [f"{path}:{line}: story 'help in the middle of the form': 'entities' beside 'user' is not "
                     f"read: a 'user' step's entities are the ones annotated in its text ([Berlin](city)), as Rasa "
                     f"reads it"]


async def test_a_general_rule_inside_a_form_gives_the_turn_back_to_the_form(tmp_path: Path) -> None:
    bot = project(tmp_path, "parcel")
    results = await run(bot, [bot / "tests" / "test_stories.yml"])
    assert [f for s in results.stories for f in s.failures] == []
    # "help" while the form asks for the number: the form rejects it, the help rule answers and, the rule
    # saying nothing of the form, the form asks again (it listened here instead before).
    story = results.stories[1]
    assert story.name == "help in the middle of the form" and story.passed
    pairs = list(zip(results.action_targets, results.action_predictions, strict=True))
    at = results.action_targets.index("utter_help")
    assert pairs[at:at + 3] == [("utter_help", "utter_help"), ("parcel_form", "parcel_form"),
                                ("action_listen", "action_listen")]
    # After the form, the same general rule kind (thanks) just waits: no form is active any more.
    assert pairs[-2:] == [("utter_welcome", "utter_welcome"), ("action_listen", "action_listen")]


async def test_replay_evaluates_test_stories_as_rasa_test_does(tmp_path: Path) -> None:
    bot = project(tmp_path, "parcel")
    rasa_only = bot / "tests" / "rasa_test_only.yml"
    # End to end the form runs: it asks for the parcel number, where the story (for rasa test) ends it.
    e2e = await run(bot, [rasa_only])
    assert e2e.conversation_accuracy == 0.0
    assert ("utter_parcel_status", "action_listen") in zip(e2e.action_targets, e2e.action_predictions,
                                                          strict=True)
    replayed = await run(bot, [rasa_only], replay=True)
    assert [f for s in replayed.stories for f in s.failures] == []
    assert replayed.action_targets == ["parcel_form", "utter_parcel_status", "action_listen", "utter_welcome",
                                       "action_listen"]
    assert replayed.intent_targets == replayed.intent_predictions == ["track_parcel", "thanks"]
    # The project's own end-to-end stories are scored the same way by both.
    stories = [bot / "tests" / "test_stories.yml"]
    both = await run(bot, stories), await run(bot, stories, replay=True)
    assert both[0].action_targets == both[1].action_targets == both[1].action_predictions
    assert both[1].conversation_accuracy == 1.0


async def test_replay_reports_a_wrong_prediction_where_the_story_goes_on(tmp_path: Path) -> None:
    tests = """\
stories:
- story: thanks answered by the greeting
  steps:
  - user: |
      thanks
    intent: thanks
  - action: utter_greet
"""
    bot = project(tmp_path, "parcel", tests)
    results = await run(bot, [], replay=True)
    (story,) = results.failed
    assert story.failures == [f"{bot / 'tests' / 'test_stories.yml'}:7: story 'thanks answered by the greeting': "
                              "'utter_greet' expected, the bot's policies predicted 'utter_welcome'"]
    assert "  - action: utter_greet  # predicted: utter_welcome\n" in story.yaml
    # The story's action is the history from there on: after utter_greet the bot waits, as predicted.
    assert list(zip(results.action_targets, results.action_predictions, strict=True)) == [
        ("utter_greet", "utter_welcome"), ("action_listen", "action_listen")]
