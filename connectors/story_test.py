"""``switchboard test``: Rasa-format test stories run end to end through the served pipeline.

Each test story (``tests/test_*.yml`` by default, as ``rasa test`` finds them; ``or`` and
checkpoints expanded as Rasa's story graph does) becomes one conversation, sent message by message
into the real ``bots.runtime.Runtime`` as a channel would send it: the bot's newest artifact loaded
as ``serve`` loads it (NLU model and entity extraction), the one dialogue engine, custom actions in
process or on the action server of ``endpoints.yml``, and a temporary embedded store (deleted
afterwards). A ``user:`` step's text goes through the NLU; an ``intent:`` step without text is sent
as the button payload ``/intent{"entity": "value"}`` (the intent given directly, as Rasa's test
does). The bot is validated first exactly as ``serve`` validates it.

After each message the turn's stored events are compared with the story, as ``rasa test`` does:

* **actions**: the actions the bot ran (its ``ACTION`` events, ``action_listen`` included) against
  the story's ``action:`` (and ``bot:``) steps up to the next user step, plus the ``action_listen``
  that ends every bot turn; pairwise, position by position. A story action the bot never reached
  is paired with ``None``. These pairs are the action-level targets and predictions of the report.
* **user turns**: for a ``user:`` step with ``intent:``, the intent the served NLU gave (``nlu_fallback``
  below the bot's fallback threshold, as the engine sees it) and its entities (entity and value, as
  Rasa's evaluation compares them, spans aside; every annotation of the text, no more, no fewer; an
  entity found by two extractors counts once).
* **slot_was_set** and **active_loop** steps: the slot has that value (a name alone: any value) and
  that form is active, at the point of the story where the step stands or later in the same turn (a
  slot filled by the form's validation instead of the extraction still counts). The ``slot_was_set``
  steps before a story's first message are not checked but given: the conversation starts with those
  slots (``_start_with``), as ``rasa test`` applies a story's slots.

A story with any difference fails. Unlike ``rasa test core``, which feeds the story's own actions
back after a wrong prediction, the conversation goes on with what the bot really did: the story is
what a customer would have seen. With ``replay`` (``switchboard test --replay``) a story is evaluated as
``rasa test`` evaluates it instead (``_ReplayRun``): its own events are the history, the policies
predict each of its actions, no action runs; test stories written for Rasa (a form the story ends
without the answers it would ask for) are judged as Rasa judges them.

``failed_test_stories.yml`` holds the failed stories with
``# predicted: ...`` comments where Rasa writes them; ``training/story_reports.py`` writes the
report files from ``StoryTestResults``.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bots.dialogue.domain import (
    ACTION_LISTEN,
    DEFAULT_ACTIONS,
    DEFAULT_INTENTS,
    NLU_FALLBACK_INTENT,
    REQUESTED_SLOT,
    Step,
    Story,
)
from bots.dialogue.engine import OPENED, OPENING_ID, policies_for
from bots.dialogue.policies import Tracker, _step_user, _step_value, story_paths
from bots.dialogue.rasa_data import read_test_stories
from bots.dialogue.rasa_project import rasa_test_files
from bots.dialogue.spec import DialogueSpec
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.events import ACTION, BOT, NLU, SLOT, Event
from bots.runtime import BotRuntime, ModelLoader, Runtime, load_onnx_model, parse_payload
from bots.settings import Settings
from bots.store.base import SummaryUpdate
from bots.store.sqlite import SQLiteStore
from bots.types import ConversationRef, UserMessage

log = logging.getLogger("switchboard.test")

CHANNEL = "test"          # the channel the stories' messages arrive on (no channel-specific response variation)
NONE = "None"             # the prediction paired with a story action the bot never reached
_NO_FAILURES = "# None of the test stories failed - all good!\n"


@dataclass
class StoryResult:
    """One test conversation: the story (one path of it), whether it passed, and what differed."""

    name: str
    source: str                                   # the test file, as given
    passed: bool
    failures: list[str] = field(default_factory=list)   # "file:line: what differed"
    yaml: str = ""                                # the story in Rasa's YAML, with "# predicted:" comments
    turns: int = 0


@dataclass
class StoryTestResults:
    stories: list[StoryResult] = field(default_factory=list)
    action_targets: list[str] = field(default_factory=list)
    action_predictions: list[str] = field(default_factory=list)
    intent_targets: list[str] = field(default_factory=list)
    intent_predictions: list[str] = field(default_factory=list)
    turn_seconds: list[float] = field(default_factory=list)   # per user message: accepted to answered

    @property
    def failed(self) -> list[StoryResult]:
        return [s for s in self.stories if not s.passed]

    @property
    def conversation_accuracy(self) -> float:
        return (len(self.stories) - len(self.failed)) / len(self.stories) if self.stories else 0.0

    @property
    def action_accuracy(self) -> float:
        pairs = list(zip(self.action_targets, self.action_predictions, strict=True))
        return sum(1 for t, p in pairs if t == p) / len(pairs) if pairs else 0.0

    @property
    def intent_accuracy(self) -> float | None:
        pairs = list(zip(self.intent_targets, self.intent_predictions, strict=True))
        return sum(1 for t, p in pairs if t == p) / len(pairs) if pairs else None

    def failed_stories_yaml(self) -> str:
        """``failed_test_stories.yml`` as Rasa writes it."""
        if not self.failed:
            return _NO_FAILURES
        return 'version: "3.1"\nstories:\n' + "".join(s.yaml for s in self.failed)


# ---------------------------------------------------------------------------------------------------------
# Finding and checking the test stories.
def story_files(bot_dir: Path, paths: Sequence[Path] = ()) -> list[Path]:
    """The test story files: ``paths`` (files, or folders: every .yml/.yaml below them), else the bot's
    ``tests/test_*.yml``. ConfigError when there are none or a path does not exist."""
    if not paths:
        found = rasa_test_files(bot_dir)
        if not found:
            raise ConfigError(f"{bot_dir / 'tests'}: no test stories (tests/test_*.yml, as `rasa test` finds them); "
                              "write some or give their paths")
        return found
    files: dict[Path, None] = {}
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            below = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".yml", ".yaml"))
            if not below:
                problems.append(f"{path}: no .yml test story files in this folder")
            files.update(dict.fromkeys(below))
        elif path.is_file():
            files[path] = None
        else:
            problems.append(f"{path}: no such file or folder")
    if problems:
        raise ConfigError(problems)
    return list(files)


def _unknown_names(stories: Sequence[Story], bot_intents: Sequence[str],
                   dialogue: DialogueSpec) -> tuple[list[str], list[str]]:
    """Test-story steps naming what the bot does not have (``file:line``): (problems, notes).

    An intent or action the bot does not have is a note: such a step can never pass, but Rasa runs the story all
    the same and counts the step wrong (its story reader warns "Found intent ... in stories which is not part of
    the domain", ``rasa test`` warns of a bot utterance "which is not part of the training data / domain" and
    compares the names, ``_collect_action_executed_predictions``), and so does this runner: the other steps and
    stories are still tested. An ``active_loop`` that is not a form is a problem (refused): Rasa's policies
    would predict that loop, an action it does not have. Rasa's default intents are in every domain: a user
    text may expect one, and one given without a text is sent as its payload (``/nlu_fallback``), as a replay
    gives it directly (as ``rasa test`` does)."""
    domain = dialogue.domain
    actions = {*DEFAULT_ACTIONS, *domain.action_names}
    intents = set(bot_intents) | set(domain.intents)
    problems: list[str] = []
    notes: list[str] = []
    never = "this step can never pass (rasa test runs the story too and counts the step wrong)"

    def check(step: Step, what: str) -> None:
        if step.kind == "intent" and step.name is not None and step.name not in intents:
            if step.name not in DEFAULT_INTENTS:  # 'nlu_fallback' is what a text not understood gets; given
                # without a text, a default intent is sent as its payload ('/restart'), which every bot reads
                notes.append(f"{step.where}: {what}: intent '{step.name}' is not one of the bot's intents: {never}")
        elif step.kind == "action" and step.name is not None and step.name not in actions:
            notes.append(f"{step.where}: {what}: action '{step.name}' is not in the domain: {never}")
        elif step.kind == "active_loop" and step.name is not None and step.name not in domain.forms:
            problems.append(f"{step.where}: {what}: active_loop '{step.name}' is not a form of the domain")
        for alt in step.alternatives:
            check(alt, what)

    for story in stories:
        for step in story.steps:
            check(step, f"test story '{story.name}'")
    return problems, notes


def _without_undeclared_slots(stories: Sequence[Story], dialogue: DialogueSpec, notes: list[str]) -> list[Story]:
    """The stories with every ``slot_was_set`` of a slot the domain does not have left out, each noted at its
    ``file:line``. Rasa runs such a story: its tracker ignores a slot it does not have (``DialogueStateTracker.
    _set_slot`` logs "Tried to set non existent slot" and sets nothing), so the step neither sets nor expects
    anything, and the rest of the story is tested. A ``slot_was_set`` left with no slot is dropped."""
    declared = set(dialogue.domain.slots) | {REQUESTED_SLOT}

    def keep(step: Step, what: str) -> Step | None:
        alternatives = tuple(a for a in (keep(alt, what) for alt in step.alternatives) if a is not None)
        if step.kind != "slot_was_set":
            return replace(step, alternatives=alternatives) if alternatives != step.alternatives else step
        unknown = [name for name, _ in step.slots if name not in declared]
        if not unknown:
            return step
        notes.extend(f"{step.where}: {what}: slot '{name}' is not in the domain: this slot_was_set sets and "
                     f"expects nothing (Rasa's tracker ignores a slot it does not have)" for name in unknown)
        slots = tuple((name, value) for name, value in step.slots if name in declared)
        return replace(step, slots=slots, alternatives=alternatives) if slots else None

    out: list[Story] = []
    for story in stories:
        what = f"test story '{story.name}'"
        steps = tuple(k for k in (keep(step, what) for step in story.steps) if k is not None)
        out.append(replace(story, steps=steps) if steps != story.steps else story)
    return out


# ---------------------------------------------------------------------------------------------------------
# Writing a story back (Rasa's YAML), with the predictions as end-of-line comments.
def _scalar(value: Any) -> str:
    """A YAML 1.2 flow scalar (JSON is one) for a value of a story."""
    return json.dumps(value, ensure_ascii=False)


def _comment(text: str | None) -> str:
    return f"  # predicted: {' '.join(text.split())}" if text else ""


def annotated(text: str, entities: Sequence[tuple[Any, ...]]) -> str:
    """``text`` with Rasa's entity annotations, as Rasa's writer writes them (``TrainingDataWriter.
    generate_entity``): ``[span](entity)``, or ``[span]{"entity": ..., "role": ..., "group": ..., "value": ...}``
    with the role and group an entity has and the value where it differs from the span. ``entities``: (entity,
    value, start, end) or (entity, value, start, end, role, group); entities without a position are left out."""
    placed = sorted((e for e in entities if e[2] is not None and e[3] is not None), key=lambda e: (e[2], e[3]))
    out: list[str] = []
    pos = 0
    for entity, value, start, end, *labels in placed:
        if start < pos or end > len(text):
            continue  # overlapping spans: one annotation each
        role, group = [*labels, None, None][:2]
        span = text[start:end]
        out.append(text[pos:start])
        shown = None if value is None or str(value) == span else str(value)
        if shown is None and role is None and group is None:
            out.append(f"[{span}]({entity})")
        else:
            fields = {"entity": entity, "role": role, "group": group, "value": shown}
            out.append(f"[{span}]" + json.dumps({k: v for k, v in fields.items() if v is not None},
                                                ensure_ascii=False))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _block(text: str, indent: str) -> list[str]:
    return [f"{indent}{line}" if line else "" for line in text.splitlines() or [""]]


def _step_yaml(step: Step, comment: str | None) -> list[str]:
    c = _comment(comment)
    if step.kind == "intent":
        if step.user_text is not None:
            text = annotated(step.user_text, [(e.entity, e.value, e.start, e.end, e.role, e.group)
                                              for e in step.entities])
            lines = ["  - user: |", *_block(text, "      ")]
            if step.name is not None:
                lines.append(f"    intent: {step.name}{c}")
            elif c:
                lines[0] += c
            return lines
        lines = [f"  - intent: {step.name}{c}"]
        if step.entities:
            lines.append("    entities:")
            for e in step.entities:
                lines.append(f"    - {e.entity}: {_scalar(e.value)}" if e.value is not None else f"    - {e.entity}")
                if e.role is not None:
                    lines.append(f"      role: {e.role}")
                if e.group is not None:
                    lines.append(f"      group: {e.group}")
        return lines
    if step.kind == "action":
        return [f"  - action: {step.name}{c}"]
    if step.kind == "bot":
        return [f"  - bot: {_scalar(step.name)}{c}"]
    if step.kind == "active_loop":
        return [f"  - active_loop: {step.name if step.name is not None else 'null'}{c}"]
    if step.kind == "slot_was_set":
        lines = ["  - slot_was_set:"]
        for i, (name, value) in enumerate(step.slots):
            tail = c if i == 0 else ""
            lines.append(f"    - {name}{tail}" if value is Ellipsis else f"    - {name}: {_scalar(value)}{tail}")
        return lines
    return []


# ---------------------------------------------------------------------------------------------------------
# Running one story.
@dataclass
class _Turn:
    user: int | None                                              # index of the user step (None: before the first)
    items: list[int] = field(default_factory=list)                # the steps after it, up to the next user step


def _turns(steps: Sequence[Step]) -> list[_Turn]:
    turns = [_Turn(None)]
    for i, step in enumerate(steps):
        if step.kind == "intent":
            turns.append(_Turn(i))
        elif step.kind in ("action", "bot", "slot_was_set", "active_loop"):
            turns[-1].items.append(i)
    return turns if turns[0].items else turns[1:]


def _same(expected: Any, actual: Any) -> bool:
    if expected is Ellipsis:
        return actual is not None
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return str(expected).lower() == str(actual).lower()
    if isinstance(expected, int | float) and not isinstance(actual, bool):
        try:
            return float(expected) == float(actual)
        except (TypeError, ValueError):
            return False
    return bool(expected == actual or str(expected) == str(actual))


def _payload(step: Step) -> str:
    values = {e.entity: e.value for e in step.entities if e.value is not None}
    return f"/{step.name}" + (json.dumps(values, ensure_ascii=False) if values else "")


@dataclass
class _Snapshot:
    slots: dict[str, Any]
    form: str | None
    requested: str | None

    def value(self, slot: str) -> Any:
        return self.requested if slot == REQUESTED_SLOT else self.slots.get(slot)


class _StoryRun:
    """One story path sent through the runtime, compared turn by turn."""

    def __init__(self, runtime: Runtime, bot: BotRuntime, story: Story, steps: list[Step], source: str,
                 conversation_id: str, results: StoryTestResults) -> None:
        self.runtime, self.bot, self.story, self.steps = runtime, bot, story, steps
        self.source, self.conversation_id, self.results = source, conversation_id, results
        self.comments: dict[int, str] = {}         # step index -> "# predicted: ..."
        self.listen_after: dict[int, str] = {}     # step index -> the prediction where the bot should have listened
        self.failures: list[str] = []
        self.state = State(sender_id=conversation_id)
        self.turns = 0

    def fail(self, where: str, what: str) -> None:
        self.failures.append(f"{where or self.story.where}: story '{self.story.name}': {what}")

    async def run(self) -> StoryResult:
        turns = _turns(self.steps)
        if turns and turns[0].user is None:
            given = list(itertools.takewhile(lambda i: self.steps[i].kind == "slot_was_set", turns[0].items))
            if given:
                await self._start_with([slot for i in given for slot in self.steps[i].slots])
                turns[0].items = turns[0].items[len(given):]
        for turn in turns:
            await self._turn(turn)
        passed = not self.failures
        return StoryResult(self.story.name, self.source, passed, self.failures,
                           "" if passed else self._yaml(), self.turns)

    async def _start_with(self, slots: Sequence[tuple[str, Any]]) -> None:
        """The slots a story sets before its first message are the conversation's state when it starts: rasa
        test applies a story's ``slot_was_set`` as given (``_predict_tracker_actions`` predicts only actions),
        and before the first message no action of the bot could have set them. The conversation is opened
        (as the web chat opens one: a new session, no message) and the slots are stored on it; the story's
        first message then finds them. A name without a value ("any value") gives nothing to set."""
        ref = ConversationRef(bot=self.bot.name, channel=CHANNEL, conversation_id=self.conversation_id)
        opening = UserMessage(ref=ref, message_id=OPENING_ID, text="", user_id=self.conversation_id,
                              received_at=time.time(), metadata={OPENED: True})
        await self.runtime.process(opening, await self.runtime.accept(opening))
        events = [Event(SLOT, {"name": name, "value": value}) for name, value in slots if value is not Ellipsis]
        if events:
            await self.runtime.store.append(self.bot.name, self.conversation_id, events, SummaryUpdate())
        conversation = await self.runtime.history(self.bot.name, self.conversation_id)
        assert conversation is not None, "the opened conversation is stored"
        for turn in conversation.turns:
            for event in turn.events:
                self.state.apply(event)

    async def _send(self, step: Step) -> tuple[list[Event], float]:
        text = step.user_text if step.user_text is not None else _payload(step)
        payload = text if text.startswith("/") else None
        message_id = f"{self.conversation_id}-{self.turns}"
        message = UserMessage(ref=ConversationRef(bot=self.bot.name, channel=CHANNEL,
                                                  conversation_id=self.conversation_id),
                              message_id=message_id, text=text, user_id=self.conversation_id,
                              received_at=time.time(), payload=payload)
        started = time.perf_counter()
        await self.runtime.handle(message)
        seconds = time.perf_counter() - started
        turn = await self.runtime.store.get_turn(self.bot.name, self.conversation_id, message_id)
        assert turn is not None, "an answered message is stored"
        return list(turn.events), seconds

    def _check_user(self, index: int, step: Step, nlu: Mapping[str, Any]) -> None:
        """A user step against what the served NLU made of its text (``nlu``: the NLU event's data)."""
        intent = str(nlu.get("intent") or "")
        confidence = nlu.get("confidence")
        if isinstance(confidence, int | float) and confidence < (self.bot.spec.fallback_threshold or 0.0):
            intent = NLU_FALLBACK_INTENT
        if step.user_text is None:
            return  # an intent given directly (a payload)
        predicted = [e for e in nlu.get("entities") or [] if isinstance(e, dict)]
        # Entity and value, as Rasa's evaluation compares them; one finding however many extractors made it.
        gold = {(e.entity, str(e.value)) for e in step.entities}
        got = {(str(e.get("entity")), str(e.get("value"))) for e in predicted}
        # A `user:` text without `intent:` expects no intent: Rasa's reader gives it none
        # (YAMLStoryReader._parse_user_utterance) and `rasa test` compares the NLU's intent with that none
        # (rasa.core.test._collect_user_uttered_predictions), so the story fails there, whatever the NLU says.
        self.results.intent_targets.append(step.name if step.name is not None else "None")
        self.results.intent_predictions.append(intent)
        if intent == step.name and gold == got:
            return
        shown = annotated(step.user_text, [(str(e.get("entity")), e.get("value"), e.get("start"), e.get("end"),
                                            e.get("role"), e.get("group")) for e in predicted])
        self.comments[index] = f"{intent}: {shown}"
        if step.name is None:
            self.fail(step.where, f"no intent given with the text: the NLU predicted {intent!r}, and rasa test "
                                  f"compares it with none and fails the story (give the step its 'intent:')")
        elif intent != step.name:
            self.fail(step.where, f"intent {step.name!r} expected, the NLU predicted {intent!r} "
                                  f"({confidence if confidence is not None else '?'})")
        if gold != got:
            self.fail(step.where, "entities " + _entities_text(gold) + " expected, the NLU found "
                      + _entities_text(got))

    async def _turn(self, turn: _Turn) -> None:
        events: list[Event] = []
        if turn.user is not None:
            user_step = self.steps[turn.user]
            events, seconds = await self._send(user_step)
            self.results.turn_seconds.append(seconds)
            self.turns += 1
            self._check_user(turn.user, user_step, next((e.data for e in events if e.kind == NLU), {}))
        # Split the turn's events into segments: before the first action (the message and the extraction),
        # then one per action run (the action's own events follow its ACTION event).
        snapshots: list[_Snapshot] = []   # state after segment k (k = 0: before any action)
        predicted: list[tuple[str, list[Event]]] = []
        for event in events:
            if event.kind == ACTION:
                snapshots.append(self._snapshot())
                predicted.append((str(event.data.get("name")), []))
            elif predicted:
                predicted[-1][1].append(event)
            self.state.apply(event)
        snapshots.append(self._snapshot())
        gold = [i for i in turn.items if self.steps[i].kind in ("action", "bot")]
        listen = turn.user is not None   # every answered message ends with action_listen
        n = len(gold) + (1 if listen else 0)
        first_wrong = n
        for k in range(n):
            step = self.steps[gold[k]] if k < len(gold) else None
            if k < len(predicted):
                name, own = predicted[k]
                said = next((str(e.data.get("text") or "") for e in own if e.kind == BOT), None)
            else:
                name, said = NONE, None
            if step is None:
                target, prediction = ACTION_LISTEN, name
            elif step.kind == "bot":
                target, prediction = str(step.name), said if said is not None else name
            else:
                target, prediction = str(step.name), name
            self.results.action_targets.append(target)
            self.results.action_predictions.append(prediction)
            if target == prediction:
                continue
            first_wrong = min(first_wrong, k)
            where = step.where if step is not None else (self.steps[turn.items[-1]].where if turn.items
                                                         else self.steps[turn.user or 0].where)
            if step is not None:
                self.comments[gold[k]] = prediction
            else:
                self.listen_after[(turn.items or [turn.user or 0])[-1]] = prediction
            self.fail(where, f"{target!r} expected, the bot ran {prediction!r}"
                      + (" (it was listening already)" if prediction == NONE else ""))
        # slot_was_set / active_loop: hold after the action they follow (or later in the turn), checked only
        # while the bot's actions so far were the story's.
        done = 0
        for i in turn.items:
            step = self.steps[i]
            if step.kind in ("action", "bot"):
                done += 1
                continue
            if done > first_wrong:
                continue
            later = snapshots[min(done, len(snapshots) - 1):]
            if step.kind == "active_loop":
                if not any(s.form == step.name for s in later):
                    got_form = later[-1].form
                    self.comments[i] = f"active_loop: {got_form if got_form is not None else 'null'}"
                    self.fail(step.where, f"active_loop {step.name!r} expected, the bot has {got_form!r} active")
                continue
            for name, value in step.slots:
                if not any(_same(value, s.value(name)) for s in later):
                    got = later[-1].value(name)
                    self.comments.setdefault(i, f"{name}: {_scalar(got)}")
                    self.fail(step.where, f"slot {name!r} = {'(any value)' if value is Ellipsis else repr(value)} "
                                          f"expected, the bot has {got!r}")

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(dict(self.state.slots), self.state.active_form, self.state.requested_slot)

    def _yaml(self) -> str:
        lines = [f"- story: {_scalar(f'{self.story.name} ({self.source})')}", "  steps:"]
        for i, step in enumerate(self.steps):
            lines += _step_yaml(step, self.comments.get(i))
            if i in self.listen_after:
                lines.append(f"  - action: {ACTION_LISTEN}{_comment(self.listen_after[i])}")
        return "\n".join(lines) + "\n"


class _ReplayRun(_StoryRun):
    """One story path evaluated as ``rasa test`` evaluates it (``rasa.core.test``): the story's own events
    are the conversation's history and the bot's policies predict each of its actions in turn; actions
    are not run. After a user step the tracker holds the story's intent and entities (and the slots they
    fill, as training plays stories), whatever the NLU predicted (compared all the same); after each
    action step it holds the story's action, ``slot_was_set`` and ``active_loop`` steps set what they
    say. When the active form is predicted where the story runs something else, the form's rejection is
    emulated and the policies asked again (Rasa's ``emulate_loop_rejection``). Each turn ends with the
    ``action_listen`` the story implies. Needed for test stories written for ``rasa test``: a form that
    the story fills (or ends, ``active_loop: null``) without the messages it would need when it runs."""

    async def run(self) -> StoryResult:
        dialogue = self.bot.dialogue
        self.ensemble = self.bot.policies or policies_for(dialogue)
        self.tracker = Tracker(dialogue.domain, nlu_threshold=self.bot.spec.fallback_threshold or 0.0)
        self.tracker.new_session(False)
        return await super().run()

    async def _understood(self, step: Step) -> Mapping[str, Any]:
        text = step.user_text or ""
        understanding = parse_payload(text, self.bot.spec, self.bot.dialogue) if text.startswith("/") else None
        if understanding is None:
            understanding = await self.bot.pipeline.process(text, await self.bot.understand(text),
                                                            reference_time=time.time())
        return understanding.to_dict()

    def _predict(self, rejected: bool) -> str:
        t = self.tracker
        return self.ensemble.predict(t, loop_rejected=rejected, latest_action=t.prev_action).action

    async def _turn(self, turn: _Turn) -> None:
        t = self.tracker
        if turn.user is not None:
            step = self.steps[turn.user]
            if step.user_text is not None:
                started = time.perf_counter()
                nlu = await self._understood(step)
                self.results.turn_seconds.append(time.perf_counter() - started)
                self._check_user(turn.user, step, nlu)
            self.turns += 1
            _step_user(t, step)
        rejected = False
        for i in turn.items:
            step = self.steps[i]
            if step.kind == "slot_was_set":
                for name, value in step.slots:
                    t.set_slot(name, _step_value(t.domain.slots.get(name), value, rule=False))
                continue
            if step.kind == "active_loop":
                t.set_loop(step.name)
                continue
            target = str(step.name)
            predicted = self._predict(rejected)
            if predicted != target and predicted == t.loop and not rejected:
                rejected = True  # the form might have rejected the message: ask again without it (Rasa's emulation)
                predicted = self._predict(rejected)
            ran = target
            if step.kind == "bot":   # an end-to-end bot text: right when the predicted response can say it
                ran = predicted      # (a retrieval action, utter_faq, says one of its utter_faq/<key> responses)
                said = [predicted, *(n for n in t.domain.responses if n.startswith(f"{predicted}/"))]
                if target in {v.text for name in said for v in t.domain.responses.get(name, ())}:
                    predicted = target
            self._compare(target, predicted, step.where, i)
            if ran == t.loop:
                rejected = False
            t.action(ran)
        if turn.user is not None:   # the bot waits for the customer: the turn's last prediction is action_listen
            last = (turn.items or [turn.user])[-1]
            predicted = self._predict(rejected)
            self._compare(ACTION_LISTEN, predicted, self.steps[last].where, None, after=last)
            t.action(ACTION_LISTEN)

    def _compare(self, target: str, predicted: str, where: str, index: int | None, after: int = 0) -> None:
        self.results.action_targets.append(target)
        self.results.action_predictions.append(predicted)
        if target == predicted:
            return
        if index is not None:
            self.comments[index] = predicted
        else:
            self.listen_after[after] = predicted
        self.fail(where, f"{target!r} expected, the bot's policies predicted {predicted!r}")


def _entities_text(entities: set[tuple[str, str]]) -> str:
    return ", ".join(f"{e}={v!r}" for e, v in sorted(entities)) or "none"


# ---------------------------------------------------------------------------------------------------------
async def run_story_tests(bot_dir: Path, paths: Sequence[Path] = (), *, settings: Settings | None = None,
                          model_loader: ModelLoader = load_onnx_model,
                          on_story: Callable[[StoryResult], None] | None = None,
                          on_start: Callable[[int], None] | None = None, replay: bool = False) -> StoryTestResults:
    """Run the test stories of ``bot_dir`` (or ``paths``) through the served pipeline.

    ``settings`` are the serving settings (``Settings.from_env()`` by the CLI); the store is always a
    temporary embedded one. ``on_start(n)`` is told how many conversations will run, ``on_story`` gets
    each result as it is known (a progress bar). ConfigError for a bot ``serve`` would refuse, or test
    stories that are malformed or name a form the bot does not have (``file:line``; an intent or action it
    does not have is warned about, and the step fails, as in ``rasa test``); ArtifactError when
    the bot has no trained model. ``replay``: each story is evaluated as ``rasa test`` does (its own events
    are the history, the policies predict its actions, nothing is run; see ``_ReplayRun``)."""
    files = story_files(bot_dir, paths)
    notes: list[str] = []
    stories = read_test_stories(files, notes)
    rules: dict[str, list[str]] = {}  # per file, where its rules are
    for rule in (s for s in stories if s.is_rule):
        rules.setdefault(rule.where.rsplit(":", 1)[0], []).append(rule.where)
    notes += [f"{wheres[0]}: {len(wheres)} rule(s) in this file are not tested: test stories are the 'stories:' "
              f"(rasa test leaves rules out too)" for wheres in rules.values()]
    for note in notes:
        log.warning("%s", note)
    tested = [s for s in stories if not s.is_rule]
    if not tested:  # a run of nothing (or of rules only) is no pass
        raise ConfigError(f"no test stories in {', '.join(str(f) for f in files)} (a test story file has "
                          "'stories:' or 'rules:', as Rasa reads them, and only its stories are tested)")
    base = settings or Settings()
    with tempfile.TemporaryDirectory(prefix="switchboard-test-") as tmp:
        # The conversations exist only for this run: a pseudonym key of its own is as good as any.
        run_settings = replace(base, data_dir=Path(tmp), mongodb_uri=None,
                               pii_key=base.pii_key or secrets.token_hex(32))
        store = SQLiteStore(Path(tmp) / "conversations.db")
        await store.start()
        runtime = Runtime(run_settings, store, model_loader=model_loader)
        try:
            runtime.validate([bot_dir])  # what serve checks before it listens
            bot = await runtime.load_bot(bot_dir)
            problems, unknown = _unknown_names(stories, list(bot.spec.intents), bot.dialogue)
            for note in unknown:
                log.warning("%s", note)
            if problems:
                raise ConfigError(problems)
            slot_notes: list[str] = []
            tested = _without_undeclared_slots(tested, bot.dialogue, slot_notes)
            for note in slot_notes:
                log.warning("%s", note)
            sources = {str(f.resolve()): str(f) for f in files}
            paths_ = [(story, steps) for story, steps in story_paths(tested)]
            if on_start is not None:
                on_start(len(paths_))
            results = StoryTestResults()
            for n, (story, steps) in enumerate(paths_):
                source = story.where.rsplit(":", 1)[0]
                source = sources.get(str(Path(source).resolve()), source)
                run = (_ReplayRun if replay else _StoryRun)(runtime, bot, story, steps, source, f"test-{n}", results)
                outcome = await run.run()
                results.stories.append(outcome)
                if on_story is not None:
                    on_story(outcome)
            return results
        finally:
            await runtime.aclose()
