"""Which action comes next: Rasa's policy ensemble over the conversation's featurised states.

A conversation is seen as a sequence of **frames**: the state just before each action the bot ran
(the latest user intent and entities, the previous action, the slots that influence the
conversation, the active loop), plus the current frame, before the action to predict. Stories and
rules are turned into frames by the same ``Tracker`` the live conversation is replayed with, so a
story and a conversation that went the same way have exactly the same frames.

Policies, in Rasa's priority order (a higher priority wins a tie in confidence):

* ``RulePolicy`` (priority 6): Rasa's defaults (``/restart`` → ``action_restart``, ...), the
  active loop's happy path (an active form runs after every user message unless it rejected it),
  then rules: a rule's frames hold only what the rule states, and it applies when the latest
  frames contain them (the most specific matching rule wins); ``conversation_start`` rules only
  at the start of a session; after a rule's last action ``action_listen`` unless
  ``wait_for_user_input: false``.
* ``MemoizationPolicy`` (priority 3): the stories' windows of up to ``max_history`` frames; the
  longest window matching the conversation's latest frames predicts (Rasa's augmented variant
  is the same lookup, also tried from every earlier turn of the conversation).
* ``LearnedPolicy`` (priority 1): a next-action model trained on the stories (training/policy.py,
  torch) and served from ONNX (onnxruntime, no torch), over the multi-hot features of the last
  ``max_history`` frames; it generalises to conversations no story covers.

No prediction at least ``core_fallback_threshold`` confident gives ``action_default_fallback``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bots.dialogue.domain import (
    ACTION_BACK,
    ACTION_LISTEN,
    ACTION_RESTART,
    ACTION_SESSION_START,
    NLU_FALLBACK_INTENT,
    REQUESTED_SLOT,
    Domain,
    PolicyConfig,
    Slot,
    Step,
    Story,
)
from bots.errors import ArtifactError, ConfigError
from bots.events import ACTION, FORM, NLU, REJECTED, RESTART, REWIND, SESSION_START, SLOT, UNDO, USER, Event

log = logging.getLogger("switchboard.policies")

Frame = frozenset[str]
_DEFAULT_INTENT_ACTIONS = {"restart": ACTION_RESTART, "back": ACTION_BACK, "session_start": ACTION_SESSION_START}
POLICY_FILE = "policy.onnx"
POLICY_META = "policy.json"


# ---------------------------------------------------------------------------------------------------------
# Featurisation: one ``Tracker`` for stories and live conversations.
def slot_feature(slot: Slot, value: Any) -> str | None:
    """How a slot value shows in a frame (Rasa's slot featurisation, as a discrete feature)."""
    if value is None or not slot.influence_conversation:
        return None
    if slot.type == "bool":
        return f"slot:{slot.name}:{bool(value) if not isinstance(value, str) else value.lower() == 'true'}"
    if slot.type == "categorical":
        lowered = {v.lower(): v for v in slot.values}
        return f"slot:{slot.name}:{lowered.get(str(value).lower(), '__other__')}"
    if slot.type == "float":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"slot:{slot.name}:set"
        span = slot.max_value - slot.min_value
        scaled = 0.0 if span <= 0 else min(max((number - slot.min_value) / span, 0.0), 1.0)
        return f"slot:{slot.name}:{round(scaled, 1)}"
    if slot.type == "any":
        return None
    if slot.type == "list" and isinstance(value, list) and not value:
        return None
    return f"slot:{slot.name}:set"


@dataclass
class Tracker:
    """The featurised state of a conversation (or of a story being simulated)."""

    domain: Domain
    nlu_threshold: float = 0.0
    intent: str | None = None
    entities: tuple[str, ...] = ()
    prev_action: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    loop: str | None = None
    frames: list[Frame] = field(default_factory=list)     # one per action run, the state before it
    queries: list[Frame] = field(default_factory=list)    # the same, as it was when the action was predicted
    actions: list[str] = field(default_factory=list)      # the actions, aligned with ``frames``
    session_start: int = 0                                 # index in ``frames`` where this session began

    def frame(self, before_action: str | None = None) -> Frame:
        features: set[str] = set()
        if self.intent is not None:
            features.add(f"intent:{self.intent}")
            props = self.domain.intents.get(self.intent)
            for entity in self.entities:
                if props is not None and (entity in props.ignore_entities or (
                        props.use_entities is not None and entity not in props.use_entities)):
                    continue
                ent = self.domain.entities.get(entity)
                if ent is None or ent.influence_conversation:
                    features.add(f"entity:{entity}")
        if self.prev_action is not None:
            features.add(f"prev:{self.prev_action}")
        for name, value in self.slots.items():
            if name == REQUESTED_SLOT and name not in self.domain.slots:
                # Rasa 3 adds requested_slot as a text slot that does not influence the conversation: which
                # slot a form asks for is no feature, unless the domain declares the slot itself (categorical,
                # influence_conversation: true), featurised below as any slot.
                continue
            slot = self.domain.slots.get(name)
            if slot is not None:
                feature = slot_feature(slot, value)
                if feature is not None:
                    features.add(feature)
        # A form's own action sees its loop as active (also on the turn that activates it), so that
        # rules conditioned on the loop match its activation and its submission alike.
        loop = self.loop if self.loop is not None else (
            before_action if before_action is not None and before_action in self.domain.forms else None)
        if loop is not None:
            features.add(f"loop:{loop}")
        return frozenset(features)

    # -- what happens in a conversation ----------------------------------------------------------------
    def user(self, intent: str | None, entities: Iterable[str]) -> None:
        self.intent = intent
        self.entities = tuple(sorted(set(entities)))
        self.prev_action = ACTION_LISTEN

    def action(self, name: str) -> None:
        self.queries.append(self.frame())
        self.frames.append(self.frame(name))
        self.actions.append(name)
        self.prev_action = name

    def set_slot(self, name: str, value: Any) -> None:
        self.slots[name] = value

    def set_loop(self, name: str | None) -> None:
        self.loop = name
        if name is None:
            self.slots[REQUESTED_SLOT] = None

    def new_session(self, carry_over: bool) -> None:
        # The message that opened the session (stored before the SESSION_START it caused) stays.
        if self.prev_action != ACTION_LISTEN:
            self.intent, self.entities, self.prev_action = None, (), None
        self.loop = None
        self.slots = dict(self.slots) if carry_over else {}
        self.slots[REQUESTED_SLOT] = None
        self.session_start = len(self.frames)

    def effective_intent(self, intent: Any, confidence: Any) -> str | None:
        if not isinstance(intent, str) or not intent:
            return None
        if isinstance(confidence, int | float) and confidence < self.nlu_threshold:
            return NLU_FALLBACK_INTENT
        return intent

    def apply(self, event: Event) -> None:
        """Replay one stored event (bots/events.py)."""
        kind, data = event.kind, event.data
        if kind == NLU:
            self.user(self.effective_intent(data.get("intent"), data.get("confidence")),
                      [str(e.get("entity")) for e in data.get("entities") or [] if isinstance(e, dict)])
        elif kind == USER:
            self.user(None, ())
        elif kind == ACTION:
            name = data.get("name")
            if (isinstance(name, str) and name != ACTION_LISTEN) or self.prev_action != ACTION_LISTEN:
                self.action(str(name))
        elif kind == SLOT:
            if isinstance(data.get("name"), str):
                self.set_slot(data["name"], data.get("value"))
        elif kind == FORM:
            name = data.get("name")
            self.loop = name if isinstance(name, str) else None
            self.slots[REQUESTED_SLOT] = data.get("requested_slot") if self.loop else None
        elif kind == SESSION_START:
            self.new_session(bool(data.get("carry_over")))
        elif kind == RESTART:
            self.new_session(False)
        elif kind == REWIND:  # UserUtteranceReverted: back to before the latest user message
            self.intent, self.entities = None, ()
        elif kind == UNDO and self.actions:  # ActionReverted
            self.actions.pop()
            self.frames.pop()
            self.queries.pop()
            self.prev_action = self.actions[-1] if self.actions else None
        elif kind == REJECTED:
            pass  # a rejected action leaves no frame

    @classmethod
    def replay(cls, domain: Domain, events: Sequence[Event], nlu_threshold: float = 0.0) -> Tracker:
        tracker = cls(domain, nlu_threshold=nlu_threshold)
        for event in events:
            tracker.apply(event)
        return tracker


# ---------------------------------------------------------------------------------------------------------
# Stories and rules as frames.
@dataclass(frozen=True)
class Trajectory:
    """One path through a story (checkpoints joined, ``or`` expanded): its frames and actions."""

    story: Story
    frames: tuple[Frame, ...]
    actions: tuple[str, ...]
    wheres: tuple[str, ...]
    queries: tuple[Frame, ...] = ()

    def window(self, i: int, n: int) -> tuple[Frame, ...]:
        """The (up to) ``n`` frames a prediction of action ``i`` sees: earlier frames, then the query."""
        return (*self.frames[max(0, i - n + 1): i], self.queries[i])


def _step_user(tracker: Tracker, step: Step) -> None:
    tracker.user(step.name, [e.entity for e in step.entities])
    for entity in step.entities:  # entities of a story turn fill their slots (from_entity mappings)
        for slot in tracker.domain.slots.values():
            if any(m.type == "from_entity" and m.entity == entity.entity and not m.conditions for m in slot.mappings):
                tracker.set_slot(slot.name, entity.value if entity.value is not None else True)


def _linear_paths(steps: Sequence[Step], limit: int = 64) -> Iterator[list[Step]]:
    """``or`` steps expanded into separate paths (bounded)."""
    paths: list[list[Step]] = [[]]
    for step in steps:
        if step.kind == "or":
            paths = [[*p, alt] for p in paths for alt in step.alternatives][:limit]
        else:
            for p in paths:
                p.append(step)
    yield from paths


def story_paths(stories: Sequence[Story], limit: int = 2000) -> list[tuple[Story, list[Step]]]:
    """Stories with their checkpoints joined (Rasa's story graph), each as linear step lists."""
    starts: dict[str, list[tuple[Story, list[Step]]]] = {}
    plain: list[tuple[Story, list[Step]]] = []
    for story in stories:
        if story.is_rule:
            continue
        for path in _linear_paths(story.steps):
            if path and path[0].kind == "checkpoint":
                starts.setdefault(str(path[0].name), []).append((story, path[1:]))
            else:
                plain.append((story, path))
    out: list[tuple[Story, list[Step]]] = []
    queue = list(plain)
    while queue and len(out) < limit:
        story, path = queue.pop(0)
        if path and path[-1].kind == "checkpoint" and str(path[-1].name) in starts:
            for _, continuation in starts[str(path[-1].name)]:
                queue.append((story, path[:-1] + continuation))
        else:
            out.append((story, [s for s in path if s.kind != "checkpoint"]))
    return out


def simulate(domain: Domain, story: Story, steps: Sequence[Step]) -> Trajectory:
    tracker = Tracker(domain)
    tracker.new_session(False)
    wheres: list[str] = []
    for step in steps:
        if step.kind == "intent":
            if tracker.prev_action not in (None, ACTION_LISTEN):
                tracker.action(ACTION_LISTEN)  # the bot waited for the customer (Rasa's implicit listen)
                wheres.append(step.where)
            _step_user(tracker, step)
        elif step.kind == "action" and step.name:
            tracker.action(step.name)
            wheres.append(step.where)
        elif step.kind == "slot_was_set":
            for name, value in step.slots:
                tracker.set_slot(name, True if value is Ellipsis else value)
        elif step.kind == "active_loop":
            tracker.set_loop(step.name)
    if not story.is_rule and tracker.prev_action not in (None, ACTION_LISTEN):
        tracker.action(ACTION_LISTEN)
        wheres.append(story.where)
    return Trajectory(story, tuple(tracker.frames), tuple(tracker.actions), tuple(wheres), tuple(tracker.queries))


def trajectories(domain: Domain, stories: Sequence[Story]) -> list[Trajectory]:
    return [simulate(domain, story, path) for story, path in story_paths(stories)]


# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    action: str
    confidence: float
    policy: str
    where: str = ""        # the rule or story (file:line) that predicted it


@dataclass(frozen=True)
class _RuleFrame:
    required: Frame
    absent: frozenset[str]     # slot names that must be unset; "loop" when no loop may be active


@dataclass(frozen=True)
class _RuleEntry:
    frames: tuple[_RuleFrame, ...]
    action: str
    conversation_start: bool
    where: str
    specificity: int


def _rule_entries(domain: Domain, rule: Story) -> list[_RuleEntry]:
    """The (frames → action) lookups a rule contributes; frames hold only what the rule states."""
    entries: list[_RuleEntry] = []
    required: set[str] = set()
    absent: set[str] = set()
    prev: str | None = None
    frames: list[_RuleFrame] = []
    intent_feats: set[str] = set()

    def state(step_kind: str, step: Step) -> None:
        nonlocal prev
        if step_kind == "slot_was_set":
            for name, value in step.slots:
                slot = domain.slots.get(name)
                feats = {f for f in required if f.startswith(f"slot:{name}:")}
                required.difference_update(feats)
                absent.discard(name)
                if value is None:
                    absent.add(name)
                elif name == REQUESTED_SLOT:
                    required.add(f"slot:{REQUESTED_SLOT}:{value}")
                elif slot is not None:
                    feature = slot_feature(slot, True if value is Ellipsis and slot.type not in ("bool",) else value)
                    if feature is not None:
                        required.add(feature)
        elif step_kind == "active_loop":
            for f in [f for f in required if f.startswith("loop:")]:
                required.discard(f)
            absent.discard("__loop__")
            if step.name is None:
                absent.add("__loop__")
            else:
                required.add(f"loop:{step.name}")

    for step in rule.condition:
        state(step.kind, step)
    for i, step in enumerate(rule.steps):
        if step.kind == "intent":
            intent_feats = {f"intent:{step.name}", *(f"entity:{e.entity}" for e in step.entities)}
            prev = ACTION_LISTEN
        elif step.kind in ("slot_was_set", "active_loop"):
            state(step.kind, step)
        elif step.kind == "action" and step.name:
            feats = set(required) | intent_feats
            if prev is not None:
                feats.add(f"prev:{prev}")
            query = _RuleFrame(frozenset(feats), frozenset(absent))
            entries.append(_RuleEntry((*frames, query), step.name, rule.conversation_start, step.where or rule.where,
                                      sum(len(f.required) + len(f.absent) for f in (*frames, query))))
            if step.name in domain.forms and not any(f.startswith("loop:") for f in feats) \
                    and "__loop__" not in absent:
                feats.add(f"loop:{step.name}")  # as Tracker.frame records a form's own action
            frames.append(_RuleFrame(frozenset(feats), frozenset(absent)))
            prev = step.name
        else:
            continue
        del i
    if rule.wait_for_user_input and prev is not None and prev != ACTION_LISTEN and entries:
        feats = set(required) | intent_feats | {f"prev:{prev}"}
        query = _RuleFrame(frozenset(feats), frozenset(absent))
        entries.append(_RuleEntry((*frames, query), ACTION_LISTEN, rule.conversation_start, rule.where,
                                  sum(len(f.required) + len(f.absent) for f in (*frames, query))))
    return entries


def _frame_matches(rule: _RuleFrame, frame: Frame) -> bool:
    if not rule.required <= frame:
        return False
    for name in rule.absent:
        if name == "__loop__":
            if any(f.startswith("loop:") for f in frame):
                return False
        elif any(f.startswith(f"slot:{name}:") for f in frame):
            return False
    return True


class RulePolicy:
    priority = 6

    def __init__(self, domain: Domain, stories: Sequence[Story], config: PolicyConfig) -> None:
        self.domain = domain
        self.entries = [e for story in stories if story.is_rule for e in _rule_entries(domain, story)]

    def predict(self, tracker: Tracker, current: Frame, *, loop_rejected: bool, latest_action: str | None,
                excluded: frozenset[str] = frozenset()) -> Prediction | None:
        # Rasa's default intents overrule everything.
        if tracker.prev_action == ACTION_LISTEN and tracker.intent in _DEFAULT_INTENT_ACTIONS:
            return Prediction(_DEFAULT_INTENT_ACTIONS[tracker.intent], 1.0, "RulePolicy")
        # An active loop runs after every user message, unless it rejected it.
        if tracker.loop is not None and not loop_rejected:
            if latest_action != tracker.loop and tracker.loop not in excluded:
                return Prediction(tracker.loop, 1.0, "RulePolicy")
            if latest_action == tracker.loop:
                return Prediction(ACTION_LISTEN, 1.0, "RulePolicy")
        history = [*tracker.frames[tracker.session_start:], current]
        best: tuple[int, int, _RuleEntry] | None = None
        for entry in self.entries:
            if entry.action in excluded:
                continue
            n = len(entry.frames)
            if n > len(history):
                continue
            if entry.conversation_start and n != len(history):
                continue
            window = history[-n:]
            if all(_frame_matches(r, f) for r, f in zip(entry.frames, window, strict=True)):
                key = (n, entry.specificity)
                if best is None or key > best[:2]:
                    best = (*key, entry)
        if best is None:
            return None
        return Prediction(best[2].action, 1.0, "RulePolicy", best[2].where)

    def contradictions(self, trajectories_: Sequence[Trajectory]) -> list[str]:
        """Stories (and rules) whose next action a rule would predict differently (found at training time)."""
        problems: list[str] = []
        for t in trajectories_:
            for i, action in enumerate(t.actions):
                tracker = Tracker(self.domain)
                tracker.frames = list(t.frames[:i])
                tracker.actions = list(t.actions[:i])
                # the frame before action i: rebuild the features the loop/default checks need
                current = t.queries[i]
                tracker.prev_action = next((f[5:] for f in current if f.startswith("prev:")), None)
                tracker.intent = next((f[7:] for f in current if f.startswith("intent:")), None)
                predicted = self.predict(tracker, current, loop_rejected=True, latest_action=tracker.prev_action)
                if predicted is not None and predicted.action != action and predicted.action != ACTION_LISTEN:
                    problems.append(f"{t.wheres[i] or t.story.where}: story {t.story.name!r} runs {action!r} here, "
                                    f"but the rule at {predicted.where} predicts {predicted.action!r}")
        return sorted(set(problems))


class MemoizationPolicy:
    priority = 3

    def __init__(self, domain: Domain, stories: Sequence[Story], config: PolicyConfig) -> None:
        self.max_history = max(1, config.max_history)
        self.augmented = config.augmented_memoization
        self.lookup: dict[tuple[Frame, ...], str | None] = {}
        self.where: dict[tuple[Frame, ...], str] = {}
        for t in trajectories(domain, stories):
            self.add(t)

    def add(self, t: Trajectory) -> None:
        for i, action in enumerate(t.actions):
            for n in range(1, min(self.max_history, i + 1) + 1):
                key = t.window(i, n)
                known = self.lookup.get(key, action)
                self.lookup[key] = action if known == action else None  # ambiguous windows predict nothing
                self.where.setdefault(key, t.wheres[i] if i < len(t.wheres) else t.story.where)

    def predict(self, tracker: Tracker, current: Frame, excluded: frozenset[str] = frozenset()) -> Prediction | None:
        history = [*tracker.frames[tracker.session_start:], current]
        for n in range(min(self.max_history, len(history)), 0, -1):
            key = tuple(history[-n:])
            action = self.lookup.get(key)
            if action is not None and action not in excluded:
                return Prediction(action, 1.0, "AugmentedMemoizationPolicy" if self.augmented else "MemoizationPolicy",
                                  self.where.get(key, ""))
            if key in self.lookup and not self.augmented:
                return None
        return None


class LearnedPolicy:
    """The trained next-action model (artifact files ``policy.onnx`` + ``policy.json``)."""

    priority = 1

    def __init__(self, model_path: Path, meta: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.features: dict[str, int] = {f: i for i, f in enumerate(meta["features"])}
        self.actions: list[str] = list(meta["actions"])
        self.max_history = int(meta["max_history"])

    @classmethod
    def load(cls, artifact_dir: Path) -> LearnedPolicy | None:
        """The artifact's model (None: it has none, e.g. a bot without stories); ArtifactError when its
        files are there but unreadable."""
        model, meta = artifact_dir / POLICY_FILE, artifact_dir / POLICY_META
        if not model.is_file() or not meta.is_file():
            return None
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            policy = cls(model, data)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{meta}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{meta}: needs features, actions and max_history ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind exception types
            raise ArtifactError(f"{model}: not a loadable ONNX model ({exc})") from None
        width = len(policy.features) * policy.max_history
        shape = policy.session.get_inputs()[0].shape
        if policy.max_history < 1 or not policy.actions or shape[-1] != width:
            raise ArtifactError(f"{model}: input width {shape[-1]} does not fit {meta} ({len(policy.features)} "
                                f"features x max_history {policy.max_history})")
        return policy

    def predict(self, tracker: Tracker, current: Frame, excluded: frozenset[str] = frozenset()) -> Prediction | None:
        history = [*tracker.frames[tracker.session_start:], current][-self.max_history:]
        x = encode_window(history, self.features, self.max_history)[None, :]
        (logits,) = self.session.run(None, {"features": x})
        scores = np.asarray(logits[0], dtype=np.float64)
        for name in excluded:
            if name in self.actions:
                scores[self.actions.index(name)] = -np.inf
        if not np.isfinite(scores).any():
            return None
        scores = np.exp(scores - scores.max())
        probs = scores / scores.sum()
        best = int(probs.argmax())
        return Prediction(self.actions[best], float(probs[best]), "LearnedPolicy")


def encode_window(frames: Sequence[Frame], features: Mapping[str, int], max_history: int) -> np.ndarray:
    """Multi-hot features of the last ``max_history`` frames (oldest first, zero-padded at the front)."""
    x = np.zeros((max_history, len(features)), dtype=np.float32)
    frames = list(frames)[-max_history:]
    offset = max_history - len(frames)
    for i, frame in enumerate(frames):
        for f in frame:
            j = features.get(f)
            if j is not None:
                x[offset + i, j] = 1.0
    return x.reshape(-1)


@dataclass
class Ensemble:
    """Rasa's ensemble: the most confident prediction wins, ties go to the higher priority policy."""

    domain: Domain
    config: PolicyConfig
    rules: RulePolicy | None
    memo: MemoizationPolicy | None
    learned: LearnedPolicy | None

    @classmethod
    def build(cls, domain: Domain, stories: Sequence[Story], config: PolicyConfig,
              artifact_dir: Path | None = None) -> Ensemble:
        learned = LearnedPolicy.load(artifact_dir) if artifact_dir is not None and config.learned else None
        return cls(domain, config,
                   RulePolicy(domain, stories, config) if config.rules else None,
                   MemoizationPolicy(domain, stories, config) if config.memoization else None,
                   learned)

    def predict(self, tracker: Tracker, *, loop_rejected: bool = False, latest_action: str | None = None,
                excluded: frozenset[str] = frozenset()) -> Prediction:
        current = tracker.frame()
        candidates: list[tuple[float, int, Prediction]] = []
        if self.rules is not None:
            p = self.rules.predict(tracker, current, loop_rejected=loop_rejected, latest_action=latest_action,
                                   excluded=excluded)
            if p is not None:
                return p  # rules and the loop's happy path are certain and have the highest priority
        if self.memo is not None:
            p = self.memo.predict(tracker, current, excluded)
            if p is not None:
                candidates.append((p.confidence, self.memo.priority, p))
        if self.learned is not None and not candidates:  # a memoised answer (certain, higher priority) wins anyway
            p = self.learned.predict(tracker, current, excluded)
            if p is not None:
                candidates.append((p.confidence, self.learned.priority, p))
        if candidates:
            confidence, _, best = max(candidates, key=lambda c: (c[0], c[1]))
            if confidence >= self.config.core_fallback_threshold:
                return best
        if tracker.prev_action != ACTION_LISTEN or tracker.intent is None:
            # After a bot action with nothing more to do (or a restart), wait for the customer.
            return Prediction(ACTION_LISTEN, 1.0, "default")
        return Prediction(self.config.core_fallback_action, self.config.core_fallback_threshold, "fallback")


def check_stories(domain: Domain, stories: Sequence[Story], config: PolicyConfig) -> list[str]:
    """Story and rule conflicts, as ``switchboard check`` and ``train`` report them (``file:line: ...``)."""
    problems: list[str] = []
    trajs = trajectories(domain, stories)
    seen: dict[tuple[Frame, ...], tuple[str, str, Story]] = {}
    n = max(1, config.max_history)
    for t in trajs:
        for i, action in enumerate(t.actions):
            key = t.window(i, n)
            where = t.wheres[i] if i < len(t.wheres) else t.story.where
            if key in seen and seen[key][0] != action:
                other_action, other_where, other = seen[key]
                problems.append(f"{where}: story {t.story.name!r} runs {action!r} where story {other.name!r} "
                                f"({other_where}) runs {other_action!r} after the same {len(key)} turn(s)")
            seen.setdefault(key, (action, where, t.story))
    if config.rules and config.check_for_contradictions:
        rules = RulePolicy(domain, stories, config)
        rule_trajs = [simulate(domain, r, list(r.condition) + list(r.steps)) for r in stories if r.is_rule]
        problems.extend(rules.contradictions([*trajs, *rule_trajs]))
    return problems


def require_consistent(domain: Domain, stories: Sequence[Story], config: PolicyConfig) -> None:
    problems = check_stories(domain, stories, config)
    if problems:
        raise ConfigError(problems)
