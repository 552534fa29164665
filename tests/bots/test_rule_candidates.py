"""RulePolicy's index of rule keys by a frame's previous action and intent (bots/dialogue/policies.py
``RulePolicy.candidates``): ``matches`` finds what a scan of every key finds, also after the contradiction check
dropped keys the index had already listed."""

from __future__ import annotations

import random
from pathlib import Path

from bots.dialogue.policies import Frame, RuleKey, RulePolicy, trajectories
from bots.loader import load_bot_folder
from tests.bots.test_policies import GOING_ON_AFTER_IT, LONE_ACTION_RULES, project
from tests.conftest import ROOT


def scanned(policy: RulePolicy, history: list[Frame], excluded: frozenset[str] = frozenset()) -> list[
        tuple[RuleKey, str]]:
    """``matches`` as a scan of every rule key: the highest rank that applies, in the rules' order."""
    best: list[tuple[RuleKey, str]] = []
    for key, action in policy.lookup.items():
        if action not in excluded and key.applies(history):
            if not best or key.rank > best[0][0].rank:
                best = [(key, action)]
            elif key.rank == best[0][0].rank:
                best.append((key, action))
    return best


def test_the_indexed_match_is_the_scan_of_every_rule(tmp_path: Path) -> None:
    rng = random.Random(17)
    checked = found = 0
    for bot in (project(tmp_path), ROOT / "examples" / "support"):
        _spec, dialogue = load_bot_folder(bot)
        policy = RulePolicy(dialogue.domain, dialogue.stories, dialogue.policy)
        played = [*policy.rules, *trajectories(dialogue.domain, dialogue.stories)]
        frames = [f for t in played for f in (*t.frames, *t.queries)]
        actions = sorted(set(policy.lookup.values()))
        histories = [[*t.frames[:i], t.queries[i]] for t in played for i in range(len(t.actions))]
        histories += [rng.sample(frames, rng.randint(1, 4)) for _ in range(2000)]  # frames in other orders
        for history in histories:
            excluded = frozenset(rng.sample(actions, 1)) if rng.random() < 0.2 else frozenset()
            assert policy.matches(history, excluded) == scanned(policy, history, excluded), history
            checked += 1
            found += bool(scanned(policy, history, excluded))
    assert checked > 2000 and found > 200


def test_a_key_the_contradiction_check_drops_leaves_the_index(tmp_path: Path) -> None:
    # a story going on after a rule's lone action drops that rule's key (tests/bots/test_policies.py)
    _spec, dialogue = load_bot_folder(project(tmp_path, GOING_ON_AFTER_IT, LONE_ACTION_RULES))
    policy = RulePolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    story = trajectories(dialogue.domain, dialogue.stories)
    assert story[0].actions[:2] == ("utter_greet", "utter_cheer_up")
    history = [story[0].frames[0], story[0].queries[1]]  # after utter_greet: the lone rule says listen
    before = policy.matches(history)
    assert [a for _, a in before] == ["action_listen"]
    policy.contradictions(story)
    assert before[0][0] not in policy.lookup
    assert policy.matches(history) == scanned(policy, history) == []
