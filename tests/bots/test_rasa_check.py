"""``switchboard check`` (bots/dialogue/check.py): what `rasa data validate` validates, with file:line, the exit codes,
and that ``switchboard train`` refuses a bot that fails it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bots.dialogue.check import check_bot, check_bot_folder
from bots.loader import load_bot_folder
from connectors.cli import main as cli_main
from tests.bots.test_rasa_loader import write
from tests.conftest import ROOT
from training.cli import main as training_main

RASA = ROOT / "tests" / "data" / "rasa"


DOMAIN = """version: "3.1"
intents: [greet, bye, mood_great, ask]
responses:
  utter_greet:
  - text: hi
  utter_bye:
  - text: bye
  utter_happy:
  - text: great
  utter_answer:
  - text: an answer
"""
NLU = """nlu:
- intent: greet
  examples: |
    - hi
    - hello
- intent: bye
  examples: |
    - bye
- intent: mood_great
  examples: |
    - great
- intent: ask
  examples: |
    - a question
"""


def project(tmp_path: Path, stories: str = "", rules: str = "", *, domain: str = DOMAIN, config: str = "",
            extra: dict[str, str] | None = None) -> Path:
    files = {"domain.yml": domain, "data/nlu.yml": NLU, "config.yml": config or "language: en\n", **(extra or {})}
    if stories:
        files["data/stories.yml"] = "stories:\n" + stories
    if rules:
        files["data/rules.yml"] = "rules:\n" + rules
    return write(tmp_path, files)


@pytest.mark.parametrize("bot", [RASA / "moodbot", RASA / "forms", RASA / "responses", RASA / "split_domain",
                                 ROOT / "tests" / "data" / "dialogue_bot", ROOT / "tests" / "data" / "tiny_bot",
                                 ROOT / "examples" / "support"])
def test_good_bots_have_no_errors(bot: Path) -> None:
    report = check_bot_folder(bot)
    assert report.errors == []
    assert report.loaded is not None


def test_moodbot_check_prints_notes_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", str(RASA / "moodbot")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"note: {RASA / 'moodbot' / 'credentials.yml'}:32: 'rasa' (Rasa X / Enterprise) not used",
                   f"{RASA / 'moodbot'}: 0 error(s), 0 warning(s), 1 note(s)"]


def test_conflicts_name_both_places_and_the_turn(capsys: pytest.CaptureFixture[str]) -> None:
    c = RASA / "conflicts" / "data"
    report = check_bot_folder(RASA / "conflicts")
    assert report.errors == [
        f"{c / 'stories.yml'}:7: story structure conflict after intent 'mood_great' (turn 2; the last 3 states are "
        f"the same, max_history): 'happy' goes on with 'utter_happy' here; 'happy but leaving' goes on with "
        f"'utter_goodbye' at {c / 'stories.yml'}:14",
        f"{c / 'rules.yml'}:17: rule 'two messages' has 2 user messages: a rule holds at most one (RulePolicy's "
        f"restrict_rules); write a story for longer exchanges",
        f"{c / 'rules.yml'}:5: rule 'challenge' goes on with 'utter_iamabot' here (turn 1), but in the same situation "
        f"rule 'challenge answered with a greeting' ({c / 'rules.yml'}:7) goes on with 'utter_greet': contradicting "
        f"rules (RulePolicy's check_for_contradictions)",
        f"{c / 'rules.yml'}:10: rule 'challenge answered with a greeting' goes on with 'utter_greet' here (turn 1), "
        f"but in the same situation rule 'challenge' ({c / 'rules.yml'}:2) goes on with 'utter_iamabot': "
        f"contradicting rules (RulePolicy's check_for_contradictions)",
        f"{c / 'stories.yml'}:14: story 'happy but leaving' goes on with 'utter_goodbye' here (turn 2), but in the "
        f"same situation rule 'two messages' ({c / 'rules.yml'}:17) goes on with 'utter_happy': contradicting rules "
        f"(RulePolicy's check_for_contradictions)",
        f"{c / 'stories.yml'}:20: story 'goodbye and more' goes on with 'utter_happy' here (turn 1), but in the same "
        f"situation rule 'goodbye' ({c / 'rules.yml'}:12) goes on with 'action_listen': contradicting rules "
        f"(RulePolicy's check_for_contradictions)",
    ]
    assert cli_main(["check", str(RASA / "conflicts")]) == 2
    assert capsys.readouterr().out.splitlines()[-1] == f"{RASA / 'conflicts'}: 6 error(s), 0 warning(s), 0 note(s)"


def test_broken_project_reports_load_and_reference_errors_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    b = RASA / "broken"
    report = check_bot_folder(b)
    for expected in (
        f"{b / 'domain.yml'}:19: slot 'city': unknown type 'txt'",
        f"{b / 'data' / 'nlu.yml'}:7: entity annotation",
        f"{b / 'config.yml'}:8: policy 'FormPolicy' is Rasa 2's",
        f"{b / 'domain.yml'}:5: intent 'inform': entity 'date' is not declared",
        f"{b / 'domain.yml'}:55: form 'hotel_form': required slot 'nights' is not declared under slots",
        f"{b / 'domain.yml'}:55: form 'hotel_form' has no question for slot 'city'",
        f"{b / 'data' / 'stories.yml'}:13: action 'action_book' (in story 'trip') is not declared",
        f"{b / 'data' / 'stories.yml'}:14: response 'utter_missing' (in story 'trip') is not in the domain's "
        f"responses",
    ):
        assert any(e.startswith(expected) for e in report.errors), (expected, report.errors)
    # a name defined with an error counts as declared: one mistake, one report
    assert not any("'travel_form'" in e and "not a form" in e for e in report.errors)
    assert not any("slot 'city'" in e and "not declared" in e for e in report.errors)
    # an example line without "- " is skipped with a note, as Rasa skips it with a warning
    assert f"{b / 'data' / 'nlu.yml'}:6: intent 'greet': this line does not start with '- ': skipped, as Rasa " \
           f"skips it" in report.notes
    # Rasa skips a from_entity mapping of an undeclared entity (SlotMapping.check_mapping_validity): a warning
    assert f"{b / 'domain.yml'}:26: slot 'size': the from_entity mapping uses entity 'size', which is not declared " \
           f"in the domain's entities: the mapping never fills the slot (Rasa skips it as invalid)" in report.warnings
    # an intent the domain does not list (NLU examples, a story step): Rasa warns and trains it
    assert any(w.startswith(f"{b / 'data' / 'nlu.yml'}:21: intent 'book_hotel' has NLU examples but is not in the "
                            f"domain's intents") for w in report.warnings)
    assert any(w.startswith(f"{b / 'data' / 'stories.yml'}:7: intent 'fly' (in story 'trip') is not declared")
               for w in report.warnings)
    assert len(report.errors) == 31  # 'slotz' (a top-level key Rasa does not read) is a note, as Rasa trains it
    assert cli_main(["check", str(b)]) == 2
    out = capsys.readouterr().out
    assert out.count("\nerror: ") + out.startswith("error: ") == 31


def test_undeclared_names_in_stories_and_mappings(tmp_path: Path) -> None:
    domain = DOMAIN + """entities:
  - city:
      roles: [from]
slots:
  city:
    type: text
    mappings:
    - type: from_entity
      entity: town
      intent: travel
    - type: from_entity
      entity: city
      role: to
    - type: custom
      action: action_fill
      conditions:
      - active_loop: trip_form
        requested_slot: nowhere
"""
    project(tmp_path, domain=domain, stories="""- story: s
  steps:
  - intent: greet
    entities:
    - country: France
  - action: utter_greet
  - slot_was_set:
    - weather: sunny
  - active_loop: trip_form
""")
    report = check_bot_folder(tmp_path)
    errors = report.errors
    d, s = tmp_path / "domain.yml", tmp_path / "data" / "stories.yml"
    # as Rasa: a mapping of an undeclared entity is skipped, an undeclared story entity is no feature (warnings)
    assert [w for w in report.warnings if "'town'" in w or "'country'" in w] == [
        f"{d}:19: slot 'city': the from_entity mapping uses entity 'town', which is not declared in the domain's "
        f"entities: the mapping never fills the slot (Rasa skips it as invalid)",
        f"{s}:4: entity 'country' (in story 's') is not declared in the domain's entities: it is left out of the "
        f"dialogue state, as Rasa leaves it out",
    ]
    assert errors == [
        f"{d}:19: slot 'city': the from_entity mapping names intent 'travel', which is not declared",
        f"{d}:22: entity 'city' has no role 'to' in the domain (roles: from)",
        f"{d}:25: slot 'city': the custom mapping names action 'action_fill', which is not declared in the domain's "
        f"actions",
        f"{d}:25: slot 'city': the custom mapping: condition active_loop 'trip_form' is not a form",
        f"{d}:25: slot 'city': the custom mapping: condition requested_slot 'nowhere' is not a slot",
        f"{s}:8: slot 'weather' (in story 's') is not declared in the domain's slots",
        f"{s}:10: active_loop 'trip_form' (in story 's') is not a form of the domain",
    ]


def test_form_questions_utter_ask_or_action_ask(tmp_path: Path) -> None:
    domain = DOMAIN + """slots:
  a:
    type: text
    mappings: [{type: from_text}]
  b:
    type: text
    mappings: [{type: from_text}]
  c:
    type: text
    mappings: [{type: from_text}]
  d:
    type: text
    mappings: [{type: from_text}]
forms:
  f:
    required_slots: [a, b, c, d]
actions:
  - action_ask_c
"""
    asks = "responses:\n  utter_ask_f_a:\n  - text: A?\n  utter_ask_b:\n  - text: B?\n"
    domain = domain.replace("responses:\n", asks)
    project(tmp_path, domain=domain, extra={"actions.py": "# actions\n"})
    errors = check_bot_folder(tmp_path).errors
    assert errors == [f"{tmp_path / 'domain.yml'}:30: form 'f' has no question for slot 'd': add a response "
                      f"utter_ask_f_d or utter_ask_d (or an action action_ask_d)"]


def test_custom_actions_need_a_package_or_a_server(tmp_path: Path) -> None:
    project(tmp_path, domain=DOMAIN + "actions:\n  - action_lookup\n  - action_more\n")
    errors = check_bot_folder(tmp_path).errors
    assert errors == [f"{tmp_path / 'domain.yml'}:13: custom action 'action_lookup' (and 1 more) has nothing to run "
                      f"it: add an actions/ package (or actions.py) or an action_endpoint in endpoints.yml"]
    write(tmp_path, {"endpoints.yml": "action_endpoint:\n  url: http://localhost:5055/webhook\n"})
    assert check_bot_folder(tmp_path).errors == []


def test_warnings_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    domain = DOMAIN.replace("intents: [greet, bye, mood_great, ask]", "intents: [greet, bye, mood_great, ask, lonely]")
    domain += """slots:
  size:
    type: categorical
    values: [small, large]
    mappings: [{type: custom}]
  count:
    type: float
    mappings: [{type: custom}]
"""
    nlu = NLU + "- intent: bye\n  examples: |\n    - hello\n"
    project(tmp_path, domain=domain, extra={"data/nlu.yml": nlu}, stories="""- story: s
  steps:
  - intent: greet
  - action: utter_greet
  - slot_was_set:
    - size: huge
    - count
  - checkpoint: nowhere
- story: t
  steps:
  - checkpoint: never_ended
  - intent: bye
  - action: utter_bye
""")
    report = check_bot_folder(tmp_path)
    d, s, n = tmp_path / "domain.yml", tmp_path / "data" / "stories.yml", tmp_path / "data" / "nlu.yml"
    assert report.errors == []
    assert report.warnings == [
        f"{n}:17: the example 'hello' is also an example of intent 'greet' ({n}:5): the model cannot tell them apart",
        f"{d}:2: intent 'lonely' has no NLU examples: it is never recognised",
        f"{s}:6: slot 'size' is categorical and 'huge' is not one of its values (small, large)",
        f"{s}:6: slot 'count' is of type float and named without a value: it is read as not set (as Rasa does); "
        f"give its value",
        f"{s}:12: checkpoint 'never_ended' starts a story but no story ends with it: that story is never reached",
        f"{s}:9: checkpoint 'nowhere' ends a story but no story starts with it",
        f"{d}:2: intent 'mood_great' is not used in any story or rule",
        f"{d}:2: intent 'ask' is not used in any story or rule",
        f"{d}:2: intent 'lonely' is not used in any story or rule",
        f"{d}:9: response 'utter_happy' is not used in any story, rule or form (a custom action may still say it)",
        f"{d}:11: response 'utter_answer' is not used in any story, rule or form (a custom action may still say it)",
    ]
    assert cli_main(["check", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{tmp_path}: 0 error(s), 11 warning(s), 0 note(s)"


def test_conflicts_depend_on_max_history(tmp_path: Path) -> None:
    stories = """- story: a
  steps:
  - intent: greet
  - action: utter_greet
  - intent: ask
  - action: utter_answer
  - intent: mood_great
  - action: utter_happy
- story: b
  steps:
  - intent: bye
  - action: utter_bye
  - intent: ask
  - action: utter_answer
  - intent: mood_great
  - action: utter_bye
"""
    short = "policies:\n  - name: MemoizationPolicy\n    max_history: 3\n  - name: RulePolicy\n"
    project(tmp_path, stories, config=short)
    errors = check_bot_folder(tmp_path).errors
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'data' / 'stories.yml'}:9: story structure conflict after intent "
                                f"'mood_great' (turn 3; the last 3 states are the same, max_history)")
    project(tmp_path, stories, config=short.replace("max_history: 3", "max_history: 5"))
    assert check_bot_folder(tmp_path).errors == []     # the first turn still tells the two stories apart


def test_rules_with_conditions_and_starts_do_not_contradict_stories(tmp_path: Path) -> None:
    domain = DOMAIN + """slots:
  known:
    type: bool
    mappings: [{type: custom}]
"""
    rules = """- rule: greet a known user
  condition:
  - slot_was_set:
    - known: true
  steps:
  - intent: greet
  - action: utter_happy
- rule: first greeting
  conversation_start: true
  steps:
  - intent: greet
  - action: utter_answer
- rule: bye, then nothing
  steps:
  - intent: bye
  - action: utter_bye
  wait_for_user_input: false
"""
    stories = """- story: later greeting
  steps:
  - intent: ask
  - action: utter_answer
  - intent: greet
  - action: utter_greet
  - intent: bye
  - action: utter_bye
  - action: utter_greet
"""
    project(tmp_path, stories, rules, domain=domain)
    assert check_bot_folder(tmp_path).errors == []
    # the same story from the start of a conversation contradicts the conversation_start rule
    project(tmp_path, stories.replace("  - intent: ask\n  - action: utter_answer\n", ""), rules, domain=domain)
    errors = check_bot_folder(tmp_path).errors
    assert len(errors) == 1 and "rule 'first greeting'" in errors[0] and "goes on with 'utter_greet' here" in errors[0]


def test_contradictions_can_be_switched_off(tmp_path: Path) -> None:
    rules = """- rule: a
  steps:
  - intent: greet
  - action: utter_greet
- rule: b
  steps:
  - intent: greet
  - action: utter_bye
  - intent: bye
  - action: utter_bye
"""
    project(tmp_path, rules=rules)
    assert len(check_bot_folder(tmp_path).errors) == 3   # two contradictions and restrict_rules
    project(tmp_path, rules=rules, config="policies:\n  - name: RulePolicy\n    check_for_contradictions: false\n"
                                          "    restrict_rules: false\n")
    assert check_bot_folder(tmp_path).errors == []


def test_check_bot_on_a_loaded_bot() -> None:
    spec, dialogue = load_bot_folder(RASA / "moodbot")
    assert check_bot(spec, dialogue).ok
    report = check_bot(spec, dialogue.__class__(domain=dialogue.domain, stories=dialogue.stories[:1],
                                                policy=dialogue.policy))
    assert report.ok and any("intent 'greet' is not used" in w for w in report.warnings)


def test_train_refuses_a_bot_that_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bot = tmp_path / "conflicts"
    shutil.copytree(RASA / "conflicts", bot)
    assert training_main(["train", str(bot), "--fast"]) == 2
    err = capsys.readouterr().err
    assert "story structure conflict after intent 'mood_great'" in err
    assert not (bot / "models").exists()


def test_a_slot_without_mappings_is_a_note(tmp_path: Path) -> None:
    # Rasa 3 refuses such a domain ("Cannot find required key 'mappings'. Path: '/slots/...'", seen with Rasa 3.0.8
    # and 3.6.10 on public projects written for Rasa 2); Switchboard serves it, with the slot set by actions only,
    # and says so instead of accepting it silently.
    domain = DOMAIN + """slots:
  mood:
    type: text
  name:
    type: text
    mappings:
    - type: from_text
"""
    b = project(tmp_path, domain=domain)
    report = check_bot_folder(b)
    assert not report.errors
    assert any(n.startswith(f"{b / 'domain.yml'}:13: slot 'mood' has no 'mappings', which Rasa 3 requires")
               for n in report.notes), report.notes
    assert not any("slot 'name' has no 'mappings'" in n for n in report.notes)
