"""rasa-sdk's data shapes: the tracker and domain an action reads, the events it returns.

The dialogue engine talks to custom actions only through ``ActionRunner`` (bots.dialogue.actions has the
in-process and the action-server runners). This module converts between Switchboard's stored
events and the JSON that rasa-sdk's ``Tracker.from_dict`` and the ``/webhook`` protocol use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bots.botspec import BotSpec
from bots.dialogue.spec import DialogueSpec
from bots.dialogue.state import REQUESTED_SLOT, State
from bots.errors import SwitchboardError
from bots.events import AGENT, BOT, FORM, NLU, PAUSE, RESTART, RESUME, SESSION_START, SLOT, USER, Event
from bots.types import JSON, BotResponse, Button

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


def slot_domain(spec: DialogueSpec) -> dict[str, Any]:
    """The slots as Rasa's domain describes them (what rasa-sdk actions read)."""
    out: dict[str, Any] = {}
    for slot in spec.slots.values():
        mappings: list[dict[str, Any]] = []
        if slot.entity:
            mappings.append({"type": "from_entity", "entity": slot.entity})
        if slot.from_text:
            mappings.append({"type": "from_text"})
        rasa_type = {"integer": "float", "any": "any"}.get(slot.type, slot.type)
        entry: dict[str, Any] = {"type": rasa_type, "influence_conversation": False, "mappings": mappings}
        if slot.choices:
            entry["values"] = list(slot.choices)
        out[slot.name] = entry
    return out


def domain_json(bot: BotSpec, dialogue: DialogueSpec, actions: Sequence[str] = ()) -> JSON:
    """The bot as a Rasa domain: what ``FormValidationAction`` and friends read."""
    entities = sorted({e.entity for i in bot.intents.values() for x in i.examples for e in x.entities}
                      | {s.entity for s in dialogue.slots.values() if s.entity})
    return {
        "version": "3.1",
        "session_config": {"session_expiration_time": dialogue.session_expiry_s / 60,
                           "carry_over_slots_to_new_session": False},
        "intents": sorted(bot.intents),
        "entities": entities,
        "slots": slot_domain(dialogue),
        "responses": {},
        "actions": sorted(set(actions)),
        "forms": {f.name: {"required_slots": list(f.required_slots)} for f in dialogue.forms.values()},
    }


def _user_event(event: Event) -> JSON:
    return {"event": "user", "timestamp": event.timestamp, "text": event.data.get("text"),
            "input_channel": event.data.get("channel"), "message_id": event.data.get("message_id"),
            "parse_data": {}}


def parse_data(nlu: JSON, text: str | None) -> JSON:
    """An NLU event's data as Rasa's ``parse_data`` / ``latest_message``."""
    return {
        "text": text,
        "intent": {"name": nlu.get("intent"), "confidence": nlu.get("confidence")},
        "intent_ranking": list(nlu.get("ranking") or []),
        "entities": [{"entity": e.get("entity"), "value": e.get("value"), "start": e.get("start"),
                      "end": e.get("end"), "confidence_entity": e.get("confidence", 1.0)}
                     for e in nlu.get("entities") or []],
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
            last_user["parse_data"] = parse_data(d, last_user.get("text"))
        elif e.kind == BOT:
            out.append({"event": "bot", "timestamp": e.timestamp, "text": d.get("text"),
                        "data": {"buttons": list(d.get("buttons") or [])}, "metadata": dict(d.get("metadata") or {})})
        elif e.kind == AGENT:
            out.append({"event": "agent", "timestamp": e.timestamp, "text": d.get("text"), "data": None})
        elif e.kind == SLOT:
            out.append({"event": "slot", "timestamp": e.timestamp, "name": d.get("name"), "value": d.get("value")})
        elif e.kind == FORM:
            out.append({"event": "active_loop", "timestamp": e.timestamp, "name": d.get("name")})
            if "requested_slot" in d:
                out.append({"event": "slot", "timestamp": e.timestamp, "name": REQUESTED_SLOT,
                            "value": d.get("requested_slot")})
        elif e.kind in (PAUSE, RESUME, RESTART):
            out.append({"event": e.kind, "timestamp": e.timestamp})
        elif e.kind == SESSION_START:
            out.append({"event": "session_started", "timestamp": e.timestamp})
    return out


def tracker_json(state: State, dialogue: DialogueSpec, *, extra_events: Sequence[JSON] = ()) -> JSON:
    """The conversation as rasa-sdk's ``Tracker.from_dict`` expects it.

    ``extra_events`` are appended last (a form's candidate ``slot`` events, which
    ``Tracker.slots_to_validate`` reads from the end of the events)."""
    slots: dict[str, Any] = {name: None for name in dialogue.slots}
    slots.update(state.slots)
    slots[REQUESTED_SLOT] = state.requested_slot
    for event in extra_events:
        if event.get("event") == "slot":
            slots[str(event.get("name"))] = event.get("value")
    latest = state.latest_message
    return {
        "sender_id": state.sender_id,
        "slots": slots,
        "latest_message": parse_data(latest, latest.get("text")) if latest else {},
        "events": [*events_to_rasa(state.history), *extra_events],
        "paused": state.paused,
        "followup_action": None,
        "active_loop": {"name": state.active_form} if state.active_form else {},
        "latest_action_name": state.latest_action or "action_listen",
        "latest_input_channel": latest.get("channel") if latest else None,
    }


def response_from_rasa(message: JSON, action: str) -> BotResponse | None:
    """A dispatcher message (``utter_message``) or ``bot`` event as a reply; ``None`` if it has no text."""
    buttons = tuple(Button(title=str(b.get("title", "")), payload=str(b.get("payload", "")))
                    for b in message.get("buttons") or [] if isinstance(b, dict) and b.get("title"))
    text = message.get("text")
    extras = {k: message[k] for k in ("image", "attachment", "custom", "elements") if message.get(k)}
    if not text and not buttons and not extras:
        return None
    metadata: JSON = {"action": action, **extras}
    if message.get("response"):
        metadata["response"] = message["response"]
    return BotResponse(text=str(text or ""), buttons=buttons, source="action", metadata=metadata)
