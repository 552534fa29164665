"""The Rasa 3.x project loader (bots/dialogue/rasa_project.py) and the one bot-folder loader (bots/loader.py):
what every Rasa file becomes in the one internal model, and that every problem is reported with its file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bots.artifact import resolve_artifact
from bots.botspec import parse_example
from bots.dialogue.check import check_bot_folder
from bots.dialogue.domain import (
    MappingCondition,
    ResponseButton,
    SessionConfig,
    SlotMapping,
    Step,
    StoryEntity,
)
from bots.dialogue.rasa_data import read_test_stories
from bots.dialogue.rasa_domain import parse_domain
from bots.dialogue.rasa_project import bot_name, is_rasa_project, load_rasa_project, rasa_test_files
from bots.dialogue.rasa_yaml import Findings
from bots.errors import ArtifactError, ConfigError
from bots.loader import is_bot_folder, load_bot_folder
from bots.yamlspan import load_located, plain
from tests.conftest import ROOT

RASA = ROOT / "tests" / "data" / "rasa"
MOODBOT = RASA / "moodbot"
FORMS = RASA / "forms"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


MINIMAL = {
    "domain.yml": 'version: "3.1"\nintents: [greet, bye]\nresponses:\n  utter_greet:\n  - text: hi\n',
    "config.yml": "language: en\n",
    "data/nlu.yml": "nlu:\n- intent: greet\n  examples: |\n    - hi\n- intent: bye\n  examples: |\n    - bye\n",
}


# -- the moodbot, as `rasa init` makes it ---------------------------------------------------------------------
def test_moodbot_loads_as_rasa_init_wrote_it() -> None:
    spec, dialogue = load_bot_folder(MOODBOT)
    assert spec.name == "moodbot"
    assert spec.source == "domain.yml" and spec.file == MOODBOT / "domain.yml"
    assert spec.channels == ("web",)                    # rest: -> web; rasa: (Rasa X) noted
    assert spec.fallback_threshold == 0.3               # Rasa's default pipeline's FallbackClassifier
    assert plain(spec.sections["language"]) == "en"
    assert {name: len(i.examples) for name, i in spec.intents.items()} == {
        "greet": 13, "goodbye": 10, "affirm": 6, "deny": 7, "mood_great": 14, "mood_unhappy": 14, "bot_challenge": 4}
    first = spec.intents["greet"].examples[0]
    assert (first.text, first.where) == ("hey", f"{MOODBOT / 'data' / 'nlu.yml'}:6")
    assert spec.notes == (f"{MOODBOT / 'credentials.yml'}:32: 'rasa' (Rasa X / Enterprise) not used",)

    d = dialogue.domain
    assert list(d.intents) == ["greet", "goodbye", "affirm", "deny", "mood_great", "mood_unhappy", "bot_challenge"]
    cheer = d.responses["utter_cheer_up"][0]
    assert (cheer.text, cheer.image, cheer.where) == ("Here is something to cheer you up:",
                                                      "https://i.imgur.com/nGF1K8f.jpg", f"{MOODBOT / 'domain.yml'}:17")
    assert d.session == SessionConfig(60.0, True) and dialogue.session_expiry_s == 3600.0
    assert dialogue.actions_module == MOODBOT / "actions" / "__init__.py"
    assert dialogue.action_endpoint is None and dialogue.action_refs == ()
    # pipeline: null and policies: null are Rasa's defaults
    p = dialogue.policy
    assert (p.memoization, p.rules, p.learned, p.max_history, p.core_fallback_threshold) == (True, True, True, 5, 0.3)

    stories = [s for s in dialogue.stories if not s.is_rule]
    rules = [s for s in dialogue.stories if s.is_rule]
    assert [s.name for s in stories] == ["happy path", "sad path 1", "sad path 2"]
    assert [r.name for r in rules] == ["Say goodbye anytime the user says goodbye",
                                       "Say 'I am a bot' anytime the user challenges"]
    sad = stories[1]
    assert [(s.kind, s.name) for s in sad.steps] == [
        ("intent", "greet"), ("action", "utter_greet"), ("intent", "mood_unhappy"), ("action", "utter_cheer_up"),
        ("action", "utter_did_that_help"), ("intent", "affirm"), ("action", "utter_happy")]
    assert sad.where == f"{MOODBOT / 'data' / 'stories.yml'}:12"
    assert sad.steps[3].where == f"{MOODBOT / 'data' / 'stories.yml'}:17"
    assert rules[0].wait_for_user_input and not rules[0].conversation_start and rules[0].condition == ()


def test_moodbot_test_stories_are_located_and_read() -> None:
    files = rasa_test_files(MOODBOT)
    assert files == [MOODBOT / "tests" / "test_stories.yml"]
    stories = read_test_stories(files)
    assert len(stories) == 7
    first = stories[0].steps[0]
    assert (first.kind, first.name, first.user_text) == ("intent", "greet", "hello there!")


def test_is_rasa_project_and_bot_name(tmp_path: Path) -> None:
    assert is_rasa_project(MOODBOT) and is_bot_folder(MOODBOT) and not is_rasa_project(ROOT / "tests" / "data" /
                                                                                      "tiny_bot")
    odd = tmp_path / "My Rasa bot (v2)!"
    odd.mkdir()
    assert bot_name(odd) == "My-Rasa-bot-v2"
    assert bot_name(tmp_path / "___") == "bot"


# -- forms, slot mappings of every kind, config, endpoints, credentials ------------------------------------------
def test_forms_project_domain_in_detail() -> None:
    _, dialogue = load_rasa_project(FORMS)
    d = dialogue.domain
    domain_file = f"{FORMS / 'domain.yml'}"
    assert d.intents["inform"].use_entities == ("cuisine", "number", "seating", "feedback")
    assert d.intents["chitchat"].ignore_entities == ("cuisine",) and d.intents["chitchat"].use_entities is None
    assert d.entities["seating"].roles == ("inside", "outside")
    cuisine = d.slots["cuisine"]
    assert (cuisine.type, cuisine.influence_conversation) == ("text", False)
    assert cuisine.mappings == (SlotMapping("from_entity", entity="cuisine", conditions=(
        MappingCondition("restaurant_form", "cuisine"),), where=f"{domain_file}:35"),)
    people = d.slots["num_people"]
    assert (people.type, people.min_value, people.max_value) == ("float", 1.0, 20.0)
    assert people.mappings[0].intent == ("inform", "request_restaurant")
    assert people.mappings[0].not_intent == ("chitchat",)
    seating = d.slots["outdoor_seating"].mappings
    assert [(m.type, m.intent, m.value) for m in seating[:2]] == [("from_intent", ("affirm",), True),
                                                                  ("from_intent", ("deny",), False)]
    assert (seating[2].entity, seating[2].role) == ("seating", "outside")
    assert d.slots["preferences"].mappings[0].type == "from_text"
    assert d.slots["feedback"].type == "list"
    trigger = d.slots["asked_for_table"]
    assert (trigger.initial_value, trigger.mappings[0].type, trigger.mappings[0].value) == (
        False, "from_trigger_intent", True)
    party = d.slots["party_size"]
    assert (party.type, party.values, party.influence_conversation) == ("categorical", ("small", "large"), True)
    assert party.mappings[0].action == "action_set_party_size"
    assert d.slots["booking_reference"].mappings[0] == SlotMapping("custom", where=f"{domain_file}:105")
    form = d.forms["restaurant_form"]
    assert form.required_slots == ("cuisine", "num_people", "outdoor_seating", "preferences", "feedback")
    assert form.ignored_intents == ("chitchat",)
    assert form.validation_action == "validate_restaurant_form"
    assert d.actions == ("validate_restaurant_form", "action_ask_feedback", "action_set_party_size")
    assert [n for n, _ in dialogue.action_refs] == list(d.actions)
    assert dialogue.action_refs[0][1] == f"{domain_file}:156"
    buttons = d.responses["utter_ask_outdoor_seating"][0].buttons
    assert buttons == (ResponseButton("Yes, outside", "/affirm"), ResponseButton("No, inside", "/deny"))
    assert d.session == SessionConfig(30.0, False) and dialogue.session_expiry_s == 1800.0
    assert dialogue.actions_module == FORMS / "actions" / "__init__.py"


def test_forms_project_config_endpoints_credentials_and_nlu() -> None:
    spec, dialogue = load_rasa_project(FORMS)
    p = dialogue.policy
    assert (p.memoization, p.augmented_memoization, p.rules, p.learned) == (True, False, True, True)
    assert (p.max_history, p.learned_max_history, p.learned_epochs) == (3, 5, 40)
    assert (p.core_fallback_threshold, p.core_fallback_action, p.enable_fallback_prediction) == (
        0.4, "action_default_fallback", True)
    assert spec.fallback_threshold == 0.6
    kept = {c.name: c.options for c in spec.pipeline}
    assert kept == {"EntitySynonymMapper": {}, "RegexEntityExtractor": {"use_lookup_tables": True, "use_regexes": True},
                    "DucklingEntityExtractor": {"url": "http://127.0.0.1:8000", "dimensions": ["number"]},
                    "FallbackClassifier": {"threshold": 0.6},  # and the n-gram features (tests/bots/test_ngrams.py):
                    "CountVectorsFeaturizer": {"analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4}}
    assert spec.pipeline[4].where == f"{FORMS / 'config.yml'}:20"
    assert dialogue.action_endpoint is not None and dialogue.action_endpoint.url == "http://localhost:5055/webhook"
    assert spec.channels == ("web", "slack", "telegram")
    notes = "\n".join(spec.notes)
    assert f"{FORMS / 'endpoints.yml'}:4: 'tracker_store' not used: Switchboard keeps conversations" in notes
    assert f"{FORMS / 'credentials.yml'}:18: not supported: channel 'facebook'" in notes
    assert "SWITCHBOARD_SLACK_BOT_TOKEN" in notes
    assert f"{FORMS / 'config.yml'}:5: pipeline components WhitespaceTokenizer, RegexFeaturizer" in notes
    outside = [e for x in spec.intents["inform"].examples for e in x.entities if e.role]
    assert [(e.entity, e.value, e.role) for e in outside] == [("seating", "outside", "outside"),
                                                              ("seating", "inside", "inside")]
    assert spec.synonyms == {"italiano": "italian", "pasta place": "italian"}
    assert spec.regexes == {"number": (r"\b[0-9]{1,2}\b",)}
    assert spec.lookups == {"cuisine": ("italian", "chinese", "mexican", "indian")}


def test_forms_project_stories_and_rules() -> None:
    _, dialogue = load_rasa_project(FORMS)
    by_name = {s.name: s for s in dialogue.stories}
    start = by_name["Greet at the start"]
    assert start.is_rule and start.conversation_start
    submit = by_name["Submit the form"]
    assert submit.condition == (Step("active_loop", "restaurant_form", where=submit.condition[0].where),)
    assert [(s.kind, s.name, s.slots) for s in submit.steps] == [
        ("action", "restaurant_form", ()), ("active_loop", None, ()),
        ("slot_was_set", None, (("requested_slot", None),)),
        ("action", "utter_submit", ()), ("action", "utter_slots_values", ())]
    large = by_name["A large party is called back"]
    assert not large.wait_for_user_input
    assert large.condition[0].slots == (("party_size", "large"),)
    go_on = by_name["stop the form and go on"]
    alternatives = go_on.steps[5]
    assert alternatives.kind == "or"
    assert [(a.name, a.entities) for a in alternatives.alternatives] == [
        ("affirm", ()), ("inform", (StoryEntity("cuisine", "italian"),))]
    assert by_name["stop the form and leave"].steps[-1] == Step(
        "checkpoint", "form_stopped", where=f"{FORMS / 'data' / 'stories.yml'}:31")
    assert by_name["thanks after leaving the form"].steps[0].name == "form_stopped"
    party = by_name["a party size"].steps[0]
    assert party.entities == (StoryEntity("number", "12"), StoryEntity("seating", "outside", role="outside"))
    tests = read_test_stories(rasa_test_files(FORMS))
    outside = tests[0].steps[-2]
    assert (outside.user_text, outside.entities) == ("I want to sit outside",
                                                     (StoryEntity("seating", "outside", "outside"),))


# -- responses ------------------------------------------------------------------------------------------------
def test_responses_with_conditions_buttons_images_custom_and_channels() -> None:
    spec, dialogue = load_rasa_project(RASA / "responses")
    r = dialogue.domain.responses
    assert [v.text for v in r["utter_greet"]] == ["Hello {name}!", "Hi {name}, welcome back."]
    price = r["utter_price"]
    assert [v.conditions for v in price] == [(("plan", "premium"),), (("plan", "basic"),), ()]
    assert price[2].buttons == (ResponseButton("Basic", '/choose_plan{"plan": "basic"}'),
                                ResponseButton("Premium", '/choose_plan{"plan": "premium"}'),
                                ResponseButton("Compare the plans", "", url="https://example.com/plans"))
    card, slack, telegram = r["utter_plan_card"]
    assert (card.image, card.attachment, card.id, card.metadata, card.channel) == (
        "https://example.com/plan.png", "https://example.com/plan.pdf", "plan_card", {"rich": True}, None)
    assert slack.channel == "slack" and slack.text is None
    assert slack.custom == {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Your plan*"}}]}
    assert (telegram.channel, telegram.image) == ("telegram", "https://example.com/plan.png")
    assert any("not supported: response 'utter_plan_card': 'button_type'" in n for n in spec.notes)
    assert dialogue.domain.slots["name"].initial_value == "friend"
    assert [e.text for e in spec.intents["choose_plan"].examples] == ["I take basic", "premium please"]


# -- a domain/ folder, data found by content, YAML 1.2 names --------------------------------------------------
def test_split_domain_merges_files_and_finds_data_by_content() -> None:
    spec, dialogue = load_rasa_project(RASA / "split_domain")
    d = dialogue.domain
    assert list(d.intents) == ["greet", "yes", "no", "order_status"]       # `yes`/`no` are names, not booleans
    assert "order-id" in d.entities and d.slots["order-id"].mappings[0].entity == "order-id"
    assert [m.intent for m in d.slots["confirmed"].mappings] == [("yes",), ("no",)]
    assert set(d.responses) == {"utter_greet", "utter_status", "utter_default", "utter_confirm", "utter_ok"}
    assert d.responses["utter_greet"][0].text == "Hello! Give me your order number."   # first file wins
    assert d.session == SessionConfig(0.0, False) and dialogue.session_expiry_s == 0.0
    assert spec.source == "domain"
    assert {n: len(i.examples) for n, i in spec.intents.items()} == {"greet": 2, "yes": 2, "no": 2, "order_status": 3}
    assert [s.name for s in dialogue.stories] == ["greet", "confirmed", "not confirmed"]  # path order: core/rules.yml
    confirmed = dialogue.stories[1]
    assert confirmed.steps[0].entities == (StoryEntity("order-id", "12345"),)
    assert confirmed.steps[4].slots == (("confirmed", True),)
    notes = "\n".join(spec.notes)
    assert "response 'utter_greet' is defined again (first at" in notes
    assert f"{RASA / 'split_domain' / 'data' / 'old.md'}:1: not supported: Rasa 1/2 Markdown" in notes
    assert f"{RASA / 'split_domain' / 'data' / 'lookups.yml'}:1: no nlu, stories or rules" in notes
    assert "README" not in notes
    p = dialogue.policy
    assert (p.augmented_memoization, p.max_history, p.learned_max_history, p.learned_epochs) == (True, 4, 8, 20)
    assert (p.core_fallback_threshold, p.core_fallback_action) == (0.25, "utter_default")
    assert (p.enable_fallback_prediction, p.restrict_rules, p.check_for_contradictions) == (False, False, True)
    assert spec.fallback_threshold == 0.55
    assert "not supported: UnexpecTEDIntentPolicy" in notes and "ambiguity_threshold" not in notes
    assert dialogue.domain.nlu_ambiguity_threshold == 0.1  # FallbackClassifier's ambiguity_threshold


def test_domain_files_merge_first_definition_wins_and_repeats_are_noted(tmp_path: Path) -> None:
    a = write(tmp_path, {"a.yml": (
        "intents:\n- greet\n- inform: {use_entities: [city]}\nentities: [city]\n"
        "slots:\n  city: {type: text, mappings: [{type: from_entity, entity: city}]}\n"
        "responses:\n  utter_greet:\n  - text: hi\n"
        "forms:\n  city_form: {required_slots: [city]}\n")})
    b = write(tmp_path, {"b.yml": (
        "intents:\n- greet\n- inform: {ignore_entities: [city]}\n- bye\nentities: [city, date]\n"
        "slots:\n  city: {type: bool, mappings: [{type: custom}]}\n  broken: {type: nope}\n"
        "responses:\n  utter_greet:\n  - text: hello\n"
        "forms:\n  city_form: {required_slots: []}\n")})
    findings = Findings()
    domain, _ = parse_domain([a / "a.yml", b / "b.yml"], findings)
    assert list(domain.intents) == ["greet", "inform", "bye"] and list(domain.entities) == ["city", "date"]
    assert domain.intents["inform"].use_entities == ("city",) and domain.slots["city"].type == "text"
    assert domain.responses["utter_greet"][0].text == "hi" and domain.forms["city_form"].required_slots == ("city",)
    assert "broken" in findings.broken and "broken" not in domain.slots
    b_yml = tmp_path / "b.yml"
    assert [n for n in findings.notes if "again" in n] == [
        f"{b_yml}:3: intent 'inform' is listed again with other properties (first at {tmp_path / 'a.yml'}:3); "
        "the first is used",
        f"{b_yml}:7: slot 'city' is defined again (first at {tmp_path / 'a.yml'}:6); the first definition is used",
        f"{b_yml}:10: response 'utter_greet' is defined again (first at {tmp_path / 'a.yml'}:8); "
        "the first definition is used",
        f"{b_yml}:13: form 'city_form' is defined again (first at {tmp_path / 'a.yml'}:11); "
        "the first definition is used",
    ]


def test_yaml12_keeps_yes_no_on_off_as_text() -> None:
    text = "a: yes\nb: no\nc: on\nd: off\ne: true\nf: 010\ng: 0o10\nh: 1e3\ni: 2024-01-01\nj: ~\n"
    assert plain(load_located(Path("x.yml"), text=text, yaml12=True)) == {
        "a": "yes", "b": "no", "c": "on", "d": "off", "e": True, "f": 10, "g": 8, "h": 1000.0, "i": "2024-01-01",
        "j": None}
    assert plain(load_located(Path("x.yml"), text=text))["a"] is True   # bot.yml keeps YAML 1.1


# -- annotations ----------------------------------------------------------------------------------------------
def test_annotations_with_roles_groups_and_several_entities() -> None:
    ex = parse_example('from [Berlin]{"entity": "city", "role": "departure", "group": "1"} to '
                       '[Rome][{"entity": "city", "role": "destination"}, {"entity": "place"}]')
    assert ex.text == "from Berlin to Rome"
    assert [(e.entity, e.value, e.start, e.end, e.role, e.group) for e in ex.entities] == [
        ("city", "Berlin", 5, 11, "departure", "1"), ("city", "Rome", 15, 19, "destination", None),
        ("place", "Rome", 15, 19, None, None)]
    with pytest.raises(ValueError, match="unknown key"):
        parse_example('[x]{"entity": "a", "colour": "red"}')


def test_story_entity_forms_user_steps_and_slot_names(tmp_path: Path) -> None:
    write(tmp_path, {**MINIMAL, "data/stories.yml": """
stories:
- story: s
  steps:
  - intent: /greet
    entities:
    - city
    - city: Paris
      role: to
    - entity: city
      value: Rome
      group: "2"
  - action: utter_greet
  - intent: bye
    entities:
      city: Oslo
  - user: 'I fly to [Oslo]{"entity": "city", "role": "to"}'
  - slot_was_set:
    - city
    - seen: true
  - active_loop: null
"""})
    spec, dialogue = load_rasa_project(tmp_path)
    steps = dialogue.stories[0].steps
    assert steps[0].name == "greet"                      # leading '/' dropped, as Rasa does (noted)
    assert steps[0].entities == (StoryEntity("city"), StoryEntity("city", "Paris", role="to"),
                                 StoryEntity("city", "Rome", group="2"))
    assert steps[2].entities == (StoryEntity("city", "Oslo"),)
    assert (steps[3].name, steps[3].user_text, steps[3].entities) == (None, "I fly to Oslo",
                                                                      (StoryEntity("city", "Oslo", role="to"),))
    assert steps[4].slots == (("city", ...), ("seen", True))
    assert steps[5] == Step("active_loop", None, where=steps[5].where)
    assert any("intent '/greet' starts with '/'" in n for n in spec.notes)


# -- problems: all at once, each with file:line ---------------------------------------------------------------
def test_broken_project_reports_every_problem_with_its_line() -> None:
    broken = RASA / "broken"
    with pytest.raises(ConfigError) as caught:
        load_rasa_project(broken)
    problems = caught.value.problems
    expected = [
        ("domain.yml:7", "give 'use_entities' or 'ignore_entities', not both"),
        ("domain.yml:19", "unknown type 'txt'"),
        ("domain.yml:23", "is categorical: list its 'values'"),
        ("domain.yml:28", "'min_value' is above 'max_value'"),
        ("domain.yml:33", "the from_entity mapping needs 'entity'"),
        ("domain.yml:36", "type 'any' cannot influence the conversation"),
        ("domain.yml:38", "unknown mapping type 'from_llm'"),
        ("domain.yml:42", "a variation needs 'text' or 'custom'"),
        ("domain.yml:46", "a button needs 'title'"),
        ("domain.yml:51", "Rasa 2 form syntax"),
        ("domain.yml:61", "must be a number of at least 0"),
        ("data/nlu.yml:7", "is not valid JSON"),
        ("data/nlu.yml:8", "needs exactly one of intent, synonym, regex, lookup"),
        ("data/nlu.yml:14", "invalid regular expression"),
        ("data/rules.yml:7", "rules cannot have 'checkpoint' steps"),
        ("data/rules.yml:4", "'conversation_start' must be true or false"),
        ("data/stories.yml:9", "unknown step intnet"),
        ("data/stories.yml:11", "each slot_was_set item is"),
        ("data/syntax.yml:4", "invalid YAML"),
        ("config.yml:4", "unknown NLU component 'MagicTokenizer'"),
        ("config.yml:6", "'threshold' must be a number between 0 and 1"),
        ("config.yml:8", "policy 'FormPolicy' is Rasa 2's"),
        ("config.yml:10", "'core_fallback_threshold' must be a number"),
        ("config.yml:12", "'max_history' must be a number between 1 and 100"),
        ("endpoints.yml:2", "must be an http(s) URL"),
    ]
    for where, message in expected:
        assert any(p.startswith(f"{broken / where}: ") and message in p for p in problems), (where, message, problems)
    assert len(problems) == len(expected) + 1  # and "'slot_was_set' lists no slot" for the same bad step
    # A top-level key Rasa's domain schema takes and Rasa does not read (a typo, 'slotz') is noted, not refused:
    # Rasa trains such a domain without it.
    assert any(n.startswith(f"{broken / 'domain.yml'}:13: domain: 'slotz' is not a domain key")
               for n in check_bot_folder(broken).notes)


def test_versions_and_files_that_are_not_mappings(tmp_path: Path) -> None:
    write(tmp_path, {**MINIMAL, "domain.yml": "version: 3.1\n" + MINIMAL["domain.yml"].split("\n", 1)[1],
                     "data/nlu.yml": 'version: "2.0"\n' + MINIMAL["data/nlu.yml"],
                     "config.yml": "- language: en\n", "endpoints.yml": "[]\n", "credentials.yml": "rest\n"})
    with pytest.raises(ConfigError) as caught:
        load_rasa_project(tmp_path)
    assert sorted(caught.value.problems) == sorted([
        f"{tmp_path / 'domain.yml'}:1: 'version' must be text, e.g. \"3.1\" (quoted)",
        f"{tmp_path / 'config.yml'}:1: config.yml must be a mapping",
        f"{tmp_path / 'endpoints.yml'}:1: endpoints.yml must be a mapping",
        f"{tmp_path / 'credentials.yml'}:1: credentials.yml must be a mapping"])
    write(tmp_path, {"domain.yml": MINIMAL["domain.yml"], "config.yml": "", "endpoints.yml": "",
                     "credentials.yml": ""})
    spec, _ = load_rasa_project(tmp_path)
    assert f"{tmp_path / 'data' / 'nlu.yml'}:1: written for Rasa 2.0: read as Rasa 3.x" in spec.notes
    assert spec.channels == ("web",)


def test_rasa2_policies_custom_and_unknown_components(tmp_path: Path) -> None:
    write(tmp_path, {**MINIMAL, "config.yml": """
pipeline:
  - name: my_pkg.MyExtractor
  - name: SpacyEntityExtractor
  - name: ResponseSelector
policies:
  - name: MappingPolicy
  - name: my_pkg.MyPolicy
  - name: MagicPolicy
  - name: TEDPolicy
    max_history: 1.5
"""})
    with pytest.raises(ConfigError) as caught:
        load_rasa_project(tmp_path)
    assert [p.split(": ", 1)[1] for p in caught.value.problems] == [
        "policy 'MappingPolicy' is Rasa 2's: intent triggers are rules in Rasa 3 "
        "(add RulePolicy and a rule per intent)",
        "unknown policy 'MagicPolicy' (Rasa 3 has RulePolicy, MemoizationPolicy, AugmentedMemoizationPolicy, "
        "TEDPolicy, UnexpecTEDIntentPolicy)",
        "TEDPolicy: 'max_history' must be a whole number"]
    write(tmp_path, {"config.yml": "pipeline:\n  - name: my_pkg.MyExtractor\n  - name: SpacyEntityExtractor\n"
                                   "policies:\n  - name: my_pkg.MyPolicy\n  - name: RulePolicy\n"})
    spec, dialogue = load_rasa_project(tmp_path)
    notes = "\n".join(spec.notes)
    assert "config.yml:2: not supported: custom NLU component my_pkg.MyExtractor" in notes
    assert "config.yml:3: not supported: SpacyEntityExtractor" in notes
    assert "config.yml:5: not supported: custom policy my_pkg.MyPolicy" in notes
    assert spec.fallback_threshold == 0.0         # a pipeline without FallbackClassifier never falls back
    assert (dialogue.policy.rules, dialogue.policy.memoization, dialogue.policy.learned) == (True, False, False)


def test_endpoints_expand_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {**MINIMAL, "endpoints.yml": "action_endpoint:\n  url: ${ACTIONS_URL}/webhook\n  token: abc\n"
                                                 "nlg:\n  url: http://nlg\n"})
    monkeypatch.setenv("ACTIONS_URL", "http://actions:5055")
    spec, dialogue = load_rasa_project(tmp_path)
    assert dialogue.action_endpoint is not None and dialogue.action_endpoint.url == "http://actions:5055/webhook"
    notes = "\n".join(spec.notes)
    assert "endpoints.yml:3: not supported: 'action_endpoint': 'token'" in notes
    assert "endpoints.yml:4: not supported: an NLG server" in notes
    monkeypatch.delenv("ACTIONS_URL")
    with pytest.raises(ConfigError, match=r"endpoints.yml:2: 'action_endpoint: url': environment variable "
                                          r"ACTIONS_URL is not set"):
        load_rasa_project(tmp_path)


def test_intent_in_nlu_only_still_loads_for_the_check(tmp_path: Path) -> None:
    write(tmp_path, {**MINIMAL, "data/more.yml": "nlu:\n- intent: faq/ask_name\n  examples: |\n    - who are you\n"
                                                 "- intent: extra\n  examples: |\n    - something\n"})
    spec, dialogue = load_rasa_project(tmp_path)
    assert [e.text for e in spec.intents["faq"].examples] == ["who are you"]   # retrieval intent -> its base
    assert "extra" in spec.intents                                             # not in the domain: check errs
    assert dialogue.retrieval == {"faq": {"ask_name": ("who are you",)}}       # ... and its response key


# -- bot.yml and its rasa: pointer ------------------------------------------------------------------------------
def test_bot_yml_pointing_at_rasa_files(tmp_path: Path) -> None:
    bot = tmp_path / "support"
    shutil.copytree(MOODBOT, bot)
    write(bot, {"bot.yml": "name: mood\nchannels: [web, telegram]\nfallback_threshold: 0.5\nretention_days: 30\n"
                           "rasa:\n  domain: domain.yml\n  data: [data/nlu.yml, data/stories.yml]\n"})
    spec, dialogue = load_bot_folder(bot)
    assert (spec.name, spec.channels, spec.fallback_threshold, spec.source) == ("mood", ("web", "telegram"), 0.5,
                                                                                "bot.yml")
    assert plain(spec.sections["retention_days"]) == 30 and "rasa" not in spec.sections
    assert [s.name for s in dialogue.stories] == ["happy path", "sad path 1", "sad path 2"]   # rules.yml not named
    assert dialogue.actions_module == bot / "actions" / "__init__.py"                       # found by default
    assert len(spec.intents) == 7

    write(bot, {"bot.yml": "name: mood\nrasa: .\n"})
    spec, dialogue = load_bot_folder(bot)
    assert spec.channels == ("web",) and spec.fallback_threshold == 0.3 and len(dialogue.stories) == 5


def test_bot_yml_with_rasa_refuses_what_the_rasa_files_own(tmp_path: Path) -> None:
    bot = tmp_path / "b"
    shutil.copytree(MOODBOT, bot)
    write(bot, {"bot.yml": "name: b\nintents:\n  a:\n    examples: [x]\nslots: {}\n"
                           "rasa:\n  domain: nowhere.yml\n  colour: red\n  actions: missing_module\n"})
    with pytest.raises(ConfigError) as caught:
        load_bot_folder(bot)
    text = "\n".join(caught.value.problems)
    assert f"{bot / 'bot.yml'}:2: 'intents' comes from the Rasa files" in text
    assert f"{bot / 'bot.yml'}:5: 'slots' comes from the Rasa files" in text
    assert f"{bot / 'bot.yml'}:7: nowhere.yml does not exist" in text
    assert f"{bot / 'bot.yml'}:8: 'rasa:': unknown key 'colour'" in text
    assert f"{bot / 'bot.yml'}:9: 'rasa: actions' must name a Python module" in text


def test_load_bot_folder_chooses_the_front_door(tmp_path: Path) -> None:
    spec, dialogue = load_bot_folder(ROOT / "tests" / "data" / "dialogue_bot")
    assert spec.name == "shop" and spec.source == "bot.yml" and "change_order_form" in dialogue.forms
    with pytest.raises(ConfigError, match=r"not a bot folder: expected bot\.yml, or a Rasa project"):
        load_bot_folder(tmp_path)
    with pytest.raises(ConfigError, match="no such folder"):
        load_bot_folder(tmp_path / "missing")
    write(tmp_path, {"config.yml": "language: en\n"})
    with pytest.raises(ConfigError, match=r"no domain: a Rasa project needs domain\.yml"):
        load_bot_folder(tmp_path)


def test_trained_models_of_a_rasa_project_are_found(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    with pytest.raises(ArtifactError, match=f"{tmp_path / 'models'}: no trained model"):
        resolve_artifact(tmp_path)
    artifact = tmp_path / "models" / "20240101-000000"
    artifact.mkdir(parents=True)
    (artifact / "manifest.json").write_text("{}", encoding="utf-8")
    (tmp_path / "models" / "20230101-rasa.tar.gz").write_bytes(b"")   # Rasa's own models are left alone
    assert resolve_artifact(tmp_path) == artifact
