"""Hand-off: whether a human or the bot has a conversation, and what agents do about it.

**The one rule for "is this conversation paused"** (a human has it; the bot records the
customer's messages and stays silent): the last ``pause``, ``resume`` or ``restart`` event
decides (``PAUSES``); ``session_start`` changes nothing, so a conversation handed off stays with
the human across sessions. When the turns read do not reach back to any of those events (the
runtime and the live view read only the last turns), the summary's ``handoff`` flag tells: every
write that pauses or resumes sets it in the same write (``bot_turn`` for the bot's turns, the agent
actions below for theirs). The dialogue state (bots.dialogue.state), the runtime, the review UI and
API and the web history all use this rule; before it there were two copies, and after a
``session_start`` in a window without the pause they disagreed (the review UI said "the bot is
answering" while the bot stayed silent).

**Agents** (the review UI's routes only translate to these): ``take_over`` (pauses, unless paused
already), ``reply`` (stored first, pausing too, then sent through the customer's own channel) and
``hand_back`` (resumes). Each sets the summary's ``handoff`` flag in the same write.

**Waiting for an agent**: the bot's hand-off sets the summary's ``waiting_since`` to the time of
the customer message that made the bot hand off; an agent taking over, replying or handing back,
or the bot resuming, clears it. ``HandoffGauges`` reads those from the store, which every replica
shares, so each replica exports the same ``switchboard_handoff_queue`` and
``switchboard_handoff_oldest_seconds`` per bot (labelled by bot only) and the alert's
``max by (bot)`` over replicas is the true value, whichever replica handed off or took over.
A waiting customer who writes again is told their place in that queue (``StoreQueue``, asked by
the dialogue engine for bots with ``handoff: waiting``).

Failures are ``SwitchboardError`` subclasses, mapped to HTTP status codes by connectors/app.py:
``ConversationNotFound`` (404), ``InvalidChange`` (422), ``NotDelivered`` (502).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bots.errors import Conflict, InvalidChange, NotDelivered
from bots.events import ACTION, AGENT, ASSIGN, BOT, CSAT, PAUSE, RESTART, RESUME, Event
from bots.metrics import Metrics
from bots.store.analytics import Analytics, AnalyticsQuery
from bots.store.base import (
    Conversation,
    ConversationStore,
    ConversationSummary,
    Page,
    SummaryUpdate,
    TranscriptQuery,
    Turn,
    Waiting,
    load_existing,
)
from bots.types import BotResponse, Button, ConversationRef

if TYPE_CHECKING:
    from bots.dialogue.spec import SatisfactionSpec

log = logging.getLogger("switchboard.handoff")

# The events that change who has the conversation, and what they change it to (paused or not).
PAUSES: Mapping[str, bool] = {PAUSE: True, RESUME: False, RESTART: False}
MAX_REPLY_CHARS = 4000
ANALYTICS_WINDOW_S = 86_400.0  # the analytics gauges cover the conversations started in the last day
GAUGE_REFRESH_S = 10.0  # how often each replica re-reads the waiting customers (and at every scrape)


def paused_after(events: Iterable[Event], paused: bool) -> bool:
    """Whether the conversation is paused after ``events``, given whether it was before them."""
    for event in events:
        paused = PAUSES.get(event.kind, paused)
    return paused


def is_paused(conversation: Conversation) -> bool:
    """True while a human has the conversation: the last pausing event among the turns read, or,
    when they contain none, the summary's ``handoff`` flag."""
    return paused_after(conversation.events, conversation.summary.handoff)


def bot_turn(events: Sequence[Event], received_at: float) -> SummaryUpdate:
    """What a bot turn of ``events`` changes in the summary about who has the conversation: a
    hand-off sets ``handoff`` and starts the customer's wait at ``received_at`` (their message);
    a resume or restart (a custom action's) clears both; anything else changes nothing."""
    if not any(e.kind in PAUSES for e in events):
        return SummaryUpdate()
    if paused_after(events, False):
        return SummaryUpdate(handoff=True, waiting_since=received_at)
    return SummaryUpdate(handoff=False, waiting_over=True)


# -- the queue a waiting customer is told about --------------------------------------------
class WaitingQueue(Protocol):
    """A bot's customers waiting for an agent, seen from one conversation (what the dialogue engine tells the
    customer: bots/dialogue/engine.py, bot.yml ``handoff: waiting``)."""

    async def place(self, *, joining: bool = False) -> int | None:
        """The conversation's place in the queue (1: next), or None when it does not wait (an agent has it).
        ``joining``: it is being handed off now (its wait is stored with this turn): it joins at the end."""
        ...

    async def typical_wait(self) -> float | None:
        """Seconds a customer of this bot has typically waited lately for an agent's first reply (the median
        over the conversations of the last day that got one); None with fewer than ``MIN_WAITS`` of them."""
        ...


MIN_WAITS = 3  # agent replies of the last day under which no typical wait is told (one slow reply is no figure)
WAIT_REFRESH_S = 60.0  # how long a bot's typical wait is reused before the store is asked again
# store -> bot -> (read at, seconds): one figure per store the process serves, gone with the store
_typical_waits: weakref.WeakKeyDictionary[ConversationStore, dict[str, tuple[float, float | None]]] = (
    weakref.WeakKeyDictionary())


def describe_wait(seconds: float) -> str:
    """A wait as a customer reads it: "under a minute", "about 4 minutes", "about 2 hours"."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(seconds / 3600)
    return f"about {hours} hour{'s' if hours != 1 else ''}"


class StoreQueue:
    """``WaitingQueue`` read from the store every replica shares: the conversations of the bot whose
    ``waiting_since`` is set, in the order they started waiting (the review UI's queue, the gauges' count)."""

    def __init__(self, store: ConversationStore, bot: str, conversation_id: str) -> None:
        self._store, self._bot, self._conversation_id = store, bot, conversation_id

    async def place(self, *, joining: bool = False) -> int | None:
        if joining:
            return (await self._store.waiting(self._bot)).count + 1
        summary = await self._store.summary(self._bot, self._conversation_id)
        if summary is None or summary.waiting_since is None:
            return None
        return max(1, (await self._store.waiting(self._bot, until=summary.waiting_since)).count)

    async def typical_wait(self) -> float | None:
        """The review UI's "time to first agent reply" (p50, bots/store/analytics.py) over the bot's
        conversations started in the last ``ANALYTICS_WINDOW_S``, read at most every ``WAIT_REFRESH_S`` per
        bot and store (a waiting customer's every message would otherwise aggregate a day of conversations)."""
        now, per_bot = time.time(), _typical_waits.setdefault(self._store, {})
        cached = per_bot.get(self._bot)
        if cached is not None and now - cached[0] < WAIT_REFRESH_S:
            return cached[1]
        figures = (await self._store.analytics(AnalyticsQuery(bot=self._bot, since=now - ANALYTICS_WINDOW_S))).total
        wait = figures.reply_p50_s if figures.agent_replied >= MIN_WAITS else None
        per_bot[self._bot] = (now, wait)
        return wait


# -- what agents do -----------------------------------------------------------------------
class Outbox(Protocol):
    """A channel that can push messages into a conversation outside a request (connectors.base.Channel)."""

    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None: ...


async def take_over(store: ConversationStore, bot: str, conversation_id: str, agent: str) -> None:
    """The agent has the conversation: they claim it (``Conflict`` when another agent has), then a
    ``pause`` event (unless paused already); nobody waits any more."""
    await claim(store, bot, conversation_id, agent)
    conversation = await load_existing(store, bot, conversation_id)
    update = SummaryUpdate(handoff=True, waiting_over=True)
    if is_paused(conversation):
        await store.update_summary(bot, conversation_id, update)
    else:
        await store.append(bot, conversation_id, [Event(PAUSE, {"by": agent})], update)


async def reply(store: ConversationStore, bot: str, conversation_id: str, agent: str, text: str,
                channels: Mapping[str, Outbox]) -> Turn:
    """Store the agent's message (pausing the bot if it had the conversation), then send it through
    the channel the conversation came from. ``NotDelivered`` when that fails: the reply stays in the
    transcript (a widget that reconnects shows it) and the agent is told it did not reach the customer."""
    text = text.strip()
    if not text:
        raise InvalidChange("text is empty: type the reply to send")
    if len(text) > MAX_REPLY_CHARS:
        raise InvalidChange(f"text: at most {MAX_REPLY_CHARS} characters, got {len(text)}")
    await claim(store, bot, conversation_id, agent)
    conversation = await load_existing(store, bot, conversation_id)
    response = BotResponse(text=text, source="human", metadata={"agent": agent})
    events = [] if is_paused(conversation) else [Event(PAUSE, {"by": agent})]
    events.append(Event(AGENT, response.to_dict()))
    turn = await store.append(bot, conversation_id, events, SummaryUpdate(handoff=True, waiting_over=True,
                                                                           agent_replied=True))
    problem = await _deliver(conversation, channels, [response])
    if problem is not None:
        raise NotDelivered(f"the reply is saved in the transcript but did not reach the customer: {problem}")
    return turn


async def _deliver(conversation: Conversation, channels: Mapping[str, Outbox],
                   responses: list[BotResponse]) -> str | None:
    """Send into the customer's channel; the reason when it could not be delivered."""
    summary = conversation.summary
    channel = channels.get(summary.channel)
    if channel is None:
        return f"the {summary.channel!r} channel is not served here"
    ref = ConversationRef(summary.bot, summary.channel, summary.conversation_id, address=dict(summary.address))
    try:
        await channel.send(ref, responses)
    except Exception as exc:  # noqa: BLE001 - any channel failure is reported to the agent
        log.warning("agent reply not delivered", extra={"bot": summary.bot, "channel": summary.channel,
                                                         "error": str(exc)})
        return f"{summary.channel} refused the message: {exc}"
    return None


async def hand_back(store: ConversationStore, bot: str, conversation_id: str, agent: str, *,
                    satisfaction: SatisfactionSpec | None = None, channels: Mapping[str, Outbox] | None = None) -> None:
    """The bot has the conversation again: a ``resume`` event (if paused); nobody waits for an agent,
    and nobody is assigned any more. With ``satisfaction`` (bot.yml ``handoff: satisfaction``, unless
    ``ask_after_agent: false``), a customer who has been neither asked nor rated yet is asked to, in their
    channel (a failed delivery is logged: the hand back stands)."""
    conversation = await load_existing(store, bot, conversation_id)
    update = SummaryUpdate(handoff=False, waiting_over=True)
    if is_paused(conversation):
        await store.append(bot, conversation_id, [Event(RESUME, {"by": agent})], update)
    else:
        await store.update_summary(bot, conversation_id, update)
    if conversation.summary.assignee is not None:
        await store.assign(bot, conversation_id, None, expected=conversation.summary.assignee)
    summary = conversation.summary
    if satisfaction is not None and satisfaction.ask_after_agent and summary.csat is None \
            and summary.csat_asked_at is None:
        question = satisfaction_question(satisfaction)
        await store.append(bot, conversation_id, [Event(BOT, question.to_dict())], SummaryUpdate(csat_asked=True))
        await _deliver(conversation, channels or {}, [question])


# -- customer satisfaction: asked at the end, answered with a button ----------------------
CSAT_PAYLOAD = "/_csat"  # + {"score": N}: never one of a bot's intents (they cannot start with '_')
_THUMBS = (("\N{THUMBS UP SIGN}", 5), ("\N{THUMBS DOWN SIGN}", 1))


def satisfaction_question(spec: SatisfactionSpec) -> BotResponse:
    """The question with a button per answer (web buttons, Slack buttons, Telegram's inline keyboard)."""
    answers = _THUMBS if spec.scale == "thumbs" else tuple((str(n), n) for n in range(1, 6))
    return BotResponse(text=spec.question, source="system", metadata={"csat": spec.scale},
                       buttons=tuple(Button(title=t, payload=f'{CSAT_PAYLOAD}{{"score": {n}}}') for t, n in answers))


def asked_after_bot(spec: SatisfactionSpec | None, intent: str, events: Sequence[Event], *, paused: bool,
                    unasked: bool) -> BotResponse | None:
    """The satisfaction question when this bot turn ends the conversation (``ask_after_bot``: the customer's
    message was one of those intents, or one of those actions ran): never while a person has the conversation
    or the customer waits for one (``paused`` after the turn), only to a customer neither asked nor rated
    before (``unasked``)."""
    if spec is None or not spec.ask_after_bot or paused or not unasked:
        return None
    ended = intent in spec.ask_after_bot or any(
        e.kind == ACTION and e.data.get("name") in spec.ask_after_bot for e in events)
    return satisfaction_question(spec) if ended else None


def rating_of(payload: object, spec: SatisfactionSpec | None) -> int | None:
    """The score a button payload of the satisfaction question carries (None: not such an answer, or the bot
    asks none). Whatever the client sends: only the scale's own scores count."""
    if spec is None or not isinstance(payload, str) or not payload.startswith(CSAT_PAYLOAD + "{"):
        return None
    try:
        score = json.loads(payload[len(CSAT_PAYLOAD):]).get("score")
    except (ValueError, AttributeError):
        return None
    allowed = {n for _, n in _THUMBS} if spec.scale == "thumbs" else set(range(1, 6))
    return score if isinstance(score, int) and not isinstance(score, bool) and score in allowed else None


def rated(spec: SatisfactionSpec, score: int, first: bool) -> tuple[list[Event], SummaryUpdate]:
    """The turn of a customer's rating: the rating (``counted``: the conversation's first, the one stored on it
    and counted by the metric; a later one is recorded in the transcript only) and the thanks."""
    thanks = BotResponse(text=spec.thanks, source="system", metadata={"csat": "thanks"})
    events = [Event(CSAT, {"score": score, "scale": spec.scale, "counted": first}), Event(BOT, thanks.to_dict())]
    return events, SummaryUpdate(csat=score if first else None)


# -- assignment: who of the agents has a conversation of the queue ------------------------
async def claim(store: ConversationStore, bot: str, conversation_id: str, agent: str) -> ConversationSummary:
    """"Assign to me": ``agent`` has the conversation unless another agent claimed it first (``Conflict``
    naming them). One conditional write in the store, so of two agents claiming at once, on any replicas,
    exactly one wins."""
    won, summary = await store.assign(bot, conversation_id, agent, expected=None)
    if not won and summary.assignee != agent:
        raise Conflict(f"{summary.assignee} has this conversation already")
    if won:
        await _record(store, bot, conversation_id, to=agent, by=agent, before=None)
    return summary


async def _record(store: ConversationStore, bot: str, conversation_id: str, *, to: str | None, by: str,
                  before: str | None) -> None:
    """The transcript's line for a change of assignee (after the conditional write that made it)."""
    await store.append(bot, conversation_id, [Event(ASSIGN, {"to": to, "by": by, "from": before})], SummaryUpdate())


async def unassign(store: ConversationStore, bot: str, conversation_id: str, agent: str, *,
                   admin: bool = False) -> ConversationSummary:
    """Nobody has the conversation any more: the assignee gives it up (an admin may take anyone's off)."""
    current = await store.summary(bot, conversation_id)
    if current is None:
        await load_existing(store, bot, conversation_id)  # raises ConversationNotFound
    assert current is not None
    if current.assignee is None:
        return current
    if current.assignee != agent and not admin:
        raise Conflict(f"{current.assignee} has this conversation: only they or an admin can unassign it")
    won, summary = await store.assign(bot, conversation_id, None, expected=current.assignee)
    if not won:
        raise Conflict(f"{summary.assignee or 'nobody'} has this conversation now: look again")
    await _record(store, bot, conversation_id, to=None, by=agent, before=current.assignee)
    return summary


async def reassign(store: ConversationStore, bot: str, conversation_id: str, to: str, *,
                   expected: str | None, by: str = "") -> ConversationSummary:
    """(Admins.) The conversation goes to ``to`` if ``expected`` still has it (``Conflict`` otherwise, so an
    admin never overrides a claim they did not see)."""
    won, summary = await store.assign(bot, conversation_id, to, expected=expected)
    if not won and summary.assignee != to:
        raise Conflict(f"{summary.assignee or 'nobody'} has this conversation now, not {expected or 'nobody'}:"
                       " look again")
    if won and to != expected:
        await _record(store, bot, conversation_id, to=to, by=by, before=expected)
    return summary


@dataclass(frozen=True)
class Queue:
    """The review UI's queue: the customers waiting for an agent, longest wait first, then the conversations
    an agent has (taken over, not waiting), most recently active first."""

    waiting: Page
    active: Page


async def queue(store: ConversationStore, bot: str | None = None, *, offset: int = 0, limit: int = 50) -> Queue:
    waiting = await store.search(TranscriptQuery(bot=bot, handoff=True, waiting=True, sort="waiting_since",
                                                 descending=False, offset=offset, limit=limit))
    active = await store.search(TranscriptQuery(bot=bot, handoff=True, waiting=False, sort="last_activity",
                                                descending=True, offset=offset, limit=limit))
    return Queue(waiting, active)


# -- the gauges ---------------------------------------------------------------------------
class HandoffGauges:
    """``switchboard_handoff_queue`` (customers waiting for an agent) and
    ``switchboard_handoff_oldest_seconds`` (how long the longest has waited, 0 when nobody waits)
    for every bot ``bots()`` names, read from the shared store: by ``run`` every ``GAUGE_REFRESH_S``
    and by ``refresh`` at each scrape (at most once per ``min_interval_s``, however many scrapers).
    The age is computed when Prometheus collects, from the last start time read, so it grows between
    reads and stays right while the store is briefly unreachable."""

    def __init__(self, store: ConversationStore, metrics: Metrics, bots: Callable[[], Iterable[str]], *,
                 clock: Callable[[], float] = time.time, min_interval_s: float = 1.0) -> None:
        self._store = store
        self._metrics = metrics
        self._bots = bots
        self._clock = clock
        self.min_interval_s = min_interval_s
        self._since: dict[str, float | None] = {}
        self._read_at = float("-inf")  # time.monotonic() of the last complete read
        self._lock = asyncio.Lock()

    def oldest_seconds(self, bot: str) -> float:
        since = self._since.get(bot)
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def _set(self, bot: str, waiting: Waiting) -> None:
        self._metrics.handoff_queue.labels(bot).set(waiting.count)
        if bot not in self._since:
            self._metrics.handoff_oldest_seconds.labels(bot).set_function(lambda: self.oldest_seconds(bot))
        self._since[bot] = waiting.since

    def _set_analytics(self, bot: str, analytics: Analytics) -> None:
        """The last day's rates and reply times; a figure without conversations to compute it from is NaN."""
        figures = analytics.total.to_dict()
        for gauge, key in ((self._metrics.containment_ratio, "containment_rate"),
                           (self._metrics.handoff_ratio, "handoff_rate"),
                           (self._metrics.fallback_ratio, "fallback_rate")):
            gauge.labels(bot).set(math.nan if figures[key] is None else figures[key])
        for quantile, key in (("0.5", "first_reply_p50_s"), ("0.9", "first_reply_p90_s")):
            value = figures[key]
            self._metrics.first_agent_reply_seconds.labels(bot, quantile).set(math.nan if value is None else value)

    async def _read(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < self.min_interval_s:
                return  # another caller has just read them
            for bot in sorted(set(self._bots())):
                self._set(bot, await self._store.waiting(bot))
                self._set_analytics(bot, await self._store.analytics(
                    AnalyticsQuery(bot=bot, since=self._clock() - ANALYTICS_WINDOW_S)))
            self._read_at = time.monotonic()

    async def refresh(self, timeout_s: float = 2.0) -> bool:
        """Read the waiting customers now; False (logged, last values kept) when the store did not
        answer within ``timeout_s``. Never raises: a scrape must not fail because the store does."""
        try:
            await asyncio.wait_for(self._read(), timeout_s)
        except Exception as exc:  # noqa: BLE001 - any store failure; the gauges keep their last values
            log.warning("hand-off gauges not refreshed", extra={"error": str(exc) or type(exc).__name__})
            return False
        return True

    async def run(self, interval_s: float = GAUGE_REFRESH_S) -> None:
        """Refresh every ``interval_s`` until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)
