"""Which action comes next: Rasa's policy ensemble over the conversation's featurised states.

A conversation is seen as a sequence of **frames**: the state just before each action the bot ran
(the latest user intent and entities, the previous action, the slots that influence the
conversation, the active loop), plus the current frame, before the action to predict. Stories and
rules are turned into frames by the same ``Tracker`` the live conversation is replayed with, so a
story and a conversation that went the same way have exactly the same frames.

Policies, in Rasa's priority order (a higher priority wins a tie in confidence):

* ``RulePolicy`` (priority 6): Rasa's defaults (``/restart`` → ``action_restart``, ...), the
  active loop's happy path (an active form runs after every user message unless it rejected it),
  then rules, as Rasa's RulePolicy reads them: a rule is played on the same ``Tracker`` (its
  conditions, the snippet action ``...`` for "anything may come before", its steps, then
  ``action_listen`` unless ``wait_for_user_input: false``); an action's key is the rule's frames
  after the snippet (``conversation_start`` rules: from the session start), holding only what the
  rule states, ``null`` meaning "not set"; a key applies when it holds for the conversation's
  latest frames, the longest key wins, and a key rules go on from differently predicts nothing.
* ``MemoizationPolicy`` (priority 3): the stories' windows of up to ``max_history`` frames; the
  longest window matching the conversation's latest frames predicts (Rasa's augmented variant
  is the same lookup, also tried from every earlier turn of the conversation).
* ``LearnedPolicy`` (priority 1): a next-action model trained on the stories (training/policy.py,
  torch) and served from ONNX (onnxruntime, no torch), over the multi-hot features of the last
  ``max_history`` frames; it generalises to conversations no story covers.

No prediction at least ``core_fallback_threshold`` confident gives ``action_default_fallback``.

Stories are walked as Rasa's story graph (checkpoints anywhere, with slot conditions; ``or``
expanded). ``check_stories`` (what ``switchboard check`` and training report) uses these very
policies: story structure conflicts are the memoisation windows the stories disagree on, and
contradictions are RulePolicy's ``check_for_contradictions`` run over the rules and every story
path, so a bot that passes the check is served as its stories say.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
SNIPPET = "..."                          # Rasa's RULE_SNIPPET_ACTION_NAME: a rule's "anything may come before"
SHOULD_NOT_BE_SET = "should_not_be_set"  # a rule's ``null``: the slot (or loop) must not be set
_NOT_SET = "!"                           # a rule frame's "no feature starts with this" (``!slot:name:``, ``!loop:``)


def entity_labels(entity: str, role: Any = None, group: Any = None) -> list[str]:
    """An entity's features (Rasa's): its name, and ``name#role`` / ``name#group`` when it has them."""
    return [entity, *(f"{entity}#{x}" for x in (role, group) if isinstance(x, str) and x)]


# ---------------------------------------------------------------------------------------------------------
# Featurisation: one ``Tracker`` for stories and live conversations.
def _rasa_bool(value: Any) -> bool | None:
    """A bool slot's value as Rasa reads it (``rasa.shared.core.slots.bool_from_any``): a number is true when it
    is 1, a text when it is "true"/"yes" (or a number text equal to 1) and false when "false"/"no"; anything
    else (None here) cannot be converted."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1.0
    if isinstance(value, str):
        if value.isnumeric():
            return float(value) == 1.0
        return {"true": True, "yes": True, "false": False, "no": False}.get(value.strip().lower())
    return None


def slot_feature(slot: Slot, value: Any) -> str | None:
    """How a slot value shows in a frame (Rasa's slot featurisation, as a discrete feature). A value Rasa's slot
    cannot featurise (a float slot's text, a bool slot's "maybe": ``FloatSlot``/``BooleanSlot._as_feature`` give
    all zeros) is no feature, as Rasa leaves a slot whose features are all zero out of the state
    (``Domain._get_slots_sub_state``): such a slot looks unset to the policies."""
    if value is None or not slot.influence_conversation:
        return None
    if slot.type == "bool":
        truth = _rasa_bool(value)
        return None if truth is None else f"slot:{slot.name}:{truth}"
    if slot.type == "categorical":
        lowered = {v.lower(): v for v in slot.values}
        return f"slot:{slot.name}:{lowered.get(str(value).lower(), '__other__')}"
    if slot.type == "float":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        span = slot.max_value - slot.min_value
        scaled = 0.0 if span <= 0 else min(max((number - slot.min_value) / span, 0.0), 1.0)
        return f"slot:{slot.name}:{round(scaled, 1)}"
    if slot.type == "any":
        return None
    if slot.type == "list" and isinstance(value, list) and not value:
        return None
    return f"slot:{slot.name}:set"


def slot_features(domain: Domain, slots: Mapping[str, Any], *, rule: bool = False) -> Iterator[str]:
    """The features a tracker's slot values give its frames (all a frame reads of them)."""
    for name, value in slots.items():
        if name == REQUESTED_SLOT and name not in domain.slots:
            # Rasa 3 adds requested_slot as a text slot that does not influence the conversation: which
            # slot a form asks for is no feature, unless the domain declares the slot itself (categorical,
            # influence_conversation: true), featurised below as any slot.
            continue
        slot = domain.slots.get(name)
        if slot is not None and rule and value == SHOULD_NOT_BE_SET:
            if slot.influence_conversation:   # (a slot that is never a feature is never "set" either)
                yield f"{_NOT_SET}slot:{name}:"
        elif slot is not None:
            feature = slot_feature(slot, value)
            if feature is not None:
                yield feature


@dataclass(frozen=True)
class IntentFloor:
    """Intents the dialogue reads as not understood (``nlu_fallback``) under a confidence of their own: those that
    start a bot.yml form, under the NLU's softmax floor (bots/nlu/oos.py ``OperatingPoint.softmax_floor``). A form
    commits the customer to its questions, so it starts only on an intent the model is as sure of as its
    calibrated softmax threshold asks ("my package arrived broken" read as track_order at 0.39, torn between
    intents, gets the fallback, not "What is the order number?"), even where the served operating point (e.g.
    ``knn_softmax``, which adds the distance to the nearest training example) accepted the message."""

    threshold: float
    intents: frozenset[str]

    def rejects(self, intent: str, confidence: float) -> bool:
        return intent in self.intents and confidence < self.threshold


def _ambiguous(ranking: Any, threshold: float) -> bool:
    """Rasa's ``FallbackClassifier._nlu_prediction_ambiguous``: the intent ranking's two best confidences
    (a stored NLU event's ``ranking``, best first) differ by less than ``threshold`` (``ambiguity_threshold``)."""
    if threshold <= 0 or not isinstance(ranking, list) or len(ranking) < 2:
        return False
    first, second = (r.get("confidence") if isinstance(r, dict) else None for r in ranking[:2])
    if not isinstance(first, int | float) or not isinstance(second, int | float):
        return False
    return bool(first - second < threshold)


@dataclass
class Tracker:
    """The featurised state of a conversation (or of a story or, with ``rule``, a rule being played)."""

    domain: Domain
    nlu_threshold: float = 0.0
    floor: IntentFloor | None = None
    intent: str | None = None
    entities: tuple[str, ...] = ()
    prev_action: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    loop: str | None = None
    frames: list[Frame] = field(default_factory=list)     # one per action run, the state before it
    queries: list[Frame] = field(default_factory=list)    # the same, as it was when the action was predicted
    actions: list[str] = field(default_factory=list)      # the actions, aligned with ``frames``
    session_start: int = 0                                 # index in ``frames`` where this session began
    rule: bool = False                                     # a rule: SHOULD_NOT_BE_SET shows as "not set"
    sessions: int = 0                                      # sessions begun (``new_session``): for ``WindowReplay``
    undone: int = 0                                        # actions undone (``UNDO``): for ``WindowReplay``

    def frame(self, before_action: str | None = None) -> Frame:
        features: set[str] = set()
        if self.intent is not None:
            features.add(f"intent:{self.intent}")
            props = self.domain.intents.get(self.intent)
            for label in self.entities:
                entity = label.split("#", 1)[0]
                if props is not None and (entity in props.ignore_entities or (
                        props.use_entities is not None and entity not in props.use_entities)):
                    continue
                # Rasa featurises only the entities the domain declares (``Domain._get_featurized_entities``:
                # an intent's used entities are domain entities): one the NLU data or a story annotates
                # without declaring it is no feature.
                ent = self.domain.entities.get(entity)
                if ent is not None and ent.influence_conversation:
                    features.add(f"entity:{label}")
        if self.prev_action is not None:
            features.add(f"prev:{self.prev_action}")
        features.update(slot_features(self.domain, self.slots, rule=self.rule))
        # A form's own action sees its loop as active (also on the turn that activates it), so that
        # rules conditioned on the loop match its activation and its submission alike.
        loop = self.loop if self.loop is not None else (
            before_action if before_action is not None and before_action in self.domain.forms else None)
        if self.rule and loop == SHOULD_NOT_BE_SET:
            features.add(f"{_NOT_SET}loop:")
        elif loop is not None:
            features.add(f"loop:{loop}")
        return frozenset(features)

    # -- what happens in a conversation ----------------------------------------------------------------
    def user(self, intent: str | None, entities: Iterable[str]) -> None:
        """The customer's turn: ``entities`` as ``entity_labels``."""
        self.intent = intent
        self.entities = tuple(sorted(set(entities)))
        self.prev_action = ACTION_LISTEN

    def action(self, name: str) -> None:
        query = self.frame()
        self.queries.append(query)
        # the frame before the action differs from the query only for a form's own action without an active
        # loop (``frame``); frames are frozen, so one object serves both (replay computes half as many)
        self.frames.append(query if self.loop is not None or name not in self.domain.forms else self.frame(name))
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
        self.sessions += 1

    def effective_intent(self, intent: Any, confidence: Any, ranking: Any = None) -> str | None:
        if not isinstance(intent, str) or not intent:
            return None
        if isinstance(confidence, int | float) and (confidence < self.nlu_threshold or (
                self.floor is not None and self.floor.rejects(intent, confidence))):
            return NLU_FALLBACK_INTENT
        if intent != NLU_FALLBACK_INTENT and _ambiguous(ranking, self.domain.nlu_ambiguity_threshold):
            return NLU_FALLBACK_INTENT
        return intent

    def apply(self, event: Event) -> None:
        """Replay one stored event (bots/events.py)."""
        kind, data = event.kind, event.data
        if kind == NLU:
            self.user(self.effective_intent(data.get("intent"), data.get("confidence"), data.get("ranking")),
                      [label for e in data.get("entities") or [] if isinstance(e, dict)
                       for label in entity_labels(str(e.get("entity")), e.get("role"), e.get("group"))])
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
            self.undone += 1
            self.actions.pop()
            self.frames.pop()
            self.queries.pop()
            self.prev_action = self.actions[-1] if self.actions else None
        elif kind == REJECTED:
            pass  # a rejected action leaves no frame

    @classmethod
    def replay(cls, domain: Domain, events: Sequence[Event], nlu_threshold: float = 0.0,
               floor: IntentFloor | None = None) -> Tracker:
        tracker = cls(domain, nlu_threshold=nlu_threshold, floor=floor)
        for event in events:
            tracker.apply(event)
        return tracker

    def copy(self) -> Tracker:
        """A copy to go on with apart (frames are frozen and slot values are only ever replaced: shallow)."""
        return replace(self, slots=dict(self.slots), frames=list(self.frames), queries=list(self.queries),
                       actions=list(self.actions))


@dataclass(frozen=True)
class _Mark:
    """A replay just after a user turn (an NLU event) at position ``at`` of the events: its frame count (less
    ``WindowReplay.offset``), counters, slots and loop, what a replay of a later window that converges there is
    compared with."""

    at: int
    frames: int
    sessions: int
    undone: int
    slots: dict[str, Any]
    loop: str | None


class WindowReplay:
    """``Tracker.replay`` of a conversation's sliding window of events (``State.history``), carried over from
    the previous window's replay instead of replaying every event each turn.

    A window that only grew: the new events are applied to the previous replay. A window whose front moved
    (the oldest events dropped): a fresh replay starts at the new front, and once it reaches a user turn where
    the previous replay was in the same state for everything that comes after (the slots' features, the loop;
    the NLU event sets the intent, entities and previous action; no action undone since), the rest is the
    previous replay's, its frames before that point replaced by the fresh ones. Where it never converges
    (a slot set only in the dropped events) it is a full replay. Either way the result is exactly
    ``Tracker.replay(domain, window)`` as far as frames, actions and predictions go (the slot values may
    differ where their features do not). Whether the window goes on from the previous one is checked on the
    events themselves, so a cache given another conversation's window, or a changed one, replays it in full."""

    def __init__(self) -> None:
        self.domain: Domain | None = None
        self.threshold = 0.0
        self.floor: IntentFloor | None = None
        self.start = 0                       # the position of events[0] among all the conversation's events
        self.events: list[Event] = []        # the window last replayed
        self.replayed: Tracker | None = None  # its replay (never handed out: ``tracker`` gives copies)
        self.marks: dict[int, _Mark] = {}    # by position, ascending
        self.offset = 0                      # what the marks' frame counts lack since the replay's front moved

    def tracker(self, domain: Domain, events: Sequence[Event], start: int, nlu_threshold: float = 0.0,
                floor: IntentFloor | None = None) -> Tracker:
        """``Tracker.replay(domain, events, nlu_threshold, floor)``, ``events`` being the window of the
        conversation's events from position ``start``: a tracker the caller may change."""
        old, d = self.replayed, start - self.start
        overlap = len(self.events) - d
        if (old is None or domain is not self.domain or nlu_threshold != self.threshold or floor != self.floor
                or d < 0 or overlap <= 0 or overlap > len(events) or events[:overlap] != self.events[d:]):
            tracker = Tracker(domain, nlu_threshold=nlu_threshold, floor=floor)
            self.marks, self.offset = {}, 0
            self._advance(tracker, events, start, 0)
        elif d == 0:
            tracker = old
            self._advance(tracker, events, start, overlap)
        else:
            tracker = self._slide(old, domain, events, start, overlap, nlu_threshold, floor)
        self.domain, self.threshold, self.floor, self.start, self.events, self.replayed = (
            domain, nlu_threshold, floor, start, list(events), tracker)
        return tracker.copy()

    def _advance(self, tracker: Tracker, events: Sequence[Event], start: int, first: int) -> None:
        """Apply ``events[first:]`` to ``tracker``, marking each user turn."""
        for i in range(first, len(events)):
            event = events[i]
            tracker.apply(event)
            if event.kind == NLU:
                self.marks[start + i] = _Mark(start + i, len(tracker.frames) - self.offset, tracker.sessions,
                                              tracker.undone, dict(tracker.slots), tracker.loop)

    def _slide(self, old: Tracker, domain: Domain, events: Sequence[Event], start: int, overlap: int,
               nlu_threshold: float, floor: IntentFloor | None = None) -> Tracker:
        fresh, marks, offset = Tracker(domain, nlu_threshold=nlu_threshold, floor=floor), self.marks, self.offset
        self.marks, self.offset = {}, 0
        for i in range(overlap):
            self._advance(fresh, events[i:i + 1], start + i, 0)
            mark = marks.get(start + i) if events[i].kind == NLU else None
            if mark is None or mark.loop != fresh.loop or old.undone != mark.undone or \
                    set(slot_features(domain, mark.slots)) != set(slot_features(domain, fresh.slots)):
                continue
            # converged: the old replay's frames before this user turn become the fresh replay's
            before = mark.frames + offset
            delta = len(fresh.frames) - before
            old.frames[:before] = fresh.frames
            old.queries[:before] = fresh.queries
            old.actions[:before] = fresh.actions
            old.session_start = fresh.session_start if old.sessions == mark.sessions else old.session_start + delta
            while (first := next(iter(marks))) < start + i:  # (the marks before this one are gone with the front)
                del marks[first]
            self.marks, self.offset = marks, offset + delta
            self._advance(old, events, start, overlap)
            return old
        self._advance(fresh, events, start, overlap)  # never converged: a full replay (marked as it went)
        return fresh


# ---------------------------------------------------------------------------------------------------------
# Stories and rules as frames.
@dataclass(frozen=True)
class Trajectory:
    """One path through the stories (checkpoints joined, ``or`` expanded), or one rule (``rule``), played
    as a conversation: per action, the frame before it, the query frame it was predicted from, the
    ``file:line`` of its step, the user turn it answers and the story (or rule) the step belongs to."""

    story: Story
    frames: tuple[Frame, ...]
    actions: tuple[str, ...]
    wheres: tuple[str, ...]
    queries: tuple[Frame, ...] = ()
    turns: tuple[int, ...] = ()
    origins: tuple[Story, ...] = ()
    rule: bool = False

    def window(self, i: int, n: int) -> tuple[Frame, ...]:
        """The (up to) ``n`` frames a prediction of action ``i`` sees: earlier frames, then the query."""
        return (*self.frames[max(0, i - n + 1): i], self.queries[i])

    def origin(self, i: int) -> Story:
        return self.origins[i] if i < len(self.origins) else self.story

    def where(self, i: int) -> str:
        return (self.wheres[i] if i < len(self.wheres) else "") or self.origin(i).where

    def turn(self, i: int) -> int:
        return self.turns[i] if i < len(self.turns) else 0


def _step_user(tracker: Tracker, step: Step) -> None:
    tracker.user(step.name, [label for e in step.entities for label in entity_labels(e.entity, e.role, e.group)])
    for entity in step.entities:  # a story turn's entities fill their slots, as the engine's slot extraction does
        for slot in tracker.domain.slots.values():
            if any(m.type == "from_entity" and m.entity == entity.entity and not m.conditions
                   and tracker.domain.mapping_is_valid(m)
                   and (m.role, m.group) == (entity.role, entity.group)
                   and tracker.domain.intent_fills(m, step.name, tracker.loop)
                   and (slot.name == tracker.slots.get(REQUESTED_SLOT)
                        or not tracker.domain.shared_entity_mapping(tracker.loop, slot.name, m))
                   for m in slot.mappings):
                tracker.set_slot(slot.name, entity.value if entity.value is not None else True)


def _step_value(slot: Slot | None, value: Any, *, rule: bool) -> Any:
    """A ``slot_was_set`` value as the tracker holds it. A slot named without a value is "filled" for
    text and list slots and not set for the others (Rasa's reader); ``null`` in a rule means "must not
    be set"."""
    if value is Ellipsis:
        return True if slot is not None and slot.type in ("text", "list") else None
    if value is None and rule:
        return SHOULD_NOT_BE_SET
    return value


def _linear_paths(steps: Sequence[Step], limit: int = 256) -> Iterator[list[Step]]:
    """``or`` steps expanded into separate paths (bounded)."""
    paths: list[list[Step]] = [[]]
    for step in steps:
        if step.kind == "or":
            paths = [[*p, alt] for p in paths for alt in step.alternatives][:limit]
        else:
            for p in paths:
                p.append(step)
    yield from paths


@dataclass(frozen=True)
class StoryPath:
    """One way through the story graph: its steps (checkpoints joined, ``or`` expanded), each with the
    story it comes from; ``story`` is the one the path starts with."""

    story: Story
    steps: tuple[Step, ...]
    origins: tuple[Story, ...]


@dataclass
class _Segment:
    """The steps of a story between checkpoints."""

    story: Story
    starts: list[Step]      # the checkpoints it continues (with their slot conditions)
    steps: list[Step]
    ends: list[str]         # the checkpoints it goes on to


def _segments(stories: Sequence[Story]) -> list[_Segment]:
    segments: list[_Segment] = []
    for story in stories:
        if story.is_rule:
            continue
        current = _Segment(story, [], [], [])
        pending: list[Step] = []
        for step in story.steps:
            if step.kind == "checkpoint":
                pending.append(step)
                continue
            if pending:
                if current.steps:  # a checkpoint in the middle: the story goes on from there
                    current.ends = [p.name for p in pending if p.name]
                    segments.append(current)
                    current = _Segment(story, list(pending), [], [])
                else:
                    current.starts.extend(pending)
                pending = []
            current.steps.append(step)
        if pending and (current.steps or current.starts):
            current.ends = [p.name for p in pending if p.name]
        segments.append(current)
    return segments


def story_graph(stories: Sequence[Story], limit: int = 2000) -> list[StoryPath]:
    """Rasa's story graph: a story ending in checkpoint ``c`` goes on with every story starting with
    ``c`` whose ``slot_was_set`` conditions hold for the slots set so far (checkpoints may also stand
    in the middle of a story). A path passes through a segment at most twice (one loop); at most
    ``limit`` paths. Stories starting with a checkpoint that nothing ends are never reached."""
    segments = _segments(stories)
    by_start: dict[str, list[_Segment]] = {}
    for seg in segments:
        for cp in seg.starts:
            if cp.name:
                by_start.setdefault(cp.name, []).append(seg)
    out: list[StoryPath] = []

    def fits(seg: _Segment, name: str, slots: Mapping[str, Any]) -> bool:
        return all(slots.get(k) == v for cp in seg.starts if cp.name == name for k, v in cp.slots)

    def walk(seg: _Segment, prefix: list[tuple[Story, Step]], used: dict[int, int]) -> None:
        for branch in _linear_paths(seg.steps):
            if len(out) >= limit:
                return
            path = [*prefix, *((seg.story, step) for step in branch)]
            slots: dict[str, Any] = {}
            for _, step in path:
                if step.kind == "slot_was_set":
                    slots.update(step.slots)
            nexts = [s for name in seg.ends for s in by_start.get(name, [])
                     if used.get(id(s), 0) < 2 and fits(s, name, slots)]
            if not nexts:
                out.append(StoryPath(path[0][0] if path else seg.story, tuple(step for _, step in path),
                                     tuple(origin for origin, _ in path)))
            for s in nexts:
                walk(s, path, {**used, id(s): used.get(id(s), 0) + 1})

    for seg in segments:
        if not seg.starts:
            walk(seg, [], {id(seg): 1})
    return out


def story_paths(stories: Sequence[Story], limit: int = 2000) -> list[tuple[Story, list[Step]]]:
    """The story graph's paths as (first story, linear steps)."""
    return [(p.story, list(p.steps)) for p in story_graph(stories, limit)]


class _Play:
    """A story or rule played on a fresh ``Tracker``, recording each action as a ``Trajectory`` does."""

    def __init__(self, domain: Domain, story: Story, *, rule: bool) -> None:
        self.story, self.rule = story, rule
        self.tracker = Tracker(domain, rule=rule)
        self.tracker.new_session(False)
        self.wheres: list[str] = []
        self.turns: list[int] = []
        self.origins: list[Story] = []
        self.turn = 0
        self.listened = False  # the last step played was the bot listening (``action_listen``)

    def waits(self) -> bool:
        """Rasa's implicit listen (``StoryStep._add_action_listen``): the bot listens before a user turn, and at
        the end of a story, unless the last thing the story did was listening. So after a user turn with no
        action after it (two user steps in a row, a story ending with a user step) the bot listens too. Not at
        the story's start: the conversation's own start is its listen (``Tracker.new_session``)."""
        return self.tracker.prev_action is not None and not self.listened

    def act(self, name: str, where: str, origin: Story) -> None:
        self.tracker.action(name)
        self.listened = name == ACTION_LISTEN
        self.wheres.append(where)
        self.turns.append(self.turn)
        self.origins.append(origin)

    def step(self, step: Step, origin: Story) -> None:
        tracker = self.tracker
        if step.kind == "intent":
            if self.waits():
                self.act(ACTION_LISTEN, step.where, origin)  # the bot waited for the customer (Rasa's implicit listen)
            self.turn += 1
            _step_user(tracker, step)
            self.listened = False
        elif step.kind == "action" and step.name:
            self.act(step.name, step.where, origin)
        elif step.kind == "slot_was_set":
            for name, value in step.slots:
                tracker.set_slot(name, _step_value(tracker.domain.slots.get(name), value, rule=self.rule))
            self.listened = False
        elif step.kind == "active_loop":
            tracker.set_loop(SHOULD_NOT_BE_SET if step.name is None and self.rule else step.name)
            self.listened = False

    def result(self) -> Trajectory:
        t = self.tracker
        return Trajectory(self.story, tuple(t.frames), tuple(t.actions), tuple(self.wheres), tuple(t.queries),
                          tuple(self.turns), tuple(self.origins), self.rule)


def simulate(domain: Domain, story: Story, steps: Sequence[Step],
             origins: Sequence[Story] | None = None) -> Trajectory:
    """A story path played as a conversation, ``action_listen`` at its end unless it listened last (not when
    ``story.is_rule``; also at a checkpoint nothing continues: the bot waits there). ``origins``: the story
    each step comes from (default ``story``)."""
    play = _Play(domain, story, rule=False)
    for j, step in enumerate(steps):
        play.step(step, origins[j] if origins is not None and j < len(origins) else story)
    if not story.is_rule and play.waits():
        last = play.origins[-1] if play.origins else story
        play.act(ACTION_LISTEN, last.where, last)
    return play.result()


def simulate_rule(domain: Domain, rule: Story) -> list[Trajectory]:
    """A rule as Rasa's RulePolicy reads it, once per ``or`` branch: its conditions, the snippet action
    ``...`` ("anything may come before"; not for a ``conversation_start`` rule), its steps, then
    ``action_listen`` (``...`` when it does not wait for the user). ``null`` means "not set"."""
    out: list[Trajectory] = []
    for steps in _linear_paths(rule.steps):
        play = _Play(domain, rule, rule=True)
        for step in rule.condition:
            play.step(step, rule)
        if not rule.conversation_start:
            play.act(SNIPPET, rule.where, rule)
        for step in steps:
            play.step(step, rule)
        play.act(ACTION_LISTEN if rule.wait_for_user_input else SNIPPET, rule.where, rule)
        out.append(play.result())
    return out


def trajectories(domain: Domain, stories: Sequence[Story]) -> list[Trajectory]:
    """Every path of the story graph, played (rules are not stories: see ``simulate_rule``)."""
    return [simulate(domain, p.story, p.steps, p.origins) for p in story_graph(stories)]


# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    action: str
    confidence: float
    policy: str
    where: str = ""        # the rule or story (file:line) that predicted it


def _shown(action: str) -> str:
    return f"'{action}'"


def describe(frame: Frame) -> str:
    """What happened just before a frame's action, for messages."""
    prev = next((f[5:] for f in frame if f.startswith("prev:")), None)
    if prev is None:
        return "the start of the conversation"
    if prev != ACTION_LISTEN:
        return f"action '{prev}'"
    intent = next((f[7:] for f in frame if f.startswith("intent:")), None)
    if intent is None:
        return "a user message"
    entities = sorted(f[7:] for f in frame if f.startswith("entity:"))
    return f"intent '{intent}'" + (f" with {', '.join(entities)}" if entities else "")


def _frame_matches(rule: Frame, frame: Frame) -> bool:
    """A rule's frame holds for a conversation's frame: every feature it states is there, nothing starts
    with what it marks "not set" (``!slot:name:``, ``!loop:``), and a frame with no previous action (the
    start of a rule that begins with an action) only holds for such a frame (Rasa's ``_is_rule_applicable``)."""
    required, not_set = _rule_parts(rule)
    if _has_prev(rule) != _has_prev(frame) or not required <= frame:
        return False
    return not any(f.startswith(prefix) for prefix in not_set for f in frame)


# Every prediction matches each rule key's frames against the latest frames: the parts of a frame are worked
# out once per frame (frames are frozen sets, hashed once; a conversation's frames repeat).
@functools.lru_cache(maxsize=8192)
def _rule_parts(rule: Frame) -> tuple[frozenset[str], tuple[str, ...]]:
    """The features a rule's frame requires, and the prefixes it marks "not set"."""
    return (frozenset(f for f in rule if not f.startswith(_NOT_SET)),
            tuple(f[len(_NOT_SET):] for f in rule if f.startswith(_NOT_SET)))


@functools.lru_cache(maxsize=8192)
def _has_prev(frame: Frame) -> bool:
    return any(f.startswith("prev:") for f in frame)


@functools.lru_cache(maxsize=8192)
def _anchor(frame: Frame) -> tuple[str | None, str | None] | None:
    """A frame's previous action and intent features (None for one it lacks); None when it has more than
    one of either (a tracker's frame never has)."""
    prevs = [f for f in frame if f.startswith("prev:")]
    intents = [f for f in frame if f.startswith("intent:")]
    if len(prevs) > 1 or len(intents) > 1:
        return None
    return prevs[0] if prevs else None, intents[0] if intents else None


@dataclass(frozen=True)
class RuleKey:
    """What a rule's action is predicted from (Rasa's rule key): the rule's frames after its snippet
    (the first one, whose previous action is the snippet itself, left out), or, for a
    ``conversation_start`` rule (``start``), all of them from the start of the session."""

    frames: tuple[Frame, ...]
    start: bool

    @functools.cached_property
    def rank(self) -> tuple[int, int]:
        """The longest key wins (a ``conversation_start`` key counts the session's start as one more frame,
        as Rasa's holds the state before it), then the one stating the most (Rasa: the longest key)."""
        return len(self.frames) + int(self.start), sum(len(f) for f in self.frames)

    def applies(self, history: Sequence[Frame]) -> bool:
        """RulePolicy's match: the key's frames hold for the conversation's latest frames, aligned at the end."""
        n = len(self.frames)
        if n > len(history) or (self.start and n != len(history)):
            return False
        for j in range(1, n + 1):  # a loop, not all(generator): called for every rule key at every prediction
            if not _frame_matches(self.frames[-j], history[-j]):
                return False
        return True


def rule_key(t: Trajectory, i: int) -> RuleKey | None:
    """The key action ``i`` of a rule's trajectory is predicted from (None: the action right after the
    snippet, which nothing predicts)."""
    snippet = max((j for j in range(i) if t.actions[j] == SNIPPET), default=None)
    if snippet is None:
        return RuleKey((*t.frames[:i], t.queries[i]), start=True)
    first = snippet + 2
    return RuleKey((*t.frames[first:i], t.queries[i]), start=False) if i >= first else None


@dataclass(frozen=True)
class RuleStep:
    rule: Story
    action: str
    where: str              # the step's file:line


@dataclass(frozen=True)
class Contradiction:
    """A story or rule going on with ``action`` where rules predict otherwise (``against``: each
    rule's name, file:line and action)."""

    trajectory: Trajectory
    index: int
    against: tuple[tuple[str, str, str], ...]

    def message(self) -> str:
        t, i = self.trajectory, self.index
        rules = "; ".join(f"rule '{name}' ({where}) goes on with {_shown(action)}"
                          for name, where, action in self.against)
        return (f"{t.where(i)}: {'rule' if t.rule else 'story'} '{t.origin(i).name}' goes on with "
                f"{_shown(t.actions[i])} here (turn {t.turn(i)}), but in the same situation {rules}: contradicting "
                f"rules (RulePolicy's check_for_contradictions)")


class RulePolicy:
    """Rasa's RulePolicy over rule keys (``RuleKey``); see the module docstring."""

    priority = 6

    def __init__(self, domain: Domain, stories: Sequence[Story], config: PolicyConfig) -> None:
        self.domain, self.config = domain, config
        self.rules = [t for story in stories if story.is_rule for t in simulate_rule(domain, story)]
        self.owners: dict[RuleKey, list[RuleStep]] = {}
        for t in self.rules:
            for i, action in enumerate(t.actions):
                key = rule_key(t, i)
                if key is not None:
                    self.owners.setdefault(key, []).append(RuleStep(t.story, action, t.where(i)))
        # A key that rules go on from differently predicts nothing (Rasa drops it; the check reports the
        # rules); nor does a key that predicts the snippet (a rule that does not wait for the user).
        self.lookup: dict[RuleKey, str] = {
            key: steps[0].action for key, steps in self.owners.items()
            if len({s.action for s in steps}) == 1 and steps[0].action != SNIPPET}
        self._contradictions: list[Contradiction] | None = None
        # ``lookup``'s keys that may hold for a frame, by its previous action and intent (``_anchor``), in
        # ``lookup``'s order; emptied whenever ``lookup`` changes (``_drop``).
        self._candidates: dict[tuple[str | None, str | None], list[tuple[RuleKey, str]]] = {}

    def _drop(self, key: RuleKey) -> None:
        self.lookup.pop(key, None)
        self._candidates.clear()

    def candidates(self, last: Frame) -> Iterable[tuple[RuleKey, str]]:
        """The keys whose last frame may hold for ``last`` (each in ``lookup``'s order): those stating
        ``last``'s previous action (or none when it has none) and its intent or no intent. A frame has at
        most one of each (``_anchor``); one that had more is matched against every key."""
        anchor = _anchor(last)
        if anchor is None:
            return self.lookup.items()
        found = self._candidates.get(anchor)
        if found is None:
            prev, intent = anchor
            found = self._candidates[anchor] = [
                (key, action) for key, action in self.lookup.items()
                if (stated := _anchor(_rule_parts(key.frames[-1])[0])) is None
                or (stated[0] == prev and stated[1] in (None, intent))]
        return found

    def matches(self, history: Sequence[Frame], excluded: frozenset[str] = frozenset()) -> list[tuple[RuleKey, str]]:
        """The keys of the highest rank that apply, in the rules' order (the first one predicts)."""
        best: list[tuple[RuleKey, str]] = []
        for key, action in self.candidates(history[-1]) if history else ():
            if action in excluded or not key.applies(history):
                continue
            if not best or key.rank > best[0][0].rank:
                best = [(key, action)]
            elif key.rank == best[0][0].rank:
                best.append((key, action))
        return best

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
        found = self.matches(history, excluded)
        if not found:
            return None
        key, action = found[0]
        loop = tracker.loop
        if (action == ACTION_LISTEN and loop is not None and loop not in excluded
                and f"loop:{loop}" not in key.frames[-1]):
            # Rasa: a general rule (one that does not state the loop) waiting for the user inside an active loop
            # gives the turn back to the loop ("rules might not explicitly switch back to the loop"), unless a
            # rule of the loop's unhappy path goes on with another action here (then the rules predict nothing).
            if self._unhappy_path_goes_on(history, loop):
                return None
            return Prediction(loop, 1.0, "RulePolicy", self.owners[key][0].where)
        return Prediction(action, 1.0, "RulePolicy", self.owners[key][0].where)

    def _unhappy_path_goes_on(self, history: Sequence[Frame], loop: str) -> bool:
        """A rule stating the active loop applies here and goes on with an action other than waiting or the
        loop (Rasa's DO_NOT_PREDICT_LOOP_ACTION)."""
        return any(f"loop:{loop}" in key.frames[-1] and action not in (ACTION_LISTEN, loop) and key.applies(history)
                   for key, action in self.lookup.items())

    # -- check_for_contradictions ----------------------------------------------------------------------------
    @staticmethod
    def _predictable(t: Trajectory) -> Iterator[int]:
        """The actions a policy predicts: not the snippet nor the action right after it, nor one with no
        previous action (Rasa's unpredictable first action)."""
        after_snippet = False
        for i, action in enumerate(t.actions):
            if action == SNIPPET:
                after_snippet = True
                continue
            if after_snippet or not any(f.startswith("prev:") for f in t.queries[i]):
                after_snippet = False
                continue
            yield i

    def _predictions(self, t: Trajectory, i: int) -> list[tuple[RuleKey, str]]:
        found = self.matches([*t.frames[:i], t.queries[i]])
        key = rule_key(t, i) if t.rule and not found else None
        # a rule that nothing predicts (its key is ambiguous): the core fallback, from its own key
        return found if key is None else [(key, self.config.core_fallback_action)]

    def _droppable(self, key: RuleKey, predicted: str) -> bool:
        """Rasa's ``_should_delete``: a key of one frame predicting ``action_listen`` that another rule
        goes on from is dropped when a story goes on after it (the story wins)."""
        if predicted != ACTION_LISTEN or len(key.frames) != 1:
            return False
        return any(other != key and other.frames[0] >= key.frames[0] for other in self.lookup)

    def may_drop(self) -> bool:
        """Whether a story could make ``contradictions`` drop a rule key (the engine runs it only then)."""
        return any(self._droppable(key, action) for key, action in self.lookup.items())

    def contradictions(self, story_trajectories: Sequence[Trajectory]) -> list[Contradiction]:
        """Rules and stories (with ``story_trajectories``, every path of the story graph) whose next action
        the rules predict otherwise, as RulePolicy's ``check_for_contradictions`` finds them at training:
        outside active loops (what an active form does is the form's business) and default intents. Run
        once: like Rasa's, it drops the rule keys ``_droppable`` names, so the served policy follows those stories."""
        if self._contradictions is not None:
            return self._contradictions
        sources: dict[RuleKey, list[RuleStep]] = {}   # the rules' own predictions, by the key they came from
        for t in self.rules:
            for i in self._predictable(t):
                for key, _ in self._predictions(t, i):   # (keys as specific as the one that predicts: all)
                    sources.setdefault(key, []).append(RuleStep(t.story, t.actions[i], t.story.where))
        problems: list[Contradiction] = []
        for t in [*self.rules, *story_trajectories]:
            for i in self._predictable(t):
                query, gold = t.queries[i], t.actions[i]
                if any(f.startswith("loop:") for f in query) or \
                        any(f"intent:{d}" in query for d in _DEFAULT_INTENT_ACTIONS):
                    continue
                found = self._predictions(t, i)
                if all(action == gold for _, action in found):
                    continue
                key, predicted = found[0]
                if predicted != gold and not t.rule and self._droppable(key, predicted):
                    self._drop(key)
                    continue
                # what predicts here, and rules as specific that predict otherwise (the file's order decides
                # between them: a contradiction too)
                against = sorted({(s.rule.name, s.where, s.action) for k, action in found if action != gold
                                  for s in sources.get(k, []) if s.action != gold})
                if against:
                    problems.append(Contradiction(t, i, tuple(against)))
        self._contradictions = problems
        return problems


def restricted_rules(stories: Sequence[Story]) -> list[str]:
    """RulePolicy's ``restrict_rules``: a rule holds at most one user message."""
    problems: list[str] = []
    for rule in stories:
        users = sum(1 for s in rule.steps if s.kind == "intent" or
                    (s.kind == "or" and any(a.kind == "intent" for a in s.alternatives)))
        if rule.is_rule and users > 1:
            problems.append(f"{rule.where}: rule '{rule.name}' has {users} user messages: a rule holds at most one "
                            f"(RulePolicy's restrict_rules); write a story for longer exchanges")
    return problems


@dataclass(frozen=True)
class Conflict:
    """Story paths that reach the same last ``max_history`` frames and go on with different actions
    (each path and action index; the first one is reported "here")."""

    max_history: int
    places: tuple[tuple[Trajectory, int], ...]

    def message(self) -> str:
        (t, i), *others = self.places
        rest = "; ".join(f"'{o.origin(j).name}' goes on with {_shown(o.actions[j])} at {o.where(j)}" for o, j in others)
        return (f"{t.where(i)}: story structure conflict after {describe(t.queries[i])} (turn {t.turn(i)}; the last "
                f"{self.max_history} states are the same, max_history): '{t.origin(i).name}' goes on with "
                f"{_shown(t.actions[i])} here; {rest}")


# A memoisation window that reaches back to the start of the session (a story's first turns) begins with this
# frame, as Rasa's windows begin with the state before the conversation's first action: the start of a story is
# then not mistaken for the same few frames in the middle of another (``starts`` keeps them without it, for a
# story beginning later in a conversation).
_SESSION_START: Frame = frozenset({"<session start>"})


class MemoizationPolicy:
    priority = 3

    def __init__(self, domain: Domain, stories: Sequence[Story], config: PolicyConfig,
                 trajectories_: Sequence[Trajectory] | None = None) -> None:
        self.max_history = max(1, config.max_history)
        self.augmented = config.augmented_memoization
        self.lookup: dict[tuple[Frame, ...], str | None] = {}
        self.starts: dict[tuple[Frame, ...], str | None] = {}     # the stories' beginnings, met later
        self.where: dict[tuple[Frame, ...], str] = {}
        # The longest windows (what a prediction tries first), each action with its first place: the conflicts.
        self.places: dict[tuple[Frame, ...], dict[str, tuple[Trajectory, int]]] = {}
        for t in trajectories(domain, stories) if trajectories_ is None else trajectories_:
            self.add(t)

    def add(self, t: Trajectory) -> None:
        for i, action in enumerate(t.actions):
            for n in range(1, min(self.max_history, i + 1) + 1):
                window = t.window(i, n)
                for lookup, key in ((self.lookup, (_SESSION_START, *window)), (self.starts, window)) if n == i + 1 \
                        else ((self.lookup, window),):
                    known = lookup.get(key, action)
                    lookup[key] = action if known == action else None  # ambiguous windows predict nothing
                    self.where.setdefault(key, t.where(i))
            longest = t.window(i, self.max_history)
            key = (_SESSION_START, *longest) if i < self.max_history else longest
            self.places.setdefault(key, {}).setdefault(action, (t, i))

    def conflicts(self) -> list[Conflict]:
        """Windows the stories go on from differently: there the policy predicts nothing."""
        return [Conflict(self.max_history, tuple(actions.values())) for actions in self.places.values()
                if len(actions) > 1]

    def predict(self, tracker: Tracker, current: Frame, excluded: frozenset[str] = frozenset()) -> Prediction | None:
        history = [*tracker.frames[tracker.session_start:], current]
        for n in range(min(self.max_history, len(history)), 0, -1):
            window = tuple(history[-n:])
            # the stories' windows (the one reaching back to the session's start as such), then a story's beginning
            for lookup, key in ((self.lookup, (_SESSION_START, *window)), (self.lookup, window)) if n == len(history) \
                    else ((self.lookup, window), (self.starts, window)):
                action = lookup.get(key)
                if action is not None and action not in excluded:
                    return Prediction(action, 1.0,
                                      "AugmentedMemoizationPolicy" if self.augmented else "MemoizationPolicy",
                                      self.where.get(key, ""))
                if key in lookup and not self.augmented:
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
        trajs = trajectories(domain, stories) if config.rules or config.memoization else []
        rules = RulePolicy(domain, stories, config) if config.rules else None
        if rules is not None and config.check_for_contradictions and rules.may_drop():
            rules.contradictions(trajs)  # drops the rule keys stories go on from, as training does
        return cls(domain, config, rules,
                   MemoizationPolicy(domain, stories, config, trajs) if config.memoization else None,
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
        if tracker.prev_action is None and tracker.intent is None:
            # Nothing happened yet: a custom action's Restarted (orderbot's own action_restart) or a new session
            # left the bot nothing to go on. Rasa's policies learn "listen" for that state from every story that
            # starts with a message (StoryStep.explicit_events puts action_listen first; MemoizationPolicy predicts
            # it; without one, action_listen is index 0 of a zero prediction); the learned policy never saw it.
            return Prediction(ACTION_LISTEN, 1.0, "default")
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
    """What training refuses and ``switchboard check`` reports about stories and rules (``file:line: ...``),
    found by the policies the engine serves: story structure conflicts (the memoisation windows of
    ``max_history`` frames that stories go on from differently; checked whatever the policies, as
    ``rasa data validate`` does), then, with the RulePolicy, ``restrict_rules`` and
    ``check_for_contradictions``."""
    trajs = trajectories(domain, stories)
    problems = [c.message() for c in MemoizationPolicy(domain, stories, config, trajs).conflicts()]
    if config.rules and config.restrict_rules:
        problems += restricted_rules(stories)
    if config.rules and config.check_for_contradictions:
        problems += [c.message() for c in RulePolicy(domain, stories, config).contradictions(trajs)]
    return list(dict.fromkeys(problems))


def require_consistent(domain: Domain, stories: Sequence[Story], config: PolicyConfig) -> None:
    problems = check_stories(domain, stories, config)
    if problems:
        raise ConfigError(problems)
