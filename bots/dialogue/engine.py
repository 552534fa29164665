"""Deciding what to say: Rasa's action loop over the one internal dialogue model.

``decide`` turns one customer message into the events of its turn. It never touches the store, the
network or the model: custom actions run through an injected ``ActionRunner`` and
retrieval/generation answers through an injected ``AnswerProvider``. Replaying the stored events
with ``State.apply`` (and ``policies.Tracker.apply``) gives back exactly the state ``decide``
worked with, which is how every replica rebuilds a conversation.

One turn, as Rasa runs it:

1. a new session (``SESSION_START``; slots carried over or not, per ``session_config``) when the
   conversation was idle longer than the session expiry;
2. a paused conversation (a human has it) gets no bot reply;
3. ``action_extract_slots``: the domain's slot mappings fill slots from the message (a value that
   fails the slot's validation never fills it);
4. the policy ensemble (bots/dialogue/policies.py) predicts the next action, the engine runs it
   and records it (``ACTION``), until ``action_listen`` (at most ``MAX_PREDICTIONS`` actions).
   An active form runs first after each user message; when it cannot use the message it rejects
   it, and rules for the unhappy path (or the other policies) decide instead.

Actions: responses (``utter_*``, rendered from the domain: conditional and channel variations,
``{slot}`` interpolation, buttons, images, custom payloads; a retrieval action ``utter_<intent>`` says
``utter_<intent>/<key>`` of the key bots/dialogue/response_selector.py picks), forms, custom actions
(rasa-sdk, in process or remote) and Rasa's default actions, plus ``action_handoff`` (a human takes
over) and ``action_answer`` (the bot's answer provider: retrieval or generation).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bots.botspec import BotSpec, fill_template
from bots.dialogue.domain import (
    ACTION_ANSWER,
    ACTION_BACK,
    ACTION_DEACTIVATE_LOOP,
    ACTION_DEFAULT_ASK_AFFIRMATION,
    ACTION_DEFAULT_ASK_REPHRASE,
    ACTION_DEFAULT_FALLBACK,
    ACTION_EXTRACT_SLOTS,
    ACTION_HANDOFF,
    ACTION_LISTEN,
    ACTION_RESTART,
    ACTION_SESSION_START,
    ACTION_TWO_STAGE_FALLBACK,
    ACTION_UNLIKELY_INTENT,
    NLU_FALLBACK_INTENT,
    REQUESTED_SLOT,
    Domain,
    Form,
    ResponseVariation,
    SlotMapping,
    matching_variations,
)
from bots.dialogue.forms import check_value, label, render, shown_values
from bots.dialogue.policies import Ensemble, IntentFloor, WindowReplay
from bots.dialogue.rasa_protocol import (
    ActionFailed,
    ActionRejected,
    ActionRunner,
    response_from_rasa,
    tracker_json,
    with_dispatched,
)
from bots.dialogue.response_selector import selector_for
from bots.dialogue.spec import DECLINED_TEXT, GIVE_UP_TEXT, YES_NO_INTENTS, AnswerKind, DialogueSpec
from bots.dialogue.state import State
from bots.events import (
    ACTION,
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
    customer_text,
)
from bots.handoff import WaitingQueue, describe_wait
from bots.nlu.multi import is_question
from bots.nlu.oos import OUT_OF_SCOPE
from bots.pii import EMAIL_ADDRESS
from bots.types import JSON, BotResponse, Button, Understanding

log = logging.getLogger("switchboard.dialogue")

MAX_PREDICTIONS = 10  # actions per turn before the engine stops a loop in the stories or actions (Rasa's default)
HANDOFF_TEXT = ("Sorry, I'm having trouble understanding. I'm handing you over to a colleague from our support "
                "team; please stay in this chat.")
ACTION_ERROR_TEXT = "Sorry, something went wrong on our side. Please try again in a moment, or ask for a human."
HUMAN_TEXT = "I'll connect you with a member of our support team. Please stay in this chat."
DEFAULT_TEXT = "Sorry, I didn't get that. Can you rephrase?"   # Rasa's utter_default when the domain has none
# A chat opening (the web widget's first view of a conversation): the message the runtime stores, once per
# conversation, under this id, so that the bot's welcome is a turn of its own (bots/runtime.py, Runtime.open).
OPENING_ID = "opened"
OPENED = "opened"  # the marker in that message's USER event data (never set by a channel's own message)
# Channels whose chats open before the customer writes (the web widget starts its conversation, and is welcomed,
# when it opens); on the others the welcome comes before the answer to the conversation's first message.
OPENING_CHANNELS = frozenset({"web"})
# The reminder a bot.yml hand-off with ``agent_timeout_minutes`` sets: its firing (bots/reminders.py) is this intent.
AGENT_TIMEOUT = "handoff_agent_timeout"
AGENT_TIMEOUT_INTENT = "EXTERNAL_agent_timeout"
# A customer waiting for an agent who says one of these intents leaves the queue (the bot has the conversation
# again), unless the message sounds like a complaint (its sentiment at or below LEAVE_UNLESS_BELOW, or frustrated):
# "this is unacceptable" may read as stop, and an angry customer is not dropped from the queue.
LEAVE_INTENTS = frozenset({"stop", "goodbye"})
LEAVE_UNLESS_BELOW = -0.4  # VADER compound: "stop" -0.30, "cancel" -0.25; "this is unacceptable" -0.46
LEFT_TEXT = "OK, you've left the queue, so no agent will reply here. If you need anything else, just ask."
# An e-mail address written after the agent-timeout message (which offers an answer by e-mail): acknowledged, and
# the conversation tagged EMAIL_TAG (the review UI's filter), still waiting for an agent, who answers by e-mail.
EMAIL_RECEIVED_TEXT = "Thanks, we'll answer you by e-mail at {email}."
EMAIL_TAG = "email-reply"
# The second request of a message that asked for two (bots/nlu/multi.py), offered once the first is answered.
ALSO_TEXT = "You also asked about “{title}”: tap it when you're ready, and I'll help with that too."
YES_NO = frozenset(name for name, _ in YES_NO_INTENTS)  # a bot's affirm and deny intents
_random = random.Random()  # noqa: S311 - which response variation to say, not a secret


class AnswerProvider(Protocol):
    """Where answers come from besides templates (bots.answers.retrieval.AnswerSelector, adapted).

    ``kind`` is what the intent's rule asks for (``answer: retrieval``), or ``None`` when the bot does
    not say (the provider's own per-intent configuration decides). It is asked by ``action_answer``
    and, before the fallback, by ``action_default_fallback``. ``None`` means "nothing fits"."""

    async def answer(self, kind: AnswerKind | None, text: str, understanding: Understanding,
                     values: Mapping[str, str], *, partial: PartialSink | None = None) -> BotResponse | None:
        """With ``partial``, an answer being generated is shown as it grows: ``partial(text so far)``."""
        ...

    async def follow_up(self, text: str, previous: str, understanding: Understanding,
                        values: Mapping[str, str]) -> BotResponse | None:
        """A not-understood ``text`` read with the customer's ``previous`` message, when ``answer`` found nothing
        for it alone ("how long are they valid?" after "do you sell gift cards?"); ``None``: nothing fits."""
        ...


PartialSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Services:
    """What ``decide`` may call out to; all optional. ``partial`` shows a generated answer as it
    grows, on channels that can (the web widget); ``policies`` is the bot's policy ensemble (built from
    the dialogue spec when absent)."""

    actions: ActionRunner | None = None
    answers: AnswerProvider | None = None
    partial: PartialSink | None = None
    policies: Ensemble | None = None
    # The bot's queue of customers waiting for an agent, seen from this conversation (bots.handoff.StoreQueue):
    # what a waiting customer is told of their place. None: they are told nothing.
    queue: WaitingQueue | None = None
    # The confidence under which an intent that starts a bot.yml form is read as not understood (policies.IntentFloor):
    # the NLU's softmax floor (bots/nlu/oos.py ``OperatingPoint.softmax_floor``). None: no floor of its own.
    form_floor: float | None = None


@dataclass(frozen=True)
class Message:
    """The customer's message as the dialogue sees it."""

    text: str
    understanding: Understanding
    timestamp: float
    channel: str = ""
    # The channel's message id (the turn's, as stored): custom actions read it as Rasa gives it, in the user
    # event and ``latest_message`` (an idempotency key for what they do outside the conversation).
    message_id: str | None = None
    # The chat was opened (nothing typed): the bot says its welcome for the channel, if it has one.
    opening: bool = False
    # How the customer's text sounds (bots/nlu/sentiment.py: the score, and whether its words alone are frustrated);
    # None: not scored (a button, a reminder, or a caller that does not score).
    sentiment: float | None = None
    frustrated: bool = False


@dataclass(frozen=True)
class Decision:
    events: list[Event]
    fallback: bool = False
    handoff: bool = False
    failed_actions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # added to the conversation (its summary): EMAIL_TAG

    @property
    def responses(self) -> list[BotResponse]:
        return [BotResponse.from_dict(e.data) for e in self.events if e.kind == BOT]


def fallback_response(bot: BotSpec, understanding: Understanding, *, top_n: int = 3) -> BotResponse:
    """"Did you mean ...?" with the top intents as buttons, each showing the intent's ``title``; an intent
    with ``suggest: false`` (small talk, out of scope: "Say hello" is no answer to "wher is my oder") is
    skipped for the next one. A button carries the message's entities (``/change_order{"order_id": "55512"}``),
    so that the choice goes on with what the customer already said, as Rasa's two-stage fallback keeps the
    clarified message's entities."""
    values: dict[str, Any] = {}
    for e in understanding.entities:
        values.setdefault(e.entity, e.value)
    carried = json.dumps(values, ensure_ascii=False, separators=(",", ":")) if values else ""
    offered = [s.name for s in understanding.ranking if s.name in bot.intents and bot.intents[s.name].suggest]
    buttons = tuple(Button(title=bot.intents[name].shown, payload=f"/{name}{carried}") for name in offered[:top_n])
    return BotResponse(
        text="Sorry, I didn't understand that. Did you mean one of these?" if buttons
        else "Sorry, I didn't understand that. Could you rephrase?",
        buttons=buttons,
        source="fallback",
    )


def _floor(dialogue: DialogueSpec, threshold: float | None) -> IntentFloor | None:
    """The intents that start a bot.yml form, read as not understood under ``threshold`` (Services.form_floor)."""
    starting = frozenset(rule.intent for rule in dialogue.rules.values() if rule.form is not None)
    return IntentFloor(threshold, starting) if threshold and starting else None


_ensembles: dict[int, tuple[DialogueSpec, Ensemble]] = {}


def policies_for(dialogue: DialogueSpec) -> Ensemble:
    """The rule and memoisation policies of a dialogue spec (cached per spec; no learned model)."""
    cached = _ensembles.get(id(dialogue))
    if cached is None or cached[0] is not dialogue:
        cached = (dialogue, Ensemble.build(dialogue.domain, dialogue.stories, dialogue.policy))
        _ensembles[id(dialogue)] = cached
    return cached[1]


async def decide(bot: BotSpec, dialogue: DialogueSpec, state: State, message: Message,
                 services: Services | None = None) -> Decision:
    """The events of the turn that answers ``message``. ``state`` is the state before the message."""
    turn = _Turn(bot, dialogue, state, message, services or Services())
    await turn.run()
    return Decision(events=turn.events, fallback=turn.fallback, handoff=turn.handoff,
                    failed_actions=tuple(turn.failed_actions), tags=tuple(turn.tags))


class _Rejected(Exception):
    """An action refused to run on this turn (a form that cannot use the message)."""


@dataclass
class _Outcome:
    events: list[Event] = field(default_factory=list)
    followup: str | None = None
    failed: bool = False


class _Turn:
    """One turn being decided: a working copy of the state and the events emitted so far."""

    def __init__(self, bot: BotSpec, dialogue: DialogueSpec, state: State, message: Message,
                 services: Services) -> None:
        self.bot, self.dialogue, self.message, self.services = bot, dialogue, message, services
        self.domain: Domain = dialogue.domain
        self.policies = services.policies or policies_for(dialogue)
        self.expired = state.expired(message.timestamp, dialogue.session_expiry_s)
        self.first = not any(e.kind == USER for e in state.history)  # the conversation's first message
        self.state = state.copy()
        # The active form refused an earlier message and has not run since (Rasa's rejected loop): this message
        # answers another question (a rule's or a story's), so it fills none of the form's conditioned mappings
        # for the slot it asked, and the form, when it runs again, asks for that slot instead of validating
        # (Rasa's LoopInterrupted).
        self.interrupted = state.loop_rejected
        # The bot's override of the operating point (bots/nlu/oos.py), for a model that does not apply it itself.
        if not isinstance(state.replay, WindowReplay):
            state.replay = WindowReplay()  # the state's replay goes on from this turn's (checked on its events)
        self.tracker = state.replay.tracker(self.domain, state.history, state.history_start,
                                            bot.fallback_threshold or 0.0, _floor(dialogue, services.form_floor))
        self.events: list[Event] = []
        self.fallback = False
        self.handoff = False
        self.failed_actions: list[str] = []
        self.tags: list[str] = []
        self.refused: dict[str, str] = {}          # slot -> why this turn's value for it was refused
        self.counted: str | None = None             # the slot an interruption of this turn counts as a failed answer to
        self.form_answer: BotResponse | None = None  # the answer to a question asked inside a form (not understood)
        self.extracted: set[str] = set()            # slots this turn's message filled
        # Values for the active form's slots wait for its validation before they are set (a refused value
        # never fills a slot, not even for a moment).
        self.candidates: dict[str, Any] = {}
        self.said = False
        u = message.understanding
        # The customer's message and what the NLU understood are stored by the runtime; replay them here.
        user: JSON = {"text": message.text, "channel": message.channel}
        if message.message_id is not None:
            user["message_id"] = message.message_id
        for event in (Event(USER, user, timestamp=message.timestamp),
                      Event(NLU, u.to_dict(), timestamp=message.timestamp)):
            self.state.apply(event)
            self.tracker.apply(event)

    # -- emitting -------------------------------------------------------------------
    def emit(self, kind: str, data: JSON) -> None:
        event = Event(kind, data, timestamp=self.message.timestamp)
        self.apply(event)

    def apply(self, event: Event) -> None:
        self.state.apply(event)
        self.tracker.apply(event)
        self.events.append(event)
        if event.kind == BOT:
            self.said = True

    def say(self, response: BotResponse) -> None:
        self.emit(BOT, response.to_dict())

    @property
    def intent(self) -> str | None:
        return self.tracker.intent

    # -- the turn -------------------------------------------------------------------
    async def run(self) -> None:
        # (only read for an opening or a first message: the scan of the history is skipped on every other turn)
        welcomed = (self.message.opening or self.first) and self._welcomed()
        if self.expired:
            self.emit(SESSION_START, {"carry_over": self.domain.session.carry_over_slots_to_new_session})
        if self.message.opening:  # the chat opened: the welcome, once per conversation
            if not welcomed:
                self._welcome()
            self.emit(ACTION, {"name": ACTION_LISTEN})
            return
        if self.intent == AGENT_TIMEOUT_INTENT and not self.state.paused:
            self.emit(ACTION, {"name": ACTION_LISTEN})  # an agent ended the hand-off before its timeout
            return
        if self.state.paused:
            await self._while_waiting()  # a human has the conversation: the message is recorded
            return
        if self.first and not welcomed and self.message.channel not in OPENING_CHANNELS:
            self._welcome()  # the conversation's first message, on a channel whose chats do not open first
        await self._extract_slots()
        rejected = self.state.loop_rejected  # a form that refused an earlier message is not predicted by its loop
        excluded: set[str] = set()
        for _ in range(MAX_PREDICTIONS):
            followup = self.state.followup_action
            if followup is not None:
                name, policy, confidence = followup, "followup", 1.0
            else:
                prediction = self.policies.predict(self.tracker, loop_rejected=rejected,
                                                   latest_action=self.state.latest_action,
                                                   excluded=frozenset(excluded))
                name, policy, confidence = prediction.action, prediction.policy, prediction.confidence
            if name == ACTION_LISTEN:
                break
            try:
                outcome = await self._run_action(name)
            except _Rejected:
                rejected = True
                excluded.add(name)
                self.emit(REJECTED, {"name": name})
                if followup is not None:
                    self.emit(FOLLOWUP, {"name": None})
                continue
            excluded.clear()
            if name in self.domain.forms:
                rejected = False  # a loop that ran is no longer rejected (Rasa's set_latest_action)
            self.emit(ACTION, {"name": name, "policy": policy, "confidence": round(confidence, 4)})
            for event in outcome.events:
                self.apply(event)
            if outcome.followup is not None:
                self.emit(FOLLOWUP, {"name": outcome.followup})
            if self.state.paused:
                break
        else:
            log.error("more than %d actions in one turn: stopped (a loop in the stories or actions?)",
                      MAX_PREDICTIONS, extra={"bot": self.bot.name})
        if self.state.followup_action is not None:
            self.emit(FOLLOWUP, {"name": None})
        if self.handoff and self.state.paused:
            await self._waiting_starts()
        if not self.state.paused:  # a human has it now: the bot does not listen
            self._offer_second_request()
            self.emit(ACTION, {"name": ACTION_LISTEN})

    # -- welcome and waiting for an agent -------------------------------------------
    def _offer_second_request(self) -> None:
        """A message that asked for two things (bots/nlu/multi.py: the NLU's ``also``): the first was answered
        above; the second is offered as a button, for the customer to take up when ready (after the form the
        first one started, say). bot.yml bots only: a Rasa project's stories decide every message it says."""
        also = self.message.understanding.also
        if not also or not self.bot.two_requests or also[0].name not in self.bot.intents or also[0].name == self.intent:
            return
        intent = self.bot.intents[also[0].name]
        self.say(BotResponse(text=ALSO_TEXT.format(title=intent.shown), source="system",
                             buttons=(Button(title=intent.shown, payload=f"/{intent.name}"),),
                             metadata={"also": intent.name}))

    def _welcomed(self) -> bool:
        """Whether the conversation was welcomed: its state before this message has a welcome (the window of
        events kept reaches back to it: a conversation's first turns)."""
        return any(e.kind == BOT and (e.data.get("metadata") or {}).get("welcome") for e in self.state.history)

    def _welcome(self) -> None:
        text = self.dialogue.welcome_for(self.message.channel)
        if text is not None:
            self.say(BotResponse(text=text, source="template", metadata={"welcome": True}))

    async def _waiting_starts(self) -> None:
        """The bot has just handed off: the customer is told their place in the queue (``handoff: queued``, else
        ``waiting``), and (``agent_timeout``) a durable reminder will tell them when no agent took the conversation
        in time (bots/reminders.py: any replica fires it, after restarts too)."""
        handoff = self.dialogue.handoff
        said = handoff.queued or handoff.waiting
        if said and self.services.queue is not None:
            place = await self.services.queue.place(joining=True)
            await self._say_place(place, said)
        if handoff.agent_timeout_s is not None:
            self.emit(REMINDER, {"name": AGENT_TIMEOUT, "intent": AGENT_TIMEOUT_INTENT, "entities": None,
                                 "date_time": self.message.timestamp + handoff.agent_timeout_s,
                                 "kill_on_user_msg": False})

    async def _while_waiting(self) -> None:
        """A message while a human has the conversation. While nobody has taken it yet (the store's
        ``waiting_since``, bots/handoff.py), for a bot that tells its waiting customers anything (``handoff:
        waiting`` or ``timeout``): the agent-timeout reminder says ``timeout`` (an apology and another way to reach
        the team); a stop or goodbye (``LEAVE_INTENTS``, not a complaint) leaves the queue; an e-mail address
        written after ``timeout`` is acknowledged (``email_received``) and the conversation tagged ``EMAIL_TAG``;
        anything else is told the customer's place in the queue (``waiting``)."""
        handoff, queue = self.dialogue.handoff, self.services.queue
        timeout = self.intent == AGENT_TIMEOUT_INTENT
        if queue is None or not (handoff.timeout if timeout else handoff.waiting or handoff.timeout):
            return
        place = await queue.place()
        if place is None:
            return  # an agent has it: the agent answers
        if timeout:
            text = render(handoff.timeout, {"position": str(place)})
            self.say(BotResponse(text=text, source="template", metadata={"handoff": "timeout"}))
            return
        address = self._email_after_timeout()
        if self.intent in LEAVE_INTENTS and address is None and not self.message.frustrated and (
                self.message.sentiment is None or self.message.sentiment > LEAVE_UNLESS_BELOW):
            self._leave_queue()
        elif address is not None:
            text = render(handoff.email_received or (EMAIL_RECEIVED_TEXT,), {"email": address})
            self.say(BotResponse(text=text, source="template", metadata={"handoff": "email"}))
            self.tags.append(EMAIL_TAG)
        elif handoff.waiting:
            await self._say_place(place, handoff.waiting)

    def _email_after_timeout(self) -> str | None:
        """The e-mail address in the customer's message when the bot said its agent-timeout message (which offers
        an answer by e-mail) since it handed off; None otherwise."""
        if not self.dialogue.handoff.timeout:
            return None
        found = EMAIL_ADDRESS.search(self.message.text)
        if found is None:
            return None
        for event in reversed(self.state.history):
            if event.kind in (PAUSE, RESUME, RESTART):
                return None
            if event.kind == BOT and (event.data.get("metadata") or {}).get("handoff") == "timeout":
                return found.group()
        return None

    def _leave_queue(self) -> None:
        """The waiting customer does not want an agent any more: told so (``handoff: left``), the agent timeout
        cancelled, and the bot has the conversation again (a ``resume``: the store's wait ends, the review UI's
        queue and the hand-off gauges drop it)."""
        self.say(BotResponse(text=render(self.dialogue.handoff.left or (LEFT_TEXT,), {}), source="template",
                             metadata={"handoff": "left"}))
        if self.dialogue.handoff.agent_timeout_s is not None:
            self.emit(REMINDER_CANCELLED, {"name": AGENT_TIMEOUT, "intent": AGENT_TIMEOUT_INTENT, "entities": None})
        self.emit(RESUME, {"by": "customer"})
        self.emit(ACTION, {"name": ACTION_LISTEN})

    async def _say_place(self, place: int | None, texts: tuple[str, ...]) -> None:
        """The customer's place in the queue and, with ``handoff: estimate``, the typical wait lately, when the
        store knows one (bots/handoff.py ``StoreQueue.typical_wait``)."""
        if place is None:
            return
        text = render(texts, {"position": str(place)})
        metadata: JSON = {"handoff": "waiting", "position": place}
        estimate, queue = self.dialogue.handoff.estimate, self.services.queue
        wait = await queue.typical_wait() if estimate and queue is not None else None
        if wait is not None:
            text = f"{text} {render(estimate, {'wait': describe_wait(wait)})}"
            metadata["typical_wait_s"] = round(wait)
        self.say(BotResponse(text=text, source="template", metadata=metadata))

    # -- slots ----------------------------------------------------------------------
    def _mapping_applies(self, mapping: SlotMapping, slot: str) -> bool:
        """Rasa's ``SlotMapping.intent_is_desired`` (``Domain.intent_fills``) and mapping conditions, for a
        valid mapping (``Domain.mapping_is_valid``)."""
        if not self.domain.mapping_is_valid(mapping) \
                or not self.domain.intent_fills(mapping, self.intent, self.state.active_form):
            return False
        if mapping.conditions:
            if self.interrupted and slot == self.state.requested_slot:
                return False
            return any(c.active_loop == self.state.active_form and (
                c.requested_slot is None or c.requested_slot == self.state.requested_slot)
                for c in mapping.conditions)
        return True

    def _shared_entity_mapping(self, mapping: SlotMapping, slot: str) -> bool:
        """Rasa's unique entity mapping check (``Domain.shared_entity_mapping``) for a slot other than the
        one the active form asks for."""
        return slot != self.state.requested_slot \
            and self.domain.shared_entity_mapping(self.state.active_form, slot, mapping)

    def _mapped_value(self, mapping: SlotMapping, slot_type: str, slot: str = "") -> tuple[bool, Any]:
        u = self.message.understanding
        if mapping.type == "from_entity":
            # Rasa's from_entity: the entity's role and group equal the mapping's (an entity with a role does
            # not fill a mapping without one), the value as Rasa's entity carries it (``rasa_value``: Duckling's
            # number, the ISO time), a list slot takes them all and any other slot the last. A bot.yml slot
            # cannot name a role: it takes the first such entity whatever its role, as it always did.
            native = slot in self.dialogue.slots
            values = [e.rasa_value for e in u.entities if e.entity == mapping.entity
                      and (native or (e.role == mapping.role and e.group == mapping.group))]
            if not values:
                return False, None
            return True, values if slot_type == "list" else values[0] if native else values[-1]
        if mapping.type == "from_text":
            return (True, self.message.text) if self.message.text else (False, None)
        if mapping.type == "from_intent":
            return True, mapping.value
        return False, None

    def _candidate(self, name: str, value: Any) -> tuple[bool, Any]:
        """Check a value against the slot's validation (bot.yml's type, bounds, choices, regex)."""
        spec = self.dialogue.slots.get(name)
        if spec is None:
            return True, value
        checked = check_value(spec, value)
        if not checked.ok:
            self.refused[name] = checked.reason or ""
            return False, None
        return True, checked.value

    def _set(self, name: str, value: Any, events: list[Event] | None = None) -> None:
        self.extracted.add(name)
        self.refused.pop(name, None)
        if self.state.slots.get(name) != value:
            event = Event(SLOT, {"name": name, "value": value}, timestamp=self.message.timestamp)
            if events is None:
                self.apply(event)
            else:
                events.append(event)

    async def _extract_slots(self) -> None:
        """``action_extract_slots``: the slot mappings that apply to this message fill their slots."""
        form = self.domain.forms.get(self.state.active_form or "")
        for slot in self.domain.slots.values():
            for mapping in slot.mappings:
                if mapping.type in ("custom", "from_trigger_intent") or not self._mapping_applies(mapping, slot.name) \
                        or self._shared_entity_mapping(mapping, slot.name):
                    continue
                if mapping.type == "from_text" and form is not None and slot.name in form.required_slots \
                        and self.state.requested_slot != slot.name and not mapping.conditions:
                    continue  # a form's from_text slot takes only the answer to its own question
                found, value = self._mapped_value(mapping, slot.type, slot.name)
                if not found:
                    continue
                ok, value = self._candidate(slot.name, value)
                if ok and form is not None and slot.name in form.required_slots and self._validator(form):
                    self.extracted.add(slot.name)
                    self.refused.pop(slot.name, None)  # (an earlier mapping's refusal: "sure thing" is no plain yes,
                    self.candidates[slot.name] = value  # its affirm intent is)
                    break
                if ok:
                    self._set(slot.name, value)
                    break
        for action in dict.fromkeys(m.action for s in self.domain.slots.values() for m in s.mappings
                                    if m.type == "custom" and m.action):
            if action in self.domain.actions:
                outcome = await self._custom(action, quiet=True)
                if outcome is not None:
                    for event in outcome.events:
                        self.apply(event)
        if "action_validate_slot_mappings" in self.domain.actions and self.extracted:
            outcome = await self._custom("action_validate_slot_mappings", quiet=True)
            if outcome is not None:
                for event in outcome.events:
                    self.apply(event)

    # -- actions --------------------------------------------------------------------
    async def _run_action(self, name: str) -> _Outcome:
        if name in self.domain.forms:
            return await self._form(self.domain.forms[name])
        if name.startswith("utter_") and name in self.domain.responses:
            response = self.render(name)
            return _Outcome([self._bot_event(response)] if response is not None else [])
        if name.startswith("utter_") and name[6:] in self.dialogue.retrieval:
            return self._retrieval(name)
        default = _DEFAULTS.get(name)
        if default is not None and not self.domain.overrides(name):
            return await default(self)
        if name in (ACTION_DEFAULT_FALLBACK, ACTION_TWO_STAGE_FALLBACK):  # the project's own fallback action
            self.fallback = True
        outcome = await self._custom(name)
        return outcome if outcome is not None else _Outcome()

    def _retrieval(self, name: str) -> _Outcome:
        """Rasa's retrieval action (``utter_chitchat``): the response ``utter_chitchat/<key>`` of the key the
        response selector picks for the latest message (bots/dialogue/response_selector.py)."""
        key = selector_for(self.dialogue.retrieval).select(name[6:], self.message.text)
        response = self.render(f"{name}/{key}") if key is not None else None
        return _Outcome([self._bot_event(response)] if response is not None else [])

    def _bot_event(self, response: BotResponse) -> Event:
        return Event(BOT, response.to_dict(), timestamp=self.message.timestamp)

    def render(self, name: str, extra: Mapping[str, Any] | None = None,
               slots: Mapping[str, Any] | None = None) -> BotResponse | None:
        """A domain response: the variations that fit the slots and channel, one chosen, ``{slot}``s filled."""
        variations = self.domain.responses.get(name)
        if not variations:
            return None
        slots = self.state.slots if slots is None else slots
        pool = matching_variations(variations, slots, self.message.channel or None)
        if not pool:
            return None
        values = {**shown_values(slots), **{k: str(v) for k, v in (extra or {}).items() if v is not None}}
        fillable = [v for v in pool if v.text is None or fill_template((v.text,), values) is not None]
        if name in self.domain.ordered_responses:
            chosen = (fillable or pool)[0]
        else:
            chosen = _random.choice(fillable or pool)
        return variation_response(chosen, values, name)

    # -- default actions ------------------------------------------------------------
    async def _listen(self) -> _Outcome:
        return _Outcome()

    async def _restart(self) -> _Outcome:
        events = [Event(RESTART, {}, timestamp=self.message.timestamp)]
        response = self.render("utter_restart")
        return _Outcome(([self._bot_event(response)] if response else []) + events)

    async def _session_start(self) -> _Outcome:
        return _Outcome([Event(SESSION_START, {"carry_over": self.domain.session.carry_over_slots_to_new_session},
                               timestamp=self.message.timestamp)])

    async def _default_fallback(self) -> _Outcome:
        if self.form_answer is not None:  # a question asked inside a form, answered (``_question_answered``)
            return _Outcome([self._bot_event(self.form_answer)])
        answered = await self._answer_from_provider(None)
        if answered is None or self._acts(answered):
            answered = await self._follow_up()
        if answered is not None and not self._acts(answered):
            return _Outcome([self._bot_event(answered)])
        self.fallback = True
        if "utter_default" in self.domain.responses:  # Rasa's: say utter_default, forget the message
            response = self.render("utter_default")
            return _Outcome(([self._bot_event(response)] if response else [])
                            + [Event(REWIND, {}, timestamp=self.message.timestamp)])
        if self.state.fallbacks_in_a_row >= 1:
            return self._hand_off(BotResponse(text=HANDOFF_TEXT, source="system"), reason="fallback")
        return _Outcome([self._bot_event(fallback_response(self.bot, self.message.understanding))])

    async def _follow_up(self) -> BotResponse | None:
        """The provider's answer to this message read with the one the customer typed just before it, in this
        session, when the bot's answer to that one was not this same text (a follow-up that leans on context:
        "so how do I do that?"). Nothing when the previous message was a button, there was none, or the
        session has just expired."""
        if self.services.answers is None or self.expired or self.message.opening:
            return None
        previous: str | None = None
        said: set[str] = set()
        users = 0
        for event in reversed(self.state.history):
            if event.kind == BOT and users == 1:
                said.add(str(event.data.get("text") or ""))
            elif event.kind == USER:
                users += 1
                if users == 2:
                    previous = customer_text(event)
                    break
        if not previous:
            return None
        answered = await self.services.answers.follow_up(self.message.text, previous, self.message.understanding,
                                                         shown_values(self.state.slots))
        return None if answered is None or answered.text in said else answered

    def _acts(self, answered: BotResponse) -> bool:
        """A not-understood message's answer is the known question nearest it, and that question's intent
        is one the dialogue acts on (a form, an action, a hand-off): its template speaks for an action that
        does not run ("Sure, let's change order 55512", while no change form starts). Such an answer is
        not given; the fallback offers the intents instead, and the customer's choice runs the action."""
        intent = answered.metadata.get("intent") if answered.source == "retrieval" else None
        rule = self.dialogue.rules.get(intent) if isinstance(intent, str) else None
        return rule is not None and (rule.form is not None or rule.action is not None or rule.handoff)

    async def _two_stage_fallback(self) -> _Outcome:
        self.fallback = True
        if self.state.fallbacks_in_a_row >= 1:
            response = self.render("utter_default") or BotResponse(text=DEFAULT_TEXT, source="fallback")
            return _Outcome([self._bot_event(response), Event(REWIND, {}, timestamp=self.message.timestamp)])
        return _Outcome([self._bot_event(fallback_response(self.bot, self.message.understanding))])

    async def _ask_affirmation(self) -> _Outcome:
        return _Outcome([self._bot_event(fallback_response(self.bot, self.message.understanding))])

    async def _ask_rephrase(self) -> _Outcome:
        response = self.render("utter_ask_rephrase") or BotResponse(text=DEFAULT_TEXT, source="fallback")
        return _Outcome([self._bot_event(response)])

    async def _deactivate_loop(self) -> _Outcome:
        return _Outcome([Event(FORM, {"name": None}, timestamp=self.message.timestamp)])

    async def _back(self) -> _Outcome:
        response = self.render("utter_back")
        rewinds = [Event(REWIND, {}, timestamp=self.message.timestamp) for _ in range(2)]
        return _Outcome(([self._bot_event(response)] if response else []) + rewinds)

    async def _extract_action(self) -> _Outcome:
        await self._extract_slots()
        return _Outcome()

    async def _handoff_action(self) -> _Outcome:
        return self._hand_off(None if self.said else BotResponse(text=HUMAN_TEXT, source="system"),
                              reason=self.intent or "handoff")

    def _hand_off(self, response: BotResponse | None, *, reason: str) -> _Outcome:
        events = [self._bot_event(response)] if response is not None else []
        if self.state.active_form is not None:
            events.append(Event(FORM, {"name": None}, timestamp=self.message.timestamp))
        events.append(Event(PAUSE, {"reason": reason}, timestamp=self.message.timestamp))
        self.handoff = True
        return _Outcome(events)

    async def _answer_action(self) -> _Outcome:
        """The intent's answer: from the answer provider (retrieval, generation) if the bot has one, else its
        response (``utter_<intent>``); a response that cannot be filled is never shown with a raw {slot}."""
        intent = self.intent or ""
        rule = self.dialogue.rules.get(intent)
        kind: AnswerKind | None = rule.answer if rule is not None else None
        answered = await self._answer_from_provider(kind) if kind != "template" else None
        if answered is not None:
            return _Outcome([self._bot_event(answered)])
        name = f"utter_{intent}"
        variations = self.domain.responses.get(name, ())
        values = shown_values(self.state.slots)
        if variations and any(v.text is None or fill_template((v.text,), values) is not None for v in variations):
            response = self.render(name)
            if response is not None:
                return _Outcome([self._bot_event(response)])
        self.fallback = True
        return _Outcome([self._bot_event(fallback_response(self.bot, self.message.understanding))])

    async def _answer_from_provider(self, kind: AnswerKind | None) -> BotResponse | None:
        if self.services.answers is None:
            return None
        understanding = self.message.understanding
        if self.intent == NLU_FALLBACK_INTENT != understanding.intent:  # the dialogue's threshold or floor read it so:
            understanding = replace(understanding, intent=NLU_FALLBACK_INTENT)  # its intent is not to be trusted
        return await self.services.answers.answer(kind, self.message.text, understanding,
                                                  shown_values(self.state.slots), partial=self.services.partial)

    # -- forms ----------------------------------------------------------------------
    async def _form(self, form: Form) -> _Outcome:
        """Rasa's form loop: activate (validating what the message already filled), or take the answer to
        the slot it asked for (rejecting a message that answers nothing), validate, then ask for the next
        empty slot or deactivate (rules then run the submit)."""
        events: list[Event] = []
        at = self.message.timestamp
        activating = self.state.active_form != form.name
        # Run again after an unhappy path (a rule's utter_chitchat after the form rejected the message, or, in a
        # later turn, the customer's answer to the question of the story that handled it), the form does not look
        # at the message again: it asks for the slot it still needs (Rasa's FormAction validates only when it runs
        # right after action_listen, and not after an interruption: LoopInterrupted).
        returning = not activating and (self.state.latest_action != ACTION_LISTEN or self.interrupted)
        if activating:
            events.append(Event(FORM, {"name": form.name, "requested_slot": None}, timestamp=at))
            if form.fresh_start:
                for slot in form.required_slots:
                    if slot not in self.extracted and self.state.slots.get(slot) is not None:
                        events.append(Event(SLOT, {"name": slot, "value": None}, timestamp=at))
            for slot in form.required_slots:
                for mapping in self.domain.slots[slot].mappings if slot in self.domain.slots else ():
                    if mapping.type == "from_trigger_intent" and (not mapping.intent or self.intent in mapping.intent) \
                            and self.intent not in mapping.not_intent:
                        ok, value = self._candidate(slot, mapping.value)
                        if ok:
                            self._set(slot, value, events)
        else:
            requested = self.state.requested_slot
            candidates = [s for s in form.required_slots if s in self.extracted]
            if requested is not None and not candidates and not returning and (
                    requested not in self.refused or self._interrupts(form) or await self._question_answered(form)):
                raise _Rejected(form.name)
        if self.interrupted and not activating and self.state.latest_action == ACTION_LISTEN:
            # Run first after an interruption (Rasa's LoopInterrupted), the form does not validate: what the
            # message filled is kept as it is (the customer went on with the form: "italian please" after "Do you
            # want to continue?"), and the form asks for its next empty slot.
            for slot in form.required_slots:
                if slot in self.candidates:
                    self._set(slot, self.candidates.pop(slot), events)
        slots = {**self.state.slots, **({} if returning else self.candidates)}
        for e in events:
            if e.kind == SLOT:
                slots[e.data["name"]] = e.data["value"]
        candidates = [] if returning else [s for s in form.required_slots if s in self.extracted]
        requested_override: Any = ...
        responses: list[Event] = []
        refused_now = [] if returning else [s for s in form.required_slots
                                             if s in self.refused and s == self.state.requested_slot]
        declined = bool(refused_now) and not activating and self._declined(form)
        for slot in [] if declined else refused_now:  # "I don't know it": not told why it is no order number
            responses.append(self._bot_event(BotResponse(text=self.refused[slot], source="template",
                                                         metadata={"form": form.name, "slot": slot})))
        validator = self._validator(form)
        if validator is not None and candidates:
            slot_events = [{"event": "slot", "timestamp": at, "name": s, "value": slots.get(s)} for s in candidates]
            outcome = await self._custom(validator, extra_events=slot_events, refusing=form)
            if outcome is None or outcome.failed:  # refused outright (or broken): nothing it was given is kept
                for s in candidates:
                    slots[s] = None
                    if self.state.slots.get(s) is not None:
                        events.append(Event(SLOT, {"name": s, "value": None}, timestamp=at))
                if outcome is None:
                    responses.extend(self._bot_event(BotResponse(
                        text=f"Sorry, that isn't a valid {self._label(s)}.", source="template"))
                        for s in candidates)
                else:
                    responses.extend(outcome.events)
            else:
                for e in outcome.events:
                    if e.kind == SLOT and e.data.get("name") == REQUESTED_SLOT:
                        requested_override = e.data.get("value")
                        continue
                    if e.kind == FORM and e.data.get("name") == form.name and "requested_slot" in e.data:
                        requested_override = e.data.get("requested_slot")  # its SlotSet(requested_slot, ...)
                        continue
                    if e.kind == FORM and e.data.get("name") is None:  # ActiveLoop(None): as requested_slot None,
                        requested_override = None  # the validation ends the form (Rasa's LoopAction.is_done)
                        continue
                    if e.kind == SLOT:
                        slots[e.data["name"]] = e.data.get("value")
                        if self.state.slots.get(e.data["name"]) == e.data.get("value"):
                            continue  # no change (a refused candidate that was never set)
                    if e.kind == BOT:
                        responses.append(e)
                    else:
                        events.append(e)
                for s in candidates:  # the values it accepted (and did not set itself) are set now
                    if s in self.candidates and slots.get(s) is not None and not any(
                            e.kind == SLOT and e.data.get("name") == s for e in outcome.events):
                        events.append(Event(SLOT, {"name": s, "value": slots[s]}, timestamp=at))
                rejected_slots = [s for s in candidates if slots.get(s) is None]
                if rejected_slots and not any(e.kind == BOT for e in outcome.events):
                    for s in rejected_slots:
                        responses.append(self._bot_event(BotResponse(
                            text=f"Sorry, that isn't a valid {self._label(s)}.", source="template")))
        events.extend(responses)
        if requested_override is not ...:
            next_slot = requested_override if isinstance(requested_override, str) else None
        else:
            next_slot = next((s for s in form.required_slots if slots.get(s) is None), None)
        if next_slot is None:
            events.append(Event(FORM, {"name": None}, timestamp=at))
            if form.name in self.dialogue.forms and any(slots.get(s) is None for s in form.required_slots):
                # a bot.yml form its validation ended before its slots were filled: not submitted (its ``submit``
                # is what the form does with all of them); a Rasa form's rules decide, as in Rasa
                return _Outcome(events, followup=ACTION_LISTEN)
            return _Outcome(events)
        attempt = 1
        if not activating and next_slot == self.state.requested_slot:
            asked = self._attempts(form, next_slot)
            wrong = (not returning and (next_slot in self.refused or next_slot in candidates)) \
                or next_slot == self.counted  # (an off-topic message answered, then this question again)
            limit = self._max_attempts(form, next_slot)
            if declined or (wrong and limit is not None and asked >= limit):
                events.append(self._give_up(form, next_slot, slots, declined=declined))
                events.append(Event(FORM, {"name": None}, timestamp=at))
                return _Outcome(events, followup=ACTION_LISTEN)  # ended, not submitted: no submit rule runs
            attempt = asked + 1 if wrong else asked
        ask = await self._ask(form, next_slot, slots, attempt)
        if activating:  # the FORM event below activates it and names the slot asked for: one event, not two
            events = [e for e in events if not (e.kind == FORM and e.data.get("name") == form.name)]
        events.extend(ask)
        events.append(Event(FORM, {"name": form.name, "requested_slot": next_slot}, timestamp=at))
        return _Outcome(events)

    def _interrupts(self, form: Form) -> bool:
        """bot.yml forms: a refused answer whose message the NLU understood (above the bot's threshold) as another of
        the bot's intents, not one that starts this form, is a question of its own: the form lets the rules answer
        it, then asks again (an off-topic question is never "an invalid order number").

        Not an intent that answers a question (a slot's ``from_intent``, the bot's affirm and deny): "hmm" read as
        affirm when an order number was asked is a failed answer, not small talk ("Great! What else can I do for
        you?" followed by the question again). A message read as ``out_of_scope`` (the NLU is sure: an unsure one is not
        understood, bots/nlu/oos.py) is answered, then the question asked again, but counted as a failed answer
        towards ``max_attempts`` (``self.counted``; else "A-12", were it read so, would be told "I can't help with
        that" and asked again forever); once they are spent it is the failed answer that ends the form."""
        intent = self.intent
        if form.name not in self.dialogue.forms or intent is None or intent not in self.bot.intents:
            return False
        if intent in YES_NO or any(intent == name for slot in self.dialogue.slots.values()
                                   for name, _ in slot.from_intent):
            return False  # an answer (to the form's question, the only one asked), never small talk
        if any(rule.form == form.name for rule in self.dialogue.rules.values() if rule.intent == intent):
            return False
        requested = self.state.requested_slot
        if intent == OUT_OF_SCOPE and requested is not None:
            limit = self._max_attempts(form, requested)
            if limit is not None and self._attempts(form, requested) >= limit:
                return False
            self.counted = requested
        return True

    def _declined(self, form: Form) -> bool:
        """bot.yml forms: the customer said no to the question asked ("I don't know it", "no", read as the bot's
        deny intent) when its slot does not take a yes or no (its ``from_intent``): they cannot answer it, and
        asking again would not help, so the form ends at once with its way on (``_give_up``, ``declined``)."""
        requested = self.state.requested_slot
        if form.name not in self.dialogue.forms or requested is None:
            return False
        if self.intent not in {name for name, value in YES_NO_INTENTS if value is False}:
            return False
        slot = self.dialogue.slots.get(requested)
        return not (slot is not None and any(name == self.intent for name, _ in slot.from_intent))

    async def _question_answered(self, form: Form) -> bool:
        """bot.yml forms: a refused answer that the NLU did not understand and that reads as a question ("can I pay
        with apple pay?" when an order number was asked) is put to the bot's answer provider; when it answers (a
        known question or the knowledge base, as outside a form), the answer is said and the question asked
        again, counted as a failed answer towards ``max_attempts`` as an out-of-scope one is (``_interrupts``).
        Anything else stays a failed answer, told the slot's reason ("Order numbers contain digits only…")."""
        requested = self.state.requested_slot
        if (form.name not in self.dialogue.forms or requested is None or self.intent != NLU_FALLBACK_INTENT
                or not is_question(self.message.text)):
            return False
        limit = self._max_attempts(form, requested)
        if limit is not None and self._attempts(form, requested) >= limit:
            return False
        answered = await self._answer_from_provider(None)
        if answered is None or self._acts(answered):
            return False
        self.form_answer = answered
        self.counted = requested
        return True

    def _max_attempts(self, form: Form, slot: str) -> int | None:
        """Invalid answers to ``slot`` before the form gives up (bot.yml: the slot's ``max_attempts``, else the
        form's, default 2); None for a Rasa form, which asks until answered, as Rasa does."""
        spec = self.dialogue.forms.get(form.name)
        if spec is None:
            return None
        slot_spec = self.dialogue.slots.get(slot)
        return slot_spec.max_attempts if slot_spec is not None and slot_spec.max_attempts else spec.max_attempts

    def _attempts(self, form: Form, slot: str) -> int:
        """How many times the form has asked for ``slot`` in a row: the ``attempt`` of its latest question
        (bots/dialogue/engine.py ``_ask`` writes it into the question's metadata)."""
        for event in reversed(self.state.history):
            meta = event.data.get("metadata") if event.kind == BOT else None
            if isinstance(meta, dict) and meta.get("form") == form.name and "attempt" in meta:
                attempt = meta.get("attempt")
                return attempt if meta.get("slot") == slot and isinstance(attempt, int) else 1
        return 1

    def _give_up(self, form: Form, slot: str, slots: Mapping[str, Any], *, declined: bool = False) -> Event:
        """After ``max_attempts`` invalid answers the form ends and the customer is offered a way on instead of
        the same question again: the form's ``give_up`` text, with buttons to start again (the intent that starts
        the form) and to talk to a person (the bot's hand-off intent), each showing the intent's title.
        ``declined``: the customer said they cannot answer (``_declined``): the form's ``declined`` text, at once."""
        spec = self.dialogue.forms[form.name]
        values = {**shown_values(slots), "slot": self._label(slot)}
        starts = [r.intent for r in self.dialogue.rules.values() if r.form == form.name]
        human = [r.intent for r in self.dialogue.rules.values() if r.handoff]
        buttons = tuple(Button(title=self.bot.intents[name].shown, payload=f"/{name}") for name in (*starts[:1],
                                                                                                     *human[:1]))
        own, default = (spec.declined, DECLINED_TEXT) if declined else (spec.give_up, GIVE_UP_TEXT)
        text = render(own, values) if own else render((default,), values) + (
            (" You can start again when you have it" if declined else " You can start again")
            + (", or talk to a person from our team." if human else ".") if buttons else "")
        response = BotResponse(text=text, buttons=buttons, source="template",
                               metadata={"form": form.name, "slot": slot, "gave_up": True,
                                         **({"declined": True} if declined else {})})
        log.info("form gave up after invalid answers", extra={"bot": self.bot.name, "form": form.name, "slot": slot})
        return self._bot_event(response)

    def _label(self, slot: str) -> str:
        """How the customer is told which answer is meant: the bot.yml slot's ``label``, else its name in words."""
        spec = self.dialogue.slots.get(slot)
        return label(spec) if spec is not None else slot.replace("_", " ")

    def _validator(self, form: Form) -> str | None:
        if form.validation_action is not None:
            return form.validation_action
        name = f"validate_{form.name}"
        return name if name in self.domain.actions else None

    async def _ask(self, form: Form, slot: str, slots: Mapping[str, Any], attempt: int = 1) -> list[Event]:
        counted = {"attempt": attempt} if form.name in self.dialogue.forms else {}  # bot.yml forms count them
        for name in (f"utter_ask_{form.name}_{slot}", f"utter_ask_{slot}"):
            if name in self.domain.responses:
                response = self.render(name, slots={k: v for k, v in slots.items() if v is not None})
                if response is not None:
                    response = replace(response, metadata={**response.metadata, "form": form.name, "slot": slot,
                                                           **counted})
                    return [self._bot_event(response)]
        action = f"action_ask_{form.name}_{slot}" if f"action_ask_{form.name}_{slot}" in self.domain.actions \
            else f"action_ask_{slot}"
        if action in self.domain.actions:
            outcome = await self._custom(action)
            return outcome.events if outcome is not None else []
        return [self._bot_event(BotResponse(text=f"What is the {self._label(slot)}?", source="template",
                                            metadata={"form": form.name, "slot": slot, **counted}))]

    # -- custom actions -------------------------------------------------------------
    async def _custom(self, name: str, extra_events: Sequence[JSON] = (), refusing: Form | None = None,
                      quiet: bool = False) -> _Outcome | None:
        """Run a rasa-sdk action; ``None`` when it failed or refused (the customer has been told, unless
        ``quiet``). A validation action (``refusing``) that refuses to run refuses the answer."""
        runner = self.services.actions
        try:
            if runner is None:
                raise ActionFailed(name, "this bot has no custom actions configured")
            result = await runner.run(name, tracker_json(self.state, self.dialogue, extra_events=extra_events))
        except ActionRejected as exc:
            log.info("custom action rejected", extra={"action": name, "error": str(exc)})
            if refusing is not None or quiet:
                return None
            raise _Rejected(name) from None
        except ActionFailed as exc:
            log.error("custom action failed", extra={"action": name, "error": str(exc)})
            self.failed_actions.append(name)
            if quiet:
                return None
            error = BotResponse(text=ACTION_ERROR_TEXT, source="system", metadata={"action": name})
            return _Outcome([self._bot_event(error)], failed=True)
        outcome = _Outcome()
        for message in result.responses:
            response = self._dispatched(message, name)
            if response is not None:
                outcome.events.append(self._bot_event(response))
        outcome.followup = self._convert_events(name, result.events, outcome.events)
        return outcome

    def _dispatched(self, message: JSON, action: str) -> BotResponse | None:
        """A dispatcher message: ``response=`` rendered from the domain with its kwargs and the slots, or its own
        text, buttons, image, attachment and custom payload."""
        template = message.get("response") or message.get("template")
        if isinstance(template, str) and template:
            kwargs = {k: v for k, v in message.items() if k not in ("response", "template", "text", "buttons",
                                                                     "image", "attachment", "elements", "custom",
                                                                     "quick_replies", "json_message")}
            kwargs.update(message.get("kwargs") or {} if isinstance(message.get("kwargs"), dict) else {})
            rendered = self.render(template, kwargs)
            if rendered is None:
                log.warning("action uttered an unknown response", extra={"action": action, "response": template})
                return None
            return with_dispatched(rendered, message, action)  # the call's own text, image, ... laid over it
        response = response_from_rasa(message, action)
        if response is None:
            log.warning("action message without content ignored", extra={"action": action})
        return response

    def _convert_events(self, action: str, events: list[JSON], out: list[Event]) -> str | None:
        """rasa-sdk events as Switchboard events (appended to ``out``); the FollowupAction's name if any."""
        followup: str | None = None
        at = self.message.timestamp
        for e in events:
            kind = e.get("event")
            if kind == "slot" and isinstance(e.get("name"), str):
                if e["name"] == REQUESTED_SLOT and self.state.active_form:
                    out.append(Event(FORM, {"name": self.state.active_form, "requested_slot": e.get("value")},
                                     timestamp=at))
                elif e["name"] == REQUESTED_SLOT:
                    out.append(Event(SLOT, {"name": REQUESTED_SLOT, "value": e.get("value")}, timestamp=at))
                else:
                    self.extracted.add(e["name"])
                    out.append(Event(SLOT, {"name": e["name"], "value": e.get("value")}, timestamp=at))
            elif kind == "reset_slots":
                for name in list(self.state.slots):
                    out.append(Event(SLOT, {"name": name, "value": None}, timestamp=at))
            elif kind == "followup" and isinstance(e.get("name"), str):
                followup = e["name"]
            elif kind == "pause":
                out.extend(self._hand_off(None, reason=action).events)
            elif kind == "resume":
                out.append(Event(RESUME, {"by": action}, timestamp=at))
            elif kind == "restart":
                out.append(Event(RESTART, {}, timestamp=at))
            elif kind == "session_started":
                out.append(Event(SESSION_START, {"carry_over": True}, timestamp=at))
            elif kind in ("active_loop", "form"):
                form = e.get("name")
                if form is None:
                    out.append(Event(FORM, {"name": None}, timestamp=at))
                elif form in self.domain.forms:
                    followup = form
                else:
                    log.warning("action activated an unknown form", extra={"action": action, "form": form})
            elif kind == "bot":
                response = self._dispatched({"text": e.get("text"), **(e.get("data") or {})}, action)
                if response is not None:
                    out.append(self._bot_event(response))
            elif kind == "rewind":
                out.append(Event(REWIND, {}, timestamp=at))
            elif kind == "undo":
                out.append(Event(UNDO, {}, timestamp=at))
            elif kind == "reminder":
                out.append(Event(REMINDER, {k: e.get(k) for k in ("name", "intent", "entities", "date_time",
                                                                   "kill_on_user_msg")}, timestamp=at))
            elif kind == "cancel_reminder":
                out.append(Event(REMINDER_CANCELLED, {k: e.get(k) for k in ("name", "intent", "entities")},
                                 timestamp=at))
            elif kind in ("action", "user", "action_execution_rejected", "agent", "export", "entities",
                          "user_featurization", "loop_interrupted", "stack"):
                log.info("action event noted, not applied", extra={"action": action, "event": kind})
            else:
                log.warning("unknown action event ignored", extra={"action": action, "event": kind})
        return followup


def variation_response(v: ResponseVariation, values: Mapping[str, str], name: str) -> BotResponse:
    """A chosen response variation as a reply: text with ``{slot}`` filled (never a raw placeholder), buttons
    (payload or URL), image, attachment and custom payload, each channel renders them (docs/channels.md)."""
    text = render((v.text,), values) if v.text else ""
    buttons = tuple(Button(title=render((b.title,), values), payload=render((b.payload,), values) if b.payload
                           else b.payload, url=b.url) for b in v.buttons)  # a payload is filled as Rasa fills it
    metadata: dict[str, Any] = {"response": name}
    if v.metadata:
        metadata["response_metadata"] = dict(v.metadata)
    return BotResponse(text=text, buttons=buttons, source="template", metadata=metadata, image=v.image or None,
                       attachment=v.attachment or None, custom=dict(v.custom) if v.custom is not None else None)


_DEFAULTS: dict[str, Callable[[_Turn], Awaitable[_Outcome]]] = {
    ACTION_LISTEN: _Turn._listen,
    ACTION_RESTART: _Turn._restart,
    ACTION_SESSION_START: _Turn._session_start,
    ACTION_DEFAULT_FALLBACK: _Turn._default_fallback,
    ACTION_TWO_STAGE_FALLBACK: _Turn._two_stage_fallback,
    ACTION_DEFAULT_ASK_AFFIRMATION: _Turn._ask_affirmation,
    ACTION_DEFAULT_ASK_REPHRASE: _Turn._ask_rephrase,
    ACTION_DEACTIVATE_LOOP: _Turn._deactivate_loop,
    ACTION_BACK: _Turn._back,
    ACTION_EXTRACT_SLOTS: _Turn._extract_action,
    ACTION_UNLIKELY_INTENT: _Turn._listen,
    ACTION_HANDOFF: _Turn._handoff_action,
    ACTION_ANSWER: _Turn._answer_action,
}
