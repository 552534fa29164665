"""The learned next-action model (training/policy.py): trained with torch on the stories, served from
ONNX by bots.dialogue.policies.LearnedPolicy, and generalising where memoisation cannot."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bots.artifact import read_manifest
from bots.dialogue.domain import ACTION_LISTEN, Domain
from bots.dialogue.policies import (
    POLICY_FILE,
    POLICY_META,
    Ensemble,
    LearnedPolicy,
    MemoizationPolicy,
    Tracker,
    encode_window,
    trajectories,
)
from bots.dialogue.spec import DialogueSpec
from bots.errors import ArtifactError, ConfigError
from bots.loader import load_bot_folder
from tests.conftest import ROOT, TINY_BOT
from training.cli import main as training_main
from training.config import TrainConfig
from training.policy import (
    PolicyTrainConfig,
    TrainedPolicy,
    export_policy,
    glued_trajectories,
    policy_data,
    summary,
    train_policy,
    wants_policy,
)

RASA = ROOT / "tests" / "data" / "rasa"
PROJECTS = ("moodbot", "forms", "digressions")
Trained = tuple[DialogueSpec, TrainedPolicy, Path]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Trained]:
    """A fixture project's policy, trained with its config.yml and exported (once per session)."""
    cache: dict[str, Trained] = {}

    def get(name: str) -> Trained:
        if name not in cache:
            _, dialogue = load_bot_folder(RASA / name)
            policy = train_policy(dialogue.domain, dialogue.stories, PolicyTrainConfig.of(dialogue.policy),
                                  progress=False)
            out = tmp_path_factory.mktemp(f"policy-{name}")
            export_policy(policy, out)
            cache[name] = (dialogue, policy, out)
        return cache[name]

    return get


def conversation(domain: Domain, turns: Sequence[tuple[str, Sequence[str]]]) -> Tracker:
    """The tracker of a live conversation: each turn an intent and the actions the bot ran for it
    (the last turn's actions are the ones to predict: give none)."""
    tracker = Tracker(domain)
    tracker.new_session(False)
    for intent, actions in turns:
        if tracker.prev_action not in (None, ACTION_LISTEN):
            tracker.action(ACTION_LISTEN)
        tracker.user(intent, ())
        for action in actions:
            tracker.action(action)
    return tracker


def tracker_before(domain: Domain, frames: Sequence[frozenset[str]]) -> Tracker:
    tracker = Tracker(domain)
    tracker.frames = list(frames)
    return tracker


@pytest.mark.parametrize("name", PROJECTS)
def test_onnx_logits_equal_torch_logits_on_the_same_windows(name: str, trained: Callable[[str], Trained]) -> None:
    dialogue, policy, out = trained(name)
    assert policy.data is not None
    windows = policy.data.train.windows
    session = ort.InferenceSession(str(out / POLICY_FILE), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"features": policy.encode(windows)})
    assert onnx_logits.shape == (len(windows), len(policy.actions))
    assert float(np.abs(onnx_logits - policy.logits(windows)).max()) < 1e-4
    # The serving path (LearnedPolicy over a tracker) gives torch's action and confidence.
    served = LearnedPolicy.load(out)
    assert served is not None
    for window, (action, confidence) in zip(windows, policy.predict(windows), strict=True):
        got = served.predict(tracker_before(dialogue.domain, window[:-1]), window[-1])
        assert got is not None and got.action == action and abs(got.confidence - confidence) < 1e-4
    assert policy.facts["onnx_max_difference"] < 1e-4


@pytest.mark.parametrize("name", PROJECTS)
def test_the_served_model_predicts_the_stories_actions(name: str, trained: Callable[[str], Trained]) -> None:
    dialogue, policy, out = trained(name)
    served = LearnedPolicy.load(out)
    assert served is not None
    checked = 0
    for t in trajectories(dialogue.domain, dialogue.stories):
        for i, action in enumerate(t.actions):
            got = served.predict(tracker_before(dialogue.domain, t.frames[:i]), t.queries[i])
            assert got is not None and got.action == action, (t.story.name, i, got)
            assert got.confidence >= dialogue.policy.core_fallback_threshold
            checked += 1
    assert checked >= 11 and policy.facts["story_accuracy"] == 1.0


@pytest.mark.parametrize(("question", "shown", "expected"), [("ask_price", "utter_price", "utter_ordered"),
                                                            ("ask_hours", "utter_hours", "utter_booked")])
def test_a_digression_memoisation_cannot_match_gets_the_stories_next_action(
        question: str, shown: str, expected: str, trained: Callable[[str], Trained]) -> None:
    """A story with a rule's turn inserted before the answer: "yes" means what the question before the
    digression asked. Memoisation has no window for it (the answer alone is ambiguous); the learned
    model has."""
    dialogue, _, out = trained("digressions")
    tracker = conversation(dialogue.domain, [("greet", ["utter_greet"]), (question, [shown]),
                                             ("bot_challenge", ["utter_iamabot"]), ("affirm", [])])
    memo = MemoizationPolicy(dialogue.domain, dialogue.stories, dialogue.policy)
    assert memo.predict(tracker, tracker.frame()) is None
    without = Ensemble.build(dialogue.domain, dialogue.stories, dialogue.policy)
    assert without.predict(tracker).action == dialogue.policy.core_fallback_action
    served = Ensemble.build(dialogue.domain, dialogue.stories, dialogue.policy, out)
    assert served.learned is not None
    got = served.predict(tracker)
    assert (got.action, got.policy) == (expected, "LearnedPolicy")
    assert got.confidence >= dialogue.policy.core_fallback_threshold
    # And once it has answered, the story goes on: the bot waits for the customer.
    tracker.action(got.action)
    assert served.predict(tracker).action == ACTION_LISTEN


def test_held_out_digressions_are_not_trained_on_and_are_reported(trained: Callable[[str], Trained]) -> None:
    _, policy, _ = trained("digressions")
    assert policy.data is not None
    held = policy.data.held_out
    assert len(held) >= 20 and not set(held.windows) & set(policy.data.train.windows)
    facts = policy.facts
    assert facts["held_out_accuracy"] >= 0.9 and facts["train_seconds"] > 0
    assert facts["story_windows"] > 0 and facts["rule_windows"] > 0 and facts["glued_windows"] > 0
    text = summary(facts)
    assert "accuracy on the stories 1.0000" in text and f"on {len(held)} digression windows" in text


def test_the_transformer_generalises_better_than_the_mlp(trained: Callable[[str], Trained]) -> None:
    """Why the transformer is the default: the flattened-window MLP fits the stories as well but
    ties each frame to its position, so a digression that moves the question back breaks it."""
    dialogue, transformer, _ = trained("digressions")
    cfg = dataclasses.replace(PolicyTrainConfig.of(dialogue.policy), architecture="mlp")
    mlp = train_policy(dialogue.domain, dialogue.stories, cfg, progress=False)
    assert mlp.facts["story_accuracy"] == transformer.facts["story_accuracy"] == 1.0
    assert transformer.facts["held_out_accuracy"] - mlp.facts["held_out_accuracy"] >= 0.15


def test_training_is_deterministic_for_a_seed() -> None:
    _, dialogue = load_bot_folder(RASA / "digressions")
    cfg = dataclasses.replace(PolicyTrainConfig.of(dialogue.policy), epochs=5)
    one, two = (train_policy(dialogue.domain, dialogue.stories, cfg, progress=False) for _ in range(2))
    other = train_policy(dialogue.domain, dialogue.stories, dataclasses.replace(cfg, seed=7), progress=False)
    assert one.data is not None
    windows = one.data.train.windows
    assert np.array_equal(one.logits(windows), two.logits(windows))
    assert not np.array_equal(one.logits(windows), other.logits(windows))


def test_augmentation_glues_stories_and_carries_their_slots() -> None:
    """Rasa's augmentation: stories glued end to end; a slot a story set is still set in the next one."""
    _, dialogue = load_bot_folder(RASA / "forms")
    glued = glued_trajectories(dialogue.domain, dialogue.stories, 200, seed=13)
    assert len(glued) == 200
    carried = [q for t in glued for q in t.queries
               if "slot:party_size:large" in q and "intent:request_restaurant" in q]
    assert carried, "a story after 'a party size' sees the party size it set"
    base = PolicyTrainConfig.of(dialogue.policy)
    assert policy_data(dialogue.domain, dialogue.stories, dataclasses.replace(base, augmentation_factor=0)
                       ).counts["glued_windows"] == 0
    data = policy_data(dialogue.domain, dialogue.stories, base)
    assert data.counts["glued_windows"] > data.counts["story_windows"]
    assert len(set(data.train.windows)) == len(data.train)  # identical windows count once...
    assert len(set(zip(data.train.windows, data.train.labels, strict=True))) == len(data.train)


def test_the_rules_windows_are_trained_on() -> None:
    _, dialogue = load_bot_folder(RASA / "moodbot")
    data = policy_data(dialogue.domain, dialogue.stories, PolicyTrainConfig.of(dialogue.policy))
    pairs = set(zip(data.train.windows, data.train.labels, strict=True))
    challenge = frozenset({"intent:bot_challenge", "prev:action_listen"})
    assert ((challenge,), "utter_iamabot") in pairs
    assert ((challenge, frozenset({"intent:bot_challenge", "prev:utter_iamabot"})), ACTION_LISTEN) in pairs


def test_which_bots_get_a_learned_model() -> None:
    for name, wanted in (("moodbot", True), ("forms", True), ("responses", False)):  # responses: rules only
        _, dialogue = load_bot_folder(RASA / name)
        assert wants_policy(dialogue.domain, dialogue.stories, dialogue.policy) is wanted, name
    _, native = load_bot_folder(TINY_BOT)  # bot.yml: rules only, no learned policy
    assert not wants_policy(native.domain, native.stories, native.policy)


def test_a_broken_policy_artifact_is_an_artifact_error(trained: Callable[[str], Trained], tmp_path: Path) -> None:
    _, _, out = trained("moodbot")
    meta = json.loads((out / POLICY_META).read_text(encoding="utf-8"))
    (tmp_path / POLICY_FILE).write_bytes((out / POLICY_FILE).read_bytes())
    (tmp_path / POLICY_META).write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"policy.json:1: invalid JSON"):
        LearnedPolicy.load(tmp_path)
    (tmp_path / POLICY_META).write_text(json.dumps({**meta, "features": meta["features"][:-1]}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="does not fit"):
        LearnedPolicy.load(tmp_path)
    (tmp_path / POLICY_META).write_text(json.dumps({"actions": meta["actions"]}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="needs features, actions and max_history"):
        LearnedPolicy.load(tmp_path)
    (tmp_path / POLICY_META).write_text(json.dumps(meta), encoding="utf-8")
    (tmp_path / POLICY_FILE).write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        LearnedPolicy.load(tmp_path)
    (tmp_path / POLICY_FILE).unlink()
    assert LearnedPolicy.load(tmp_path) is None  # no model: rules and memoisation only


def test_policy_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="policy_architecture must be one of transformer, mlp"):
        TrainConfig(policy_architecture="lstm")
    with pytest.raises(ConfigError, match="augmentation_factor must not be negative"):
        TrainConfig(augmentation_factor=-1)
    _, dialogue = load_bot_folder(RASA / "forms")   # TEDPolicy: max_history 5, epochs 40
    cfg = PolicyTrainConfig.of(dialogue.policy, TrainConfig(augmentation_factor=3, seed=5,
                                                            policy_architecture="mlp"))
    assert (cfg.epochs, cfg.max_history, cfg.augmentation_factor, cfg.seed, cfg.architecture,
            cfg.fallback_threshold) == (40, 5, 3, 5, "mlp", 0.4)


def test_switchboard_train_writes_the_policy_and_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    out = tmp_path / "artifact"
    assert training_main(["train", str(RASA / "digressions"), "--fast", "--no-quantize", "--augmentation", "20",
                          "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "policy (transformer):" in printed and "held-out" in printed
    facts = read_manifest(out)
    policy = facts.extra["policy"]
    assert policy["train_seconds"] > 0 and policy["story_accuracy"] == 1.0 and policy["augmentation_factor"] == 20
    assert policy["onnx_max_difference"] < 1e-4
    meta = json.loads((out / POLICY_META).read_text(encoding="utf-8"))
    assert meta["max_history"] == 5 and "utter_ordered" in meta["actions"] and meta["opset"] == 17
    index = {f: i for i, f in enumerate(meta["features"])}
    x = encode_window([frozenset({"intent:greet", "prev:action_listen"})], index, meta["max_history"])
    assert x.shape == (5 * len(meta["features"]),)
    _, dialogue = load_bot_folder(RASA / "digressions")
    tracker = conversation(dialogue.domain, [("greet", ["utter_greet"]), ("ask_price", ["utter_price"]),
                                             ("bot_challenge", ["utter_iamabot"]), ("affirm", [])])
    got = Ensemble.build(dialogue.domain, dialogue.stories, dialogue.policy, out).predict(tracker)
    assert (got.action, got.policy) == ("utter_ordered", "LearnedPolicy")
