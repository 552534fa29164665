"""The ONE internal dialogue model every bot loads into, whatever its front door.

``bot.yml`` (our native format, bots/dialogue/spec.py) and a Rasa 3.x project folder
(``domain.yml``, ``data/`` stories and rules, ``config.yml``; bots/dialogue/rasa_project.py) are
both converted into a ``Domain`` plus a list of ``Story`` (rules are stories with ``is_rule``).
The dialogue engine (bots/dialogue/engine.py) and its policies (bots/dialogue/policies.py) read
only these types, so there is one runtime however a bot was written.

The shapes follow Rasa 3.x's domain and story formats (names, defaults, semantics), because
that is what bot builders already know and what rasa-sdk actions expect to read back in the
``domain`` JSON they receive. Every value keeps ``where`` (``file:line``) so that the checks of
``switchboard check`` and the loaders point at the line to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bots.types import JSON

# ---------------------------------------------------------------------------------------------------------
# Default actions (Rasa's names; https://rasa.com/docs/rasa/default-actions). Switchboard adds two:
# ``action_handoff`` (a human takes the conversation: the PAUSE event) and ``action_answer`` (an answer
# from the bot's answer provider: retrieval over the knowledge base / templates, or generation).
ACTION_LISTEN = "action_listen"
ACTION_RESTART = "action_restart"
ACTION_SESSION_START = "action_session_start"
ACTION_DEFAULT_FALLBACK = "action_default_fallback"
ACTION_DEACTIVATE_LOOP = "action_deactivate_loop"
ACTION_BACK = "action_back"
ACTION_TWO_STAGE_FALLBACK = "action_two_stage_fallback"
ACTION_EXTRACT_SLOTS = "action_extract_slots"
ACTION_UNLIKELY_INTENT = "action_unlikely_intent"
ACTION_DEFAULT_ASK_AFFIRMATION = "action_default_ask_affirmation"
ACTION_DEFAULT_ASK_REPHRASE = "action_default_ask_rephrase"
ACTION_HANDOFF = "action_handoff"
ACTION_ANSWER = "action_answer"
DEFAULT_ACTIONS: tuple[str, ...] = (
    ACTION_LISTEN, ACTION_RESTART, ACTION_SESSION_START, ACTION_DEFAULT_FALLBACK, ACTION_DEACTIVATE_LOOP,
    ACTION_BACK, ACTION_TWO_STAGE_FALLBACK, ACTION_EXTRACT_SLOTS, ACTION_UNLIKELY_INTENT,
    ACTION_DEFAULT_ASK_AFFIRMATION, ACTION_DEFAULT_ASK_REPHRASE, ACTION_HANDOFF, ACTION_ANSWER,
)
# Rasa's default actions a project may override with a custom action of the same name, by listing it under the
# domain's ``actions`` (Rasa's ``action_for_name_or_text``); action_listen and Switchboard's own are never overridden.
OVERRIDABLE_DEFAULT_ACTIONS: frozenset[str] = (frozenset(DEFAULT_ACTIONS)
                                               - {ACTION_LISTEN, ACTION_HANDOFF, ACTION_ANSWER})
# Intents every bot knows without declaring them (Rasa's default intents).
DEFAULT_INTENTS: tuple[str, ...] = ("restart", "back", "out_of_scope", "session_start", "nlu_fallback")
NLU_FALLBACK_INTENT = "nlu_fallback"
REQUESTED_SLOT = "requested_slot"
SESSION_STARTED_METADATA_SLOT = "session_started_metadata"

SlotType = Literal["text", "bool", "categorical", "float", "list", "any"]
SLOT_TYPES: tuple[str, ...] = ("text", "bool", "categorical", "float", "list", "any")
MappingType = Literal["from_entity", "from_text", "from_intent", "from_trigger_intent", "custom"]
MAPPING_TYPES: tuple[str, ...] = ("from_entity", "from_text", "from_intent", "from_trigger_intent", "custom")


@dataclass(frozen=True)
class MappingCondition:
    """A slot mapping applies only while this form is active (and, if given, asks for this slot)."""

    active_loop: str | None
    requested_slot: str | None = None


@dataclass(frozen=True)
class SlotMapping:
    """One way a slot is filled (Rasa's ``mappings:`` entries)."""

    type: MappingType
    entity: str | None = None
    role: str | None = None
    group: str | None = None
    intent: tuple[str, ...] = ()        # the mapping applies only to these intents (empty: any)
    not_intent: tuple[str, ...] = ()    # ... and never to these
    value: Any = None                   # from_intent / from_trigger_intent: the value set
    action: str | None = None           # custom: the action that fills it (None: a validation action does)
    conditions: tuple[MappingCondition, ...] = ()
    where: str = ""


@dataclass(frozen=True)
class Slot:
    name: str
    type: SlotType = "text"
    values: tuple[str, ...] = ()        # categorical
    min_value: float = 0.0              # float (Rasa's defaults)
    max_value: float = 1.0
    influence_conversation: bool = True
    initial_value: Any = None
    mappings: tuple[SlotMapping, ...] = ()
    # Switchboard's validation (bot.yml): a value that fails it never fills the slot.
    regex: str | None = None
    invalid: str | None = None          # the reason told to the customer when an answer is refused
    where: str = ""


@dataclass(frozen=True)
class ResponseButton:
    title: str
    payload: str
    url: str | None = None              # a link button (Rasa passes ``url`` through to the channel)


@dataclass(frozen=True)
class ResponseVariation:
    """One variation of a response (``utter_*``): text and rich content, optionally restricted to a
    channel and to slot conditions (Rasa's conditional response variations)."""

    text: str | None = None
    buttons: tuple[ResponseButton, ...] = ()
    image: str | None = None
    attachment: str | None = None
    custom: JSON | None = None
    channel: str | None = None
    conditions: tuple[tuple[str, Any], ...] = ()   # (slot name, value): all must hold
    id: str | None = None
    metadata: JSON = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class Form:
    name: str
    required_slots: tuple[str, ...]
    ignored_intents: tuple[str, ...] = ()
    where: str = ""
    # The rasa-sdk action validating its slots: bot.yml names it; Rasa's is ``validate_<form>`` when the
    # domain declares such an action.
    validation_action: str | None = None
    # bot.yml: a form starts fresh (its slots keep only what the activating message gave); Rasa keeps them.
    fresh_start: bool = False


@dataclass(frozen=True)
class IntentProperties:
    name: str
    use_entities: tuple[str, ...] | None = None   # None: all entities
    ignore_entities: tuple[str, ...] = ()
    where: str = ""


@dataclass(frozen=True)
class EntityProperties:
    name: str
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    influence_conversation: bool = True
    where: str = ""


@dataclass(frozen=True)
class SessionConfig:
    session_expiration_time_min: float = 60.0       # 0: sessions never expire
    carry_over_slots_to_new_session: bool = True


@dataclass(frozen=True)
class Domain:
    intents: dict[str, IntentProperties] = field(default_factory=dict)
    entities: dict[str, EntityProperties] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    responses: dict[str, tuple[ResponseVariation, ...]] = field(default_factory=dict)
    forms: dict[str, Form] = field(default_factory=dict)
    actions: tuple[str, ...] = ()                   # custom actions (and utter_ responses) the domain declares
    session: SessionConfig = field(default_factory=SessionConfig)
    # Responses whose first fillable variation is said (bot.yml's rule); the others pick one at random (Rasa's).
    ordered_responses: frozenset[str] = frozenset()
    # A Rasa project's FallbackClassifier ``ambiguity_threshold``: a message whose two best intents' confidences
    # differ by less is read as ``nlu_fallback`` (``FallbackClassifier._nlu_prediction_ambiguous``). 0: never.
    nlu_ambiguity_threshold: float = 0.0

    @property
    def action_names(self) -> tuple[str, ...]:
        """Every action the policies may predict: default actions, responses, custom actions, forms."""
        seen: dict[str, None] = dict.fromkeys(DEFAULT_ACTIONS)
        seen.update(dict.fromkeys(sorted(self.responses)))
        seen.update(dict.fromkeys(self.retrieval_actions))
        seen.update(dict.fromkeys(self.actions))
        seen.update(dict.fromkeys(self.forms))
        return tuple(seen)

    def overrides(self, action: str) -> bool:
        """Whether the domain overrides a Rasa default action with its own custom action (it lists it)."""
        return action in OVERRIDABLE_DEFAULT_ACTIONS and action in self.actions

    @property
    def retrieval_actions(self) -> tuple[str, ...]:
        """Rasa's retrieval actions: ``utter_chitchat`` for responses ``utter_chitchat/<key>`` (the response
        of the key the response selector picks; bots/dialogue/response_selector.py)."""
        return tuple(sorted({name.split("/", 1)[0] for name in self.responses
                             if name.startswith("utter_") and "/" in name}))

    def intent_fills(self, mapping: SlotMapping, intent: str | None, active_form: str | None) -> bool:
        """Rasa's ``SlotMapping.intent_is_desired``: a mapping that lists intents applies to those; one that
        does not, to any intent but its ``not_intent`` and, while a form is active, the form's
        ``ignored_intents`` (for a mapping conditioned on that form or on none: a chitchat inside the form
        fills no slot)."""
        if mapping.intent:
            return intent in mapping.intent
        form = self.forms.get(active_form or "")
        ignored = form is not None and intent in form.ignored_intents and (
            not mapping.conditions or any(c.active_loop == form.name for c in mapping.conditions))
        return intent not in mapping.not_intent and not ignored

    def mapping_is_valid(self, mapping: SlotMapping) -> bool:
        """Rasa's ``SlotMapping.check_mapping_validity``: a ``from_entity`` mapping of an entity the domain
        does not declare is skipped (Rasa warns "Skipping slot extraction because of invalid mapping"), so it
        never fills its slot, though the NLU may extract the entity (it is annotated in the NLU data)."""
        return mapping.type != "from_entity" or mapping.entity in self.entities

    def shared_entity_mapping(self, active_form: str | None, slot: str, mapping: SlotMapping) -> bool:
        """Whether ``mapping`` (``from_entity``) of ``slot``, a required slot of the active form, is one
        another required slot has too: Rasa's unique entity mapping check then fills it only when the form
        asks for ``slot`` (``ActionExtractSlots._fails_unique_entity_mapping_check``; the caller exempts the
        requested slot). "Paris" answers the departure city the form asked for, not the arrival city too."""
        form = self.forms.get(active_form or "")
        if mapping.type != "from_entity" or form is None or slot not in form.required_slots:
            return False
        key = replace(mapping, where="")
        return sum(replace(m, where="") == key for required in form.required_slots if required in self.slots
                   for m in self.slots[required].mappings if m.type == "from_entity") > 1

    def slot_initial_values(self) -> dict[str, Any]:
        values = {name: slot.initial_value for name, slot in self.slots.items()}
        values.setdefault(REQUESTED_SLOT, None)
        return values


# ---------------------------------------------------------------------------------------------------------
# Stories and rules.
StepKind = Literal["intent", "action", "slot_was_set", "active_loop", "checkpoint", "or", "bot"]


@dataclass(frozen=True)
class StoryEntity:
    entity: str
    value: Any = None          # None: "an entity of this name", whatever its value
    role: str | None = None
    group: str | None = None
    # Where a ``user:`` step's annotation lies in its text (``switchboard test`` writes the failed stories
    # with their annotations back); None for entities listed under ``entities:``. Not part of equality.
    start: int | None = field(default=None, compare=False)
    end: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Step:
    """One step of a story or rule.

    * ``intent``: the user's turn (``name`` the intent; ``entities``; ``user_text`` for ``user:`` steps
      of test stories, whose intent the NLU decides);
    * ``action``: an action the bot runs (``name``);
    * ``bot``: a literal bot text (``bot:`` steps, end-to-end stories);
    * ``slot_was_set``: ``slots`` set at this point (value ``...`` = Ellipsis: "set, any value");
    * ``active_loop``: ``name`` the form now active (None: no form active);
    * ``checkpoint``: ``name`` of a checkpoint (joins stories);
    * ``or``: ``alternatives``, each an ``intent`` (or ``slot_was_set``) step.
    """

    kind: StepKind
    name: str | None = None
    entities: tuple[StoryEntity, ...] = ()
    slots: tuple[tuple[str, Any], ...] = ()
    user_text: str | None = None
    alternatives: tuple[Step, ...] = ()
    where: str = ""


@dataclass(frozen=True)
class Story:
    name: str
    steps: tuple[Step, ...]
    is_rule: bool = False
    condition: tuple[Step, ...] = ()        # rules: slot_was_set / active_loop steps that must hold first
    conversation_start: bool = False        # rules: only at the start of a conversation
    wait_for_user_input: bool = True        # rules: after the last step, action_listen is predicted
    where: str = ""


@dataclass(frozen=True)
class PolicyConfig:
    """What ``config.yml``'s ``policies:`` (or bot.yml) asks for, as our ensemble understands it."""

    max_history: int = 5
    memoization: bool = True
    augmented_memoization: bool = False
    rules: bool = True
    learned: bool = True                        # the trained next-action model (TED's place)
    core_fallback_threshold: float = 0.3
    core_fallback_action: str = ACTION_DEFAULT_FALLBACK
    enable_fallback_prediction: bool = True
    restrict_rules: bool = True
    check_for_contradictions: bool = True
    learned_epochs: int = 100
    learned_max_history: int | None = None      # TEDPolicy's own max_history (None: ``max_history``)


def response_to_json(variations: tuple[ResponseVariation, ...]) -> list[JSON]:
    """A response as the ``responses`` section of the domain JSON rasa-sdk actions receive."""
    out: list[JSON] = []
    for v in variations:
        item: dict[str, Any] = {}
        if v.text is not None:
            item["text"] = v.text
        if v.buttons:
            item["buttons"] = [{"title": b.title, "payload": b.payload, **({"url": b.url} if b.url else {})}
                               for b in v.buttons]
        if v.image is not None:
            item["image"] = v.image
        if v.attachment is not None:
            item["attachment"] = v.attachment
        if v.custom is not None:
            item["custom"] = dict(v.custom)
        if v.channel is not None:
            item["channel"] = v.channel
        if v.conditions:
            item["condition"] = [{"type": "slot", "name": n, "value": val} for n, val in v.conditions]
        if v.id is not None:
            item["id"] = v.id
        out.append(item)
    return out


def matching_variations(variations: tuple[ResponseVariation, ...], slots: Mapping[str, Any],
                        channel: str | None) -> list[ResponseVariation]:
    """Rasa's choice among variations: conditional variations whose conditions all hold win over
    unconditional ones; a channel-specific variation for this channel wins over a generic one."""
    def fits(v: ResponseVariation) -> bool:
        return all(slots.get(name) == value for name, value in v.conditions)

    conditional = [v for v in variations if v.conditions and fits(v)]
    pool = conditional or [v for v in variations if not v.conditions]
    own = [v for v in pool if v.channel is not None and v.channel == channel]
    return own or [v for v in pool if v.channel is None]
