"""rasa-sdk's data shapes: the tracker and domain an action reads, the events it returns.

The dialogue engine talks to custom actions only through ``ActionRunner`` (bots.dialogue.actions has the
in-process and the action-server runners). This module converts between Switchboard's stored
events and the JSON that rasa-sdk's ``Tracker.from_dict`` and the ``/webhook`` protocol use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bots.botspec import BotSpec
from bots.dialogue.domain import Domain, SlotMapping, response_to_json
from bots.dialogue.spec import DialogueSpec
from bots.dialogue.state import REQUESTED_SLOT, State
from bots.errors import SwitchboardError
from bots.events import (
    ACTION,
    AGENT,
    BOT,
    FOLLOWUP,
    FORM,
    NLU,
    PAUSE,
    REJECTED,
    REMINDER,
    REMINDER_CANCELLED,
    RESTART,
    RESUME,
    REWIND,
    SESSION_START,
    SLOT,
    UNDO,
    USER,
    Event,
)
from bots.types import JSON, BotResponse, Button, Entity, custom_payload

log = logging.getLogger("switchboard.actions")

RASA_VERSION = "3.1.0"  # the Rasa version we speak for; rasa-sdk only warns on a mismatch


class ActionError(SwitchboardError):
    """A custom action could not produce a result."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        super().__init__(f"action {action!r}: {message}")


class ActionRejected(ActionError):
    """The action refused to run (rasa-sdk ``ActionExecutionRejection``, HTTP 400)."""


class ActionFailed(ActionError):
    """The action is unknown (404), crashed (500), timed out or its server is unreachable."""


@dataclass(frozen=True)
class ActionOutcome:
    """What an action returned: rasa-sdk events and the dispatcher's messages."""

    events: list[JSON] = field(default_factory=list)
    responses: list[JSON] = field(default_factory=list)


class ActionRunner(Protocol):
    """Runs a named custom action against a tracker (rasa-sdk's JSON shape)."""

    def names(self) -> set[str] | None:
        """The actions known up front (``None``: not knowable, e.g. a remote server)."""
        ...

    async def run(self, name: str, tracker: JSON) -> ActionOutcome: ...

    async def aclose(self) -> None: ...


def _mapping_json(m: SlotMapping) -> JSON:
    out: dict[str, Any] = {"type": m.type}
    for key in ("entity", "role", "group", "value", "action"):
        if getattr(m, key) is not None:
            out[key] = getattr(m, key)
    if m.intent:
        out["intent"] = list(m.intent)
    if m.not_intent:
        out["not_intent"] = list(m.not_intent)
    if m.conditions:
        out["conditions"] = [{"active_loop": c.active_loop, **({"requested_slot": c.requested_slot}
                                                              if c.requested_slot else {})} for c in m.conditions]
    return out


def slot_domain(domain: Domain) -> dict[str, Any]:
    """The slots as Rasa's domain describes them (what rasa-sdk actions read)."""
    out: dict[str, Any] = {}
    for slot in domain.slots.values():
        entry: dict[str, Any] = {"type": slot.type, "influence_conversation": slot.influence_conversation,
                                 "initial_value": slot.initial_value,
                                 "mappings": [_mapping_json(m) for m in slot.mappings]}
        if slot.type == "categorical":
            entry["values"] = list(slot.values)
        if slot.type == "float":
            entry["min_value"], entry["max_value"] = slot.min_value, slot.max_value
        out[slot.name] = entry
    return out


def domain_json(bot: BotSpec, dialogue: DialogueSpec, actions: Sequence[str] = ()) -> JSON:
    """The bot as a Rasa domain, with its real responses, slots, forms and actions: what
    ``FormValidationAction``, ``dispatcher.utter_message(response=...)`` and friends read."""
    domain = dialogue.domain
    intents: list[Any] = []
    for name, props in domain.intents.items():
        if props.use_entities is None and not props.ignore_entities:
            intents.append(name)
        else:
            entry: dict[str, Any] = {}
            if props.use_entities is not None:
                entry["use_entities"] = list(props.use_entities)
            if props.ignore_entities:
                entry["ignore_entities"] = list(props.ignore_entities)
            intents.append({name: entry})
    entities: list[Any] = []
    for name, ent in domain.entities.items():
        if ent.roles or ent.groups:
            entities.append({name: {**({"roles": list(ent.roles)} if ent.roles else {}),
                                    **({"groups": list(ent.groups)} if ent.groups else {})}})
        else:
            entities.append(name)
    return {
        "version": "3.1",
        "session_config": {"session_expiration_time": domain.session.session_expiration_time_min,
                           "carry_over_slots_to_new_session": domain.session.carry_over_slots_to_new_session},
        "intents": intents,
        "entities": entities,
        "slots": slot_domain(domain),
        "responses": {name: response_to_json(v) for name, v in domain.responses.items()},
        "actions": sorted(set(actions) | set(domain.actions)),
        "forms": {f.name: {"required_slots": list(f.required_slots),
                           **({"ignored_intents": list(f.ignored_intents)} if f.ignored_intents else {})}
                  for f in domain.forms.values()},
    }


def _user_event(event: Event) -> JSON:
    return {"event": "user", "timestamp": event.timestamp, "text": event.data.get("text"),
            "input_channel": event.data.get("channel"), "message_id": event.data.get("message_id"),
            "parse_data": {}}


def entity_json(e: JSON) -> JSON:
    """A stored entity as Rasa's entity dict: ``value`` as Rasa gives it (``Entity.rasa_value``: Duckling's
    number for a number or an amount of money, the ISO string for a time, ``{"from", "to"}`` for an
    interval), ``role``, ``group``, ``extractor`` and Duckling's ``additional_info`` where the entity has them."""
    try:
        entity = Entity.from_dict(e)
    except (KeyError, TypeError, ValueError):  # not an entity's shape: passed on as it is stored
        return {"entity": e.get("entity"), "value": e.get("value"), "start": e.get("start"), "end": e.get("end"),
                "confidence_entity": e.get("confidence", 1.0)}
    out: JSON = {"entity": entity.entity, "value": entity.rasa_value, "start": entity.start, "end": entity.end,
                 "confidence_entity": entity.confidence}
    for key in ("role", "group", "extractor", "additional_info"):
        if getattr(entity, key):
            out[key] = getattr(entity, key)
    return out


def parse_data(nlu: JSON, text: str | None, message_id: str | None = None) -> JSON:
    """An NLU event's data as Rasa's ``parse_data`` / ``latest_message`` (with the message's id, as Rasa's)."""
    return {
        "text": text,
        "intent": {"name": nlu.get("intent"), "confidence": nlu.get("confidence")},
        "intent_ranking": list(nlu.get("ranking") or []),
        "entities": [entity_json(e) for e in nlu.get("entities") or [] if isinstance(e, dict)],
        "message_id": message_id,
    }


def events_to_rasa(events: Sequence[Event]) -> list[JSON]:
    """Stored events as rasa-sdk tracker events (oldest first)."""
    out: list[JSON] = []
    last_user: JSON | None = None
    for e in events:
        d = e.data
        if e.kind == USER:
            last_user = _user_event(e)
            out.append(last_user)
        elif e.kind == NLU and last_user is not None:
            last_user["parse_data"] = parse_data(d, last_user.get("text"), last_user.get("message_id"))
        elif e.kind == BOT:
            r = BotResponse.from_dict(d)  # Rasa's BotUttered data: buttons, image, attachment, custom
            data: JSON = {"buttons": [b.to_dict() for b in r.buttons]}
            data.update({k: v for k, v in (("image", r.image), ("attachment", r.attachment), ("custom", r.custom))
                         if v is not None})
            out.append({"event": "bot", "timestamp": e.timestamp, "text": d.get("text"), "data": data,
                        "metadata": dict(r.metadata)})
        elif e.kind == AGENT:
            out.append({"event": "agent", "timestamp": e.timestamp, "text": d.get("text"), "data": None})
        elif e.kind == SLOT:
            out.append({"event": "slot", "timestamp": e.timestamp, "name": d.get("name"), "value": d.get("value")})
        elif e.kind == FORM:
            out.append({"event": "active_loop", "timestamp": e.timestamp, "name": d.get("name")})
            if "requested_slot" in d:
                out.append({"event": "slot", "timestamp": e.timestamp, "name": REQUESTED_SLOT,
                            "value": d.get("requested_slot")})
        elif e.kind in (PAUSE, RESUME, RESTART, REWIND, UNDO):
            out.append({"event": e.kind, "timestamp": e.timestamp})
        elif e.kind == SESSION_START:
            out.append({"event": "session_started", "timestamp": e.timestamp})
        elif e.kind == ACTION:
            out.append({"event": "action", "timestamp": e.timestamp, "name": d.get("name"),
                        "policy": d.get("policy"), "confidence": d.get("confidence")})
        elif e.kind == REJECTED:
            out.append({"event": "action_execution_rejected", "timestamp": e.timestamp, "name": d.get("name")})
        elif e.kind == FOLLOWUP and d.get("name"):
            out.append({"event": "followup", "timestamp": e.timestamp, "name": d.get("name")})
        elif e.kind == REMINDER:
            out.append({"event": "reminder", "timestamp": e.timestamp, **d})
        elif e.kind == REMINDER_CANCELLED:
            out.append({"event": "cancel_reminder", "timestamp": e.timestamp, **d})
    return out


def tracker_json(state: State, dialogue: DialogueSpec, *, extra_events: Sequence[JSON] = ()) -> JSON:
    """The conversation as rasa-sdk's ``Tracker.from_dict`` expects it.

    ``extra_events`` are appended last (a form's candidate ``slot`` events, which
    ``Tracker.slots_to_validate`` reads from the end of the events)."""
    slots: dict[str, Any] = dict.fromkeys(dialogue.domain.slots)
    slots.update(state.slots)
    slots[REQUESTED_SLOT] = state.requested_slot
    for event in extra_events:
        if event.get("event") == "slot":
            slots[str(event.get("name"))] = event.get("value")
    latest = state.latest_message
    return {
        "sender_id": state.sender_id,
        "slots": slots,
        "latest_message": parse_data(latest, latest.get("text"), latest.get("message_id")) if latest else {},
        "events": [*events_to_rasa(state.history), *extra_events],
        "paused": state.paused,
        "followup_action": state.followup_action,
        "active_loop": {"name": state.active_form} if state.active_form else {},
        "latest_action_name": state.latest_action or "action_listen",
        "latest_input_channel": latest.get("channel") if latest else None,
    }


def response_from_rasa(message: JSON, action: str) -> BotResponse | None:
    """A dispatcher message (``utter_message``) or ``bot`` event as a reply; ``None`` if it has nothing to show.

    rasa-sdk's fields map to ``BotResponse``'s: ``buttons`` (and Facebook-style ``quick_replies``, shown as
    buttons) with ``payload`` and/or ``url``, ``image``, ``attachment`` (a URL; an object's ``url`` or
    ``payload.url``), ``custom`` / ``json_message``. ``elements`` (Facebook generic templates) stay in the
    metadata: no channel here renders them (docs/channels.md)."""
    buttons = tuple(button for raw in [*(message.get("buttons") or []), *(message.get("quick_replies") or [])]
                    if (button := _button(raw)) is not None)
    text = message.get("text")
    custom = message.get("custom") or message.get("json_message")
    image = message.get("image")
    attachment = _attachment_url(message.get("attachment"), action)
    elements = message.get("elements")
    if not text and not buttons and not image and not attachment and not custom and not elements:
        return None
    metadata: JSON = {"action": action}
    if elements:
        metadata["elements"] = elements
    if message.get("response"):
        metadata["response"] = message["response"]
    return BotResponse(text=str(text or ""), buttons=buttons, source="action", metadata=metadata,
                       image=str(image) if image else None, attachment=attachment,
                       custom=custom_payload(custom) if custom else None)


def with_dispatched(rendered: BotResponse, message: JSON, action: str) -> BotResponse:
    """``utter_message(response="utter_x", ...)``: the domain response, with what the call itself gave laid
    over it as Rasa does: its non-empty ``text``, ``image``, ``attachment`` and ``custom`` replace the
    response's, its buttons are added after the response's."""
    own = response_from_rasa({k: v for k, v in message.items() if k not in ("response", "template")}, action)
    metadata = {**rendered.metadata, "action": action}
    if own is None:
        return replace(rendered, source="action", metadata=metadata)
    return replace(rendered, source="action", metadata=metadata, text=own.text or rendered.text,
                   buttons=(*rendered.buttons, *own.buttons), image=own.image or rendered.image,
                   attachment=own.attachment or rendered.attachment,
                   custom=own.custom if own.custom is not None else rendered.custom)


def _button(raw: object) -> Button | None:
    """A Rasa button (``title`` with ``payload`` and/or ``url``); one without a title is not shown."""
    if not isinstance(raw, dict) or not raw.get("title"):
        return None
    url = raw.get("url")
    return Button(title=str(raw["title"]), payload=str(raw.get("payload") or ""),
                  url=str(url) if isinstance(url, str) and url else None)


def _attachment_url(value: object, action: str) -> str | None:
    """An attachment as the URL the channels link to: a string as it is; an object's ``url`` (or Facebook's
    ``payload.url``, Slack's ``title_link``); an object without one is logged, not shown."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        payload = value.get("payload")
        for candidate in (value.get("url"), payload.get("url") if isinstance(payload, dict) else None,
                          value.get("title_link")):
            if isinstance(candidate, str) and candidate:
                return candidate
    log.warning("action attachment without a URL not shown", extra={"action": action})
    return None
