"""The dialogue policies (bots/dialogue/policies.py) on their own, and ``switchboard check`` agreeing with the
engine: rule matching as Rasa's RulePolicy (conditions, ``null``, ``conversation_start``, ``wait_for_user_input``),
memoisation windows and ``max_history``, the story graph (checkpoints with slot conditions, ``or``), rule/story
contradictions; a project the check passes is served as its stories say, one it refuses is one the engine could not
follow."""

from __future__ import annotations

import random
import time
from pathlib import Path

from bots.botspec import BotSpec
from bots.dialogue.check import check_bot_folder
from bots.dialogue.domain import ACTION_LISTEN, Step, Story, StoryEntity
from bots.dialogue.engine import Message, Services, decide
from bots.dialogue.policies import (
    Ensemble,
    MemoizationPolicy,
    RulePolicy,
    Tracker,
    check_stories,
    simulate,
    story_graph,
    trajectories,
)
from bots.dialogue.spec import DialogueSpec
from bots.dialogue.state import State
from bots.events import ACTION, NLU, USER, Event
from bots.loader import load_bot_folder
from bots.types import Entity, IntentScore, Understanding
from tests.bots.test_rasa_check import write
from tests.conftest import ROOT

DOMAIN = """version: "3.1"
intents: [greet, bye, mood_great, mood_unhappy, affirm, deny, ask, thanks, inform, confirm]
entities:
  - city:
      roles: [from, to]
slots:
  vip:
    type: bool
    mappings:
    - type: from_intent
      intent: confirm
      value: true
  city:
    type: text
    mappings:
    - type: from_entity
      entity: city
      role: to
responses:
"""
RESPONSES = ("greet", "happy", "cheer_up", "did_that_help", "goodbye", "answer", "vip_answer", "first_answer",
             "welcome", "anything_else", "city", "vip", "ask_city")
NLU_DATA = "nlu:\n" + "".join(f"- intent: {i}\n  examples: |\n    - {i} please\n" for i in (
    "greet", "bye", "mood_great", "mood_unhappy", "affirm", "deny", "ask", "thanks", "inform", "confirm"))
TRAVEL = """- story: travel
  steps:
  - intent: inform
    entities:
    - city: Paris
      role: to
  - slot_was_set:
    - city: Paris
  - action: utter_city
"""
STORIES = """stories:
- story: happy
  steps:
  - intent: greet
  - action: utter_greet
  - intent: mood_great
  - action: utter_happy
- story: sad
  steps:
  - intent: greet
  - action: utter_greet
  - or:
    - intent: mood_unhappy
    - intent: deny
  - action: utter_cheer_up
  - action: utter_did_that_help
  - checkpoint: asked
- story: it helped
  steps:
  - checkpoint: asked
  - intent: affirm
  - action: utter_happy
- story: it did not help
  steps:
  - checkpoint: asked
  - intent: deny
  - action: utter_goodbye
""" + TRAVEL + """  - intent: thanks
  - action: utter_welcome
  - action: utter_anything_else
"""
RULES = """rules:
- rule: goodbye
  steps:
  - intent: bye
  - action: utter_goodbye
- rule: first question
  conversation_start: true
  steps:
  - intent: ask
  - action: utter_first_answer
- rule: question
  steps:
  - intent: ask
  - action: utter_answer
- rule: question from a vip
  condition:
  - slot_was_set:
    - vip: true
  steps:
  - intent: ask
  - action: utter_vip_answer
- rule: confirm
  steps:
  - intent: confirm
  - action: utter_vip
- rule: thanks
  steps:
  - intent: thanks
  - action: utter_welcome
  wait_for_user_input: false
"""


def project(root: Path, stories: str = STORIES, rules: str = RULES, config: str = "language: en\n") -> Path:
    domain = DOMAIN + "".join(f"  utter_{r}:\n  - text: {r}\n" for r in RESPONSES)
    return write(root, {"domain.yml": domain, "data/nlu.yml": NLU_DATA, "data/stories.yml": stories,
                        "data/rules.yml": rules, "config.yml": config})


Turn = tuple[str, tuple[Entity, ...]]


def said(intent: str, *entities: tuple[str, str, str | None]) -> Turn:
    return intent, tuple(Entity(e, v, 0, len(v), role=role) for e, v, role in entities)


async def play(spec: BotSpec, dialogue: DialogueSpec, turns: list[Turn],
               services: Services | None = None) -> list[list[str]]:
    """The actions the engine runs for each message (``action_listen`` left out)."""
    state, out, now = State(), [], time.time()
    for intent, entities in turns:
        understanding = Understanding(intent, 1.0, (IntentScore(intent, 1.0),), entities)
        decision = await decide(spec, dialogue, state, Message(intent, understanding, now), services)
        for event in (Event(USER, {"text": intent}, timestamp=now), Event(NLU, understanding.to_dict(), timestamp=now),
                      *decision.events):
            state.apply(event)
        out.append([str(e.data["name"]) for e in decision.events
                    if e.kind == ACTION and e.data["name"] != ACTION_LISTEN])
    return out


def story_turns(steps: tuple[Step, ...] | list[Step]) -> list[Turn]:
    return [(str(s.name), tuple(Entity(e.entity, str(e.value), 0, 1, role=e.role) for e in s.entities))
            for s in steps if s.kind == "intent"]


async def test_a_project_the_check_passes_is_served_as_its_stories_say(tmp_path: Path) -> None:
    bot = project(tmp_path)
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    paths = story_graph(dialogue.stories)
    assert len(paths) == 6     # happy, travel, and sad: two 'or' branches x two checkpoint continuations
    for path in paths:
        t = simulate(dialogue.domain, path.story, path.steps, path.origins)
        expected = [[a for a, turn in zip(t.actions, t.turns, strict=True) if turn == n and a != ACTION_LISTEN]
                    for n in range(1, max(t.turns) + 1)]
        assert await play(spec, dialogue, story_turns(path.steps)) == expected, [s.name for s in path.origins]
    # The rules: conversation_start, the most specific rule (a slot condition), the plain one.
    assert await play(spec, dialogue, [said("ask")]) == [["utter_first_answer"]]
    assert await play(spec, dialogue, [said("greet"), said("ask")]) == [["utter_greet"], ["utter_answer"]]
    assert await play(spec, dialogue, [said("confirm"), said("ask")]) == [["utter_vip"], ["utter_vip_answer"]]
    assert await play(spec, dialogue, [said("greet"), said("bye")]) == [["utter_greet"], ["utter_goodbye"]]


async def test_a_project_the_check_refuses_is_one_the_engine_cannot_follow() -> None:
    conflicts = ROOT / "tests" / "data" / "rasa" / "conflicts"
    assert any("story structure conflict" in e for e in check_bot_folder(conflicts).errors)
    spec, dialogue = load_bot_folder(conflicts)
    # 'happy' and 'happy but leaving' go on differently after the same turns: the memoisation cannot predict
    # there (a rule answers), so 'happy but leaving' is not what is served
    assert await play(spec, dialogue, [said("greet"), said("mood_great")]) == [["utter_greet"], ["utter_happy"]]
    memo = MemoizationPolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    (conflict,) = memo.conflicts()
    assert [t.actions[i] for t, i in conflict.places] == ["utter_happy", "utter_goodbye"]
    tracker = Tracker(dialogue.domain)
    for event in (Event(NLU, {"intent": "greet"}), Event(ACTION, {"name": "utter_greet"}),
                  Event(ACTION, {"name": ACTION_LISTEN}), Event(NLU, {"intent": "mood_great"})):
        tracker.apply(event)
    assert tracker.frame() == conflict.places[0][0].queries[conflict.places[0][1]]
    assert memo.predict(tracker, tracker.frame()) is None


def test_story_graph_joins_checkpoints_with_slot_conditions_and_expands_or(tmp_path: Path) -> None:
    stories = """stories:
- story: start
  steps:
  - intent: greet
  - action: utter_greet
  - or:
    - slot_was_set:
      - vip: true
    - slot_was_set:
      - vip: false
  - checkpoint: greeted
- story: vip
  steps:
  - checkpoint: greeted
    slot_was_set:
    - vip: true
  - intent: ask
  - action: utter_vip_answer
- story: not vip
  steps:
  - checkpoint: greeted
    slot_was_set:
    - vip: false
  - intent: ask
  - action: utter_answer
  - checkpoint: middle
  - intent: bye
  - action: utter_goodbye
- story: from the middle
  steps:
  - checkpoint: middle
  - intent: thanks
  - action: utter_welcome
"""
    _spec, dialogue = load_bot_folder(project(tmp_path, stories, rules="rules: []\n"))
    paths = {tuple(f"{s.kind}:{s.name}" + (f"={s.slots[0][1]}" if s.slots else "") for s in p.steps): p
             for p in story_graph(dialogue.stories)}
    head = ("intent:greet", "action:utter_greet")
    assert set(paths) == {
        (*head, "slot_was_set:None=True", "intent:ask", "action:utter_vip_answer"),
        (*head, "slot_was_set:None=False", "intent:ask", "action:utter_answer", "intent:bye", "action:utter_goodbye"),
        (*head, "slot_was_set:None=False", "intent:ask", "action:utter_answer", "intent:thanks",
         "action:utter_welcome"),
    }
    # each step remembers its story (for messages), the path its first
    path = paths[(*head, "slot_was_set:None=False", "intent:ask", "action:utter_answer", "intent:thanks",
                  "action:utter_welcome")]
    assert path.story.name == "start"
    assert [o.name for o in path.origins] == ["start"] * 3 + ["not vip"] * 2 + ["from the middle"] * 2
    # trajectories know the turn and the story of each action
    (t,) = [t for t in trajectories(dialogue.domain, dialogue.stories) if t.actions[-2:] == ("utter_welcome",
                                                                                           ACTION_LISTEN)]
    assert t.actions == ("utter_greet", ACTION_LISTEN, "utter_answer", ACTION_LISTEN, "utter_welcome", ACTION_LISTEN)
    assert t.turns == (1, 1, 2, 2, 3, 3)
    assert [t.origin(i).name for i in range(len(t.actions))] == ["start", "not vip", "not vip", "from the middle",
                                                                 "from the middle", "from the middle"]


async def test_the_engine_follows_a_story_through_a_checkpoint_in_the_middle(tmp_path: Path) -> None:
    stories = """stories:
- story: greet then ask
  steps:
  - intent: greet
  - action: utter_greet
  - checkpoint: greeted
  - intent: ask
  - action: utter_answer
- story: after the greeting
  steps:
  - checkpoint: greeted
  - intent: mood_unhappy
  - action: utter_cheer_up
"""
    bot = project(tmp_path, stories, rules="rules: []\n")
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    assert await play(spec, dialogue, [said("greet"), said("mood_unhappy")]) == [["utter_greet"], ["utter_cheer_up"]]
    assert await play(spec, dialogue, [said("greet"), said("ask")]) == [["utter_greet"], ["utter_answer"]]


def test_memoisation_windows_follow_max_history(tmp_path: Path) -> None:
    stories = """stories:
- story: a
  steps:
  - intent: greet
  - action: utter_greet
  - action: utter_did_that_help
  - intent: affirm
  - action: utter_cheer_up
  - intent: mood_great
  - action: utter_happy
- story: b
  steps:
  - intent: bye
  - action: utter_goodbye
  - action: utter_welcome
  - intent: affirm
  - action: utter_cheer_up
  - intent: mood_great
  - action: utter_goodbye
"""
    config = "policies:\n  - name: MemoizationPolicy\n    max_history: {n}\n  - name: RulePolicy\n"
    _spec, dialogue = load_bot_folder(project(tmp_path, stories, "rules: []\n", config.format(n=3)))
    memo = MemoizationPolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    assert memo.max_history == 3
    (t,) = [t for t in trajectories(dialogue.domain, dialogue.stories) if t.story.name == "a"]
    assert len(t.window(5, 3)) == 3 and len(t.window(1, 3)) == 2   # the start of a story: fewer frames
    assert memo.lookup[t.window(5, 3)] is None                       # the last 3 frames: both stories
    tracker = Tracker(dialogue.domain)
    for intent, actions in (("greet", ["utter_greet", "utter_did_that_help"]), ("affirm", ["utter_cheer_up"]),
                            ("mood_great", [])):
        tracker.apply(Event(NLU, {"intent": intent, "confidence": 1.0}))
        for action in [*actions, ACTION_LISTEN] if actions else []:
            tracker.apply(Event(ACTION, {"name": action}))
    assert memo.predict(tracker, tracker.frame()) is None
    problems = check_stories(dialogue.domain, dialogue.stories, dialogue.policy)
    assert len(problems) == 1 and "turn 3; the last 3 states are the same" in problems[0]

    _spec, dialogue = load_bot_folder(project(tmp_path, stories, "rules: []\n", config.format(n=5)))
    memo = MemoizationPolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    prediction = memo.predict(tracker, tracker.frame())
    assert prediction is not None and prediction.action == "utter_happy"
    assert prediction.where.endswith("stories.yml:10")
    assert check_stories(dialogue.domain, dialogue.stories, dialogue.policy) == []


async def test_rule_conditions_null_means_not_set(tmp_path: Path) -> None:
    rules = """rules:
- rule: ask without a city
  condition:
  - slot_was_set:
    - city: null
  steps:
  - intent: ask
  - action: utter_ask_city
- rule: ask with a city
  condition:
  - slot_was_set:
    - city
  steps:
  - intent: ask
  - action: utter_city
"""
    bot = project(tmp_path, stories="stories: []\n", rules=rules)
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    assert await play(spec, dialogue, [said("ask")]) == [["utter_ask_city"]]
    assert await play(spec, dialogue, [said("inform", ("city", "Oslo", "to")), said("ask")]) == [
        ["action_default_fallback"], ["utter_city"]]
    # null in a rule's condition is "no feature of that slot", in both frames of the key
    policy = RulePolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    keys = [k for k, a in policy.lookup.items() if a == "utter_ask_city"]
    assert len(keys) == 1 and "!slot:city:" in keys[0].frames[0]


def test_active_loop_null_and_a_loop_condition(tmp_path: Path) -> None:
    domain_forms = "forms:\n  city_form:\n    required_slots: [city]\n"
    rules = """rules:
- rule: ask outside a form
  condition:
  - active_loop: null
  steps:
  - intent: ask
  - action: utter_answer
- rule: ask inside the form
  condition:
  - active_loop: city_form
  steps:
  - intent: ask
  - action: utter_ask_city
"""
    write(project(tmp_path, stories="stories: []\n", rules=rules), {
        "domain.yml": (tmp_path / "domain.yml").read_text(encoding="utf-8") + domain_forms})
    _spec, dialogue = load_bot_folder(tmp_path)
    policy = RulePolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    tracker = Tracker(dialogue.domain)
    tracker.apply(Event(NLU, {"intent": "ask", "confidence": 1.0}))
    p = policy.predict(tracker, tracker.frame(), loop_rejected=False, latest_action=None)
    assert p is not None and p.action == "utter_answer" and p.where.endswith("rules.yml:7")
    tracker.loop = "city_form"   # the form rejected the message: the rules decide
    p = policy.predict(tracker, tracker.frame(), loop_rejected=True, latest_action=None)
    assert p is not None and p.action == "utter_ask_city"
    p = policy.predict(tracker, tracker.frame(), loop_rejected=False, latest_action=None)
    assert p is not None and p.action == "city_form"      # the loop's happy path comes first


async def test_wait_for_user_input_false_lets_a_story_go_on_and_true_contradicts_it(tmp_path: Path) -> None:
    bot = project(tmp_path)
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    turns = [said("inform", ("city", "Paris", "to")), said("thanks")]
    assert await play(spec, dialogue, turns) == [["utter_city"], ["utter_welcome", "utter_anything_else"]]
    project(tmp_path, rules=RULES.replace("  wait_for_user_input: false\n", ""))
    s, r = tmp_path / "data" / "stories.yml", tmp_path / "data" / "rules.yml"
    assert check_bot_folder(bot).errors == [
        f"{s}:39: story 'travel' goes on with 'utter_anything_else' here (turn 2), but in the same situation rule "
        f"'thanks' ({r}:26) goes on with 'action_listen': contradicting rules (RulePolicy's check_for_contradictions)"]


def test_a_rule_contradicting_a_story_names_both_places_and_the_turn(tmp_path: Path) -> None:
    rules = RULES + """- rule: unhappy
  steps:
  - intent: mood_unhappy
  - action: utter_goodbye
"""
    _spec, dialogue = load_bot_folder(project(tmp_path, rules=rules))
    s, r = tmp_path / "data" / "stories.yml", tmp_path / "data" / "rules.yml"
    assert check_stories(dialogue.domain, dialogue.stories, dialogue.policy) == [
        f"{s}:15: story 'sad' goes on with 'utter_cheer_up' here (turn 2), but in the same situation rule 'unhappy' "
        f"({r}:31) goes on with 'utter_goodbye': contradicting rules (RulePolicy's check_for_contradictions)"]
    off = dialogue.policy.__class__(check_for_contradictions=False)
    assert check_stories(dialogue.domain, dialogue.stories, off) == []


def test_rules_going_on_differently_from_the_same_state_predict_nothing(tmp_path: Path) -> None:
    rules = RULES + """- rule: another goodbye
  steps:
  - intent: bye
  - action: utter_welcome
"""
    _spec, dialogue = load_bot_folder(project(tmp_path, rules=rules))
    policy = RulePolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    tracker = Tracker(dialogue.domain)
    tracker.apply(Event(NLU, {"intent": "bye", "confidence": 1.0}))
    assert policy.predict(tracker, tracker.frame(), loop_rejected=False, latest_action=None) is None
    problems = check_stories(dialogue.domain, dialogue.stories, dialogue.policy)
    assert [p.split(": ", 1)[1].split(" here")[0] for p in problems] == [
        "rule 'goodbye' goes on with 'utter_goodbye'", "rule 'another goodbye' goes on with 'utter_welcome'"]


async def test_a_rule_with_two_user_messages_is_followed_when_restrict_rules_is_off(tmp_path: Path) -> None:
    rules = """rules:
- rule: greet and ask
  steps:
  - intent: greet
  - action: utter_greet
  - intent: ask
  - action: utter_vip_answer
"""
    config = "policies:\n  - name: RulePolicy\n    restrict_rules: false\n"
    bot = project(tmp_path, stories="stories: []\n", rules=rules, config=config)
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    assert await play(spec, dialogue, [said("greet"), said("ask")]) == [["utter_greet"], ["utter_vip_answer"]]
    project(tmp_path, stories="stories: []\n", rules=rules)
    assert [e.split(": ", 1)[1] for e in check_bot_folder(bot).errors] == [
        "rule 'greet and ask' has 2 user messages: a rule holds at most one (RulePolicy's restrict_rules); write a "
        "story for longer exchanges"]


async def test_a_rule_starting_with_an_action_runs_once(tmp_path: Path) -> None:
    # The first action after a rule's snippet is not the rule's to predict (Rasa's rule key): a rule going on
    # after utter_city once the city is known must not start over after each of its own actions.
    rules = RULES + """- rule: a known city
  condition:
  - slot_was_set:
    - city
  steps:
  - action: utter_city
  - action: utter_anything_else
  wait_for_user_input: false
"""
    bot = project(tmp_path, "stories:\n" + TRAVEL + "  - action: utter_anything_else\n", rules)
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    assert await play(spec, dialogue, [said("inform", ("city", "Rome", "to")), said("bye")]) == [
        ["utter_city", "utter_anything_else"], ["utter_goodbye"]]


# Rasa's _should_delete: rule 'greeted' says "listen after utter_greet" from that one state, another rule
# goes on from it; a story going on after utter_greet drops the first rule instead of contradicting it.
LONE_ACTION_RULES = """rules:
- rule: greeted
  steps:
  - action: utter_greet
- rule: greeted a vip
  condition:
  - slot_was_set:
    - vip: true
  steps:
  - action: utter_greet
  - action: utter_vip
"""
GOING_ON_AFTER_IT = """stories:
- story: greet and cheer
  steps:
  - intent: greet
  - action: utter_greet
  - action: utter_cheer_up
"""


async def test_a_story_going_on_after_a_rules_lone_action_drops_that_rule_in_check_and_engine(tmp_path: Path) -> None:
    bot = project(tmp_path, GOING_ON_AFTER_IT, LONE_ACTION_RULES)
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    ensemble = Ensemble.build(dialogue.domain, dialogue.stories, dialogue.policy)
    assert ensemble.rules is not None and not any(len(k.frames) == 1 and a == ACTION_LISTEN
                                                  for k, a in ensemble.rules.lookup.items())
    assert await play(spec, dialogue, [said("greet")], Services(policies=ensemble)) == [
        ["utter_greet", "utter_cheer_up"]]


def test_frames_entity_roles_and_slots_named_without_a_value(tmp_path: Path) -> None:
    _spec, dialogue = load_bot_folder(project(tmp_path))
    tracker = Tracker(dialogue.domain)
    tracker.apply(Event(NLU, {"intent": "inform", "confidence": 1.0, "entities": [
        {"entity": "city", "value": "Oslo", "start": 0, "end": 4, "role": "to"}]}))
    assert tracker.frame() == {"intent:inform", "entity:city", "entity:city#to", f"prev:{ACTION_LISTEN}"}
    # a slot named without a value: text slots are "filled", others "not set" (Rasa's reader)
    story = Story("s", (Step("intent", "greet"), Step("slot_was_set", slots=(("city", ...), ("vip", ...))),
                        Step("action", "utter_greet")))
    t = simulate(dialogue.domain, story, story.steps)
    assert "slot:city:set" in t.queries[0] and not any(f.startswith("slot:vip") for f in t.queries[0])
    # a story's entity fills the slots the engine's extraction would: the mapping takes city with role 'to' only
    for role, filled in (("to", True), ("from", False), (None, False)):
        story = Story("s", (Step("intent", "inform", entities=(StoryEntity("city", "Oslo", role=role),)),
                            Step("action", "utter_city")))
        assert ("slot:city:set" in simulate(dialogue.domain, story, story.steps).queries[0]) is filled


async def test_a_storys_start_is_not_mistaken_for_the_same_frames_later_in_a_story(tmp_path: Path) -> None:
    # 'greet' then utter_greet at the start, 'greet' then utter_goodbye later: one frame is the same, but the
    # start of a conversation is the start of a story (Rasa's windows begin with the state before it).
    stories = """stories:
- story: twice
  steps:
  - intent: greet
  - action: utter_greet
  - intent: greet
  - action: utter_goodbye
"""
    bot = project(tmp_path, stories, "rules: []\n")
    assert check_bot_folder(bot).errors == []
    spec, dialogue = load_bot_folder(bot)
    assert await play(spec, dialogue, [said("greet"), said("greet")]) == [["utter_greet"], ["utter_goodbye"]]


def _random_project(rng: random.Random, root: Path) -> Path:
    """A small Rasa project: stories with 'or', checkpoints, entities filling a slot; rules with conditions,
    conversation_start and wait_for_user_input: false."""
    intents = ["greet", "bye", "ask", "affirm", "deny", "thanks"]
    acts = ["utter_greet", "utter_happy", "utter_answer", "utter_goodbye", "utter_city"]

    def user() -> str:
        intent = rng.choice(intents)
        if rng.random() < 0.2:
            return f"  - intent: {intent}\n    entities:\n    - city: Paris\n      role: to\n" \
                   f"  - slot_was_set:\n    - city: Paris\n"
        return f"  - intent: {intent}\n"

    stories = "stories:\n"
    for k in range(rng.randint(1, 4)):
        stories += f"- story: s{k}\n  steps:\n" + ("  - checkpoint: c1\n" if k and rng.random() < 0.3 else "")
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.15:
                a, b = rng.sample(intents, 2)
                stories += f"  - or:\n    - intent: {a}\n    - intent: {b}\n"
            else:
                stories += user()
            stories += "".join(f"  - action: {rng.choice(acts)}\n" for _ in range(rng.randint(1, 2)))
        stories += "  - checkpoint: c1\n" if k == 0 and rng.random() < 0.5 else ""
    rules = "rules:\n"
    for k in range(rng.randint(0, 4)):
        rules += f"- rule: r{k}\n" + ("  conversation_start: true\n" if rng.random() < 0.2 else "")
        if rng.random() < 0.3:
            rules += f"  condition:\n  - slot_was_set:\n    - city: {rng.choice(['null', 'Paris'])}\n"
        rules += f"  steps:\n  - intent: {rng.choice(intents)}\n"
        rules += "".join(f"  - action: {rng.choice(acts)}\n" for _ in range(rng.randint(1, 2)))
        rules += "  wait_for_user_input: false\n" if rng.random() < 0.25 else ""
    config = f"policies:\n  - name: MemoizationPolicy\n    max_history: {rng.choice([2, 3, 5])}\n  - name: RulePolicy\n"
    return project(root, stories, rules if rules != "rules:\n" else "rules: []\n", config)


async def test_random_projects_the_check_passes_are_served_as_their_stories_say(tmp_path: Path) -> None:
    passed = 0
    for seed in range(150):
        bot = _random_project(random.Random(seed), tmp_path / str(seed))
        if check_bot_folder(bot).errors:
            continue
        passed += 1
        spec, dialogue = load_bot_folder(bot)
        for path in story_graph(dialogue.stories):
            t = simulate(dialogue.domain, path.story, path.steps, path.origins)
            expected = [[a for a, turn in zip(t.actions, t.turns, strict=True) if turn == n and a != ACTION_LISTEN]
                        for n in range(1, max(t.turns, default=0) + 1)]
            assert await play(spec, dialogue, story_turns(path.steps)) == expected, (seed, path.story.name)
    assert passed > 30   # the generator makes enough passing projects for this to mean something
