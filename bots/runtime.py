"""The runtime: from a customer's message to the bot's stored answer, exactly once.

``accept`` stores the message as a pending turn (after this the message is safe, and a
channel may acknowledge it); ``process`` answers it. Messages of one conversation are
processed one at a time, in arrival (seq) order, by whichever replica holds the
conversation's lease in the store — replicas share nothing else. A redelivered message id
is answered from the stored turn and never processed twice.

The lease is short (``lease_ttl_s``, 2 s by default) so that a conversation whose replica died
(SIGKILL, a lost node) goes on at another replica within seconds: the dead holder's lease simply
expires. A live holder never loses it to a slow turn (a custom action, a generated answer, a
backlog): a heartbeat renews it every third of its TTL while the holder is processing, and the
holder checks it before each turn, so two replicas never answer one turn. And a turn waits,
boundedly (``gap_wait_s``), for an earlier seq that another replica has allocated but not yet
stored.
What a turn says is decided by bots.dialogue.engine from the state rebuilt from the stored events.
Reminders (bots/reminders.py) go through the same path: a due one is a message accepted into its
conversation under a unique id, so it is stored and answered once whichever replicas fire it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from bots.answers.retrieval import AnswerService, Encoder
from bots.artifact import Manifest, resolve_artifact
from bots.botspec import BotSpec, load_bot
from bots.dialogue.actions import check_actions, load_actions
from bots.dialogue.check import check_bot_folder
from bots.dialogue.domain import DEFAULT_INTENTS
from bots.dialogue.engine import (
    OPENED,
    OPENING_ID,
    AnswerProvider,
    Decision,
    Message,
    PartialSink,
    Services,
    State,
    decide,
)
from bots.dialogue.forms import check_value
from bots.dialogue.policies import Ensemble
from bots.dialogue.rasa_protocol import ActionRunner
from bots.dialogue.spec import DialogueSpec
from bots.errors import Busy, ConfigError, StoreUnavailable, SwitchboardError
from bots.events import BOT, CSAT, NLU, RESUME, USER, Event
from bots.handoff import StoreQueue, asked_after_bot, bot_turn, is_paused, paused_after, rated, rating_of
from bots.loader import load_bot_folder
from bots.metrics import Metrics
from bots.nlu.batcher import MicroBatcher
from bots.nlu.oos import served_point
from bots.nlu.pipeline import NluPipeline
from bots.nlu.sentiment import Frustration, Mood, SentimentScorer, repeated_answer
from bots.pii import Privacy, Pseudonymiser, Redactor
from bots.reminders import (
    TRIGGER,
    ReminderScheduler,
    armed,
    changes_for_turn,
    skipped,
    still_due,
    trigger_message,
    trigger_of,
    understanding_of,
)
from bots.settings import Settings
from bots.store.base import Conversation, ConversationStore, ConversationSummary, Reminder, SummaryUpdate, Turn
from bots.types import BotResponse, ConversationRef, Entity, IntentScore, Understanding, UserMessage

log = logging.getLogger("switchboard.runtime")

_PAYLOAD = re.compile(r"^/(?P<intent>[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<entities>\{.*\})?$", re.DOTALL)
_STATE_TURNS = 200  # turns read back to rebuild the state of a conversation
_GAP_POLL_S = 0.02


class UnknownBot(SwitchboardError):
    pass


class IntentModel(Protocol):
    manifest: Manifest

    def predict(self, texts: Sequence[str]) -> list[Understanding]: ...


ModelLoader = Callable[[Path, BotSpec, Settings], IntentModel]
# (conversation, message id, the answer so far): a channel showing an answer as it is generated.
ChannelPartialSink = Callable[[ConversationRef, str, str], Awaitable[None]]
# A channel's ``send``: replies pushed into a conversation outside a request (a reminder's answer).
ChannelSender = Callable[[ConversationRef, Sequence[BotResponse]], Awaitable[None]]


def load_onnx_model(artifact_dir: Path, spec: BotSpec, settings: Settings) -> IntentModel:
    from bots.nlu.model import OnnxNLU

    return OnnxNLU.load(artifact_dir, threads=settings.nlu_threads, synonyms=spec.synonyms,
                        fallback_threshold=spec.fallback_threshold,
                        multi_intent=spec.two_requests)


@dataclass
class BotRuntime:
    spec: BotSpec
    model: IntentModel
    understand: MicroBatcher[str, Understanding]
    dialogue: DialogueSpec = field(default_factory=DialogueSpec)
    actions: ActionRunner | None = None
    # Retrieval/generation answers (bots.answers.retrieval, adapted to bots.dialogue.engine.AnswerProvider);
    # None: templates only.
    answers: AnswerProvider | None = None
    # bot.yml `pii:`: the store redacts every event and pseudonymises user ids before writing; None: off.
    privacy: Privacy | None = None
    # The config.yml pipeline's extractors and synonym mapper after the model (bots/nlu/pipeline.py);
    # empty for bot.yml bots.
    pipeline: NluPipeline = field(default_factory=NluPipeline)
    # The policy ensemble, built once per loaded artifact (its learned next-action model, policy.onnx,
    # when training wrote one); None: the engine's rules and memoisation of the dialogue spec.
    policies: Ensemble | None = None
    # bot.yml `frustration:`: when an angry customer is handed to a person (bots/nlu/sentiment.py).
    frustration: Frustration = field(default_factory=Frustration)

    def services(self, partial: PartialSink | None = None, queue: StoreQueue | None = None) -> Services:
        return Services(actions=self.actions, answers=self.answers, partial=partial, policies=self.policies,
                        queue=queue, form_floor=self.form_floor)

    @functools.cached_property
    def form_floor(self) -> float | None:
        """The confidence a form's starting intent needs (engine ``Services.form_floor``): the softmax floor of the
        operating point the model serves (bots/nlu/oos.py; the bot's ``fallback_threshold`` where set)."""
        manifest = self.model.manifest
        return served_point(manifest.oos, manifest.oos_threshold, self.spec.fallback_threshold).softmax_floor

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.model.manifest.version


def _load_answers(artifact_dir: Path, model: IntentModel, metrics: Metrics, bot: str) -> AnswerProvider | None:
    """Retrieval (and gated generation) answers, when the artifact has an answer index."""
    if not isinstance(model, Encoder):
        return None  # a model without sentence embeddings: templates only
    return AnswerService.load(artifact_dir, model, metrics=metrics, bot=bot)


def parse_payload(payload: str, bot: BotSpec, dialogue: DialogueSpec | None = None) -> Understanding | None:
    """A button payload ``/intent`` or ``/intent{"entity": "value"}`` (Rasa's convention); ``None``
    when it is not one of the bot's intents (the text is then understood as typed).

    A payload is whatever the client sends, not only the bot's own buttons, so it may set only what
    a message could: entities the bot declares (annotated in its examples, filled into a slot, or listed
    in a Rasa domain's ``entities``), each value passing its bot.yml slot's checks (type, choices, bounds,
    regex: ``forms.check_value``). Any other
    entity is dropped with a logged warning and the message is answered without it; it never reaches
    slots, templates or actions."""
    m = _PAYLOAD.match(payload.strip())
    if m is None or (m.group("intent") not in bot.intents and m.group("intent") not in DEFAULT_INTENTS):
        return None  # Rasa's default intents are every bot's: a "Start over" button's /restart restarts
    dialogue = dialogue or DialogueSpec()
    entities: list[Entity] = []
    if m.group("entities"):
        try:
            values = json.loads(m.group("entities"))
        except json.JSONDecodeError:
            return None
        if not isinstance(values, dict):
            return None
        declared = ({e.entity for i in bot.intents.values() for x in i.examples for e in x.entities}
                    | {slot.entity for slot in dialogue.slots.values() if slot.entity}
                    | set(dialogue.domain.entities)  # a Rasa domain's entities, and those its slots map from
                    | {m.entity for slot in dialogue.domain.slots.values() for m in slot.mappings if m.entity})
        for name, value in values.items():
            for item in value if isinstance(value, list) else [value]:  # a list: one entity per item, as Rasa's
                refused = _refused_entity(name, item, declared, dialogue)  # unpack_regex_message makes them
                if refused is not None:
                    log.warning("button payload entity dropped",
                                extra={"bot": bot.name, "entity": str(name)[:64], "reason": refused})
                    continue
                entities.append(Entity(name, str(item), 0, 0))
    intent = m.group("intent")
    return Understanding(intent, 1.0, (IntentScore(intent, 1.0),), tuple(entities))


def _refused_entity(name: str, value: object, declared: set[str], dialogue: DialogueSpec) -> str | None:
    """Why a payload's entity may not be set (None: it may)."""
    if name not in declared:
        return "not an entity of this bot"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return "the value is not text or a number"
    slot = dialogue.slots.get(dialogue.slot_for_entity(name) or "")
    if slot is not None and not check_value(slot, value).ok:
        return f"the value does not pass slot {slot.name!r}'s checks"
    return None


@dataclass
class _Known:
    """A conversation's dialogue state as this replica left it: every turn up to ``seq`` applied."""

    state: State
    seq: int
    started_at: float
    events: int = 0  # len(state.history) when it was cached: what it weighs in the cache's budget


@dataclass
class _Drained:
    """What a drain did: the turns it answered (by message id), and whether its last write released
    the conversation lease."""

    answered: dict[str, Turn] = field(default_factory=dict)
    released: bool = False


class Runtime:
    def __init__(self, settings: Settings, store: ConversationStore, metrics: Metrics | None = None,
                 *, model_loader: ModelLoader = load_onnx_model, gap_wait_s: float = 2.0) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.bots: dict[str, BotRuntime] = {}
        self._model_loader = model_loader
        # How long to wait for a turn whose seq another replica allocated but has not stored yet.
        self.gap_wait_s = gap_wait_s
        self._owner = f"{uuid.uuid4().hex[:12]}"
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Our conversation leases, each with when it expires (time.time()) as its last store write taking or
        # renewing it said: while one has a third of its TTL left, no other replica can take it, so a turn
        # needs no write of its own to check it (see _holds). Forgotten when a release of ours is issued.
        self._leases: dict[tuple[str, str], float] = {}
        self._releases = 0  # releases of our leases issued (a take whose write a release may follow is not noted)
        self._known: OrderedDict[tuple[str, str], _Known] = OrderedDict()  # LRU of dialogue states
        self._known_events = 0  # events held by the cached states (bounded: see _remember)
        # Channels that show an answer while it is generated (web) register here, by channel name.
        self.partial_sinks: dict[str, ChannelPartialSink] = {}
        # Every channel's send, by channel name: where the answer to a reminder goes.
        self.senders: dict[str, ChannelSender] = {}
        self._sending: set[asyncio.Task[None]] = set()
        # Fires due reminders of the bots served here; started by the app (``reminders.start()``), stopped by drain.
        self.reminders = ReminderScheduler(store, self.fire_reminder, settings.reminder_poll_s,
                                           served=lambda: list(self.bots))
        self.moods = SentimentScorer()  # each customer message's sentiment and frustration signals
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    # -- bots -----------------------------------------------------------------------
    def validate(self, bot_dirs: Sequence[Path]) -> list[BotSpec]:
        """Everything ``load_bot`` reads except the model, for every bot at once, before serving:
        bot.yml, the dialogue sections, the actions module (imported), ``pii:``, and that no two
        folders are the same bot. Raises one ConfigError with every problem (``file:line``), so a bad
        ``rules:`` stops start-up instead of leaving a server that never turns ready."""
        problems: list[str] = []
        specs: list[BotSpec] = []
        first: dict[str, Path] = {}
        for bot_dir in bot_dirs:
            # bot.yml or a Rasa project (bots/loader.py), checked as `switchboard check` checks it
            report = check_bot_folder(bot_dir)
            problems += report.errors
            if report.loaded is None:
                # The dialogue did not load; bot.yml's own sections (pii:) are still checked, so every
                # problem is reported at once.
                with contextlib.suppress(ConfigError):  # bot.yml's own problems: reported by the check above
                    problems += self._privacy_problems(load_bot(bot_dir))
                continue
            spec, dialogue = report.loaded
            for line in report.warnings + report.notes:
                log.info("bot check: %s", line, extra={"bot": spec.name})
            if spec.name in first:
                problems.append(f"{spec.file}: bot {spec.name!r} is already served from {first[spec.name]}")
            first.setdefault(spec.name, bot_dir)
            specs.append(spec)
            try:
                check_actions(spec, dialogue)
            except ConfigError as exc:
                problems += exc.problems
            problems += self._privacy_problems(spec)
        if problems:
            raise ConfigError(problems)
        return specs

    def _privacy_problems(self, spec: BotSpec) -> list[str]:
        try:
            self._privacy(spec)
        except ConfigError as exc:
            return exc.problems
        return []

    async def load_bot(self, bot_dir: Path) -> BotRuntime:
        spec, dialogue = await asyncio.to_thread(load_bot_folder, bot_dir)
        actions = await asyncio.to_thread(load_actions, spec, dialogue)
        artifact = await asyncio.to_thread(resolve_artifact, bot_dir)
        model = await asyncio.to_thread(self._model_loader, artifact, spec, self.settings)
        privacy = self._privacy(spec)
        days = spec.section("retention_days")
        self.store.set_retention(spec.name, float(days) * 86400.0 if days is not None else None)
        answers = await asyncio.to_thread(_load_answers, artifact, model, self.metrics, spec.name)
        pipeline = await asyncio.to_thread(NluPipeline.for_bot, spec)  # lookup tables compile off the loop
        for note in pipeline.notes:
            log.info("bot check: %s", note, extra={"bot": spec.name})
        policies = await asyncio.to_thread(Ensemble.build, dialogue.domain, dialogue.stories, dialogue.policy, artifact)
        bot = self._install(spec, model, dialogue, actions, answers, privacy=privacy, pipeline=pipeline,
                            policies=policies)
        log.info("bot loaded", extra={"bot": spec.name, "version": model.manifest.version})
        return bot

    def _install(self, spec: BotSpec, model: IntentModel, dialogue: DialogueSpec | None = None,
                 actions: ActionRunner | None = None, answers: AnswerProvider | None = None,
                 privacy: Privacy | None = None, pipeline: NluPipeline | None = None,
                 policies: Ensemble | None = None) -> BotRuntime:
        old = self.bots.get(spec.name)
        nlu_seconds = self.metrics.nlu_seconds.labels(spec.name)
        batch_size = self.metrics.nlu_batch_size.labels(spec.name)

        def observe(n: int, seconds: float) -> None:
            nlu_seconds.observe(seconds)
            batch_size.observe(n)

        batcher: MicroBatcher[str, Understanding] = MicroBatcher(
            model.predict, max_batch=self.settings.nlu_max_batch, max_wait_ms=self.settings.nlu_max_wait_ms,
            on_batch=observe, workers=self.settings.nlu_workers,
        )
        bot = BotRuntime(spec=spec, model=model, understand=batcher, dialogue=dialogue or DialogueSpec(),
                         actions=actions, answers=answers, privacy=privacy,
                         pipeline=pipeline if pipeline is not None else NluPipeline.for_bot(spec), policies=policies,
                         frustration=Frustration.parse(spec.sections.get("frustration"), []))  # checked by load_bot
        self.store.set_privacy(spec.name, privacy)  # before the first message can reach the store
        self.bots[spec.name] = bot  # one assignment: in-flight messages keep the old model object
        if old is not None:
            self.metrics.model_info.remove(spec.name, old.version)
            asyncio.get_running_loop().create_task(old.understand.aclose())
            if old.actions is not None and old.actions is not actions:
                asyncio.get_running_loop().create_task(old.actions.aclose())
            if old.pipeline is not bot.pipeline:
                asyncio.get_running_loop().create_task(old.pipeline.aclose())
        self.metrics.model_info.labels(spec.name, bot.version).set(1)
        return bot

    def _privacy(self, spec: BotSpec) -> Privacy | None:
        """The bot's ``pii:`` section as the store will apply it; ConfigError (bot.yml:LINE) when it is
        wrong, or on while ``SWITCHBOARD_PII_KEY`` is missing (user ids would be stored raw)."""
        pii = spec.sections.get("pii")
        if pii is None:
            return None
        where = f"{pii.where()}: pii"
        redactor = Redactor.from_config(spec.section("pii"), where=where)
        if redactor is None:
            return None
        if not self.settings.pii_key:
            raise ConfigError(f"{where}: set SWITCHBOARD_PII_KEY (at least 32 characters, e.g. `openssl rand -hex 32`)"
                              ": with `pii:` on, user ids are stored as pseudonyms keyed by it")
        return Privacy(redactor, Pseudonymiser(self.settings.pii_key))

    def bot(self, name: str) -> BotRuntime:
        try:
            return self.bots[name]
        except KeyError:
            raise UnknownBot(f"no bot named {name!r} is served here") from None

    # -- what channels may ask (connectors.base.Inbox) ------------------------------------
    @property
    def limits(self) -> Settings:
        return self.settings

    def channels_of(self, bot: str) -> frozenset[str]:
        return frozenset(self.bot(bot).spec.channels)

    async def history(self, bot: str, conversation_id: str, *, last_n: int | None = None) -> Conversation | None:
        return await self.store.load(bot, conversation_id, last_n=last_n)

    async def summary(self, bot: str, conversation_id: str) -> ConversationSummary | None:
        return await self.store.summary(bot, conversation_id)

    async def ready(self) -> tuple[bool, str]:
        if not self.bots:
            return False, "no model loaded yet"
        if self.draining:
            return False, "draining"
        up = await self.store.ping()
        self.metrics.store_up.labels(self.store.name).set(1 if up else 0)
        if not up:
            return False, f"conversation store ({self.store.name}) unreachable"
        return True, "ready"

    # -- messages -------------------------------------------------------------------
    async def handle(self, message: UserMessage) -> list[BotResponse]:
        turn = await self.accept(message)
        return await self.process(message, turn)

    async def accept(self, message: UserMessage) -> Turn:
        """Store the message (pending). Raises UnknownBot, Busy or StoreUnavailable."""
        bot = self.bot(message.ref.bot)
        if self.draining:
            raise Busy(retry_after_s=1.0)
        if self._in_flight >= self.settings.max_in_flight:
            self.metrics.rejected.labels(message.ref.channel, "busy").inc()
            raise Busy(retry_after_s=1.0)
        data: dict[str, object] = {"text": message.text, "message_id": message.message_id,
                                   "channel": message.ref.channel}
        if message.payload:
            data["payload"] = message.payload
        marker = message.metadata.get(TRIGGER)  # a reminder's firing (fire_reminder), never a channel's message
        if isinstance(marker, dict) and message.message_id.startswith("reminder:"):
            data[TRIGGER] = marker
        if message.metadata.get(OPENED) is True and message.message_id == OPENING_ID:  # ``open``, never a channel's
            data[OPENED] = True
        event = Event(USER, data, timestamp=message.received_at)  # the store redacts it (bot.privacy)
        started = time.perf_counter()
        # The lease is taken with the message (one write fewer): ``process`` follows at once and finds it held.
        mark = self._lease_mark()
        result = await self.store.enqueue(
            bot.name, message.ref.conversation_id, message.ref.channel, message.user_id,
            message.ref.address, message.message_id, event, customer_name=message.customer_name,
            lease_owner=self._owner, lease_ttl_s=self.settings.lease_ttl_s,
        )
        if result.created:
            self._lease_noted((bot.name, message.ref.conversation_id), result.leased, mark)
        self.metrics.store_seconds.labels(self.store.name, "enqueue").observe(time.perf_counter() - started)
        if result.created:
            self.metrics.messages.labels(bot.name, message.ref.channel, "in").inc()
        return result.turn

    async def open(self, ref: ConversationRef, *, customer_name: str | None = None) -> list[BotResponse]:
        """A chat was opened (the web widget): the bot's welcome for the channel (bot.yml ``welcome:``), stored
        as a turn of its own the first time (message id ``opened``, unique per conversation: opening it again,
        on a reload or another replica, answers from the store and never welcomes twice). [] without one.
        ``customer_name``: the customer's display name, stored with the welcome's turn."""
        if self.bot(ref.bot).dialogue.welcome_for(ref.channel) is None:
            return []
        message = UserMessage(ref=ref, message_id=OPENING_ID, text="", metadata={OPENED: True},
                              customer_name=customer_name)
        return await self.process(message, await self.accept(message))

    async def name_customer(self, ref: ConversationRef, name: str) -> None:
        """The conversation's customer is called ``name`` (learnt after their message was stored: Slack's
        ``users.info``); written only when it changed."""
        self.bot(ref.bot)
        await self.store.set_customer_name(ref.bot, ref.conversation_id, name)

    async def process(self, message: UserMessage, turn: Turn) -> list[BotResponse]:
        """Answer an accepted message: from the store if it was already answered."""
        bot = self.bot(message.ref.bot)
        channel = message.ref.channel
        if turn.status == "done":
            self.metrics.duplicates.labels(bot.name, channel).inc()
            return [BotResponse.from_dict(r) for r in turn.responses()]
        self._enter(bot.name)
        started = time.perf_counter()
        try:
            done = await self._process_in_order(bot, message.ref.conversation_id, message.message_id)
        except StoreUnavailable:
            self.metrics.errors.labels(bot.name, channel, "store").inc()
            raise
        finally:
            self._leave(bot.name)
        self.metrics.message_seconds.labels(bot.name, channel).observe(time.perf_counter() - started)
        return [BotResponse.from_dict(r) for r in done.responses()]

    def _enter(self, bot: str) -> None:
        self._in_flight += 1
        self._idle.clear()
        self.metrics.in_flight.labels(bot).inc()

    def _leave(self, bot: str) -> None:
        self._in_flight -= 1
        self.metrics.in_flight.labels(bot).dec()
        if self._in_flight == 0:
            self._idle.set()

    async def _process_in_order(self, bot: BotRuntime, conversation_id: str, message_id: str) -> Turn:
        key = (bot.name, conversation_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        deadline = time.monotonic() + 2 * self.settings.lease_ttl_s
        delay = 0.01
        try:
            async with lock:
                while True:
                    if self._holds(key) or await self._acquire_lease(key):
                        drained = _Drained()
                        done = asyncio.Event()
                        heartbeat = asyncio.create_task(self._keep_lease(bot.name, conversation_id, done))
                        try:
                            await self._drain(bot, conversation_id, drained)
                        finally:
                            done.set()
                            await heartbeat  # a renewal in flight ends first (it never re-takes a released lease)
                            if not drained.released:
                                self._releasing(key)
                                await self.store.release_lease(bot.name, conversation_id, self._owner)
                        if message_id in drained.answered:  # answered here: no need to read it back
                            return drained.answered[message_id]
                    turn = await self.store.get_turn(bot.name, conversation_id, message_id)
                    if turn is not None and turn.status == "done":
                        return turn
                    if time.monotonic() > deadline:
                        raise Busy(retry_after_s=2.0)
                    await asyncio.sleep(delay)  # another replica holds the lease: wait for its answer
                    delay = min(delay * 2, 0.25)
        finally:
            if not lock.locked() and not lock._waiters:  # type: ignore[attr-defined]
                self._locks.pop(key, None)

    # -- our leases, as the store last confirmed them --------------------------------------
    def _holds(self, key: tuple[str, str]) -> bool:
        """We hold the conversation's lease for at least another third of its TTL: the store said so at
        its last write taking or renewing it, and no release of ours was issued since. No other replica
        takes a lease before it expires, so no store write is needed to know it (the heartbeat renews it
        every third of the TTL; a process stalled past that goes back to the store)."""
        expires = self._leases.get(key)
        return expires is not None and expires - time.time() > self.settings.lease_ttl_s / 3

    def _lease_mark(self) -> tuple[int, float]:
        """Taken right before a store write that may take or renew a lease: the releases issued so far,
        and the earliest the lease it takes can expire."""
        return self._releases, time.time() + self.settings.lease_ttl_s

    def _lease_noted(self, key: tuple[str, str], taken: bool, mark: tuple[int, float]) -> None:
        """Note what a write begun at ``mark`` said of our lease. Only when no release of ours was
        issued meanwhile: a store that is not one transaction at a time (MongoDB) may apply such a release
        after this write, and then the lease noted here would not be ours any more."""
        releases, expires = mark
        if taken and releases == self._releases:
            self._leases[key] = expires
        else:
            self._leases.pop(key, None)
        if len(self._leases) > 4 * max(self.settings.max_in_flight, 1):  # taken but never processed
            now = time.time()
            for stale in [k for k, e in self._leases.items() if e < now]:
                del self._leases[stale]

    def _releasing(self, key: tuple[str, str]) -> None:
        """A release of our lease is about to be issued (with a turn's completion, or alone)."""
        self._releases += 1
        self._leases.pop(key, None)

    async def _acquire_lease(self, key: tuple[str, str]) -> bool:
        mark = self._lease_mark()
        try:
            taken = await self.store.acquire_lease(*key, self._owner, self.settings.lease_ttl_s)
        except BaseException:
            self._leases.pop(key, None)
            raise
        self._lease_noted(key, taken, mark)
        return taken

    async def _keep_lease(self, bot: str, conversation_id: str, done: asyncio.Event) -> None:
        """The holder's heartbeat while it processes the conversation: the lease renewed every third of
        its TTL until ``done``, so a slow turn keeps it and a dead holder loses it within one TTL. A lost
        lease (this process stalled past the TTL and another replica took it) is not taken back: the
        drain's check before its next turn stops it there."""
        interval = self.settings.lease_ttl_s / 3
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=interval)
            if done.is_set():
                return
            mark = self._lease_mark()
            try:
                renewed = await self.store.renew_lease(bot, conversation_id, self._owner, self.settings.lease_ttl_s)
            except StoreUnavailable:
                continue  # the drain meets the outage too; renewed again once the store answers
            self._lease_noted((bot, conversation_id), renewed, mark)
            if not renewed:
                log.warning("lease lost while processing", extra={"bot": bot})
                return

    async def _drain(self, bot: BotRuntime, conversation_id: str, drained: _Drained) -> None:
        """Answer every pending turn of the conversation, oldest first (we hold the lease). The last
        turn's write releases the lease (``drained.released``); answered turns go to ``drained.answered``.

        The dialogue state is rebuilt from the last turns, or, for a conversation this replica answered
        before, taken from memory and brought up to date with the turns stored since (done turns are
        never changed, only added: agents' replies and corrections are turns of their own)."""
        key = (bot.name, conversation_id)
        known = self._forget(key)  # back only when this drain finishes cleanly
        loaded = await self._load_without_gaps(bot, conversation_id, known.seq if known else None)
        if loaded is not None and known is not None and loaded[0].summary.started_at != known.started_at:
            known = None  # the conversation was purged and started again
            loaded = await self._load_without_gaps(bot, conversation_id, None)
        if loaded is None:
            return
        conversation, gapless = loaded
        pending = [t for t in conversation.turns if t.status == "pending"]
        if not pending and known is None:
            return  # nothing to answer, no state to bring up to date
        complete_window = gapless
        if pending and known is None and len(conversation.turns) >= _STATE_TURNS \
                and conversation.turns[0].status == "pending":
            # more pending turns than the state window holds: take them all, oldest first
            pending = await self.store.pending(bot.name, conversation_id)
            complete_window = False
        done_events = [e for t in conversation.turns if t.status == "done" for e in t.events]
        if known is None:
            state = State.from_events(done_events, sender_id=conversation_id)
            state.paused = is_paused(conversation)  # the window may not reach back to the pause
        else:
            state = known.state
            for event in done_events:
                state.apply(event)
        channel = conversation.summary.channel
        frustration = conversation.summary.frustration
        satisfaction, unrated = bot.dialogue.handoff.satisfaction, conversation.summary.csat is None
        unasked = unrated and conversation.summary.csat_asked_at is None  # the satisfaction question: asked once
        for i, turn in enumerate(pending):
            if i and not (self._holds(key) or await self._acquire_lease(key)):
                log.warning("lease lost while draining; another replica goes on",
                            extra={"bot": bot.name, "seq": turn.seq})
                return  # checked (and renewed) before each turn: two replicas never answer one turn
            user = turn.user_event
            assert user is not None, "a pending turn always starts with the customer's message"
            score = rating_of(user.data.get("payload"), satisfaction)  # an answer to the satisfaction question
            understanding = (Understanding(CSAT, 1.0, (IntentScore(CSAT, 1.0),)) if score is not None
                             else await self._understand(bot, user))
            worded = self._worded(user, state)  # how the text alone sounds (the turn adds its signals below)
            message = Message(text=str(user.data.get("text", "")), understanding=understanding,
                              timestamp=user.timestamp, channel=str(user.data.get("channel", "")),
                              message_id=turn.message_id, opening=user.data.get(OPENED) is True,
                              sentiment=worded.score if worded is not None else None,
                              frustrated=worded is not None and worded.frustrated)
            firing = trigger_of(user)
            skip = await self._stale_firing(bot, conversation_id, firing) if firing is not None else None
            rating_update: SummaryUpdate | None = None
            if score is not None and satisfaction is not None:  # stored once, thanked, never understood as text
                rating, rating_update = rated(satisfaction, score, unrated)
                decision, unrated = Decision(rating), False
            else:
                decision = Decision([skip]) if skip is not None else await decide(
                    bot.spec, bot.dialogue, state, message,
                    bot.services(self._partial_sink(bot, conversation, turn, message.channel),
                                 StoreQueue(self.store, bot.name, conversation_id)))
            mood = self._mood(worded, state, decision, understanding.intent)
            handed = bot.frustration.handoff(mood, state.history, decision.events, active_form=state.active_form,
                                             paused=paused_after(decision.events, state.paused),
                                             timestamp=user.timestamp)
            if handed is not None:  # the customer's frustration hands the conversation to a person
                decision = replace(decision, events=handed, handoff=True)
            else:  # or, at the first frustrated message, the bot offers another way out
                offered = bot.frustration.offered(mood, state.history, decision.events, active_form=state.active_form,
                                                  paused=paused_after(decision.events, state.paused),
                                                  timestamp=user.timestamp)
                decision = decision if offered is None else replace(decision, events=offered)
            question = None if rating_update is not None else asked_after_bot(  # the bot ended the conversation
                satisfaction, understanding.intent, decision.events,
                paused=paused_after(decision.events, state.paused), unasked=unasked)
            unasked = unasked and question is None and rating_update is None
            nlu = [Event(NLU, understanding.to_dict(), timestamp=user.timestamp)] if rating_update is None else []
            events = [*nlu, *([mood.event(user.timestamp)] if mood is not None else []), *decision.events,
                      *([Event(BOT, question.to_dict())] if question is not None else [])]
            last = i == len(pending) - 1
            summary = conversation.summary
            if last:
                self._releasing(key)
            done = await self.store.complete(
                bot.name, conversation_id, turn.seq, events,
                rating_update or replace(bot_turn(decision.events, user.timestamp), add_tags=decision.tags,
                                         last_intent=understanding.intent,
                                         confidence=understanding.confidence,
                                         fallback=True if decision.fallback else None,
                                         sentiment=mood.score if mood is not None else None,
                                         frustrated_turn=mood is not None and mood.frustrated,
                                         csat_asked=question is not None),
                release_lease_of=self._owner if last else None,
                reminders=changes_for_turn(bot=bot.name, conversation_id=conversation_id, seq=turn.seq,
                                           channel=summary.channel, address=summary.address, user=user,
                                           events=decision.events, armed_before=armed(state.history)),
            )
            drained.released = last
            if any(e.kind == RESUME for e in decision.events):  # the bot has it again (a customer left the queue)
                await self._unassign(bot.name, conversation_id)
            if done.message_id is not None:
                drained.answered[done.message_id] = done
            if firing is not None and skip is None:
                self._deliver(summary, done)  # nobody waits for a reminder's answer: pushed to the channel
            for event in done.events:  # as stored (another replica may have answered it meanwhile)
                state.apply(event)
            counted = [e for e in done.events if e.kind == CSAT and e.data.get("counted")]
            if counted:  # the conversation's rating (as stored: once, whichever replica answered)
                self.metrics.csat.labels(bot.name, str(counted[0].data["score"])).inc()
            if rating_update is None:
                self.metrics.intents.labels(bot.name, understanding.intent).inc()
            if decision.fallback:
                self.metrics.fallbacks.labels(bot.name, channel).inc()
            if decision.handoff:
                self.metrics.handoffs.labels(bot.name, channel).inc()
            for _ in decision.failed_actions:
                self.metrics.errors.labels(bot.name, channel, "action").inc()
            if mood is not None:
                self.metrics.sentiment.labels(bot.name).observe(mood.score)
                if mood.frustrated:
                    if frustration == 0:  # the conversation's first frustrated turn
                        self.metrics.frustrated_conversations.labels(bot.name).inc()
                    frustration += 1
            self.metrics.messages.labels(bot.name, channel, "out").inc(len(decision.responses) + (question is not None))
        if complete_window:
            self._remember(key, _Known(state, known.seq if known else 0, conversation.summary.started_at),
                           conversation)

    async def _unassign(self, bot: str, conversation_id: str) -> None:
        """Nobody of the agents has the conversation any more (as ``handoff.hand_back`` leaves it)."""
        summary = await self.store.summary(bot, conversation_id)
        if summary is not None and summary.assignee is not None:
            await self.store.assign(bot, conversation_id, None, expected=summary.assignee)

    def _worded(self, user: Event, state: State) -> Mood | None:
        """How the customer's message sounds (bots/nlu/sentiment.py): its words, against their earlier messages;
        None for what nobody typed (button clicks, reminders)."""
        text = str(user.data.get("text") or "")
        if not text or user.data.get("payload") or trigger_of(user) is not None:
            return None
        return self.moods.score(text, state.customer_texts())  # rolled up by the state, not walked

    @staticmethod
    def _mood(worded: Mood | None, state: State, decision: Decision, intent: str) -> Mood | None:
        """The message's mood (``_worded``) with what the bot's answer to it (understood as ``intent``) tells: a
        second fallback in a row, an answer the bot gave already."""
        if worded is None:
            return None
        mood = worded
        if decision.fallback and state.fallbacks_in_a_row >= 1:
            mood = mood.with_signal("repeated_fallback")
        if repeated_answer(state.history, decision.events, intent):
            mood = mood.with_signal("repeated_answer")
        return mood

    def _partial_sink(self, bot: BotRuntime, conversation: Conversation, turn: Turn,
                      channel: str) -> PartialSink | None:
        sink = self.partial_sinks.get(channel)
        if sink is None or turn.message_id is None:
            return None
        ref = ConversationRef(bot.name, channel, conversation.summary.conversation_id, conversation.summary.address)
        message_id = turn.message_id

        async def partial(text: str) -> None:
            await sink(ref, message_id, text)

        return partial

    def _remember(self, key: tuple[str, str], known: _Known, conversation: Conversation) -> None:
        """Keep ``known.state``: every turn up to the last one of ``conversation`` is done and applied."""
        if self.settings.state_cache <= 0:
            return
        known.seq = max([known.seq, *(t.seq for t in conversation.turns)])
        self._forget(key)
        known.events = len(known.state.history)
        self._known[key] = known
        self._known_events += known.events
        # At most state_cache conversations, and on average 50 events each (a state's history keeps
        # up to 200; about 1.4 KB an event): memory stays bounded however long conversations get.
        while self._known and (len(self._known) > self.settings.state_cache
                               or self._known_events > 50 * self.settings.state_cache):
            self._known_events -= self._known.popitem(last=False)[1].events

    def _forget(self, key: tuple[str, str]) -> _Known | None:
        known = self._known.pop(key, None)
        if known is not None:
            self._known_events -= known.events
        return known

    async def _load_without_gaps(self, bot: BotRuntime, conversation_id: str,
                                 after_seq: int | None) -> tuple[Conversation, bool] | None:
        """The conversation (its last turns, or those after ``after_seq``) once every seq up to its
        last stored one is stored, and whether it is: ``False`` when some were given up on.

        A store may allocate a seq and write its turn in two steps (MongoDB: counter, then insert), so
        another replica's message k can be invisible while k+1 is pending here. Answering k+1 first would
        break arrival order: wait (bounded by ``gap_wait_s``) for the missing turns. A seq still missing
        after that was abandoned (its writer died; the channel redelivers the message under a new seq)."""
        deadline = time.monotonic() + self.gap_wait_s
        while True:
            conversation = await self.store.load(bot.name, conversation_id, last_n=_STATE_TURNS, after_seq=after_seq)
            if conversation is None:
                return None
            seqs = {t.seq for t in conversation.turns}
            last_seq = max(seqs, default=0)
            done = max([after_seq or 0, *(t.seq for t in conversation.turns if t.status == "done")])
            missing = [s for s in range(done + 1, last_seq) if s not in seqs]
            if not missing:
                return conversation, True
            if time.monotonic() >= deadline:
                log.warning("turns allocated but never stored; answering without them",
                            extra={"bot": bot.name, "missing_seqs": missing[:10]})
                return conversation, False
            await asyncio.sleep(_GAP_POLL_S)

    async def _understand(self, bot: BotRuntime, user: Event) -> Understanding:
        firing = trigger_of(user)
        if firing is not None:  # a reminder: its intent and entities, as if the customer had sent them
            return understanding_of(firing)
        if user.data.get(OPENED) is True:  # the chat opened: nothing was typed
            return Understanding("session_start", 1.0, (IntentScore("session_start", 1.0),))
        payload = user.data.get("payload")
        understanding = parse_payload(str(payload), bot.spec, bot.dialogue) if payload else None
        if understanding is None:
            text = str(user.data.get("text", ""))
            understanding = await bot.pipeline.process(text, await bot.understand(text), reference_time=user.timestamp)
        return understanding

    # -- reminders ------------------------------------------------------------------
    async def fire_reminder(self, reminder: Reminder) -> None:
        """Fire a due reminder (``reminders``, on every replica): its message accepted into the conversation
        under the reminder's own id, then answered as any message is, so two replicas firing it store and
        answer it once. Raises Busy or StoreUnavailable (it stays due: the next poll fires it again)."""
        if reminder.bot not in self.bots:
            return  # not served here (yet): a replica that serves it fires it
        message = trigger_message(reminder)
        turn = await self.accept(message)
        if turn.status == "done":  # answered, but its replica died before the reminder was marked fired
            await self.store.mark_reminder_fired(reminder.bot, reminder.conversation_id, reminder.name,
                                                 reminder.trigger_at)
            return
        await self.process(message, turn)

    async def _stale_firing(self, bot: BotRuntime, conversation_id: str, firing: Reminder) -> Event | None:
        """What a firing's turn records instead of running, when its reminder was cancelled or replaced after it
        fired (the customer wrote in between, cancelling it); None: it is still due, the turn runs."""
        current = await self.store.reminder(bot.name, conversation_id, firing.name)
        return None if still_due(firing, current) else skipped(firing, time.time(), current)

    def _deliver(self, summary: ConversationSummary, turn: Turn) -> None:
        """Push a reminder's answer into its conversation through the channel's ``send`` (in the background:
        a slow channel API holds no conversation lease); ``drain`` waits for it."""
        send = self.senders.get(summary.channel)
        responses = [BotResponse.from_dict(r) for r in turn.responses()]
        if send is None or not responses:
            return
        ref = ConversationRef(summary.bot, summary.channel, summary.conversation_id, summary.address)

        async def deliver() -> None:
            try:
                await send(ref, responses)
            except Exception:  # the answer is stored (transcript, web history); only the push failed
                log.exception("reminder answer not delivered", extra={"bot": ref.bot, "channel": ref.channel})

        task = asyncio.get_running_loop().create_task(deliver())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    # -- lifecycle ------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting and firing reminders; wait for in-flight messages and reminder answers being
        delivered. True if all finished in time."""
        self.draining = True

        async def settled() -> None:
            await self.reminders.stop()
            await self._idle.wait()
            if self._sending:
                await asyncio.wait(set(self._sending))

        try:
            await asyncio.wait_for(settled(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        await self.reminders.stop()
        for task in list(self._sending):
            task.cancel()
        for bot in self.bots.values():
            await bot.understand.aclose()
            if bot.actions is not None:
                await bot.actions.aclose()
            await bot.pipeline.aclose()
        await self.store.aclose()
