"""``switchboard check``: everything ``rasa data validate`` validates, for any bot folder, before training.

A bot is loaded (bots/loader.py: bot.yml, a Rasa project, or bot.yml pointing at Rasa files) and
its one dialogue model (bots/dialogue/domain.py) is checked whole, each problem with the
``file:line`` to fix:

errors (``switchboard check`` exits 2, ``train`` refuses the bot, ``serve`` does not start):
  * intents, actions, forms, slots and entities used (stories, rules, slot mappings, forms,
    conditional responses) but not declared in the domain; an intent with NLU examples that the
    domain does not list; ``utter_`` actions without a response; form slots with no question
    (neither ``utter_ask_<form>_<slot>``, ``utter_ask_<slot>`` nor ``action_ask_<slot>``);
    custom actions with neither an actions package nor an action server;
  * story structure conflicts: two stories that reach the same state (the last ``max_history``
    turns, featurised as the policies see them) and go on with different actions, reported with
    both places and the turn;
  * rules: more than one user message in a rule (RulePolicy's ``restrict_rules``), and
    contradictions (RulePolicy's ``check_for_contradictions``): a rule that predicts another action
    than a rule or story in the same situation, with both places.
warnings (printed; exit 0): intents no story or rule uses, intents without examples, responses
no story, rule or form uses, the same example under two intents, undeclared entities in NLU
annotations, checkpoints that never join, slot values that do not fit their slot.

Rules are matched as Rasa's RulePolicy matches them (rule states must be contained in the
conversation's states, aligned at the end; the rule with the longest key wins; ``null`` in a rule
means "not set"). Inside an active form, what the form itself predicts is the form's business,
so contradictions are checked only outside active loops, and rules are not checked for
"incompleteness" (Rasa's slot fingerprints): the engine's rule policy applies rules at runtime.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bots.botspec import BotSpec
from bots.dialogue.domain import (
    ACTION_LISTEN,
    DEFAULT_INTENTS,
    REQUESTED_SLOT,
    SESSION_STARTED_METADATA_SLOT,
    Domain,
    Slot,
    Step,
    Story,
    StoryEntity,
)
from bots.dialogue.rasa_yaml import Findings
from bots.dialogue.spec import DialogueSpec

SNIPPET = "..."                       # Rasa's RULE_SNIPPET_ACTION_NAME: "anything may come before"
SHOULD_NOT_BE_SET = "should_not_be_set"
_MAX_TRACKERS = 2000                  # trajectories explored through checkpoints and 'or' steps
_MAX_BRANCHES = 256                   # per story: the 'or' alternatives multiplied out
_DEFAULT_ACTION_INTENTS = ("restart", "back", "session_start")

State = dict[str, dict[str, Any]]


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The bot as loaded (None when it could not be): ``train`` goes on with it when there are no errors.
    loaded: tuple[BotSpec, DialogueSpec] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        """What ``switchboard check`` prints, errors first."""
        return ([f"error: {e}" for e in self.errors] + [f"warning: {w}" for w in self.warnings]
                + [f"note: {n}" for n in self.notes])


def check_bot_folder(directory: Path | str) -> CheckReport:
    """Load the bot in ``directory`` and check it; every problem in the report (nothing raised)."""
    from bots.loader import read_bot_folder  # the loader imports the Rasa readers; check is their consumer

    findings = Findings()
    loaded = read_bot_folder(directory, findings)
    report = CheckReport(errors=list(findings.errors), notes=list(findings.notes), loaded=loaded)
    if loaded is not None:
        spec, dialogue = loaded
        result = check_bot(spec, dialogue, declared_broken=findings.broken)
        report.errors += result.errors
        report.warnings += result.warnings
        report.notes += [n for n in spec.notes if n not in report.notes]
    return report


def check_bot(spec: BotSpec, dialogue: DialogueSpec, *, declared_broken: set[str] | None = None) -> CheckReport:
    """Check a loaded bot's dialogue model and NLU data against each other."""
    return _Checker(spec, dialogue, declared_broken or set()).run()


@dataclass(frozen=True)
class _Ev:
    """One event of a story or rule walked as a conversation."""

    kind: str                           # action | user | slot | loop
    name: Any = None                    # action / intent / slot / loop name
    entities: tuple[StoryEntity, ...] = ()
    value: Any = None                   # slot value; user text
    where: str = ""


@dataclass(frozen=True)
class _Tracker:
    name: str
    is_rule: bool
    where: str
    events: tuple[_Ev, ...]


class _Checker:
    def __init__(self, spec: BotSpec, dialogue: DialogueSpec, broken: set[str]) -> None:
        self.spec = spec
        self.dialogue = dialogue
        self.domain: Domain = dialogue.domain
        self.broken = broken
        self.report = CheckReport()
        self.stories = [s for s in dialogue.stories if not s.is_rule]
        self.rules = [s for s in dialogue.stories if s.is_rule]

    # -- helpers -----------------------------------------------------------------------------------------
    def error(self, where: str, message: str) -> None:
        text = f"{where}: {message}" if where else message
        if text not in self.report.errors:
            self.report.errors.append(text)

    def warn(self, where: str, message: str) -> None:
        text = f"{where}: {message}" if where else message
        if text not in self.report.warnings:
            self.report.warnings.append(text)

    def _has(self, name: str | None, names: Any) -> bool:
        return name is None or name in names or name in self.broken

    def run(self) -> CheckReport:
        has_model = bool(self.domain.intents or self.dialogue.stories)
        self._check_nlu(has_model)
        if has_model:
            self._check_domain()
            self._check_stories()
            trackers = self._trackers()
            self._check_conflicts([t for t in trackers if not t.is_rule])
            self._check_rules(trackers)
        return self.report

    # -- NLU data against the domain ---------------------------------------------------------------------
    def _check_nlu(self, has_model: bool) -> None:
        seen: dict[str, tuple[str, str]] = {}
        for intent in self.spec.intents.values():
            for ex in intent.examples:
                where = ex.where or f"{self.spec.file}:{intent.line}"
                key = " ".join(ex.text.lower().split())
                if key in seen and seen[key][0] != intent.name:
                    self.warn(where, f"the example {ex.text!r} is also an example of intent '{seen[key][0]}' "
                                     f"({seen[key][1]}): the model cannot tell them apart")
                seen.setdefault(key, (intent.name, where))
                if has_model:
                    for e in ex.entities:
                        props = self.domain.entities.get(e.entity)
                        if props is None and e.entity not in self.broken:
                            self.warn(where, f"entity '{e.entity}' is annotated but not declared in the domain's "
                                             f"entities: it is extracted, but no slot mapping or story can use it")
                        elif props is not None:
                            self._labels(where, e.entity, e.role, e.group, warn=True)
        if not has_model:
            return
        for intent in self.spec.intents.values():
            if intent.name not in self.domain.intents and intent.name not in self.broken:
                first = intent.examples[0].where if intent.examples and intent.examples[0].where \
                    else f"{self.spec.file}:{intent.line}"
                self.error(first, f"intent '{intent.name}' has NLU examples but is not in the domain's intents "
                                  f"(add it there)")
        for name, declared in self.domain.intents.items():
            examples = self.spec.intents.get(name)
            if name not in DEFAULT_INTENTS and (examples is None or not examples.examples):
                self.warn(declared.where, f"intent '{name}' has no NLU examples: it is never recognised")

    def _labels(self, where: str, entity: str, role: str | None, group: str | None, *, warn: bool) -> None:
        props = self.domain.entities.get(entity)
        if props is None:
            return
        report = self.warn if warn else self.error
        if role is not None and role not in props.roles:
            report(where, f"entity '{entity}' has no role '{role}' in the domain (roles: "
                          f"{', '.join(props.roles) or 'none'})")
        if group is not None and group not in props.groups:
            report(where, f"entity '{entity}' has no group '{group}' in the domain (groups: "
                          f"{', '.join(props.groups) or 'none'})")

    # -- the domain against itself -----------------------------------------------------------------------
    def _check_domain(self) -> None:
        d = self.domain
        slots = set(d.slots) | {REQUESTED_SLOT, SESSION_STARTED_METADATA_SLOT}
        intents = set(d.intents) | set(DEFAULT_INTENTS)
        actions = set(d.action_names)
        for intent in d.intents.values():
            for entity in (*(intent.use_entities or ()), *intent.ignore_entities):
                if not self._has(entity, d.entities):
                    self.error(intent.where, f"intent '{intent.name}': entity '{entity}' is not declared")
        for slot in d.slots.values():
            for m in slot.mappings:
                what = f"slot '{slot.name}': the {m.type} mapping"
                if m.entity is not None:
                    if not self._has(m.entity, d.entities):
                        self.error(m.where, f"{what} uses entity '{m.entity}', which is not declared in the "
                                            f"domain's entities")
                    else:
                        self._labels(m.where, m.entity, m.role, m.group, warn=False)
                for name in (*m.intent, *m.not_intent):
                    if not self._has(name, intents):
                        self.error(m.where, f"{what} names intent '{name}', which is not declared")
                if m.action is not None and not self._has(m.action, actions):
                    self.error(m.where, f"{what} names action '{m.action}', which is not declared in the "
                                        f"domain's actions")
                for c in m.conditions:
                    if c.active_loop is not None and not self._has(c.active_loop, d.forms):
                        self.error(m.where, f"{what}: condition active_loop '{c.active_loop}' is not a form")
                    if c.requested_slot is not None and not self._has(c.requested_slot, slots):
                        self.error(m.where, f"{what}: condition requested_slot '{c.requested_slot}' is not a slot")
        for name, variations in d.responses.items():
            for v in variations:
                for slot_name, value in v.conditions:
                    if not self._has(slot_name, slots):
                        self.error(v.where, f"response '{name}': the condition names slot '{slot_name}', which "
                                            f"is not declared")
                    else:
                        self._value_fits(v.where, slot_name, value)
        for form in d.forms.values():
            for slot_name in form.required_slots:
                if not self._has(slot_name, d.slots):
                    self.error(form.where, f"form '{form.name}': required slot '{slot_name}' is not declared "
                                           f"under slots")
                    continue
                asks = (f"utter_ask_{form.name}_{slot_name}", f"utter_ask_{slot_name}")
                ask_actions = (f"action_ask_{form.name}_{slot_name}", f"action_ask_{slot_name}")
                if not any(a in d.responses or a in self.broken for a in asks) and \
                        not any(a in d.actions for a in ask_actions):
                    self.error(form.where, f"form '{form.name}' has no question for slot '{slot_name}': add a "
                                           f"response {asks[0]} or {asks[1]} (or an action {ask_actions[1]})")
            for name in form.ignored_intents:
                if not self._has(name, intents):
                    self.error(form.where, f"form '{form.name}': ignored intent '{name}' is not declared")
        custom = [(n, w) for n, w in self.dialogue.action_refs if n not in d.responses]
        if custom and self.dialogue.actions_module is None and self.dialogue.action_endpoint is None:
            name, where = custom[0]
            others = f" (and {len(custom) - 1} more)" if len(custom) > 1 else ""
            self.error(where, f"custom action '{name}'{others} has nothing to run it: add an actions/ package "
                              f"(or actions.py) or an action_endpoint in endpoints.yml")
        for name in d.actions:
            if name.startswith("utter_") and name not in d.responses and name not in self.broken:
                self.warn(self._declared_at(name), f"action '{name}' is declared but has no response: it runs as "
                                                   f"a custom action")
        fallback = self.dialogue.policy.core_fallback_action
        if not self._has(fallback, actions):
            self.error("", f"RulePolicy's core_fallback_action_name '{fallback}' is not an action of the domain")

    def _declared_at(self, action: str) -> str:
        return next((w for n, w in self.dialogue.action_refs if n == action), "")

    def _value_fits(self, where: str, slot_name: str, value: Any) -> None:
        slot = self.domain.slots.get(slot_name)
        if slot is None or value is None or value is ...:
            return
        if slot.type == "categorical" and str(value).lower() not in {v.lower() for v in slot.values} \
                and not (isinstance(value, bool) and str(value).lower() in {v.lower() for v in slot.values}):
            self.warn(where, f"slot '{slot_name}' is categorical and {value!r} is not one of its values "
                             f"({', '.join(slot.values)})")
        elif slot.type == "bool" and not isinstance(value, bool):
            self.warn(where, f"slot '{slot_name}' is a bool slot: {value!r} is not true or false")
        elif slot.type == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.warn(where, f"slot '{slot_name}' is a float slot: {value!r} is not a number")

    # -- stories and rules against the domain ------------------------------------------------------------
    def _steps(self, story: Story) -> Iterator[Step]:
        for step in (*story.condition, *story.steps):
            yield step
            yield from step.alternatives

    def _check_stories(self) -> None:
        d = self.domain
        intents = set(d.intents) | set(DEFAULT_INTENTS)
        actions = set(d.action_names)
        slots = set(d.slots) | {REQUESTED_SLOT, SESSION_STARTED_METADATA_SLOT}
        used_intents: set[str] = set()
        used_actions: set[str] = set()
        starts: dict[str, str] = {}
        ends: dict[str, str] = {}
        for story in self.dialogue.stories:
            kind = "rule" if story.is_rule else "story"
            for i, step in enumerate(story.steps):
                if step.kind == "checkpoint" and step.name:
                    at_start = all(s.kind == "checkpoint" for s in story.steps[:i + 1])
                    at_end = all(s.kind == "checkpoint" for s in story.steps[i:])
                    if at_start or not at_end:
                        starts.setdefault(step.name, step.where)
                    if at_end or not at_start:
                        ends.setdefault(step.name, step.where)
            for step in self._steps(story):
                where = step.where or story.where
                if step.kind == "intent" and step.name is not None:
                    used_intents.add(step.name)
                    if not self._has(step.name, intents):
                        self.error(where, f"intent '{step.name}' (in {kind} '{story.name}') is not declared in the "
                                          f"domain's intents")
                if step.kind == "intent":
                    for e in step.entities:
                        if not self._has(e.entity, d.entities):
                            self.error(where, f"entity '{e.entity}' (in {kind} '{story.name}') is not declared in "
                                              f"the domain's entities")
                        else:
                            self._labels(where, e.entity, e.role, e.group, warn=False)
                elif step.kind == "action" and step.name is not None:
                    used_actions.add(step.name)
                    if not self._has(step.name, actions):
                        if step.name.startswith("utter_"):
                            self.error(where, f"response '{step.name}' (in {kind} '{story.name}') is not in the "
                                              f"domain's responses")
                        else:
                            self.error(where, f"action '{step.name}' (in {kind} '{story.name}') is not declared in "
                                              f"the domain's actions or forms")
                    elif step.name.startswith("utter_") and step.name not in d.responses \
                            and step.name not in self.broken and self.dialogue.actions_module is None \
                            and self.dialogue.action_endpoint is None:
                        self.error(where, f"response '{step.name}' (in {kind} '{story.name}') is declared as an "
                                          f"action but has no response text")
                elif step.kind == "slot_was_set":
                    for name, value in step.slots:
                        if not self._has(name, slots):
                            self.error(where, f"slot '{name}' (in {kind} '{story.name}') is not declared in the "
                                              f"domain's slots")
                            continue
                        slot = d.slots.get(name)
                        if value is ... and slot is not None and slot.type not in ("text", "list") \
                                and slot.influence_conversation:
                            self.warn(where, f"slot '{name}' is of type {slot.type} and named without a value: "
                                             f"it is read as not set (as Rasa does); give its value")
                        self._value_fits(where, name, value)
                elif step.kind == "active_loop" and step.name is not None:
                    if not self._has(step.name, d.forms):
                        self.error(where, f"active_loop '{step.name}' (in {kind} '{story.name}') is not a form of "
                                          f"the domain")
        for name, where in starts.items():
            if name not in ends:
                self.warn(where, f"checkpoint '{name}' starts a story but no story ends with it: that story is "
                                 f"never reached")
        for name, where in ends.items():
            if name not in starts:
                self.warn(where, f"checkpoint '{name}' ends a story but no story starts with it")
        native = self.spec.source == "bot.yml" and "rasa" not in self.spec.sections  # compiled: one rule per intent
        if self.dialogue.stories and not native:
            for name, props in d.intents.items():
                if name not in used_intents and name not in DEFAULT_INTENTS:
                    self.warn(props.where, f"intent '{name}' is not used in any story or rule")
            asked = {f"utter_ask_{f.name}_{s}" for f in d.forms.values() for s in f.required_slots} | \
                    {f"utter_ask_{s}" for f in d.forms.values() for s in f.required_slots}
            for name, variations in d.responses.items():
                if name not in used_actions and name not in asked and name.startswith("utter_") \
                        and name != self.dialogue.policy.core_fallback_action:
                    where = variations[0].where if variations else ""
                    self.warn(where, f"response '{name}' is not used in any story, rule or form (a custom action "
                                     f"may still say it)")

    # -- walking stories and rules as conversations ------------------------------------------------------
    def _trackers(self) -> list[_Tracker]:
        trackers: list[_Tracker] = []
        for rule in self.rules:
            for events in self._expand(rule, self._rule_events(rule)):
                trackers.append(_Tracker(rule.name, True, rule.where, events))
        trackers.extend(self._story_trackers())
        return trackers

    def _rule_events(self, rule: Story) -> list[list[_Ev]]:
        head: list[_Ev] = []
        for step in rule.condition:
            head.extend(self._step_events(step, rule=True)[0])
        if not rule.conversation_start:
            head.append(_Ev("action", SNIPPET, where=rule.where))
        branches = self._branches(rule.steps, rule=True)
        tail = _Ev("action", ACTION_LISTEN if rule.wait_for_user_input else SNIPPET, where=rule.where)
        return [head + b + [tail] for b in branches]

    @staticmethod
    def _expand(story: Story, branches: list[list[_Ev]]) -> list[tuple[_Ev, ...]]:
        out: list[tuple[_Ev, ...]] = []
        for events in branches:
            with_listen: list[_Ev] = []
            for ev in events:
                if ev.kind == "user" and not (with_listen and with_listen[-1].kind == "action"
                                              and with_listen[-1].name == ACTION_LISTEN):
                    with_listen.append(_Ev("action", ACTION_LISTEN, where=ev.where))
                with_listen.append(ev)
            out.append(tuple(with_listen))
        return out

    def _step_events(self, step: Step, *, rule: bool) -> list[list[_Ev]]:
        """The events of one step; several lists for an 'or'."""
        if step.kind == "intent":
            return [[_Ev("user", step.name, step.entities, step.user_text, step.where)]]
        if step.kind == "action":
            return [[_Ev("action", step.name, where=step.where)]]
        if step.kind == "bot":
            return [[_Ev("action", f"bot: {step.name}", where=step.where)]]
        if step.kind == "slot_was_set":
            return [[_Ev("slot", name, value=SHOULD_NOT_BE_SET if rule and value is None else value,
                          where=step.where) for name, value in step.slots]]
        if step.kind == "active_loop":
            name = step.name if step.name is not None else (SHOULD_NOT_BE_SET if rule else None)
            return [[_Ev("loop", name, where=step.where)]]
        if step.kind == "or":
            return [self._step_events(alt, rule=rule)[0] for alt in step.alternatives]
        return [[]]  # checkpoints: handled by the story graph

    def _branches(self, steps: tuple[Step, ...] | list[Step], *, rule: bool) -> list[list[_Ev]]:
        branches: list[list[_Ev]] = [[]]
        for step in steps:
            options = self._step_events(step, rule=rule)
            branches = [b + o for b in branches for o in options][:_MAX_BRANCHES]
        return branches

    def _story_trackers(self) -> list[_Tracker]:
        """Stories joined through their checkpoints, as Rasa's story graph joins them."""
        @dataclass
        class Segment:
            story: Story
            starts: list[Step]
            steps: list[Step]
            ends: list[str]

        segments: list[Segment] = []
        for story in self.stories:
            current = Segment(story, [], [], [])
            pending: list[Step] = []
            for step in story.steps:
                if step.kind == "checkpoint":
                    pending.append(step)
                    continue
                if pending:
                    if current.steps:
                        current.ends = [p.name for p in pending if p.name]
                        segments.append(current)
                        current = Segment(story, list(pending), [], [])
                    else:
                        current.starts.extend(pending)
                    pending = []
                current.steps.append(step)
            if pending:
                if current.steps or current.starts:
                    current.ends = [p.name for p in pending if p.name]
            segments.append(current)
        by_start: dict[str, list[Segment]] = defaultdict(list)
        for seg in segments:
            for cp in seg.starts:
                if cp.name:
                    by_start[cp.name].append(seg)
        trackers: list[_Tracker] = []

        def fits(seg: Segment, name: str, slots: dict[str, Any]) -> bool:
            cp = next(c for c in seg.starts if c.name == name)
            return all(slots.get(k) == v for k, v in cp.slots)

        def walk(seg: Segment, prefix: list[_Ev], used: dict[int, int]) -> None:
            if len(trackers) >= _MAX_TRACKERS:
                return
            for branch in self._branches(seg.steps, rule=False):
                events = prefix + branch
                continuations = [(n, s) for n in seg.ends for s in by_start.get(n, [])
                                 if used.get(id(s), 0) < 2]
                slots: dict[str, Any] = {}
                for ev in events:
                    if ev.kind == "slot":
                        slots[ev.name] = ev.value
                nexts = [s for n, s in continuations if fits(s, n, slots)]
                if not nexts:
                    expanded = self._expand(seg.story, [events])[0]
                    trackers.append(_Tracker(seg.story.name, False, seg.story.where, expanded))
                for s in nexts:
                    walk(s, events, {**used, id(s): used.get(id(s), 0) + 1})
                if len(trackers) >= _MAX_TRACKERS:
                    return

        for seg in segments:
            if not seg.starts:
                walk(seg, [], {id(seg): 1})
        return trackers

    # -- states, as Rasa's domain featurises them --------------------------------------------------------
    def _slot_feature(self, slot: Slot, value: Any) -> Any:
        if not slot.influence_conversation or value is None:
            return None
        if value == SHOULD_NOT_BE_SET:
            return SHOULD_NOT_BE_SET
        if value is ...:
            return (1.0,) if slot.type in ("text", "list") else None
        if slot.type == "text":
            return (1.0,)
        if slot.type == "list":
            return (1.0,) if value else None
        if slot.type == "bool":
            truthy = value is True or str(value).lower() in ("true", "1", "1.0")
            return (1.0, 1.0 if truthy else 0.0)
        if slot.type == "float":
            try:
                number = float(value)
            except (TypeError, ValueError):
                return None
            low, high = slot.min_value, slot.max_value
            capped = max(low, min(high, number))
            return (1.0, round((capped - low) / (abs(high - low) or 1.0), 6))
        if slot.type == "categorical":
            values = [v.lower() for v in slot.values]
            text = ("true" if value else "false") if isinstance(value, bool) else str(value).lower()
            return ("category", text if text in values else "__other__")
        return None

    def _entity_labels(self, intent: str | None, entities: tuple[StoryEntity, ...]) -> tuple[str, ...]:
        labels: set[str] = set()
        for e in entities:
            props = self.domain.entities.get(e.entity)
            if props is None or not props.influence_conversation:
                continue
            labels.add(e.entity)
            if e.role:
                labels.add(f"{e.entity}#{e.role}")
            if e.group:
                labels.add(f"{e.entity}#{e.group}")
        config = self.domain.intents.get(intent or "")
        if config is not None:
            if config.use_entities is not None:
                allowed = set(config.use_entities)
                labels = {x for x in labels if x.split("#")[0] in allowed}
            labels = {x for x in labels if x.split("#")[0] not in config.ignore_entities}
        return tuple(sorted(labels))

    def _walk(self, tracker: _Tracker) -> Iterator[tuple[list[State], _Ev, int, bool]]:
        """For each action of the tracker: the states before it (one per action so far), the action,
        the user turn number, and whether a loop (form) is active at that point."""
        states: list[State] = []
        user: dict[str, Any] = {}
        slots: dict[str, Any] = {}
        loop: str | None = None
        prev: str | None = None
        turns = 0
        for ev in tracker.events:
            if ev.kind == "user":
                turns += 1
                if ev.name is not None:
                    user = {"intent": ev.name}
                    labels = self._entity_labels(ev.name, ev.entities)
                    if labels:
                        user["entities"] = labels
                else:
                    user = {"text": ev.value or ""}
            elif ev.kind == "slot":
                slots[ev.name] = ev.value
            elif ev.kind == "loop":
                loop = ev.name
            elif ev.kind == "action":
                state: State = {}
                if user:
                    state["user"] = dict(user)
                if prev is not None:
                    key = "action_text" if prev.startswith("bot: ") else "action_name"
                    state["prev_action"] = {key: prev[5:] if key == "action_text" else prev}
                if loop is not None:
                    state["active_loop"] = {"name": loop}
                featurised: dict[str, Any] = {}
                for name, value in slots.items():
                    slot = self.domain.slots.get(name)
                    feature = self._slot_feature(slot, value) if slot is not None else None
                    if feature is not None:
                        featurised[name] = list(feature) if isinstance(feature, tuple) else feature
                if featurised:
                    state["slots"] = featurised
                states.append(state)
                active = loop is not None and loop != SHOULD_NOT_BE_SET
                yield list(states), ev, turns, active
                prev = ev.name

    # -- story structure conflicts -----------------------------------------------------------------------
    def _check_conflicts(self, trackers: list[_Tracker]) -> None:
        history = self.dialogue.policy.max_history
        seen: dict[str, dict[str, tuple[str, str, int, State]]] = defaultdict(dict)
        for tracker in trackers:
            for states, ev, turn, _ in self._walk(tracker):
                key = json.dumps(states[-history:], sort_keys=True)
                action = str(ev.name)
                seen[key].setdefault(action, (tracker.name, ev.where or tracker.where, turn, states[-1]))
        for actions in seen.values():
            if len(actions) < 2:
                continue
            (first_action, (story, where, turn, state)), *others = actions.items()
            rest = "; ".join(f"'{o_story}' goes on with {_shown(a)} at {o_where}"
                             for a, (o_story, o_where, _, _) in others)
            self.error(where, f"story structure conflict after {_after(state)} (turn {turn}; the last "
                              f"{history} states are the same, max_history): '{story}' goes on with "
                              f"{_shown(first_action)} here; {rest}")

    # -- rules: restriction and contradictions -----------------------------------------------------------
    def _check_rules(self, trackers: list[_Tracker]) -> None:
        policy = self.dialogue.policy
        rule_trackers = [t for t in trackers if t.is_rule]
        if policy.restrict_rules:
            for rule in self.rules:
                users = sum(1 for s in rule.steps if s.kind == "intent" or
                            (s.kind == "or" and any(a.kind == "intent" for a in s.alternatives)))
                if users > 1:
                    self.error(rule.where, f"rule '{rule.name}' has {users} user messages: a rule holds at most "
                                           f"one (RulePolicy's restrict_rules); write a story for longer exchanges")
        if not policy.check_for_contradictions or not rule_trackers:
            return
        lookup, keys_of = self._rule_lookup(rule_trackers)
        # Which rules (and their actions) make up each prediction source, from running the rules themselves.
        sources: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for tracker in rule_trackers:
            for _, ev, _, _, _, source in self._predictions(tracker, lookup):
                if source is not None:
                    sources[source].append((tracker.name, tracker.where, str(ev.name)))
        for tracker in trackers:
            for states, ev, turn, active, predicted, source in self._predictions(tracker, lookup):
                gold = str(ev.name)
                if predicted is None or source is None or predicted == gold or active:
                    continue
                last_user = states[-1].get("user", {}).get("intent")
                if last_user in _DEFAULT_ACTION_INTENTS:
                    continue
                if not tracker.is_rule and predicted == ACTION_LISTEN and source.count('"prev_action"') <= 1 \
                        and any(k.startswith(source[:-2]) and k != source for k in keys_of):
                    continue  # Rasa drops such a rule rather than report it (RulePolicy._should_delete)
                against = sorted({(name, where, action) for name, where, action in sources[source] if action != gold})
                if not against:
                    continue
                kind = "rule" if tracker.is_rule else "story"
                rules = "; ".join(f"rule '{name}' ({where}) goes on with {_shown(action)}"
                                  for name, where, action in against)
                self.error(ev.where or tracker.where,
                           f"{kind} '{tracker.name}' goes on with {_shown(gold)} here (turn {turn}), but in the same "
                           f"situation {rules}: contradicting rules (RulePolicy's check_for_contradictions)")

    def _rule_lookup(self, rule_trackers: list[_Tracker]) -> tuple[dict[str, str], list[str]]:
        lookup: dict[str, str] = {}
        ambiguous: set[str] = set()
        for tracker in rule_trackers:
            for states, ev, _, _ in self._walk(tracker):
                key = _feature_key(states)
                if key is None or key in ambiguous:
                    continue
                if key in lookup and lookup[key] != ev.name:
                    ambiguous.add(key)
                    del lookup[key]
                elif key not in lookup:
                    lookup[key] = str(ev.name)
        lookup = {k: a for k, a in lookup.items() if a != SNIPPET}
        return lookup, list(lookup)

    def _predictions(self, tracker: _Tracker, lookup: dict[str, str]
                     ) -> Iterator[tuple[list[State], _Ev, int, bool, str | None, str | None]]:
        """Every predictable action of the tracker with the rule policy's prediction and its source."""
        unpredictable = True
        parsed = {k: json.loads(k) for k in lookup}
        for states, ev, turn, active in self._walk(tracker):
            if ev.name == SNIPPET:
                unpredictable = True
                continue
            if unpredictable:
                unpredictable = False
                continue
            matching = [k for k, rule_states in parsed.items() if _applicable(rule_states, states)]
            if matching:
                best = max(matching, key=len)
                yield states, ev, turn, active, lookup[best], best
            elif tracker.is_rule:
                yield states, ev, turn, active, self.dialogue.policy.core_fallback_action, _feature_key(states)
            else:
                yield states, ev, turn, active, None, None


def _feature_key(states: list[State]) -> str | None:
    """Rasa's rule key: the states after the last rule snippet, as sorted JSON."""
    kept: list[State] = []
    for state in reversed(states):
        if state.get("prev_action", {}).get("action_name") == SNIPPET:
            break
        kept.insert(0, state)
    return json.dumps(kept, sort_keys=True) if kept else None


def _matches(rule_state: State, state: State) -> bool:
    for kind, rule_sub in rule_state.items():
        sub = state.get(kind, {})
        for key, wanted in rule_sub.items():
            have = sub.get(key)
            if isinstance(wanted, list):
                wanted = tuple(wanted)
            if isinstance(have, list):
                have = tuple(have)
            if wanted and wanted != SHOULD_NOT_BE_SET and have != wanted:
                return False
            if wanted == SHOULD_NOT_BE_SET and have and have != SHOULD_NOT_BE_SET:
                return False
    return True


def _applicable(rule_states: list[State], states: list[State]) -> bool:
    """RulePolicy._is_rule_applicable over the whole history (aligned at the end)."""
    reversed_rule = list(reversed(rule_states))
    for i, state in enumerate(reversed(states)):
        if i >= len(reversed_rule):
            return True
        rule_state = reversed_rule[i]
        has_prev, rule_has_prev = "prev_action" in state, "prev_action" in rule_state
        if not has_prev and not rule_has_prev:
            return True
        if not has_prev or not rule_has_prev:
            return False
        if not _matches(rule_state, state):
            return False
    return True


def _shown(action: str) -> str:
    return f"the bot text {action[5:]!r}" if action.startswith("bot: ") else f"'{action}'"


def _after(state: State) -> str:
    prev = state.get("prev_action", {})
    if prev.get("action_name") == ACTION_LISTEN or not prev:
        user = state.get("user", {})
        if "intent" in user:
            entities = user.get("entities")
            return f"intent '{user['intent']}'" + (f" with {', '.join(entities)}" if entities else "")
        if "text" in user:
            return f"the user text {user['text']!r}"
        return "the start of the conversation"
    name = prev.get("action_name") or prev.get("action_text")
    return f"action '{name}'"

