"""The learned next-action model (TEDPolicy's place in Rasa's ensemble): trained here with torch,
served from ONNX by ``bots.dialogue.policies.LearnedPolicy`` (onnxruntime, no torch at serving).

Contract:

* **Featurisation is the serving one.** Stories and rules become frames through
  ``bots.dialogue.policies`` (``trajectories``/``simulate``: the same ``Tracker`` that replays a
  live conversation), and a prediction of action ``i`` sees ``Trajectory.window(i, max_history)``
  encoded by ``encode_window``, exactly what ``LearnedPolicy.predict`` encodes at serving.
* **Training examples**: every story path's windows; the rules' windows (a rule simulated on its
  own, ``action_listen`` after its last action unless ``wait_for_user_input: false``); and Rasa's
  augmentation: ``augmentation_factor x 10`` conversations of 2 or 3 story paths (and rules
  without a condition) glued end to end, slots carried across as a conversation carries them
  (``rasa train --augmentation``; 0 turns it off). Identical (window, action) pairs count once.
* **Model**: ``transformer`` (default): each frame's multi-hot features embedded, one causal
  self-attention block over the frames with a learned recency bias (ALiBi) instead of absolute
  positions, the last frame's output classified; or ``mlp``: two hidden layers over the flattened
  window. Dropout, class-balanced cross-entropy (``action_listen`` is most of the labels), AdamW,
  deterministic for a seed (one thread). Measured on tests/data/rasa (5 seeds, held-out below):
  both fit the stories (100%); on digressions the MLP, which ties each frame to its position,
  scores 0.63-0.70 (moodbot, digressions), the transformer 0.93-1.0; absolute position
  embeddings instead of the recency bias gave 0.87-0.90 at worst.
* **Held-out check**: conversations the model never trained on: each story with an unconditional
  rule's turn (a digression: ``bot_challenge → utter_iamabot``) inserted at each user turn where no
  form is active; the windows of those not among the training windows are scored as served (the
  right action with at least ``core_fallback_threshold`` confidence) and printed with the accuracy
  on the stories themselves.
* **Artifact**: ``policy.onnx`` (input ``features`` float32 ``[batch, max_history x |features|]``,
  output ``logits`` ``[batch, |actions|]``; opset of the NLU export, checked against torch on the
  training windows) and ``policy.json`` (``features``, ``actions``, ``max_history``, plus what it
  was trained on); ``bots/artifact.py`` lists them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

from bots.dialogue.domain import ACTION_LISTEN, Domain, PolicyConfig, Step, Story
from bots.dialogue.policies import (
    POLICY_FILE,
    POLICY_META,
    Frame,
    Trajectory,
    encode_window,
    simulate,
    story_paths,
    trajectories,
)
from training.config import TrainConfig
from training.export import OPSET, ExportError

Architecture = Literal["transformer", "mlp"]
ARCHITECTURES: tuple[Architecture, ...] = ("transformer", "mlp")
INPUT, OUTPUT = "features", "logits"
Window = tuple[Frame, ...]


@dataclass(frozen=True)
class PolicyTrainConfig:
    """How the next-action model trains; ``of`` reads the bot's policies (config.yml's TEDPolicy)."""

    epochs: int = 100
    max_history: int = 5
    augmentation_factor: int = 50
    architecture: Architecture = "transformer"
    hidden: int = 64
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_size: int = 32
    seed: int = 13
    threads: int = 1
    fallback_threshold: float = 0.3   # the held-out check counts an answer below it as a fallback

    @classmethod
    def of(cls, policy: PolicyConfig, train: TrainConfig | None = None) -> PolicyTrainConfig:
        """The bot's policies (epochs, max_history, core_fallback_threshold) with the training run's
        augmentation, architecture, seed and threads."""
        t = train or TrainConfig()
        architecture: Architecture = "mlp" if t.policy_architecture == "mlp" else "transformer"
        return cls(epochs=policy.learned_epochs, max_history=max(1, policy.learned_max_history or policy.max_history),
                   augmentation_factor=t.augmentation_factor, architecture=architecture, seed=t.seed,
                   threads=t.threads, fallback_threshold=policy.core_fallback_threshold)


def wants_policy(domain: Domain, stories: Sequence[Story], policy: PolicyConfig) -> bool:
    """A learned model is trained when the policies ask for one (TEDPolicy) and there are stories."""
    return policy.learned and any(t.actions for t in trajectories(domain, stories))


# ---------------------------------------------------------------------------------------------------------
# Examples
@dataclass(frozen=True)
class Examples:
    windows: tuple[Window, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _windows(trajs: Sequence[Trajectory], max_history: int) -> list[tuple[Window, str]]:
    return [(t.window(i, max_history), a) for t in trajs for i, a in enumerate(t.actions)]


def _unique(pairs: Sequence[tuple[Window, str]]) -> Examples:
    seen = dict.fromkeys(pairs)
    return Examples(tuple(w for w, _ in seen), tuple(a for _, a in seen))


def rule_trajectories(domain: Domain, stories: Sequence[Story]) -> list[Trajectory]:
    """Each rule on its own (conditions first), ``action_listen`` after it when it waits for the user."""
    out = []
    for rule in stories:
        if rule.is_rule:
            as_story = dataclasses.replace(rule, is_rule=not rule.wait_for_user_input)
            out.append(simulate(domain, as_story, [*rule.condition, *rule.steps]))
    return out


def _glue_pieces(stories: Sequence[Story]) -> tuple[list[tuple[Story, list[Step]]], list[tuple[Story, list[Step]]]]:
    """Story paths, and rules that may follow anything (no condition, starting with the user's turn)."""
    paths = story_paths(stories)
    rules = [(r, list(r.steps)) for r in stories if r.is_rule and not r.condition and not r.conversation_start
             and r.steps and r.steps[0].kind == "intent"]
    return paths, rules


def glued_trajectories(domain: Domain, stories: Sequence[Story], count: int, seed: int,
                       pieces: tuple[int, ...] = (2, 3)) -> list[Trajectory]:
    """Rasa's augmentation: ``count`` conversations of story paths (and rules) glued end to end."""
    paths, rules = _glue_pieces(stories)
    if not paths or count <= 0:
        return []
    rng = random.Random(seed)  # noqa: S311 - seeded sampling, not security
    every = paths + rules
    out = []
    for _ in range(count):
        first = rng.choice(paths)
        steps = list(first[1])
        for _ in range(rng.choice(pieces) - 1):
            steps += rng.choice(every)[1]
        out.append(simulate(domain, dataclasses.replace(first[0], is_rule=False), steps))
    return out


def digression_trajectories(domain: Domain, stories: Sequence[Story]) -> list[Trajectory]:
    """Each story with each unconditional rule's turn inserted at each of its later user turns (none
    while a form is active: the form would take that turn)."""
    paths, rules = _glue_pieces(stories)
    out = []
    for story, steps in paths:
        loop: str | None = None
        for j, step in enumerate(steps):
            if step.kind == "active_loop":
                loop = step.name
            if j == 0 or step.kind != "intent" or loop is not None:
                continue
            for _, rule_steps in rules:
                if rule_steps[0].name == step.name:
                    continue
                out.append(simulate(domain, story, [*steps[:j], *rule_steps, *steps[j:]]))
    return out


@dataclass(frozen=True)
class PolicyData:
    train: Examples
    stories: Examples       # the story paths' own windows
    held_out: Examples      # digression windows not among the training windows
    counts: dict[str, int]


def policy_data(domain: Domain, stories: Sequence[Story], cfg: PolicyTrainConfig) -> PolicyData:
    h = cfg.max_history
    story_pairs = _windows(trajectories(domain, stories), h)
    rule_pairs = _windows(rule_trajectories(domain, stories), h)
    glued_pairs = _windows(glued_trajectories(domain, stories, cfg.augmentation_factor * 10, cfg.seed), h)
    train = _unique([*story_pairs, *rule_pairs, *glued_pairs])
    known = set(train.windows)
    held = _unique([(w, a) for w, a in _windows(digression_trajectories(domain, stories), h) if w not in known])
    counts = {"story_windows": len(set(story_pairs)), "rule_windows": len(set(rule_pairs)),
              "glued_windows": len(set(glued_pairs)), "train_examples": len(train),
              "held_out_examples": len(held)}
    return PolicyData(train, _unique(story_pairs), held, counts)


# ---------------------------------------------------------------------------------------------------------
# Models: input ``features`` [batch, history x n_features], output ``logits`` [batch, n_actions].
class MLPPolicy(nn.Module):
    def __init__(self, n_features: int, n_actions: int, history: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(history * n_features, hidden * 2), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden * 2, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_actions))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(features)
        return out


class _Block(nn.Module):
    """Pre-norm causal self-attention (one head) and a feed-forward layer, padding frames masked."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        scores = torch.matmul(q, k.transpose(1, 2)) * self.scale + bias
        scores = scores.masked_fill(~allowed, -1e9)
        h = h + self.drop(self.proj(torch.matmul(torch.softmax(scores, dim=-1), v)))
        out: torch.Tensor = h + self.drop(self.ff(self.norm2(h)))
        return out


class FramePolicy(nn.Module):
    """A tiny transformer over the window's frames (TED's shape, one layer)."""

    causal: torch.Tensor
    last: torch.Tensor
    distance: torch.Tensor

    def __init__(self, n_features: int, n_actions: int, history: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.history, self.n_features = history, n_features
        self.embed = nn.Linear(n_features, hidden)
        # Order enters as a learned recency bias on attention (ALiBi), not as absolute positions: a turn
        # inserted between two related frames only moves them apart (measured: see the module docstring).
        distance = torch.arange(history).unsqueeze(0) - torch.arange(history).unsqueeze(1)  # j - i, <= 0 seen
        self.register_buffer("distance", distance.clamp(max=0).float())
        self.slope = nn.Parameter(torch.tensor(0.5))
        self.block = _Block(hidden, dropout)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n_actions)
        self.register_buffer("causal", torch.tril(torch.ones(history, history, dtype=torch.bool)))
        last = torch.zeros(history, dtype=torch.bool)
        last[-1] = True
        self.register_buffer("last", last)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.reshape(-1, self.history, self.n_features)
        present = (x.sum(dim=-1) > 0) | self.last            # zero frames are the front padding
        allowed = self.causal.unsqueeze(0) & present.unsqueeze(1)
        h = self.block(self.embed(x), allowed, self.distance * self.slope)
        out: torch.Tensor = self.out(self.norm(h[:, -1]))
        return out


def build_model(architecture: Architecture, n_features: int, n_actions: int, cfg: PolicyTrainConfig) -> nn.Module:
    cls = FramePolicy if architecture == "transformer" else MLPPolicy
    return cls(n_features, n_actions, cfg.max_history, cfg.hidden, cfg.dropout)


# ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainedPolicy:
    model: nn.Module            # eval mode
    features: tuple[str, ...]
    actions: tuple[str, ...]
    max_history: int
    architecture: Architecture
    facts: dict[str, Any]
    data: PolicyData | None = None

    @property
    def feature_index(self) -> dict[str, int]:
        return {f: i for i, f in enumerate(self.features)}

    def encode(self, windows: Sequence[Window]) -> np.ndarray:
        index = self.feature_index
        if not windows:
            return np.zeros((0, self.max_history * len(index)), dtype=np.float32)
        return np.stack([encode_window(w, index, self.max_history) for w in windows])

    @torch.no_grad()
    def logits(self, windows: Sequence[Window]) -> np.ndarray:
        self.model.eval()
        out: np.ndarray = self.model(torch.from_numpy(self.encode(windows))).numpy()
        return out

    def predict(self, windows: Sequence[Window]) -> list[tuple[str, float]]:
        """(action, confidence) for each window, as LearnedPolicy computes them from the logits."""
        logits = self.logits(windows).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [(self.actions[int(p.argmax())], float(p.max())) for p in probs]

    def accuracy(self, examples: Examples, threshold: float = 0.0) -> float | None:
        """Share of ``examples`` answered right with at least ``threshold`` confidence (None: no examples)."""
        if not len(examples):
            return None
        got = self.predict(examples.windows)
        return sum(a == want and c >= threshold for (a, c), want in zip(got, examples.labels, strict=True)) \
            / len(examples)


def train_policy(domain: Domain, stories: Sequence[Story], cfg: PolicyTrainConfig, *,
                 progress: bool = True) -> TrainedPolicy:
    """Train the next-action model on the bot's stories and rules (see the module docstring)."""
    t0 = time.perf_counter()
    data = policy_data(domain, stories, cfg)
    if not len(data.train):
        raise ValueError("no story or rule has an action to learn")
    features = tuple(sorted({f for w in data.train.windows for frame in w for f in frame}))
    actions = tuple(sorted(set(data.train.labels) | {ACTION_LISTEN}))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg.architecture, len(features), len(actions), cfg)
    trained = TrainedPolicy(model, features, actions, cfg.max_history, cfg.architecture, {}, data)
    x = torch.from_numpy(trained.encode(data.train.windows))
    index = {a: i for i, a in enumerate(actions)}
    y = torch.tensor([index[a] for a in data.train.labels], dtype=torch.int64)
    counts = np.bincount(y.numpy(), minlength=len(actions)).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (len(actions) * np.maximum(counts, 1)), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bar = tqdm(range(cfg.epochs), desc="policy", unit="epoch", leave=False, disable=not progress)
    loss_value = math.nan
    for _ in bar:
        model.train()
        order = rng.permutation(len(y))
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = torch.from_numpy(order[start:start + cfg.batch_size])
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += loss.item() * len(idx)
        loss_value = total / len(y)
        bar.set_postfix(loss=f"{loss_value:.4f}")
    model.eval()
    train_seconds = time.perf_counter() - t0
    held = trained.accuracy(data.held_out, cfg.fallback_threshold)
    trained.facts = {
        **data.counts, "architecture": cfg.architecture, "epochs": cfg.epochs, "max_history": cfg.max_history,
        "augmentation_factor": cfg.augmentation_factor, "features": len(features), "actions": len(actions),
        "final_loss": round(loss_value, 5), "train_seconds": round(train_seconds, 2),
        "train_accuracy": _round(trained.accuracy(data.train)),
        "story_accuracy": _round(trained.accuracy(data.stories)),
        "held_out_accuracy": _round(held),
        "held_out": "a rule's turn inserted mid-story (windows not trained on), right with at least "
                    f"{cfg.fallback_threshold} confidence",
    }
    return trained


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summary(facts: dict[str, Any]) -> str:
    held = facts.get("held_out_accuracy")
    return (f"policy ({facts['architecture']}): {facts['train_examples']} examples "
            f"({facts['story_windows']} story, {facts['rule_windows']} rule, {facts['glued_windows']} glued windows), "
            f"{facts['actions']} actions, max_history {facts['max_history']}, {facts['train_seconds']} s; "
            f"accuracy on the stories {facts['story_accuracy']:.4f}, held-out "
            + (f"{held:.4f} on {facts['held_out_examples']} digression windows" if held is not None
               else "none (no unconditional rule to insert mid-story)"))


# ---------------------------------------------------------------------------------------------------------
def export_policy(trained: TrainedPolicy, out_dir: Path) -> float:
    """Write ``policy.onnx`` and ``policy.json`` into ``out_dir``; ONNX Runtime's logits are checked
    against torch on the training windows (ExportError when they differ). Returns the largest difference,
    also recorded in ``trained.facts['onnx_max_difference']``."""
    model = trained.model.eval()
    check_windows = trained.data.train.windows if trained.data is not None else ()
    width = trained.max_history * len(trained.features)
    sample = torch.zeros(2, width)
    path = out_dir / POLICY_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    x = trained.encode(list(check_windows)) if check_windows else np.zeros((1, width), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT], {INPUT: x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    worst = float(np.abs(got - want).max())
    if worst > 1e-4:
        path.unlink()
        raise ExportError(f"policy ONNX logits differ from torch by {worst:.2e}")
    trained.facts["onnx_max_difference"] = worst
    meta = {"features": list(trained.features), "actions": list(trained.actions), "max_history": trained.max_history,
            "architecture": trained.architecture, "opset": OPSET, "trained": trained.facts}
    (out_dir / POLICY_META).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return worst
