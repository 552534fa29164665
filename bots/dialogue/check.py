"""``switchboard check``: everything ``rasa data validate`` validates, for any bot folder, before training.

A bot is loaded (bots/loader.py: bot.yml, a Rasa project, or bot.yml pointing at Rasa files) and
its one dialogue model (bots/dialogue/domain.py) is checked whole, each problem with the
``file:line`` to fix:

errors (``switchboard check`` exits 2, ``train`` refuses the bot, ``serve`` does not start):
  * actions, forms and slots used (stories, rules, slot mappings, forms, conditional
    responses) but not declared in the domain; ``utter_`` actions without a response; form slots with no question
    (neither ``utter_ask_<form>_<slot>``, ``utter_ask_<slot>`` nor ``action_ask_<slot>``);
    custom actions with neither an actions package nor an action server;
  * story structure conflicts: two stories that reach the same state (the last ``max_history``
    turns, featurised as the policies see them) and go on with different actions, reported with
    both places and the turn;
  * rules: more than one user message in a rule (RulePolicy's ``restrict_rules``), and
    contradictions (RulePolicy's ``check_for_contradictions``): a rule that predicts another action
    than a rule or story in the same situation, with both places.
warnings (printed; exit 0): intents no story or rule uses, intents without examples, responses
no story, rule or form uses, the same example under two intents, intents the domain does not list
(NLU examples and story or rule steps of one: Rasa warns and trains them, the NLU predicts the intent
and the dialogue state carries its name), undeclared entities in NLU
annotations, stories and ``from_entity`` mappings (Rasa trains such a bot: the entity is no feature of
the dialogue state and the mapping is skipped), checkpoints that never join, slot values that do not
fit their slot.

Story conflicts, ``restrict_rules`` and contradictions come from the served policies themselves
(bots/dialogue/policies.py ``check_stories``: the same featurisation, story graph and rule
matching the engine predicts with), so what the check passes is what the engine does. Inside an
active form, what the form itself predicts is the form's business, so contradictions are checked
only outside active loops, and rules are not checked for "incompleteness" (Rasa's slot
fingerprints): the engine's rule policy applies rules at runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bots.botspec import BotSpec
from bots.dialogue.domain import (
    DEFAULT_INTENTS,
    REQUESTED_SLOT,
    SESSION_STARTED_METADATA_SLOT,
    Domain,
    Step,
    Story,
)
from bots.dialogue.policies import check_stories
from bots.dialogue.rasa_yaml import Findings
from bots.dialogue.spec import DialogueSpec
from bots.errors import ConfigError


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
        if result.ok:  # the actions module, imported as serve imports it: what serve would refuse
            from bots.dialogue.actions import action_findings  # rasa-sdk only for bots with actions
            try:
                errors, warnings = action_findings(spec, dialogue)
            except ConfigError as exc:
                report.errors += exc.problems
            else:
                report.errors += errors
                report.warnings += warnings
        report.notes += [n for n in spec.notes if n not in report.notes]
    return report


def check_bot(spec: BotSpec, dialogue: DialogueSpec, *, declared_broken: set[str] | None = None) -> CheckReport:
    """Check a loaded bot's dialogue model and NLU data against each other."""
    return _Checker(spec, dialogue, declared_broken or set()).run()


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
            self._check_retrieval()
            self._check_stories()
            # story conflicts, restrict_rules and contradictions: found by the policies the engine serves
            for problem in check_stories(self.domain, self.dialogue.stories, self.dialogue.policy):
                self.error("", problem)
        return self.report

    def _check_retrieval(self) -> None:
        """Retrieval intents (Rasa's ResponseSelector): ``utter_<intent>`` picks among the responses
        ``utter_<intent>/<key>`` by the examples of ``<intent>/<key>``; each needs the other."""
        d, examples = self.domain, self.dialogue.retrieval
        for action in d.retrieval_actions:
            intent = action[len("utter_"):]
            keys = examples.get(intent, {})
            for name, variations in d.responses.items():
                if name.startswith(f"{action}/") and name[len(action) + 1:] not in keys:
                    self.error(variations[0].where if variations else "",
                               f"response '{name}' has no NLU examples of the retrieval intent "
                               f"'{intent}/{name[len(action) + 1:]}': '{action}' can never pick it")
        for intent, keys in examples.items():
            for key, texts in keys.items():
                if f"utter_{intent}/{key}" not in d.responses:
                    found = self.spec.intents.get(intent)
                    where = next((x.where for x in found.examples if texts and x.text == texts[0]), "") if found else ""
                    self.warn(where, f"retrieval intent '{intent}/{key}' has no response 'utter_{intent}/{key}': "
                                     f"'utter_{intent}' says nothing when it picks it")

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
                self.warn(first, f"intent '{intent.name}' has NLU examples but is not in the domain's intents: "
                                 f"the NLU is trained on it and may predict it, as Rasa's is (Rasa warns \"Parsed "
                                 f"an intent which is not defined in the domain\"); add it to the domain")
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
        satisfaction = self.dialogue.handoff.satisfaction
        for name in satisfaction.ask_after_bot if satisfaction is not None else ():
            if name not in intents and name not in actions:
                self.error(satisfaction.where if satisfaction else "",
                           f"'handoff: satisfaction: ask_after_bot': {name!r} is neither an intent nor an action of "
                           f"the bot (e.g. goodbye, utter_goodbye, action_restart)")
        for intent in d.intents.values():
            for entity in (*(intent.use_entities or ()), *intent.ignore_entities):
                if not self._has(entity, d.entities):
                    self.error(intent.where, f"intent '{intent.name}': entity '{entity}' is not declared")
        for slot in d.slots.values():
            for m in slot.mappings:
                what = f"slot '{slot.name}': the {m.type} mapping"
                if m.entity is not None:
                    if not self._has(m.entity, d.entities):
                        self.warn(m.where, f"{what} uses entity '{m.entity}', which is not declared in the "
                                           f"domain's entities: the mapping never fills the slot (Rasa skips it "
                                           f"as invalid)")
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
                        self.warn(where, f"intent '{step.name}' (in {kind} '{story.name}') is not declared in the "
                                         f"domain's intents: the {kind} is trained as it is, as Rasa trains it (with "
                                         f"the warning \"Found intent in stories which is not part of the domain\")")
                if step.kind == "intent":
                    for e in step.entities:
                        if not self._has(e.entity, d.entities):
                            self.warn(where, f"entity '{e.entity}' (in {kind} '{story.name}') is not declared in "
                                             f"the domain's entities: it is left out of the dialogue state, as "
                                             f"Rasa leaves it out")
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
                            and step.name not in d.retrieval_actions \
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
                        and name.split("/", 1)[0] not in used_actions \
                        and name != self.dialogue.policy.core_fallback_action:
                    where = variations[0].where if variations else ""
                    self.warn(where, f"response '{name}' is not used in any story, rule or form (a custom action "
                                     f"may still say it)")
