"""Deciding what to say: conversation state rebuilt from stored events, then a reply.

``decide`` turns one customer message into the events of its turn (bot replies, slot and form
changes, pauses). It never touches the store, the network or the model: custom actions run
through an injected ``ActionRunner`` and retrieval/generation answers through an injected
``AnswerProvider``. Replaying the stored events with ``State.apply`` gives back exactly the state
``decide`` worked with, which is how every replica rebuilds a conversation.

One turn, in order:

1. a new session (``SESSION_START``: slots and form cleared) when the conversation was idle longer
   than ``session_expiry_minutes``;
2. a paused conversation (a human has it) gets no bot reply;
3. entities fill their slots (values checked against the slot's type, choices and regex);
4. an active form takes the message as the answer to the slot it asked for: a valid answer fills
   it and the next missing slot is asked, an invalid one is refused with the reason and asked again;
   when every slot is filled the form submits (response and/or action);
5. otherwise: an uncertain message gets "Did you mean ...?" with the top intents as buttons; a second
   uncertain message in a row hands the conversation to a human (``PAUSE``); a confident one follows
   its rule (response, action, form, answer source, handoff) or says the intent's response.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bots.botspec import BotSpec, Intent, fill_template
from bots.dialogue_spec import AnswerKind, DialogueSpec, FormSpec
from bots.forms import check_value, next_slot, render, shown_values
from bots.rasa_protocol import ActionFailed, ActionRejected, ActionRunner, tracker_json
from bots.rasa_protocol import REQUESTED_SLOT, response_from_rasa
from bots.store.base import AGENT, BOT, FORM, NLU, PAUSE, RESTART, RESUME, SESSION_START, SLOT, USER, Event
from bots.types import JSON, BotResponse, Button, Understanding

log = logging.getLogger("switchboard.dialogue")

_HISTORY = 200  # events kept for custom actions' trackers
_MAX_FOLLOWUPS = 5  # FollowupAction chains longer than this are cut (a loop in the actions)
HANDOFF_TEXT = ("Sorry, I'm having trouble understanding. I'm handing you over to a colleague from our support "
                "team; please stay in this chat.")
ACTION_ERROR_TEXT = "Sorry, something went wrong on our side. Please try again in a moment, or ask for a human."
FORM_DONE_TEXT = "Thank you, that's everything I need."


@dataclass
class State:
    """What the bot knows about a conversation, rebuilt from its events."""

    sender_id: str = ""
    slots: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    active_form: str | None = None
    requested_slot: str | None = None
    last_intent: str | None = None
    latest_message: JSON = field(default_factory=dict)
    latest_action: str | None = None
    fallbacks_in_a_row: int = 0
    session_started_at: float | None = None
    last_activity: float | None = None
    history: list[Event] = field(default_factory=list)  # this session's events, for custom actions

    @classmethod
    def from_events(cls, events: Sequence[Event], sender_id: str = "") -> State:
        state = cls(sender_id=sender_id)
        for event in events:
            state.apply(event)
        return state

    def copy(self) -> State:
        return copy.deepcopy(self)

    def expired(self, now: float, expiry_s: float) -> bool:
        """True when ``now`` opens a new session (first message, or idle longer than the expiry)."""
        if self.session_started_at is None or self.last_activity is None:
            return True
        return expiry_s > 0 and now - self.last_activity > expiry_s

    def _reset(self) -> None:
        self.slots.clear()
        self.active_form = None
        self.requested_slot = None
        self.fallbacks_in_a_row = 0

    def apply(self, event: Event) -> None:
        kind, data = event.kind, event.data
        self.last_activity = max(self.last_activity or event.timestamp, event.timestamp)
        self.history.append(event)
        if kind == SESSION_START:
            # Slots and form go; the conversation stays with a human if it was handed off.
            self._reset()
            self.session_started_at = event.timestamp
            start = max((i for i, e in enumerate(self.history) if e.kind == USER), default=len(self.history) - 1)
            self.history = self.history[start:]  # keep the message that opened the session
        elif kind == RESTART:
            self._reset()
            self.paused = False
            self.session_started_at = event.timestamp
            self.history = [event]
        elif kind == SLOT:
            name, value = data.get("name"), data.get("value")
            if name == REQUESTED_SLOT:
                self.requested_slot = value if isinstance(value, str) else None
            elif isinstance(name, str):
                if value is None:
                    self.slots.pop(name, None)
                else:
                    self.slots[name] = value
        elif kind == FORM:
            name = data.get("name")
            self.active_form = name if isinstance(name, str) else None
            requested = data.get("requested_slot")
            self.requested_slot = requested if isinstance(requested, str) and self.active_form else None
        elif kind == PAUSE:
            self.paused = True
        elif kind == RESUME:
            self.paused = False
            self.fallbacks_in_a_row = 0
        elif kind == USER:
            self.latest_message = {"text": data.get("text"), "channel": data.get("channel")}
        elif kind == NLU:
            self.latest_message = {**self.latest_message, **data}
            self.last_intent = data.get("intent") or self.last_intent
        elif kind == BOT:
            if data.get("source") == "fallback":
                self.fallbacks_in_a_row += 1
            else:
                self.fallbacks_in_a_row = 0
            action = (data.get("metadata") or {}).get("action")
            if action:
                self.latest_action = str(action)
        elif kind == AGENT:
            self.fallbacks_in_a_row = 0
        if len(self.history) > _HISTORY:
            del self.history[: len(self.history) - _HISTORY]


class AnswerProvider(Protocol):
    """Answers an intent from another source than its template (bots.answers).

    Called for intents whose rule says ``answer: retrieval`` or ``answer: generation``;
    ``None`` means "no good answer": the intent's template response is used instead."""

    async def answer(self, kind: AnswerKind, intent: str | None, text: str, state: State) -> BotResponse | None: ...


@dataclass(frozen=True)
class Services:
    """What ``decide`` may call out to; both are optional."""

    actions: ActionRunner | None = None
    answers: AnswerProvider | None = None


@dataclass(frozen=True)
class Message:
    """The customer's message as the dialogue sees it."""

    text: str
    understanding: Understanding
    timestamp: float


@dataclass(frozen=True)
class Decision:
    events: list[Event]
    fallback: bool = False
    handoff: bool = False
    failed_actions: tuple[str, ...] = ()

    @property
    def responses(self) -> list[BotResponse]:
        return [BotResponse.from_dict(e.data) for e in self.events if e.kind == BOT]


def fallback_response(bot: BotSpec, understanding: Understanding, *, top_n: int = 3) -> BotResponse:
    buttons = tuple(
        Button(title=s.name.replace("_", " "), payload=f"/{s.name}")
        for s in understanding.ranking[:top_n]
        if s.name in bot.intents
    )
    return BotResponse(
        text="Sorry, I didn't understand that. Did you mean one of these?" if buttons
        else "Sorry, I didn't understand that. Could you rephrase?",
        buttons=buttons,
        source="fallback",
    )


async def decide(bot: BotSpec, dialogue: DialogueSpec, state: State, message: Message,
                 services: Services | None = None) -> Decision:
    """The events of the turn that answers ``message``. ``state`` is the state before the message."""
    turn = _Turn(bot, dialogue, state, message, services or Services())
    await turn.run()
    return Decision(events=turn.events, fallback=turn.fallback, handoff=turn.handoff,
                    failed_actions=tuple(turn.failed_actions))


class _Turn:
    """One turn being decided: a working copy of the state and the events emitted so far."""

    def __init__(self, bot: BotSpec, dialogue: DialogueSpec, state: State, message: Message,
                 services: Services) -> None:
        self.bot, self.dialogue, self.message, self.services = bot, dialogue, message, services
        self.expired = state.expired(message.timestamp, dialogue.session_expiry_s)
        self.state = state.copy()
        u = message.understanding
        # The customer's message and what the NLU understood are stored by the runtime; replay them here.
        self.state.apply(Event(USER, {"text": message.text}, timestamp=message.timestamp))
        self.state.apply(Event(NLU, u.to_dict(), timestamp=message.timestamp))
        self.events: list[Event] = []
        self.fallback = False
        self.handoff = False
        self.failed_actions: list[str] = []

    # -- emitting -------------------------------------------------------------------
    def emit(self, kind: str, data: JSON) -> None:
        event = Event(kind, data, timestamp=self.message.timestamp)
        self.state.apply(event)
        self.events.append(event)

    def say(self, response: BotResponse) -> None:
        self.emit(BOT, response.to_dict())

    def set_slot(self, name: str, value: Any) -> None:
        if self.state.slots.get(name) != value:
            self.emit(SLOT, {"name": name, "value": value})

    # -- the turn -------------------------------------------------------------------
    async def run(self) -> None:
        if self.expired:
            self.emit(SESSION_START, {})
        if self.state.paused:
            return  # a human has the conversation: the message is only recorded
        form_answer = self._fill_from_entities()
        if self.state.active_form is not None and await self._continue_form(form_answer):
            return
        await self._follow_intent()

    @property
    def confident(self) -> bool:
        u = self.message.understanding
        return u.intent in self.bot.intents and u.confidence >= self.bot.fallback_threshold

    def _fill_from_entities(self) -> Any:
        """Set the slots the message's entities fill; return the value offered for the form's requested slot."""
        offered: Any = None
        for entity in self.message.understanding.entities:
            name = self.dialogue.slot_for_entity(entity.entity)
            if name is None:
                continue
            slot = self.dialogue.slots.get(name)
            if name == self.state.requested_slot:
                offered = entity.value  # checked (and refused with a reason) by the form
                continue
            value: Any = entity.value
            if slot is not None:
                checked = check_value(slot, entity.value)
                if not checked.ok:
                    continue
                value = checked.value
            self.set_slot(name, value)
        return offered

    async def _follow_intent(self) -> None:
        u = self.message.understanding
        intent = self.bot.intents.get(u.intent)
        if intent is None or not self.confident:
            self.fallback = True
            if self.state.fallbacks_in_a_row >= 1:
                self._hand_off(BotResponse(text=HANDOFF_TEXT, source="system"), reason="fallback")
            else:
                self.say(fallback_response(self.bot, u))
            return
        rule = self.dialogue.rules.get(intent.name)
        if rule is None:
            await self._answer(intent, "template")
            return
        if rule.form is not None:
            await self._start_form(self.dialogue.forms[rule.form])
        elif rule.action is not None:
            await self._run_action(rule.action)
        elif rule.response:
            self.say(BotResponse(text=render(rule.response, self.state.slots), source="template",
                                 metadata={"intent": intent.name}))
        elif rule.answer != "template" or not rule.handoff:
            await self._answer(intent, rule.answer)
        elif intent.responses:
            await self._answer(intent, "template")
        if rule.handoff and not self.state.paused:
            self._hand_off(None, reason=intent.name)

    async def _answer(self, intent: Intent, kind: AnswerKind) -> None:
        """The intent's answer: from the answer provider for retrieval/generation, else its template."""
        if kind != "template" and self.services.answers is not None:
            response = await self.services.answers.answer(kind, intent.name, self.message.text, self.state)
            if response is not None:
                self.say(response)
                return
        text = fill_template(intent.responses, shown_values(self.state.slots)) if intent.responses else None
        if text is None:
            # No variant can be filled: never show a raw {placeholder}.
            self.fallback = True
            self.say(fallback_response(self.bot, self.message.understanding))
            return
        self.say(BotResponse(text=text, source="template", metadata={"intent": intent.name}))

    def _hand_off(self, response: BotResponse | None, *, reason: str) -> None:
        if response is not None:
            self.say(response)
        if self.state.active_form is not None:
            self.emit(FORM, {"name": None})
        self.emit(PAUSE, {"reason": reason})
        self.handoff = True

    # -- forms ----------------------------------------------------------------------
    async def _start_form(self, form: FormSpec) -> None:
        slot = next_slot(form, self.state.slots)
        self.emit(FORM, {"name": form.name, "requested_slot": slot})
        await self._ask_or_submit(form)

    async def _ask_or_submit(self, form: FormSpec) -> None:
        slot = self.state.requested_slot
        if slot is not None:
            self.say(BotResponse(text=render(form.ask[slot], self.state.slots), source="template",
                                 metadata={"form": form.name, "slot": slot}))
            return
        self.emit(FORM, {"name": None})
        if form.submit_response:
            self.say(BotResponse(text=render(form.submit_response, self.state.slots), source="template",
                                 metadata={"form": form.name}))
        if form.submit_action is not None:
            await self._run_action(form.submit_action)
        elif not form.submit_response:
            self.say(BotResponse(text=FORM_DONE_TEXT, source="template", metadata={"form": form.name}))

    async def _continue_form(self, offered: Any) -> bool:
        """Treat the message as the answer to the form's question. False: the message left the form."""
        form = self.dialogue.forms.get(self.state.active_form or "")
        requested = self.state.requested_slot
        if form is None or requested is None:  # the bot's forms changed since: drop the form
            self.emit(FORM, {"name": None})
            return False
        u = self.message.understanding
        rule = self.dialogue.rules.get(u.intent)
        if offered is None and self.confident and (u.intent in form.stop_intents or (rule and rule.handoff)):
            self.emit(FORM, {"name": None})
            return False
        slot = self.dialogue.slots[requested]
        if offered is None and slot.from_text:
            offered = self.message.text
        checked = check_value(slot, offered)
        if not checked.ok:
            self._refuse(form, requested, [BotResponse(text=checked.reason or "", source="template",
                                                       metadata={"form": form.name, "slot": requested})])
            return True
        value = checked.value
        if form.validation_action is not None:
            accepted = await self._validate_with_action(form, requested, value)
            if not accepted:
                return True
        else:
            self.set_slot(requested, value)
            self.emit(FORM, {"name": form.name, "requested_slot": next_slot(form, self.state.slots)})
        await self._ask_or_submit(form)
        return True

    def _refuse(self, form: FormSpec, slot: str, reasons: list[BotResponse]) -> None:
        for reason in reasons:
            self.say(reason)
        self.say(BotResponse(text=render(form.ask[slot], self.state.slots), source="template",
                             metadata={"form": form.name, "slot": slot}))

    async def _validate_with_action(self, form: FormSpec, slot: str, value: Any) -> bool:
        """Run the form's rasa-sdk validation action on the candidate; apply what it returns."""
        name = form.validation_action or ""
        candidate = {"event": "slot", "timestamp": self.message.timestamp, "name": slot, "value": value}
        outcome = await self._call(name, extra_events=[candidate])
        if outcome is None:
            return False
        events, responses = outcome
        values = {e.get("name"): e.get("value") for e in events if e.get("event") == "slot"}
        if slot in values and values[slot] is None:
            default = BotResponse(text=f"Sorry, that isn't a valid {slot.replace('_', ' ')}.", source="template")
            self._refuse(form, slot, responses or [default])
            return False
        for response in responses:
            self.say(response)
        self.set_slot(slot, values.get(slot, value))
        for name_, v in values.items():
            if isinstance(name_, str) and name_ not in (slot, REQUESTED_SLOT):
                self.set_slot(name_, v)
        requested = values[REQUESTED_SLOT] if REQUESTED_SLOT in values else next_slot(form, self.state.slots)
        self.emit(FORM, {"name": form.name, "requested_slot": requested})
        return True

    # -- custom actions -------------------------------------------------------------
    async def _call(self, name: str, extra_events: Sequence[JSON] = ()) -> tuple[list[JSON], list[BotResponse]] | None:
        """Run an action; ``None`` when it failed or refused (the customer has been told)."""
        runner = self.services.actions
        try:
            if runner is None:
                raise ActionFailed(name, "this bot has no custom actions configured")
            outcome = await runner.run(name, tracker_json(self.state, self.dialogue, extra_events=extra_events))
        except ActionRejected as exc:
            log.info("custom action rejected", extra={"action": name, "error": str(exc)})
            self.fallback = True
            self.say(fallback_response(self.bot, self.message.understanding))
            return None
        except ActionFailed as exc:
            log.error("custom action failed", extra={"action": name, "error": str(exc)})
            self.failed_actions.append(name)
            self.say(BotResponse(text=ACTION_ERROR_TEXT, source="system", metadata={"action": name}))
            return None
        responses = []
        for message in outcome.responses:
            response = response_from_rasa(message, name)
            if response is None:
                log.warning("action response without text ignored", extra={"action": name})
            else:
                responses.append(response)
        return outcome.events, responses

    async def _run_action(self, name: str) -> None:
        for _ in range(_MAX_FOLLOWUPS):
            outcome = await self._call(name)
            if outcome is None:
                return
            events, responses = outcome
            for response in responses:
                self.say(response)
            followup = await self._apply_action_events(name, events)
            if followup is None:
                return
            if followup in self.dialogue.forms:
                await self._start_form(self.dialogue.forms[followup])
                return
            name = followup
        log.error("FollowupAction chain too long, stopped", extra={"action": name})

    async def _apply_action_events(self, action: str, events: list[JSON]) -> str | None:
        """Apply rasa-sdk events; return the FollowupAction's name if there is one."""
        followup: str | None = None
        for e in events:
            kind = e.get("event")
            if kind == "slot" and isinstance(e.get("name"), str):
                if e["name"] == REQUESTED_SLOT:
                    if self.state.active_form:
                        self.emit(FORM, {"name": self.state.active_form, "requested_slot": e.get("value")})
                else:
                    self.emit(SLOT, {"name": e["name"], "value": e.get("value")})
            elif kind == "reset_slots":
                for name in list(self.state.slots):
                    self.emit(SLOT, {"name": name, "value": None})
            elif kind == "followup" and isinstance(e.get("name"), str):
                followup = e["name"]
            elif kind == "pause":
                self._hand_off(None, reason=action)
            elif kind == "resume":
                self.emit(RESUME, {"by": action})
            elif kind == "restart":
                self.emit(RESTART, {})
            elif kind == "session_started":
                self.emit(SESSION_START, {})
            elif kind in ("active_loop", "form"):
                form = e.get("name")
                if form is None:
                    self.emit(FORM, {"name": None})
                elif form in self.dialogue.forms:
                    followup = form
                else:
                    log.warning("action activated an unknown form", extra={"action": action, "form": form})
            elif kind == "bot":
                response = response_from_rasa({"text": e.get("text"), **(e.get("data") or {})}, action)
                if response is not None:
                    self.say(response)
            else:
                log.info("action event not used", extra={"action": action, "event": kind})
        return followup
