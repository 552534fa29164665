"""The runtime: from a customer's message to the bot's stored answer, exactly once.

``accept`` stores the message as a pending turn (after this the message is safe, and a
channel may acknowledge it); ``process`` answers it. Messages of one conversation are
processed one at a time, in arrival (seq) order, by whichever replica holds the
conversation's lease in the store — replicas share nothing else. A redelivered message id
is answered from the stored turn and never processed twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bots.artifact import Manifest, resolve_artifact
from bots.batcher import MicroBatcher
from bots.botspec import BotSpec, load_bot
from bots.dialogue import Decision, State, decide
from bots.errors import Busy, StoreUnavailable, SwitchboardError
from bots.metrics import Metrics
from bots.settings import Settings
from bots.store.base import NLU, USER, ConversationStore, Event, SummaryUpdate, Turn
from bots.types import BotResponse, Entity, IntentScore, Understanding, UserMessage

log = logging.getLogger("switchboard.runtime")

_PAYLOAD = re.compile(r"^/(?P<intent>[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<entities>\{.*\})?$", re.DOTALL)
_STATE_TURNS = 200  # turns read back to rebuild the state of a conversation


class UnknownBot(SwitchboardError):
    pass


class IntentModel(Protocol):
    manifest: Manifest

    def predict(self, texts: Sequence[str]) -> list[Understanding]: ...


ModelLoader = Callable[[Path, BotSpec, Settings], IntentModel]


def load_onnx_model(artifact_dir: Path, spec: BotSpec, settings: Settings) -> IntentModel:
    from bots.nlu import OnnxNLU

    return OnnxNLU.load(artifact_dir, threads=settings.nlu_threads, synonyms=spec.synonyms)


@dataclass
class BotRuntime:
    spec: BotSpec
    model: IntentModel
    understand: MicroBatcher[str, Understanding]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.model.manifest.version


def parse_payload(payload: str, bot: BotSpec) -> Understanding | None:
    """A button payload ``/intent`` or ``/intent{"entity": "value"}`` (Rasa's convention)."""
    m = _PAYLOAD.match(payload.strip())
    if m is None or m.group("intent") not in bot.intents:
        return None
    entities: list[Entity] = []
    if m.group("entities"):
        try:
            values = json.loads(m.group("entities"))
        except json.JSONDecodeError:
            return None
        if not isinstance(values, dict):
            return None
        entities = [Entity(str(k), str(v), 0, 0) for k, v in values.items() if isinstance(v, str | int | float)]
    intent = m.group("intent")
    return Understanding(intent, 1.0, (IntentScore(intent, 1.0),), tuple(entities))


class Runtime:
    def __init__(self, settings: Settings, store: ConversationStore, metrics: Metrics | None = None,
                 *, model_loader: ModelLoader = load_onnx_model) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.bots: dict[str, BotRuntime] = {}
        self._model_loader = model_loader
        self._owner = f"{uuid.uuid4().hex[:12]}"
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    # -- bots -----------------------------------------------------------------------
    async def load_bot(self, bot_dir: Path) -> BotRuntime:
        spec = await asyncio.to_thread(load_bot, bot_dir)
        artifact = await asyncio.to_thread(resolve_artifact, bot_dir)
        model = await asyncio.to_thread(self._model_loader, artifact, spec, self.settings)
        bot = self._install(spec, model)
        log.info("bot loaded", extra={"bot": spec.name, "version": model.manifest.version})
        return bot

    def _install(self, spec: BotSpec, model: IntentModel) -> BotRuntime:
        old = self.bots.get(spec.name)
        nlu_seconds = self.metrics.nlu_seconds.labels(spec.name)
        batch_size = self.metrics.nlu_batch_size.labels(spec.name)

        def observe(n: int, seconds: float) -> None:
            nlu_seconds.observe(seconds)
            batch_size.observe(n)

        batcher: MicroBatcher[str, Understanding] = MicroBatcher(
            model.predict, max_batch=self.settings.nlu_max_batch, max_wait_ms=self.settings.nlu_max_wait_ms,
            on_batch=observe,
        )
        bot = BotRuntime(spec=spec, model=model, understand=batcher)
        self.bots[spec.name] = bot  # one assignment: in-flight messages keep the old model object
        if old is not None:
            self.metrics.model_info.remove(spec.name, old.version)
            asyncio.get_running_loop().create_task(old.understand.aclose())
        self.metrics.model_info.labels(spec.name, bot.version).set(1)
        return bot

    def bot(self, name: str) -> BotRuntime:
        try:
            return self.bots[name]
        except KeyError:
            raise UnknownBot(f"no bot named {name!r} is served here") from None

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
        event = Event(USER, data, timestamp=message.received_at)
        started = time.perf_counter()
        result = await self.store.enqueue(
            bot.name, message.ref.conversation_id, message.ref.channel, message.user_id,
            message.ref.address, message.message_id, event,
        )
        self.metrics.store_seconds.labels(self.store.name, "enqueue").observe(time.perf_counter() - started)
        if result.created:
            self.metrics.messages.labels(bot.name, message.ref.channel, "in").inc()
        return result.turn

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
                    if await self.store.acquire_lease(bot.name, conversation_id, self._owner,
                                                      self.settings.lease_ttl_s):
                        try:
                            await self._drain(bot, conversation_id)
                        finally:
                            await self.store.release_lease(bot.name, conversation_id, self._owner)
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

    async def _drain(self, bot: BotRuntime, conversation_id: str) -> None:
        """Answer every pending turn of the conversation, oldest first (we hold the lease)."""
        pending = await self.store.pending(bot.name, conversation_id)
        if not pending:
            return
        conversation = await self.store.load(bot.name, conversation_id, last_n=_STATE_TURNS)
        done_turns = [t for t in conversation.turns if t.status == "done"] if conversation else []
        state = State.from_events([e for t in done_turns for e in t.events])
        channel = conversation.summary.channel if conversation else "unknown"
        for turn in pending:
            decision, understanding = await self._answer(bot, state, turn)
            events = [Event(NLU, understanding.to_dict()), *decision.events]
            await self.store.complete(
                bot.name, conversation_id, turn.seq, events,
                SummaryUpdate(last_intent=understanding.intent, confidence=understanding.confidence,
                              fallback=True if decision.fallback else None,
                              handoff=True if decision.handoff else None),
            )
            for event in events:
                state.apply(event)
            self.metrics.intents.labels(bot.name, understanding.intent).inc()
            if decision.fallback:
                self.metrics.fallbacks.labels(bot.name, channel).inc()
            if decision.handoff:
                self.metrics.handoffs.labels(bot.name, channel).inc()
            self.metrics.messages.labels(bot.name, channel, "out").inc(len(decision.responses))

    async def _answer(self, bot: BotRuntime, state: State, turn: Turn) -> tuple[Decision, Understanding]:
        user = turn.user_event
        assert user is not None, "a pending turn always starts with the customer's message"
        payload = user.data.get("payload")
        understanding = parse_payload(str(payload), bot.spec) if payload else None
        if understanding is None:
            understanding = await bot.understand(str(user.data.get("text", "")))
        state.apply(Event(USER, {"intent": understanding.intent}))
        return decide(bot.spec, state, understanding), understanding

    # -- lifecycle ------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting; wait for in-flight messages. True if all finished in time."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        for bot in self.bots.values():
            await bot.understand.aclose()
        await self.store.aclose()
