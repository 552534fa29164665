"""The dialogue engine's agent features, configured in bot.yml (docs/dialogue.md): the welcome per
channel (said when a web chat opens, stored once; before the first answer elsewhere), forms that
answer another question and ask again, a retry limit per form or slot with a way out, the hand-off's
agent timeout doing nothing once an agent has ended the hand-off, and their bot.yml errors at
``file:line``. The example bot's conversations through the web channel: tests/e2e/test_example_agent.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bots import handoff
from bots.botspec import load_bot
from bots.dialogue.engine import AGENT_TIMEOUT_INTENT, Message, decide
from bots.dialogue.spec import parse_dialogue
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.events import BOT, USER
from bots.runtime import Runtime
from bots.types import ConversationRef, IntentScore, Understanding, UserMessage
from tests.bots.keyword_model import copy_bot, message, say, start_runtime

ASK_ORDER = "Which order would you like to change? Please give me the order number."
DIGITS = "Order numbers are digits only, like 12345."
HELLO = "Hello! How can I help you today?"


def _edited(tmp_path: Path, old: str, new: str, extra_yaml: str = "") -> Path:
    bot_dir = copy_bot(tmp_path, extra_yaml=extra_yaml)
    text = (bot_dir / "bot.yml").read_text(encoding="utf-8")
    assert old in text
    (bot_dir / "bot.yml").write_text(text.replace(old, new, 1), encoding="utf-8")
    return bot_dir


async def test_welcome_when_a_web_chat_opens_once_and_before_the_first_answer_elsewhere(tmp_path: Path) -> None:
    bot_dir = _edited(tmp_path, "channels: [web]", "channels: [web, telegram]",
                      extra_yaml="welcome:\n  web: Hi from the web!\n  telegram: Hi from Telegram!\n")
    runtime = await start_runtime(bot_dir, tmp_path / "store.db")
    try:
        web = ConversationRef("shop", "web", "w1")
        assert [r.text for r in await runtime.open(web)] == ["Hi from the web!"]
        assert [r.text for r in await runtime.open(web)] == ["Hi from the web!"]  # a reload: from the store
        loaded = await runtime.store.load("shop", "w1")
        assert loaded is not None and len(loaded.turns) == 1
        assert await say(runtime, "hello", "w1") == [HELLO]  # welcomed already
        # a web conversation that did not open (a script on the JSON webhook): no welcome
        assert await say(runtime, "hello", "w2") == [HELLO]
        # Telegram chats do not open first: the welcome comes before the first answer, once
        telegram = UserMessage(ConversationRef("shop", "telegram", "t1"), "u1", "hello", user_id="u1")
        assert [r.text for r in await runtime.handle(telegram)] == ["Hi from Telegram!", HELLO]
        again = UserMessage(ConversationRef("shop", "telegram", "t1"), "u2", "hello", user_id="u1")
        assert [r.text for r in await runtime.handle(again)] == [HELLO]
    finally:
        await runtime.aclose()


async def test_a_bot_without_a_welcome_stores_nothing_when_a_chat_opens(tmp_path: Path) -> None:
    runtime = await start_runtime(copy_bot(tmp_path), tmp_path / "store.db")
    try:
        assert await runtime.open(ConversationRef("shop", "web", "w1")) == []
        assert await runtime.store.load("shop", "w1") is None
    finally:
        await runtime.aclose()


async def test_another_question_inside_a_form_is_answered_and_the_form_asks_again(tmp_path: Path) -> None:
    runtime = await start_runtime(copy_bot(tmp_path), tmp_path / "store.db")
    try:
        assert await say(runtime, "I want to change my order") == [ASK_ORDER]
        # greet is confidently another intent and "hello" is no order number: answered, then asked again
        assert await say(runtime, "hello") == [HELLO, ASK_ORDER]
        # an answer nobody understands is an invalid answer (the slot's reason), not a question
        assert await say(runtime, "the blue one") == [DIGITS, ASK_ORDER]
        assert await say(runtime, "12345") == ["How many items of order 12345 should it be?"]
    finally:
        await runtime.aclose()


async def test_after_max_attempts_the_form_offers_a_way_out(tmp_path: Path) -> None:
    # the form allows 3 (tests/bots/test_forms.py); the slot's own max_attempts wins
    bot_dir = _edited(tmp_path, "    invalid: Order numbers are digits only, like 12345.\n",
                      "    invalid: Order numbers are digits only, like 12345.\n    max_attempts: 1\n")
    runtime = await start_runtime(bot_dir, tmp_path / "store.db")
    try:
        assert await say(runtime, "I want to change my order") == [ASK_ORDER]
        gave_up = await runtime.handle(message("the blue one"))
        assert [r.text for r in gave_up] == [DIGITS, "Sorry, I still can't use that as the order id. You can start "
                                                     "again, or talk to a person from our team."]
        assert [(b.title, b.payload) for b in gave_up[1].buttons] == [
            ("Change order", "/change_order"), ("Contact human agent", "/contact_human_agent")]
        # the form ended without its submit; the bot answers normally, and the form starts afresh on request
        assert await say(runtime, "hello") == [HELLO]
        assert await say(runtime, "I want to change my order") == [ASK_ORDER]
    finally:
        await runtime.aclose()


async def test_the_agent_timeout_says_nothing_once_the_hand_off_ended(tmp_path: Path) -> None:
    bot = load_bot(copy_bot(tmp_path, extra_yaml=(
        "handoff:\n  waiting: You're number {position}.\n  agent_timeout_minutes: 1\n  timeout: Sorry!\n")))
    dialogue = parse_dialogue(bot)
    firing = Understanding(AGENT_TIMEOUT_INTENT, 1.0, (IntentScore(AGENT_TIMEOUT_INTENT, 1.0),))
    decision = await decide(bot, dialogue, State(), Message("reminder handoff_agent_timeout fired", firing,
                                                             time.time(), channel="web"))
    assert [e.kind for e in decision.events if e.kind in (BOT, USER)] == []
    assert not decision.fallback and not decision.handoff


@pytest.mark.parametrize(("yaml", "problem"), [
    ("forms:\n  f:\n    required_slots: [s]\n    ask: {s: What is it}\n    max_attempts: many\n",
     "form 'f': 'max_attempts' must be a whole number from 1 to 20"),
    ("forms:\n  f:\n    required_slots: [s]\n    ask: {s: What is it}\n    give_up: No {colour}.\n",
     "form 'f': unknown placeholder(s) colour in 'give_up'"),
    ("forms:\n  f:\n    required_slots: [s]\n    ask: {s: What is it}\n    declined: Ask me about {colour}.\n",
     "form 'f': unknown placeholder(s) colour in 'declined'"),
    ("forms:\n  f:\n    required_slots: [s]\n    ask: {s: What is it}\n    ignored_intents: [weather]\n",
     "form 'f': unknown intent 'weather' in 'ignored_intents'"),
    ("forms:\n  f:\n    required_slots: [s]\n    ask: {s: What is it}\n    stop_intents: [goodbye]\n"
     "    ignored_intents: [goodbye]\n", "goodbye cannot both leave the form (stop_intents) and be answered"),
    ("handoff:\n  timeout: Sorry!\n", "give both 'agent_timeout_minutes' and 'timeout'"),
    ("handoff:\n  waiting: You are {place}.\n", "unknown placeholder(s) place (only {position}"),
    ("welcome:\n  slack: Hi!\n", "'welcome': unknown key 'slack' (expected default, web)"),
    ("welcome: ''\n", "'welcome' must be non-empty text"),
])
def test_bot_yml_mistakes_are_reported_at_their_line(tmp_path: Path, yaml: str, problem: str) -> None:
    slot = "slots:\n  s: {type: text}\n" if yaml.startswith("forms") else ""
    (tmp_path / "bot.yml").write_text(
        "name: mini\nchannels: [web]\nintents:\n  greet: {examples: [hi, hello], response: Hello!}\n"
        "  goodbye: {examples: [bye, see you], response: Bye!}\n" + slot + yaml, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        parse_dialogue(load_bot(tmp_path))
    assert any(problem in p and "bot.yml:" in p for p in raised.value.problems), raised.value.problems


async def test_queue_places_and_the_agent_timeout_hold_across_replicas_and_restarts(tmp_path: Path) -> None:
    """The queue is the store's, the timeout a durable reminder: replica A hands two customers off, replica B
    tells one their place, A goes away, B fires the timeouts (once: a restarted replica fires nothing again),
    and the customer an agent took meanwhile hears nothing."""
    bot_dir = copy_bot(tmp_path, extra_yaml=(
        "handoff:\n  waiting: You're number {position}.\n  agent_timeout_minutes: 10\n"
        "  timeout: Sorry for the wait! Leave your e-mail address for a ticket.\n"))
    db = tmp_path / "store.db"
    a, b = await start_runtime(bot_dir, db), await start_runtime(bot_dir, db)
    human = "Of course, I'll connect you with a colleague. Please stay in this chat."
    try:
        assert await say(a, "I want to talk to a human", "c1") == [human, "You're number 1."]
        assert await say(a, "I want to talk to a human", "c2") == [human, "You're number 2."]
        assert await say(b, "hello? anyone there?", "c2") == ["You're number 2."]
        await a.aclose()
        await handoff.take_over(b.store, "shop", "c1", "ann")
        assert await say(b, "hello? anyone there?", "c1") == []  # an agent has it
        assert await say(b, "hello? anyone there?", "c2") == ["You're number 1."]
        later = time.time() + 601
        assert await b.reminders.poll(now=later) == 2

        async def timeouts(runtime: Runtime, conversation_id: str) -> int:
            loaded = await runtime.store.load("shop", conversation_id)
            assert loaded is not None
            return sum(e.kind == BOT and e.data["text"].startswith("Sorry for the wait") for e in loaded.events)

        assert (await timeouts(b, "c1"), await timeouts(b, "c2")) == (0, 1)
        await b.aclose()
        restarted = await start_runtime(bot_dir, db)
        try:
            assert await restarted.reminders.poll(now=later + 60) == 0
            assert (await timeouts(restarted, "c1"), await timeouts(restarted, "c2")) == (0, 1)
        finally:
            await restarted.aclose()
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_example_bots_did_you_mean_buttons_show_titles(tmp_path: Path) -> None:
    runtime = await start_runtime(copy_bot(tmp_path, Path(__file__).resolve().parents[2] / "examples" / "support"),
                                  tmp_path / "store.db")
    try:
        [fallback] = await runtime.handle(message("blorp", bot="support"))
        assert fallback.source == "fallback"
        assert [(b.title, b.payload) for b in fallback.buttons] == [
            ("Track an order", "/track_order"), ("Change an order", "/change_order"),
            ("Cancel an order", "/cancel_order")]  # small talk ("Say hello", ranked third) is never suggested
        # A message not understood keeps what it said: its entities ride on the buttons, and the choice
        # goes on with them (the change form does not ask again for the order number it was given).
        [fallback] = await runtime.handle(message("blorp 12345", "c2", bot="support"))
        assert [b.payload for b in fallback.buttons] == [
            '/track_order{"order_id":"12345"}', '/change_order{"order_id":"12345"}',
            '/cancel_order{"order_id":"12345"}']
        chosen = await runtime.handle(message("Change an order", "c2", bot="support",
                                              payload=fallback.buttons[1].payload))
        assert [r.text for r in chosen] == [
            "What would you like to change in order 12345? You can add, remove or replace items."]
    finally:
        await runtime.aclose()


QUEUE_YAML = ("handoff:\n  waiting: Thanks for waiting, you're number {position}.\n"
              "  queued: You're number {position}.\n"
              "  left: OK, you've left the queue.\n  agent_timeout_minutes: 10\n"
              "  timeout: Sorry for the wait! Leave your e-mail address for a ticket.\n"
              "  email_received: Thanks, we'll write to {email}.\n")
HUMAN = "Of course, I'll connect you with a colleague. Please stay in this chat."


async def test_a_waiting_customer_who_says_goodbye_leaves_the_queue(tmp_path: Path) -> None:
    """QA (issue 14): "never mind, bye" while waiting got the place in the queue again; the hand-off itself
    thanked for waiting. Now the hand-off says ``queued``; a goodbye or stop leaves the queue (said so, the
    conversation out of the review UI's queue and unassigned, its agent timeout cancelled); a complaint that
    reads as stop does not."""
    runtime = await start_runtime(copy_bot(tmp_path, extra_yaml=QUEUE_YAML), tmp_path / "store.db")
    try:
        assert await say(runtime, "I want to talk to a human", "c1") == [HUMAN, "You're number 1."]
        assert await say(runtime, "I want to talk to a human", "c2") == [HUMAN, "You're number 2."]
        assert await say(runtime, "hello?", "c2") == ["Thanks for waiting, you're number 2."]
        await handoff.claim(runtime.store, "shop", "c1", "ann")  # assigned, not taken over yet: still waiting
        assert len((await handoff.queue(runtime.store, "shop")).waiting.items) == 2
        assert await say(runtime, "never mind, bye", "c1") == ["OK, you've left the queue."]
        summary = await runtime.store.summary("shop", "c1")
        assert summary is not None and not summary.handoff and summary.waiting_since is None
        assert summary.assignee is None
        found = await handoff.queue(runtime.store, "shop")
        assert [s.conversation_id for s in found.waiting.items] == ["c2"] and not found.active.items
        assert await say(runtime, "hello? anyone there?", "c2") == ["Thanks for waiting, you're number 1."]
        assert await say(runtime, "hello", "c1") == [HELLO]  # the bot answers again
        # the agent timeout of the customer who left says nothing; the other one's is said
        assert await runtime.reminders.poll(now=time.time() + 601) == 1
        loaded = await runtime.store.load("shop", "c1")
        assert loaded is not None and not any(e.kind == BOT and "Sorry for the wait" in e.data["text"]
                                              for e in loaded.events)
        # an angry message that reads as goodbye keeps the customer in the queue
        assert await say(runtime, "bye?? this is unacceptable and useless", "c2") == [
            "Thanks for waiting, you're number 1."]
        assert (await runtime.store.summary("shop", "c2")).waiting_since is not None  # type: ignore[union-attr]
    finally:
        await runtime.aclose()


async def test_an_email_address_after_the_agent_timeout_is_acknowledged_and_tagged(tmp_path: Path) -> None:
    """QA (issue 14): after the timeout offered an answer by e-mail, "my email is jane@example.com" got the place
    in the queue. Now it is acknowledged and the conversation tagged for staff (still waiting for an agent);
    an address written before the timeout offered anything is not taken for one."""
    runtime = await start_runtime(copy_bot(tmp_path, extra_yaml=QUEUE_YAML), tmp_path / "store.db")
    try:
        assert await say(runtime, "I want to talk to a human", "c1") == [HUMAN, "You're number 1."]
        assert await say(runtime, "I'm jane@example.com", "c1") == ["Thanks for waiting, you're number 1."]
        assert await runtime.reminders.poll(now=time.time() + 601) == 1
        assert await say(runtime, "ok, my email is jane@example.com", "c1") == [
            "Thanks, we'll write to jane@example.com."]
        summary = await runtime.store.summary("shop", "c1")
        assert summary is not None and "email-reply" in summary.tags and summary.waiting_since is not None
        assert [s.conversation_id for s in (await handoff.queue(runtime.store, "shop")).waiting.items] == ["c1"]
        assert await say(runtime, "hello?", "c1") == ["Thanks for waiting, you're number 1."]
    finally:
        await runtime.aclose()


def test_handoff_texts_placeholders_are_checked(tmp_path: Path) -> None:
    (tmp_path / "bot.yml").write_text(
        "name: mini\nchannels: [web]\nintents:\n  greet: {examples: [hi, hello], response: Hello!}\n"
        "  goodbye: {examples: [bye, see you], response: Bye!}\n"
        "handoff:\n  queued: You are {place}.\n  email_received: Thanks {name}.\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        parse_dialogue(load_bot(tmp_path))
    problems = raised.value.problems
    assert any("'handoff: queued': unknown placeholder(s) place" in p for p in problems), problems
    assert any("'handoff: email_received': unknown placeholder(s) name" in p for p in problems), problems
    assert any("'handoff: email_received' is said to an address written after 'timeout'" in p for p in problems)
    (tmp_path / "bot.yml").write_text(
        "name: mini\nchannels: [web]\nintents:\n  greet: {examples: [hi, hello], response: Hello!}\n"
        "  goodbye: {examples: [bye, see you], response: Bye!}\n"
        "handoff:\n  left: Bye.\n  estimate: About {minutes}.\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        parse_dialogue(load_bot(tmp_path))
    problems = raised.value.problems
    assert any("bot.yml:8: 'handoff: estimate': unknown placeholder(s) minutes (only {wait}" in p
               for p in problems), problems
    assert any("bot.yml:8: 'handoff: estimate' is said after 'waiting' or 'queued'" in p for p in problems), problems


async def test_polite_off_topic_questions_and_capitals_are_not_handed_off_as_frustration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA (issue 14): three polite off-topic questions got the one out-of-scope answer and were handed to a person
    "I can see it's frustrating" (the runtime counted the bot's repeated answer); a customer writing in capitals
    was handed off at their second, answered, message. The runtime passes the intent to ``repeated_answer``
    and scores capitals against the customer's previous message."""
    from tests.bots import keyword_model
    monkeypatch.setattr(keyword_model, "KEYWORDS", (
        *keyword_model.KEYWORDS, (r"\b(weather|football|laptop)\b", "out_of_scope")))
    sorry = ("Sorry, I can't help with that: I'm the shop's assistant for orders, delivery and your account. Could "
             "you tell me what you need about those?")
    bot_dir = _edited(tmp_path, "intents:\n", f"intents:\n  out_of_scope:\n    examples: [weather, football]\n"
                      f"    response: \"{sorry}\"\n", extra_yaml="frustration: {handoff_after: 2}\n")
    runtime = await start_runtime(bot_dir, tmp_path / "store.db")
    try:
        for text in ("what's the weather in paris?", "who won the football yesterday", "can you recommend a laptop?"):
            assert await say(runtime, text, "o1") == [sorry]
        summary = await runtime.store.summary("shop", "o1")
        assert summary is not None and not summary.handoff and summary.frustration == 0
        assert await say(runtime, "HI IS ANYONE THERE", "k1") == [HELLO]  # shouting: one frustrated turn
        assert await say(runtime, "HELLO WHO IS THIS", "k1") == [HELLO]  # capitals again: how they write
        summary = await runtime.store.summary("shop", "k1")
        assert summary is not None and not summary.handoff and summary.frustration == 1
    finally:
        await runtime.aclose()
