"""The dialogue sections of ``bot.yml``: slots, forms, rules, actions, sessions.

```yaml
session_expiry_minutes: 60          # a new session (slots cleared) after this much silence; 0 = never
slots:
  order_id:
    type: text                      # text | float | integer | bool | categorical | any
    regex: '\\d{3,12}'              # the whole answer must match
    invalid: Order numbers are digits only, like 12345.   # the reason given when an answer is refused
    entity: order_id                # filled from this entity (default: the slot's name)
    from_text: true                 # inside a form the whole answer may fill it (default: true)
    label: order number             # how the bot names it to the customer ({slot} in give_up; default: its name)
  cancel_confirmed:
    type: bool                      # "yes please cancel it", "ok yes", "no thanks": the yes or no in the answer
    from_intent: {affirm: true, deny: false}   # while a form asks for it, these intents fill it with these values
                                    # (a bool slot's default: the bot's affirm and deny intents; {} for none)
forms:
  change_order_form:
    required_slots: [order_id, order_change]
    ask:
      order_id: Which order would you like to change?
      order_change: What would you like to change in order {order_id}?
    validation_action: validate_change_order_form    # optional rasa-sdk FormValidationAction
    stop_intents: [greet]           # optional: these intents leave the form
    ignored_intents: [check_payment_methods]   # optional: answered inside the form, never taken as an answer
    max_attempts: 2                 # invalid answers before the bot offers a way out (default 2; per slot too)
    give_up: I still can't use that. You can try again, or talk to a person.   # optional: what it says then
    declined: No problem. You can start again when you have it.   # optional: said when the customer says no
                                    # (the bot's deny intent: "I don't know it") to a question that is not
                                    # yes/no; the form ends at once, with give_up's buttons
    submit:
      response: Thanks, I've passed the change to order {order_id} on to the warehouse.
      action: action_submit_change  # optional
rules:
  - intent: change_order
    form: change_order_form
  - intent: contact_human_agent
    handoff: true                   # say the intent's response (or `response:`), then hand off
  - intent: track_order
    action: action_check_order_status
  - intent: check_refund_policy
    answer: retrieval               # template | knowledge | retrieval | generation (docs/answers.md)
welcome: Hi! How can I help?       # said when a web chat opens (or {web: ..., telegram: ...} per channel)
handoff:                            # while the customer waits for an agent (all optional)
  waiting: Thanks for waiting, you're number {position} in the queue.   # said when they write again
  queued: You're number {position} in the queue.   # said with the hand-off (default: `waiting`)
  left: OK, you've left the queue.  # they said stop or goodbye while waiting: the bot has them again
  agent_timeout_minutes: 5          # no agent by then: `timeout` is said (a durable reminder, bots/reminders.py)
  timeout: Sorry for the wait. Leave your e-mail address and we'll answer by e-mail.
  email_received: Thanks, we'll answer you at {email}.   # an address written after `timeout` (tagged `email-reply`)
  estimate: Customers usually reach an agent in {wait}.   # after waiting/queued, once agents answered 3 lately
actions: actions                    # a Python module in the bot folder: actions.py or actions/
                                    # (or {module: actions, timeout_s: 5}: async actions are cut off then)
action_endpoint: http://127.0.0.1:5055/webhook   # or {url: ..., timeout_s: 5}
```

Every problem is reported as ``file:line: what to fix``, all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from bots.botspec import ANSWER_KINDS, AnswerKind, BotSpec, mapping_section, placeholders
from bots.dialogue.domain import (
    ACTION_ANSWER,
    ACTION_DEACTIVATE_LOOP,
    ACTION_DEFAULT_FALLBACK,
    ACTION_HANDOFF,
    NLU_FALLBACK_INTENT,
    Domain,
    EntityProperties,
    Form,
    IntentProperties,
    MappingCondition,
    PolicyConfig,
    ResponseButton,
    ResponseVariation,
    SessionConfig,
    Slot,
    SlotMapping,
    Step,
    Story,
)
from bots.errors import ConfigError
from bots.yamlspan import Located

SlotType = Literal["text", "float", "integer", "bool", "categorical", "any"]
SLOT_TYPES: tuple[str, ...] = ("text", "float", "integer", "bool", "categorical", "any")
DEFAULT_SESSION_EXPIRY_MINUTES = 60.0
DEFAULT_ACTION_TIMEOUT_S = 10.0
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class SlotSpec:
    name: str
    type: SlotType = "text"
    choices: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    entity: str | None = None
    from_text: bool = True
    invalid: str | None = None
    max_attempts: int | None = None     # invalid answers before a form gives up on it (None: the form's)
    label: str | None = None            # how the bot names it to the customer (None: its name, "_" as spaces)
    # Intents that fill it, with their values, while a form asks for it (Rasa's from_intent mappings): a bool slot's
    # default is the bot's ``affirm`` (true) and ``deny`` (false) intents, as Rasa projects map them.
    from_intent: tuple[tuple[str, Any], ...] = ()


# A bool slot's from_intent mappings when bot.yml gives none (Rasa's convention: the intents of ``rasa init``).
YES_NO_INTENTS: tuple[tuple[str, bool], ...] = (("affirm", True), ("deny", False))


DEFAULT_MAX_ATTEMPTS = 2
GIVE_UP_TEXT = "Sorry, I still can't use that as the {slot}."  # {slot}: the slot's label (forms.label)
DECLINED_TEXT = "No problem, I'll stop asking for the {slot}."  # "I don't know it" to "What is the order number?"


@dataclass(frozen=True)
class FormSpec:
    name: str
    required_slots: tuple[str, ...]
    ask: dict[str, tuple[str, ...]]
    validation_action: str | None = None
    stop_intents: tuple[str, ...] = ()
    submit_response: tuple[str, ...] = ()
    submit_action: str | None = None
    line: int = 0
    ignored_intents: tuple[str, ...] = ()
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    give_up: tuple[str, ...] = ()       # what is said after max_attempts invalid answers (then the form ends)
    declined: tuple[str, ...] = ()      # what is said when the customer says no to a question (then the form ends)


SatisfactionScale = Literal["1-5", "thumbs"]


@dataclass(frozen=True)
class SatisfactionSpec:
    """The question a customer is asked at the end of a conversation (bot.yml ``handoff: satisfaction:``),
    answered with buttons (bots/handoff.py): when an agent hands the conversation back (``ask_after_agent``) and
    when the bot ends it (``ask_after_bot``: after a turn whose message was one of these intents or in which one
    of these actions ran, e.g. ``goodbye``, ``utter_goodbye``, ``action_restart``, ``utter_submit_<form>``).
    Asked once per conversation."""

    question: str
    scale: SatisfactionScale = "1-5"
    thanks: str = "Thank you for your feedback!"
    ask_after_agent: bool = True
    ask_after_bot: tuple[str, ...] = ()
    where: str = ""  # bot.yml:LINE of ``ask_after_bot`` (the check names it for an unknown intent or action)


@dataclass(frozen=True)
class HandoffSpec:
    """What a customer waiting for an agent is told (bot.yml ``handoff:``; every text optional)."""

    waiting: tuple[str, ...] = ()       # when they write while waiting: ``{position}`` is their place in the queue
    queued: tuple[str, ...] = ()        # said with the hand-off itself (``{position}``); empty: ``waiting``'s
    left: tuple[str, ...] = ()          # the customer left the queue (a ``LEAVE_INTENTS`` message); empty: LEFT_TEXT
    agent_timeout_s: float | None = None
    timeout: tuple[str, ...] = ()       # no agent took the conversation within agent_timeout_s
    # an e-mail address the customer wrote after ``timeout`` was said (``{email}``); empty: EMAIL_RECEIVED_TEXT
    email_received: tuple[str, ...] = ()
    # said after ``waiting``/``queued`` when the bot's agents have answered enough customers lately to tell their
    # typical wait (``{wait}``: "about 4 minutes", bots/handoff.py ``StoreQueue.typical_wait``); empty: not said
    estimate: tuple[str, ...] = ()
    satisfaction: SatisfactionSpec | None = None  # asked when an agent hands the conversation back


@dataclass(frozen=True)
class Rule:
    intent: str
    response: tuple[str, ...] = ()
    action: str | None = None
    form: str | None = None
    handoff: bool = False
    answer: AnswerKind = "template"
    line: int = 0


@dataclass(frozen=True)
class ActionEndpoint:
    url: str
    timeout_s: float = DEFAULT_ACTION_TIMEOUT_S


@dataclass(frozen=True)
class DialogueSpec:
    slots: dict[str, SlotSpec] = field(default_factory=dict)
    forms: dict[str, FormSpec] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)
    actions_module: Path | None = None
    # Modules config.yml names as custom NLU components (``actions.my_classifier``): Rasa's server runs them,
    # they import ``rasa``; Switchboard's NLU replaces them, so they are not imported with the actions package.
    component_modules: tuple[str, ...] = ()
    actions_timeout_s: float = DEFAULT_ACTION_TIMEOUT_S
    action_endpoint: ActionEndpoint | None = None
    session_expiry_s: float = DEFAULT_SESSION_EXPIRY_MINUTES * 60
    # Every action named in rules/forms with where it was named, to check against the registered ones.
    action_refs: tuple[tuple[str, str], ...] = ()
    # The one internal dialogue model (bots/dialogue/domain.py) both front doors load into: bot.yml's
    # sections above compile into it, a Rasa project folder (bots/dialogue/rasa_project.py) fills it directly.
    domain: Domain = field(default_factory=Domain)
    stories: tuple[Story, ...] = ()
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Rasa's retrieval intents (ResponseSelector): per intent, each response key's NLU examples
    # (``chitchat/ask_name`` -> ["chitchat"]["ask_name"]); ``utter_chitchat`` says ``utter_chitchat/<key>``
    # of the key bots/dialogue/response_selector.py picks for the message.
    retrieval: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    # ``welcome:``: said when a chat opens, per channel ("" = every channel without its own).
    welcome: dict[str, str] = field(default_factory=dict)
    handoff: HandoffSpec = field(default_factory=HandoffSpec)

    def welcome_for(self, channel: str) -> str | None:
        return self.welcome.get(channel, self.welcome.get(""))

    def slot_for_entity(self, entity: str) -> str | None:
        """The slot an entity fills: the declared slot mapped from it; else a slot of its own name, unless
        a declared slot of that name is not filled from entities (``entity: null`` or another entity)."""
        for slot in self.slots.values():
            if slot.entity == entity:
                return slot.name
        return None if entity in self.slots else entity


def _where(item: Located) -> str:
    return item.where()


def _texts(item: Located, what: str, problems: list[str]) -> tuple[str, ...]:
    """One text or a list of variants."""
    raw = item.value if isinstance(item.value, list) else [item]
    out: list[str] = []
    for x in raw:
        if not isinstance(x.value, str) or not x.value.strip():
            problems.append(f"{x.where()}: {what} must be non-empty text")
        else:
            out.append(x.value)
    return tuple(out)


def _number(item: Located, what: str, problems: list[str], *, low: float, high: float) -> float | None:
    if isinstance(item.value, bool) or not isinstance(item.value, int | float) or not low <= item.value <= high:
        problems.append(f"{item.where()}: {what} must be a number between {low:g} and {high:g}")
        return None
    return float(item.value)


def _mapping(item: Located, what: str, allowed: tuple[str, ...], problems: list[str]) -> dict[str, Located] | None:
    if not isinstance(item.value, dict):
        problems.append(f"{item.where()}: {what} must be a mapping ({', '.join(allowed)})")
        return None
    fields = cast(dict[str, Located], item.value)
    for key, value in fields.items():
        if key not in allowed:
            problems.append(f"{value.where()}: {what}: unknown key {key!r} (expected {', '.join(allowed)})")
    return fields


def _parse_slot(name: str, item: Located, bot: BotSpec, problems: list[str]) -> SlotSpec | None:
    if not _NAME.match(name):
        problems.append(f"{item.where()}: slot name {name!r} must be letters, digits or '_'")
        return None
    keys = ("type", "choices", "regex", "min", "max", "entity", "from_text", "invalid", "max_attempts", "label",
            "from_intent")
    fields = _mapping(item, f"slot {name!r}", keys, problems) if item.value is not None else {}
    if fields is None:
        return None
    kind = "text"
    if "type" in fields:
        if fields["type"].value not in SLOT_TYPES:
            problems.append(f"{fields['type'].where()}: slot {name!r}: unknown type {fields['type'].value!r} "
                            f"(use {', '.join(SLOT_TYPES)})")
        else:
            kind = fields["type"].value
    choices: tuple[str, ...] = ()
    if "choices" in fields:
        c = fields["choices"]
        if not isinstance(c.value, list) or not c.value or any(
                not isinstance(x.value, str | int | float) or isinstance(x.value, bool) for x in c.value):
            problems.append(f"{c.where()}: slot {name!r}: 'choices' must be a non-empty list of values")
        else:
            choices = tuple(str(x.value) for x in c.value)
    if kind == "categorical" and not choices:
        problems.append(f"{item.where()}: slot {name!r} is categorical: list its 'choices'")
    regex = None
    if "regex" in fields:
        r = fields["regex"]
        try:
            regex = re.compile(str(r.value))
        except re.error as exc:
            problems.append(f"{r.where()}: slot {name!r}: invalid regex: {exc}")
        if kind not in ("text", "any"):
            problems.append(f"{r.where()}: slot {name!r}: 'regex' applies to text slots only")
    bounds: dict[str, float | None] = {"min": None, "max": None}
    for key in bounds:
        if key in fields:
            if kind not in ("float", "integer"):
                problems.append(f"{fields[key].where()}: slot {name!r}: '{key}' applies to float/integer slots only")
            bounds[key] = _number(fields[key], f"slot {name!r}: '{key}'", problems, low=-1e18, high=1e18)
    entity: str | None = name
    if "entity" in fields:
        e = fields["entity"]
        if e.value is None or e.value is False:
            entity = None
        elif not isinstance(e.value, str) or not e.value.strip():
            problems.append(f"{e.where()}: slot {name!r}: 'entity' must be an entity name (or null)")
        else:
            entity = e.value.strip()
    from_text = _flag(fields, "from_text", True, f"slot {name!r}", problems)
    invalid = None
    if "invalid" in fields:
        texts = _texts(fields["invalid"], f"slot {name!r}: 'invalid'", problems)
        invalid = texts[0] if texts else None
    attempts = _attempts(fields, f"slot {name!r}", problems)
    label = None
    if "label" in fields:
        lb = fields["label"]
        if not isinstance(lb.value, str) or not lb.value.strip() or placeholders(lb.value):
            problems.append(f"{lb.where()}: slot {name!r}: 'label' must be the words the bot names it with "
                            f"(e.g. order number)")
        else:
            label = " ".join(lb.value.split())
    if "from_intent" in fields:
        from_intent = _from_intent(fields["from_intent"], name, kind, bot, problems)
    else:
        from_intent = tuple((i, v) for i, v in YES_NO_INTENTS if i in bot.intents) if kind == "bool" else ()
    return SlotSpec(name=name, type=cast(SlotType, kind), choices=choices, regex=regex, minimum=bounds["min"],
                    maximum=bounds["max"], entity=entity, from_text=from_text, invalid=invalid,
                    max_attempts=attempts, label=label, from_intent=from_intent)


def _from_intent(item: Located, slot: str, kind: str, bot: BotSpec,
                 problems: list[str]) -> tuple[tuple[str, Any], ...]:
    """``from_intent: {affirm: true, deny: false}``: the bot's intents and the value each one fills the slot with."""
    what = f"slot {slot!r}: 'from_intent'"
    if item.value is None:
        return ()
    if not isinstance(item.value, dict):
        problems.append(f"{item.where()}: {what} must map intents to the value each fills the slot with "
                        f"(e.g. {{affirm: true, deny: false}}; {{}} for none)")
        return ()
    out: list[tuple[str, Any]] = []
    for intent, value in cast(dict[str, Located], item.value).items():
        if intent not in bot.intents:
            problems.append(f"{value.where()}: {what}: unknown intent {intent!r}")
        elif kind == "bool" and not isinstance(value.value, bool):
            problems.append(f"{value.where()}: {what}: {intent!r} must give true or false (a bool slot)")
        elif value.value is None or isinstance(value.value, list | dict):
            problems.append(f"{value.where()}: {what}: {intent!r} must give one value")
        else:
            out.append((intent, value.value))
    return tuple(out)


def _attempts(fields: dict[str, Located], what: str, problems: list[str]) -> int | None:
    if "max_attempts" not in fields:
        return None
    item = fields["max_attempts"]
    if isinstance(item.value, bool) or not isinstance(item.value, int) or not 1 <= item.value <= 20:
        problems.append(f"{item.where()}: {what}: 'max_attempts' must be a whole number from 1 to 20 "
                        f"(invalid answers before the bot offers a way out)")
        return None
    return item.value


def _intents(fields: dict[str, Located], key: str, what: str, bot: BotSpec, problems: list[str]) -> tuple[str, ...]:
    """A list of the bot's intents (``key`` of ``fields``)."""
    if key not in fields:
        return ()
    s = fields[key]
    if not isinstance(s.value, list):
        problems.append(f"{s.where()}: {what}: {key!r} must be a list of intents")
        return ()
    out: list[str] = []
    for x in s.value:
        if x.value not in bot.intents:
            problems.append(f"{x.where()}: {what}: unknown intent {x.value!r} in {key!r}")
        else:
            out.append(x.value)
    return tuple(out)


def _action_name(item: Located, what: str, problems: list[str], refs: list[tuple[str, str]]) -> str | None:
    if not isinstance(item.value, str) or not _NAME.match(item.value):
        problems.append(f"{item.where()}: {what} must be an action name (letters, digits, '_')")
        return None
    refs.append((item.value, item.where()))
    return item.value


def _parse_form(name: str, item: Located, bot: BotSpec, slots: dict[str, SlotSpec], problems: list[str],
                refs: list[tuple[str, str]]) -> FormSpec | None:
    keys = ("required_slots", "ask", "validation_action", "stop_intents", "ignored_intents", "max_attempts",
            "give_up", "declined", "submit")
    fields = _mapping(item, f"form {name!r}", keys, problems)
    if fields is None:
        return None
    required: list[str] = []
    r = fields.get("required_slots")
    if r is None or not isinstance(r.value, list) or not r.value:
        problems.append(f"{(r or item).where()}: form {name!r} needs 'required_slots': a non-empty list of slots")
    else:
        for x in r.value:
            if x.value not in slots:
                problems.append(f"{x.where()}: form {name!r}: slot {x.value!r} is not declared under 'slots'")
            elif x.value in required:
                problems.append(f"{x.where()}: form {name!r}: slot {x.value!r} is listed twice")
            else:
                required.append(x.value)
    ask: dict[str, tuple[str, ...]] = {}
    a = fields.get("ask")
    if a is not None:
        asks = _mapping(a, f"form {name!r}: 'ask'", tuple(required), problems) or {}
        for slot, prompt in asks.items():
            ask[slot] = _texts(prompt, f"form {name!r}: the question for {slot!r}", problems)
            for variant in ask[slot]:
                unknown = placeholders(variant) - set(slots)
                if unknown:
                    problems.append(f"{prompt.where()}: form {name!r}: unknown slot(s) {', '.join(sorted(unknown))} "
                                    f"in the question for {slot!r}")
    for slot in required:
        if slot not in ask:
            problems.append(f"{(a or item).where()}: form {name!r}: no question to ask for {slot!r} "
                            f"(add it under 'ask')")
    validation = None
    if "validation_action" in fields:
        validation = _action_name(fields["validation_action"], f"form {name!r}: 'validation_action'", problems, refs)
    stop = _intents(fields, "stop_intents", f"form {name!r}", bot, problems)
    ignored = _intents(fields, "ignored_intents", f"form {name!r}", bot, problems)
    both = sorted(set(stop) & set(ignored))
    if both:
        problems.append(f"{fields['ignored_intents'].where()}: form {name!r}: {', '.join(both)} cannot both leave "
                        f"the form (stop_intents) and be answered inside it (ignored_intents)")
    give_up, declined = (_form_text(fields, key, name, slots, problems) for key in ("give_up", "declined"))
    submit_response: tuple[str, ...] = ()
    submit_action = None
    if "submit" in fields:
        sub = _mapping(fields["submit"], f"form {name!r}: 'submit'", ("response", "action"), problems) or {}
        if "response" in sub:
            submit_response = _texts(sub["response"], f"form {name!r}: the submit response", problems)
        if "action" in sub:
            submit_action = _action_name(sub["action"], f"form {name!r}: the submit action", problems, refs)
    return FormSpec(name=name, required_slots=tuple(required), ask=ask, validation_action=validation,
                    stop_intents=stop, submit_response=submit_response, submit_action=submit_action,
                    line=item.line, ignored_intents=ignored,
                    max_attempts=_attempts(fields, f"form {name!r}", problems) or DEFAULT_MAX_ATTEMPTS,
                    give_up=give_up, declined=declined)


def _form_text(fields: dict[str, Located], key: str, form: str, slots: dict[str, SlotSpec],
               problems: list[str]) -> tuple[str, ...]:
    """A form's ``give_up`` or ``declined`` text: its variations, whose placeholders are slots or ``{slot}``."""
    if key not in fields:
        return ()
    texts = _texts(fields[key], f"form {form!r}: {key!r}", problems)
    for variant in texts:
        unknown = placeholders(variant) - set(slots) - {"slot"}
        if unknown:
            problems.append(f"{fields[key].where()}: form {form!r}: unknown placeholder(s) "
                            f"{', '.join(sorted(unknown))} in {key!r} (slots, or {{slot}}: the one asked for)")
    return texts


def _parse_rule(item: Located, bot: BotSpec, forms: dict[str, FormSpec], problems: list[str],
                refs: list[tuple[str, str]]) -> Rule | None:
    keys = ("intent", "response", "action", "form", "handoff", "answer")
    fields = _mapping(item, "a rule", keys, problems)
    if fields is None:
        return None
    intent = fields.get("intent")
    if intent is None:
        problems.append(f"{item.where()}: a rule needs 'intent' (the intent it answers)")
        return None
    if intent.value not in bot.intents:
        problems.append(f"{intent.where()}: rule for unknown intent {intent.value!r}")
        return None
    steps = [k for k in ("response", "action", "form", "answer") if k in fields]
    handoff = _flag(fields, "handoff", False, f"rule {intent.value!r}", problems)
    if len(steps) > 1:
        problems.append(f"{item.where()}: rule {intent.value!r}: use only one of {', '.join(steps)}")
        return None
    if not steps and not handoff:
        problems.append(f"{item.where()}: rule {intent.value!r} does nothing: give it a response, action, form, "
                        f"answer or handoff")
        return None
    rule = Rule(intent=intent.value, handoff=handoff, line=item.line)
    if "response" in fields:
        rule = Rule(intent.value, response=_texts(fields["response"], f"rule {intent.value!r}: the response",
                                                    problems), handoff=handoff, line=item.line)
    elif "action" in fields:
        rule = Rule(intent.value, action=_action_name(fields["action"], f"rule {intent.value!r}: 'action'",
                                                      problems, refs), handoff=handoff, line=item.line)
    elif "form" in fields:
        f = fields["form"]
        if handoff:
            problems.append(f"{f.where()}: rule {intent.value!r}: a form cannot also hand off")
        if f.value not in forms:
            problems.append(f"{f.where()}: rule {intent.value!r}: unknown form {f.value!r} (declare it under 'forms')")
            return None
        rule = Rule(intent.value, form=f.value, line=item.line)
    elif "answer" in fields:
        a = fields["answer"]
        if a.value not in ANSWER_KINDS:
            problems.append(f"{a.where()}: rule {intent.value!r}: 'answer' must be one of {', '.join(ANSWER_KINDS)}")
            return None
        rule = Rule(intent.value, answer=cast(AnswerKind, a.value), handoff=handoff, line=item.line)
    return rule


def _endpoint(item: Located, problems: list[str]) -> ActionEndpoint | None:
    raw: dict[str, Located] = {"url": item}
    if isinstance(item.value, dict):
        raw = _mapping(item, "'action_endpoint'", ("url", "timeout_s"), problems) or {}
    url = raw.get("url")
    if url is None or not isinstance(url.value, str) or not re.match(r"^https?://[^\s/]+", url.value):
        problems.append(f"{(url or item).where()}: 'action_endpoint' needs an http(s) URL, e.g. "
                        f"http://127.0.0.1:5055/webhook")
        return None
    timeout = DEFAULT_ACTION_TIMEOUT_S
    if "timeout_s" in raw:
        timeout = _number(raw["timeout_s"], "'action_endpoint: timeout_s'", problems, low=0.1, high=120) or timeout
    return ActionEndpoint(url=url.value, timeout_s=timeout)


def _actions_module(item: Located, directory: Path, problems: list[str]) -> tuple[Path | None, float]:
    timeout = DEFAULT_ACTION_TIMEOUT_S
    if isinstance(item.value, dict):
        fields = _mapping(item, "'actions'", ("module", "timeout_s"), problems) or {}
        if "timeout_s" in fields:
            timeout = _number(fields["timeout_s"], "'actions: timeout_s'", problems, low=0.1, high=120) or timeout
        if "module" not in fields:
            problems.append(f"{item.where()}: 'actions' needs 'module' (a Python module in the bot folder)")
            return None, timeout
        item = fields["module"]
    return _module_path(item, directory, problems), timeout


def _flag(fields: dict[str, Located], key: str, default: bool, what: str, problems: list[str]) -> bool:
    """The true/false field ``key`` (``default`` where absent, or where it is something else: a problem)."""
    if key not in fields:
        return default
    if not isinstance(fields[key].value, bool):
        problems.append(f"{fields[key].where()}: {what}: {key!r} must be true or false")
        return default
    return fields[key].value


def _welcome(item: Located, bot: BotSpec, problems: list[str]) -> dict[str, str]:
    """``welcome: text`` (every channel) or ``{web: text, telegram: text, default: text}``."""
    if not isinstance(item.value, dict):
        texts = _texts(item, "'welcome'", problems)
        return {"": texts[0]} if texts else {}
    out: dict[str, str] = {}
    channels = ("default", *bot.channels)
    for channel, text in (_mapping(item, "'welcome'", channels, problems) or {}).items():
        texts = _texts(text, f"'welcome: {channel}'", problems)
        if texts and channel in channels:
            out["" if channel == "default" else channel] = texts[0]
    return out


def _satisfaction(item: Located, problems: list[str]) -> SatisfactionSpec | None:
    """``satisfaction: {question: text, scale: 1-5 | thumbs, thanks: text, ask_after_agent: bool, ask_after_bot:
    [intent or action, ...]}`` (all but the question optional)."""
    fields = _mapping(item, "'handoff: satisfaction'",
                      ("question", "scale", "thanks", "ask_after_agent", "ask_after_bot"), problems) or {}
    if not fields:
        return None
    if "question" not in fields:
        problems.append(f"{item.where()}: 'handoff: satisfaction' needs 'question' (what the customer is asked)")
        return None
    question = _texts(fields["question"], "'handoff: satisfaction: question'", problems)
    thanks = _texts(fields["thanks"], "'handoff: satisfaction: thanks'", problems) if "thanks" in fields else ()
    scale = fields["scale"].value if "scale" in fields else "1-5"
    if scale not in ("1-5", "thumbs"):
        problems.append(f"{fields['scale'].where()}: 'handoff: satisfaction: scale' must be '1-5' or 'thumbs', "
                        f"got {str(scale)[:40]!r}")
        return None
    after_agent = fields["ask_after_agent"].value if "ask_after_agent" in fields else True
    if not isinstance(after_agent, bool):
        problems.append(f"{fields['ask_after_agent'].where()}: 'handoff: satisfaction: ask_after_agent' must be "
                        f"true or false")
    after_bot: list[str] = []
    if "ask_after_bot" in fields:
        listed = fields["ask_after_bot"]
        for name in listed.value if isinstance(listed.value, list) else [listed]:
            if not isinstance(name.value, str) or not _NAME.match(name.value):
                problems.append(f"{name.where()}: 'handoff: satisfaction: ask_after_bot' lists intents or actions "
                                f"(e.g. [goodbye, action_restart]), got {str(name.value)[:40]!r}")
            else:
                after_bot.append(name.value)
    if not question:
        return None
    return SatisfactionSpec(question=question[0], scale=cast(SatisfactionScale, scale),
                            thanks=thanks[0] if thanks else SatisfactionSpec.thanks,
                            ask_after_agent=after_agent is not False, ask_after_bot=tuple(dict.fromkeys(after_bot)),
                            where=fields["ask_after_bot"].where() if "ask_after_bot" in fields else "")


def parse_handoff(item: Located) -> HandoffSpec:
    """bot.yml's ``handoff:`` section alone (a bot.yml that takes its dialogue from Rasa files keeps it:
    bots/loader.py). ``ConfigError`` with every problem at its line."""
    problems: list[str] = []
    handoff = _handoff(item, problems)
    if problems:
        raise ConfigError(problems)
    return handoff


def _handoff(item: Located, problems: list[str]) -> HandoffSpec:
    fields = _mapping(item, "'handoff'", ("waiting", "queued", "left", "agent_timeout_minutes", "timeout",
                                          "email_received", "estimate", "satisfaction"), problems) or {}
    satisfaction = _satisfaction(fields["satisfaction"], problems) if "satisfaction" in fields else None
    texts: dict[str, tuple[str, ...]] = {}
    for key, allowed, meaning in (("waiting", "position", "the customer's place in the queue"),
                                  ("queued", "position", "the customer's place in the queue"),
                                  ("left", "", ""), ("timeout", None, ""),
                                  ("email_received", "email", "the address the customer wrote"),
                                  ("estimate", "wait", "the typical wait, like 'about 4 minutes'")):
        if key not in fields:
            continue
        texts[key] = _texts(fields[key], f"'handoff: {key}'", problems)
        if allowed is None:
            continue  # (``timeout``'s placeholders were never checked)
        for variant in texts[key]:
            unknown = placeholders(variant) - {allowed}
            if unknown:
                only = f"only {{{allowed}}}: {meaning}" if allowed else "it has none"
                problems.append(f"{fields[key].where()}: 'handoff: {key}': unknown placeholder(s) "
                                f"{', '.join(sorted(unknown))} ({only})")
    waiting, timeout = texts.get("waiting", ()), texts.get("timeout", ())
    queued, left, email_received = texts.get("queued", ()), texts.get("left", ()), texts.get("email_received", ())
    estimate = texts.get("estimate", ())
    if estimate and not (waiting or queued):
        problems.append(f"{fields['estimate'].where()}: 'handoff: estimate' is said after 'waiting' or 'queued' "
                        f"(the customer's place in the queue): give one of them too")
    if email_received and not timeout:
        problems.append(f"{fields['email_received'].where()}: 'handoff: email_received' is said to an address "
                        f"written after 'timeout' (which offers an e-mail answer): give 'timeout' too")
    minutes = None
    if "agent_timeout_minutes" in fields:
        minutes = _number(fields["agent_timeout_minutes"], "'handoff: agent_timeout_minutes'", problems,
                          low=0.01, high=10_080)
    if (minutes is None) != (not timeout):
        problems.append(f"{item.where()}: 'handoff': give both 'agent_timeout_minutes' and 'timeout' (what is said "
                        f"when no agent answered in time), or neither")
        return HandoffSpec(waiting=waiting, queued=queued, left=left, estimate=estimate, satisfaction=satisfaction)
    return HandoffSpec(waiting=waiting, queued=queued, left=left,
                       agent_timeout_s=None if minutes is None else minutes * 60, timeout=timeout,
                       email_received=email_received, estimate=estimate, satisfaction=satisfaction)


def _module_path(item: Located, directory: Path, problems: list[str]) -> Path | None:
    if not isinstance(item.value, str) or not _MODULE.match(item.value):
        problems.append(f"{item.where()}: 'actions' must name a Python module in the bot folder, e.g. actions")
        return None
    relative = Path(*item.value.split("."))
    for candidate in (directory / relative.with_suffix(".py"), directory / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    problems.append(f"{item.where()}: 'actions': neither {relative.with_suffix('.py')} nor {relative}/__init__.py "
                    f"exists in {directory}")
    return None


def parse_dialogue(bot: BotSpec) -> DialogueSpec:
    """Validate the dialogue sections of a loaded bot; raise ConfigError listing every problem."""
    problems: list[str] = []
    sections = bot.sections
    slots: dict[str, SlotSpec] = {}
    for name, item in mapping_section(sections, "slots", "slot names to their settings", problems).items():
        slot = _parse_slot(name, item, bot, problems)
        if slot is not None:
            slots[name] = slot
    refs: list[tuple[str, str]] = []
    forms: dict[str, FormSpec] = {}
    for name, item in mapping_section(sections, "forms", "form names to their settings", problems).items():
        form = _parse_form(name, item, bot, slots, problems, refs)
        if form is not None:
            forms[name] = form
    for name, item in mapping_section(sections, "slots", "slot names to their settings", []).items():
        given = item.value.get("from_intent") if isinstance(item.value, dict) else None
        if given is not None and given.value and not any(name in f.required_slots for f in forms.values()):
            problems.append(f"{given.where()}: slot {name!r}: 'from_intent' fills it while a form asks for it, and no "
                            f"form's required_slots lists it")
    rules: dict[str, Rule] = {}
    if "rules" in sections:
        r = sections["rules"]
        if not isinstance(r.value, list):
            problems.append(f"{r.where()}: 'rules' must be a list of rules (- intent: ...)")
        else:
            for item in r.value:
                rule = _parse_rule(item, bot, forms, problems, refs)
                if rule is None:
                    continue
                if rule.intent in rules:
                    problems.append(f"{item.where()}: a second rule for intent {rule.intent!r} "
                                    f"(first at line {rules[rule.intent].line})")
                rules[rule.intent] = rule
    expiry = DEFAULT_SESSION_EXPIRY_MINUTES
    if "session_expiry_minutes" in sections:
        expiry = _number(sections["session_expiry_minutes"], "'session_expiry_minutes'", problems,
                         low=0, high=525_600) or 0.0
    module, actions_timeout = (_actions_module(sections["actions"], bot.directory, problems) if "actions" in sections
                               else (None, DEFAULT_ACTION_TIMEOUT_S))
    endpoint = _endpoint(sections["action_endpoint"], problems) if "action_endpoint" in sections else None
    if refs and "actions" not in sections and "action_endpoint" not in sections:
        name, where = refs[0]
        problems.append(f"{where}: action {name!r} is used but the bot has neither 'actions' (a Python module) nor "
                        f"'action_endpoint' (an action server URL)")
    welcome = _welcome(sections["welcome"], bot, problems) if "welcome" in sections else {}
    handoff = _handoff(sections["handoff"], problems) if "handoff" in sections else HandoffSpec()
    if problems:
        raise ConfigError(problems)
    domain, stories = compile_native(bot, slots, forms, rules, refs, expiry)
    return DialogueSpec(slots=slots, forms=forms, rules=rules, actions_module=module,
                        actions_timeout_s=actions_timeout, action_endpoint=endpoint,
                        session_expiry_s=expiry * 60, action_refs=tuple(refs),
                        domain=domain, stories=stories, policy=NATIVE_POLICY, welcome=welcome, handoff=handoff)


# bot.yml bots decide with rules only (every intent has one, compiled below); no stories, no learned model.
NATIVE_POLICY = PolicyConfig(memoization=False, learned=False, check_for_contradictions=True)
FORM_DONE_TEXT = "Thank you, that's everything I need."


def _responses(texts: tuple[str, ...], where: str,
               rich: tuple[Mapping[str, Any], ...] = ()) -> tuple[ResponseVariation, ...]:
    """Variations of a bot.yml response; ``rich``: each one's buttons, image, attachment, custom (botspec)."""
    out = []
    for i, text in enumerate(texts):
        parts = rich[i] if i < len(rich) else {}
        buttons = tuple(ResponseButton(b["title"], b.get("payload", ""), b.get("url"))
                        for b in parts.get("buttons", ()))
        out.append(ResponseVariation(text=text, buttons=buttons, image=parts.get("image"),
                                     attachment=parts.get("attachment"), custom=parts.get("custom"), where=where))
    return tuple(out)


def compile_native(bot: BotSpec, slots: dict[str, SlotSpec], forms: dict[str, FormSpec], rules: dict[str, Rule],
                   refs: list[tuple[str, str]], expiry_minutes: float) -> tuple[Domain, tuple[Story, ...]]:
    """bot.yml's dialogue sections as the one internal model (bots/dialogue/domain.py): each intent gets
    a rule (its response, action, form, answer source or hand-off), each form its submit rule and the
    rules that leave it, each slot its mappings. The engine then runs a bot.yml bot exactly as it runs
    a Rasa project."""
    where = str(bot.file)
    entities = sorted({e.entity for i in bot.intents.values() for x in i.examples for e in x.entities}
                      | {s.entity for s in slots.values() if s.entity})
    handoffs = tuple(r.intent for r in rules.values() if r.handoff)
    leave: dict[str, tuple[str, ...]] = {
        f.name: tuple(dict.fromkeys([*f.stop_intents, *handoffs])) for f in forms.values()}
    domain_slots: dict[str, Slot] = {}
    for spec in slots.values():
        mappings: list[SlotMapping] = []
        if spec.entity:
            mappings.append(SlotMapping("from_entity", entity=spec.entity, where=where))
        asking = tuple(MappingCondition(form.name, spec.name) for form in forms.values()
                       if spec.name in form.required_slots)
        if spec.from_text:
            for form in forms.values():
                if spec.name in form.required_slots:
                    # A bool slot's answer is read only when it clearly says yes or no (forms.yes_or_no): then it
                    # answers the form's question whatever the NLU reads, "yes please cancel it" as the stop intent
                    # included; only a hand-off intent still leaves the form ("no, get me a person").
                    not_intent = handoffs if spec.type == "bool" else leave[form.name]
                    mappings.append(SlotMapping("from_text", not_intent=not_intent, where=where,
                                                conditions=(MappingCondition(form.name, spec.name),)))
        for filling, value in spec.from_intent if asking else ():  # after the text: a clear "no" beats an affirm
            mappings.append(SlotMapping("from_intent", intent=(filling,), value=value, conditions=asking,
                                        where=where))
        kind = {"integer": "float"}.get(spec.type, spec.type)
        domain_slots[spec.name] = Slot(spec.name, type=cast(Any, kind), values=spec.choices,
                                       influence_conversation=False, mappings=tuple(mappings),
                                       regex=spec.regex.pattern if spec.regex else None, invalid=spec.invalid,
                                       where=where)
    mapped = {s.entity for s in slots.values() if s.entity}
    for entity in entities:  # an entity no slot maps fills a slot of its own name (for {entity} in responses)
        if entity not in mapped and entity not in domain_slots:
            domain_slots[entity] = Slot(entity, influence_conversation=False, where=where,
                                        mappings=(SlotMapping("from_entity", entity=entity, where=where),))
    responses: dict[str, tuple[ResponseVariation, ...]] = {}
    for intent in bot.intents.values():
        rule = rules.get(intent.name)
        texts = rule.response if rule is not None and rule.response else intent.responses
        if texts:
            rich = intent.rich if texts is intent.responses else ()  # a rule's own response is text only
            responses[f"utter_{intent.name}"] = _responses(texts, f"{where}:{intent.line}", rich)
    for form in forms.values():
        for slot, texts in form.ask.items():
            responses[f"utter_ask_{form.name}_{slot}"] = _responses(texts, f"{where}:{form.line}")
        if form.submit_response or form.submit_action is None:
            responses[f"utter_submit_{form.name}"] = _responses(form.submit_response or (FORM_DONE_TEXT,),
                                                                f"{where}:{form.line}")
    domain = Domain(
        intents={name: IntentProperties(name) for name in bot.intents},
        entities={name: EntityProperties(name, influence_conversation=False) for name in entities},
        slots=domain_slots, responses=responses,
        forms={f.name: Form(f.name, f.required_slots, ignored_intents=f.ignored_intents, where=f"{where}:{f.line}",
                            validation_action=f.validation_action, fresh_start=True) for f in forms.values()},
        actions=tuple(dict.fromkeys(name for name, _ in refs)),
        session=SessionConfig(session_expiration_time_min=expiry_minutes, carry_over_slots_to_new_session=False),
        ordered_responses=frozenset(responses),
    )

    def intent_actions(name: str) -> list[Step]:
        rule = rules.get(name)
        at = f"{where}:{rule.line}" if rule is not None else f"{where}:{bot.intents[name].line}"
        steps: list[Step] = []
        if rule is not None and rule.form is not None:
            return [Step("action", rule.form, where=at), Step("active_loop", rule.form, where=at)]
        if rule is not None and rule.action is not None:
            steps.append(Step("action", rule.action, where=at))
        elif rule is not None and rule.response:
            steps.append(Step("action", f"utter_{name}", where=at))
        elif rule is None or bot.intents[name].responses or rule.answer != "template" or not rule.handoff:
            steps.append(Step("action", ACTION_ANSWER, where=at))
        if rule is not None and rule.handoff:
            steps.append(Step("action", ACTION_HANDOFF, where=at))
        return steps

    stories: list[Story] = []
    for name in bot.intents:
        stories.append(Story(f"intent {name}", (Step("intent", name, where=where), *intent_actions(name)),
                             is_rule=True, where=f"{where}:{bot.intents[name].line}"))
    stories.append(Story("not understood", (Step("intent", NLU_FALLBACK_INTENT, where=where),
                                            Step("action", ACTION_DEFAULT_FALLBACK, where=where)),
                         is_rule=True, where=where))
    for form in forms.values():
        at = f"{where}:{form.line}"
        submit = [Step("action", f"utter_submit_{form.name}", where=at)] if f"utter_submit_{form.name}" in responses \
            else []
        if form.submit_action is not None:
            submit.append(Step("action", form.submit_action, where=at))
        stories.append(Story(f"submit {form.name}", (
            Step("action", form.name, where=at), Step("active_loop", None, where=at), *submit),
            is_rule=True, condition=(Step("active_loop", form.name, where=at),), where=at))
        for leaving in leave[form.name]:
            stories.append(Story(f"{leaving} leaves {form.name}", (
                Step("intent", leaving, where=at), Step("action", ACTION_DEACTIVATE_LOOP, where=at),
                Step("active_loop", None, where=at), *intent_actions(leaving)),
                is_rule=True, condition=(Step("active_loop", form.name, where=at),), where=at))
    return domain, tuple(stories)

