"""bots/handoff.py: the one "is this conversation paused" rule (dialogue state, runtime, review UI and
web history alike), the agents' take over / reply / hand back, the customer's wait for an agent,
and the hand-off gauges read from the shared store by every replica."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bots import handoff
from bots.dialogue.state import State
from bots.errors import Conflict, ConversationNotFound, InvalidChange, NotDelivered, StoreUnavailable
from bots.events import AGENT, BOT, PAUSE, RESTART, RESUME, SESSION_START, USER, Event
from bots.handoff import HandoffGauges, bot_turn, is_paused, paused_after
from bots.metrics import Metrics
from bots.runtime import Runtime
from bots.store.base import Conversation, ConversationSummary, SummaryUpdate, Turn, Waiting
from bots.store.sqlite import SQLiteStore
from bots.types import BotResponse, ConversationRef
from tests.bots.keyword_model import copy_bot, say, start_runtime


def _conversation(kinds: Sequence[str], *, handoff_flag: bool, first_seq: int = 1) -> Conversation:
    turns = tuple(Turn("shop", "c1", first_seq + i, None, "done", (Event(kind, {}, 1000.0 + i),), 1000.0 + i)
                  for i, kind in enumerate(kinds))
    return Conversation(ConversationSummary("shop", "c1", "web", handoff=handoff_flag), turns)


@pytest.mark.parametrize(("kinds", "flag", "expected"), [
    ([PAUSE], False, True),
    ([PAUSE, SESSION_START, USER, BOT], False, True),  # a new session does not end a hand-off
    ([PAUSE, RESUME], True, False),  # the last pausing event wins over a stale flag
    ([PAUSE, RESTART], True, False),
    ([RESUME, PAUSE], False, True),
    ([SESSION_START, USER], True, True),  # window after the pause: the summary tells (was False in the review UI)
    ([SESSION_START, USER], False, False),
    ([], True, True),
    ([USER, AGENT], False, False),
])
def test_one_rule_for_paused(kinds: list[str], flag: bool, expected: bool) -> None:
    conversation = _conversation(kinds, handoff_flag=flag, first_seq=7)
    assert is_paused(conversation) is expected
    # the dialogue state replays events by the same rule (starting from "the bot has it")
    assert State.from_events(conversation.events).paused is paused_after(conversation.events, False)


def test_a_bot_turn_hands_off_or_resumes_in_the_summary() -> None:
    assert bot_turn([Event(BOT, {"text": "hi"})], 5.0) == SummaryUpdate()
    assert bot_turn([Event(BOT, {}), Event(PAUSE, {"reason": "fallback"})], 5.0) == \
        SummaryUpdate(handoff=True, waiting_since=5.0)
    assert bot_turn([Event(RESUME, {"by": "action_done"})], 5.0) == SummaryUpdate(handoff=False, waiting_over=True)
    assert bot_turn([Event(PAUSE, {}), Event(RESTART, {})], 5.0) == SummaryUpdate(handoff=False, waiting_over=True)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await start_runtime(copy_bot(tmp_path), tmp_path / "store.db")
    yield rt
    await rt.aclose()


async def test_after_a_new_session_the_review_ui_and_the_runtime_agree_the_bot_is_paused(
        runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: with the pause outside the turns read and a ``session_start`` inside them,
    the review UI's copy of the rule said "the bot is answering" while the runtime kept it silent."""
    t0 = time.time() - 7200
    assert await say(runtime, "get me an agent", at=t0) != []
    assert await say(runtime, "hello?", at=t0 + 31 * 60) == []  # a new session; still with a human
    window = await runtime.store.load("shop", "c1", last_n=1)
    assert window is not None
    assert [e.kind for e in window.events].count(SESSION_START) == 1 and PAUSE not in [e.kind for e in window.events]
    assert is_paused(window)
    # another replica (nothing cached) reading as little: the bot stays silent
    monkeypatch.setattr("bots.runtime._STATE_TURNS", 2)
    other = await start_runtime(copy_bot(tmp_path), tmp_path / "store.db")
    try:
        assert await say(other, "anyone?", at=t0 + 32 * 60) == []
    finally:
        await other.aclose()


class _Outbox:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[ConversationRef, list[str]]] = []
        self.fail = fail

    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        if self.fail:
            raise RuntimeError("channel_not_found")
        self.sent.append((ref, [r.text for r in responses]))


async def _kinds(runtime: Runtime, conversation: str) -> list[str]:
    loaded = await runtime.store.load("shop", conversation)
    assert loaded is not None
    return [e.kind for e in loaded.events if e.kind in (PAUSE, RESUME, AGENT)]


async def test_waiting_starts_at_the_customers_message_and_ends_with_an_agent(runtime: Runtime) -> None:
    store = runtime.store
    t0 = time.time() - 600
    await say(runtime, "get me an agent", "c1", at=t0)
    await say(runtime, "real person please", "c2", at=t0 + 60)
    await say(runtime, "hello", "c3", at=t0 + 120)  # the bot has it
    summary = await store.summary("shop", "c1")
    assert summary is not None and summary.handoff and summary.waiting_since == t0
    assert await store.waiting("shop") == Waiting(2, t0)

    await handoff.hand_back(store, "shop", "c1", "ann")
    assert await _kinds(runtime, "c1") == [PAUSE, RESUME]
    assert await store.waiting("shop") == Waiting(1, t0 + 60)
    assert await say(runtime, "hello", "c1") == ["Hello! How can I help you today?"]

    await handoff.take_over(store, "shop", "c2", "ann")
    await handoff.take_over(store, "shop", "c2", "ann")  # paused already: no second pause
    with pytest.raises(Conflict, match="ann has this conversation already"):  # ann claimed it by taking over
        await handoff.take_over(store, "shop", "c2", "bob")
    assert await _kinds(runtime, "c2") == [PAUSE]
    summary = await store.summary("shop", "c2")
    assert summary is not None and summary.handoff and summary.waiting_since is None
    assert await store.waiting("shop") == Waiting(0, None)

    outbox = _Outbox()
    turn = await handoff.reply(store, "shop", "c3", "ann", "  Ann here.  ", {"web": outbox})
    assert [e.kind for e in turn.events] == [PAUSE, AGENT] and turn.events[1].data["text"] == "Ann here."
    assert outbox.sent == [(ConversationRef("shop", "web", "c3", {}), ["Ann here."])]
    assert await say(runtime, "thanks", "c3") == []  # paused by the reply
    assert await store.waiting("shop") == Waiting(0, None)


async def test_agent_actions_raise_domain_errors(runtime: Runtime) -> None:
    store = runtime.store
    await say(runtime, "hello", "c1")
    with pytest.raises(InvalidChange, match="text is empty"):
        await handoff.reply(store, "shop", "c1", "ann", "   ", {"web": _Outbox()})
    with pytest.raises(ConversationNotFound, match="no conversation 'nope'"):
        await handoff.take_over(store, "shop", "nope", "ann")
    with pytest.raises(ConversationNotFound):
        await handoff.hand_back(store, "shop", "nope", "ann")
    with pytest.raises(NotDelivered, match=r"saved in the transcript.*web refused the message: channel_not_found"):
        await handoff.reply(store, "shop", "c1", "ann", "Ann here", {"web": _Outbox(fail=True)})
    with pytest.raises(NotDelivered, match="the 'web' channel is not served here"):
        await handoff.reply(store, "shop", "c1", "ann", "Still here", {})
    assert await _kinds(runtime, "c1") == [PAUSE, AGENT, AGENT]  # stored all the same, paused once


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _gauges(metrics: Metrics) -> dict[str, tuple[float | None, float | None]]:
    """bot -> (queue, oldest seconds), and every label set the two gauges carry."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for family in metrics.registry.collect():
        if family.name in ("switchboard_handoff_queue", "switchboard_handoff_oldest_seconds"):
            for sample in family.samples:
                assert set(sample.labels) == {"bot"}  # never a user or conversation id
                queue, oldest = out.get(sample.labels["bot"], (None, None))
                if family.name == "switchboard_handoff_queue":
                    queue = sample.value
                else:
                    oldest = sample.value
                out[sample.labels["bot"]] = (queue, oldest)
    return out


async def test_gauges_are_the_same_on_every_replica(runtime: Runtime, tmp_path: Path) -> None:
    """Replica A's bot hands off; replica B (another store on the same database, its own metrics)
    reports the customer waiting; an agent takes over through B and A's gauges drop to 0."""
    t0 = time.time() - 1000
    clock = _Clock(t0 + 1000)
    replica = SQLiteStore(tmp_path / "store.db")
    await replica.start()
    metrics_a, metrics_b = runtime.metrics, Metrics()
    gauges_a = HandoffGauges(runtime.store, metrics_a, lambda: runtime.bots, clock=clock, min_interval_s=0)
    gauges_b = HandoffGauges(replica, metrics_b, lambda: ["shop", "faq"], clock=clock, min_interval_s=0)
    try:
        assert await gauges_b.refresh()
        assert _gauges(metrics_b) == {"shop": (0, 0), "faq": (0, 0)}
        await say(runtime, "get me an agent", "c1", at=t0)
        await say(runtime, "real person please", "c2", at=t0 + 400)
        assert await gauges_a.refresh() and await gauges_b.refresh()
        assert _gauges(metrics_a) == {"shop": (2, 1000)}
        assert _gauges(metrics_b) == {"shop": (2, 1000), "faq": (0, 0)}
        clock.now += 30  # the age grows between reads, at collection time
        assert _gauges(metrics_b)["shop"] == (2, 1030)

        await handoff.take_over(replica, "shop", "c1", "ann")
        await handoff.reply(replica, "shop", "c2", "ann", "Ann here", {"web": _Outbox()})
        assert await gauges_a.refresh()
        assert _gauges(metrics_a) == {"shop": (0, 0)}
    finally:
        await replica.aclose()


class _DownStore(SQLiteStore):
    async def waiting(self, bot: str, *, until: float | None = None) -> Waiting:
        raise StoreUnavailable("MongoDB could not count the customers waiting for an agent")


async def test_a_store_failure_keeps_the_last_values_and_never_fails_the_scrape(tmp_path: Path) -> None:
    store = _DownStore(tmp_path / "c.db")
    metrics = Metrics()
    clock = _Clock(2000.0)
    gauges = HandoffGauges(store, metrics, lambda: ["shop"], clock=clock, min_interval_s=0)
    gauges._set("shop", Waiting(3, 1000.0))
    assert await gauges.refresh() is False
    assert _gauges(metrics) == {"shop": (3, 1000)}
    await store.aclose()
