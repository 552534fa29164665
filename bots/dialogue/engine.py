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

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bots.botspec import BotSpec, Intent, fill_template
from bots.dialogue.forms import check_value, next_slot, render, shown_values
from bots.dialogue.rasa_protocol import (
    REQUESTED_SLOT,
    ActionFailed,
    ActionRejected,
    ActionRunner,
    response_from_rasa,
    tracker_json,
)
from bots.dialogue.spec import AnswerKind, DialogueSpec, FormSpec
from bots.dialogue.state import State
from bots.events import BOT, FORM, NLU, PAUSE, RESTART, RESUME, SESSION_START, SLOT, USER, Event
from bots.types import JSON, BotResponse, Button, Understanding

log = logging.getLogger("switchboard.dialogue")

_MAX_FOLLOWUPS = 5  # FollowupAction chains longer than this are cut (a loop in the actions)
HANDOFF_TEXT = ("Sorry, I'm having trouble understanding. I'm handing you over to a colleague from our support "
                "team; please stay in this chat.")
ACTION_ERROR_TEXT = "Sorry, something went wrong on our side. Please try again in a moment, or ask for a human."
FORM_DONE_TEXT = "Thank you, that's everything I need."
HUMAN_TEXT = "I'll connect you with a member of our support team. Please stay in this chat."


class AnswerProvider(Protocol):
    """Where answers come from besides templates (bots.answers.retrieval.AnswerSelector, adapted).

    ``kind`` is what the intent's rule asks for (``answer: retrieval``), or ``None`` when bot.yml's
    rules do not say (the provider's own per-intent configuration decides). It is asked for every
    confident intent that no rule gives a response, action or form, and for uncertain messages before
    the fallback. ``None`` means "nothing fits": the intent's template (or the fallback) is used."""

    async def answer(self, kind: AnswerKind | None, text: str, understanding: Understanding,
                     values: Mapping[str, str], *, partial: PartialSink | None = None) -> BotResponse | None:
        """With ``partial``, an answer being generated is shown as it grows: ``partial(text so far)``."""
        ...


PartialSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Services:
    """What ``decide`` may call out to; all optional. ``partial`` shows a generated answer as it
    grows, on channels that can (the web widget)."""

    actions: ActionRunner | None = None
    answers: AnswerProvider | None = None
    partial: PartialSink | None = None


@dataclass(frozen=True)
class Message:
    """The customer's message as the dialogue sees it."""

    text: str
    understanding: Understanding
    timestamp: float
    channel: str = ""


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
        self.state.apply(Event(USER, {"text": message.text, "channel": message.channel}, timestamp=message.timestamp))
        self.state.apply(Event(NLU, u.to_dict(), timestamp=message.timestamp))
        self.events: list[Event] = []
        self.fallback = False
        self.handoff = False
        self.failed_actions: list[str] = []
        self.filled: set[str] = set()  # slots this turn gave a value

    # -- emitting -------------------------------------------------------------------
    def emit(self, kind: str, data: JSON) -> None:
        event = Event(kind, data, timestamp=self.message.timestamp)
        self.state.apply(event)
        self.events.append(event)

    def say(self, response: BotResponse) -> None:
        self.emit(BOT, response.to_dict())

    def set_slot(self, name: str, value: Any) -> None:
        self.filled.add(name)
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
            if await self._answer_from_provider(None):
                return
            self.fallback = True
            if self.state.fallbacks_in_a_row >= 1:
                self._hand_off(BotResponse(text=HANDOFF_TEXT, source="system"), reason="fallback")
            else:
                self.say(fallback_response(self.bot, u))
            return
        rule = self.dialogue.rules.get(intent.name)
        if rule is None:
            await self._answer(intent, None)
            return
        if rule.form is not None:
            await self._start_form(self.dialogue.forms[rule.form])
        elif rule.action is not None:
            await self._run_action(rule.action)
        elif rule.response:
            self.say(BotResponse(text=render(rule.response, self.state.slots), source="template",
                                 metadata={"intent": intent.name}))
        elif intent.responses or rule.answer != "template" or not rule.handoff:
            await self._answer(intent, rule.answer)
        if rule.handoff and not self.state.paused:
            said = any(e.kind == BOT for e in self.events)
            self._hand_off(None if said else BotResponse(text=HUMAN_TEXT, source="system"), reason=intent.name)

    async def _answer_from_provider(self, kind: AnswerKind | None) -> bool:
        if self.services.answers is None:
            return False
        response = await self.services.answers.answer(kind, self.message.text, self.message.understanding,
                                                      shown_values(self.state.slots), partial=self.services.partial)
        if response is not None:
            self.say(response)
        return response is not None

    async def _answer(self, intent: Intent, kind: AnswerKind | None) -> None:
        """The intent's answer: from the answer provider if there is one (the hook for retrieval and
        generation), else its template response filled with the slots."""
        if kind != "template" and await self._answer_from_provider(kind):
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
        """A form starts fresh: its slots keep only the values this message gave."""
        for name in form.required_slots:
            if name not in self.filled:
                self.set_slot(name, None)
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
        outcome = await self._call(name, extra_events=[candidate], refusing=(form, slot))
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
    async def _call(self, name: str, extra_events: Sequence[JSON] = (), refusing: tuple[FormSpec, str] | None = None,
                    ) -> tuple[list[JSON], list[BotResponse]] | None:
        """Run an action; ``None`` when it failed or refused (the customer has been told). A validation
        action (``refusing`` = its form and slot) that refuses to run refuses the answer."""
        runner = self.services.actions
        try:
            if runner is None:
                raise ActionFailed(name, "this bot has no custom actions configured")
            outcome = await runner.run(name, tracker_json(self.state, self.dialogue, extra_events=extra_events))
        except ActionRejected as exc:
            log.info("custom action rejected", extra={"action": name, "error": str(exc)})
            if refusing is not None:
                form, slot = refusing
                self._refuse(form, slot, [BotResponse(text=f"Sorry, that isn't a valid {slot.replace('_', ' ')}.",
                                                      source="template")])
                return None
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
            if followup is None or followup == "action_listen":
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
                    self.filled.add(e["name"])
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
