"""The example support bot talks like a good agent (issue 14 item 3), replayed through the web
channel of the FastAPI app: the example bot (examples/support, trained here in fast mode on a slice
of its data) greets when the chat opens (once, also after a reload), answers small talk, handles the
change-order and cancel-order forms' unhappy paths (an unknown order, "replace the blue shirt with a
red one" whose NLU entity order_id=blue must neither fill the slot nor be reported as an order, an
off-topic question, "never mind", the retry limit), and tells a customer waiting for an agent their
place in the queue, then apologises when no agent took the conversation in time (a durable
reminder, fired by the app's reminder poller)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots.botspec import BotSpec, fill_template, load_bot
from bots.dialogue.spec import DialogueSpec, parse_dialogue
from bots.settings import Settings
from connectors.app import create_app
from tests.conftest import ADMIN_TOKEN, ROOT
from tests.connectors.test_review_api import add_users, sign_in

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AGENT_TIMEOUT_S = 1.5  # the copy's handoff: agent_timeout_minutes, so that the test sees it fire


@pytest.fixture(scope="module")
def support_bot(module_tmp: Callable[[str], Path]) -> Path:
    from training.cli import main as training_main

    bot = module_tmp("agent") / "support"
    shutil.copytree(ROOT / "examples" / "support", bot, ignore=shutil.ignore_patterns("models", "__pycache__"))
    text = (bot / "bot.yml").read_text(encoding="utf-8")
    assert "  agent_timeout_minutes: 10\n" in text
    (bot / "bot.yml").write_text(text.replace("  agent_timeout_minutes: 10\n",
                                              f"  agent_timeout_minutes: {AGENT_TIMEOUT_S / 60}\n"), encoding="utf-8")
    assert training_main(["train", str(bot), "--fast", "--max-examples-per-intent", "25", "--seed", "0"]) == 0
    return bot


@pytest.fixture(scope="module")
def spec(support_bot: Path) -> tuple[BotSpec, DialogueSpec]:
    bot = load_bot(support_bot)
    return bot, parse_dialogue(bot)


@pytest.fixture
def app(support_bot: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, nlu_max_wait_ms=0.0,
                        reminder_poll_s=0.1)
    add_users(settings.data_dir, ann="agent")
    with TestClient(create_app(settings, [support_bot])) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        yield client


def say(client: TestClient, conversation_id: str, text: str) -> list[dict[str, Any]]:
    r = client.post("/bots/support/webhooks/web", json={"conversation_id": conversation_id,
                                                         "message_id": f"m{time.monotonic_ns()}", "text": text})
    assert r.status_code == 200, r.text
    return r.json()["responses"]


def texts(responses: list[dict[str, Any]]) -> list[str]:
    return [r["text"] for r in responses]


def answer(bot: BotSpec, intent: str, **values: str) -> str:
    filled = fill_template(bot.intents[intent].responses, values)
    assert filled is not None
    return filled


def ask(dialogue: DialogueSpec, form: str, slot: str, **values: str) -> str:
    filled = fill_template(dialogue.forms[form].ask[slot], values)
    assert filled is not None
    return filled


def slots_of(client: TestClient, conversation_id: str) -> list[tuple[str, Any]]:
    turns = client.get(f"/bots/support/conversations/{conversation_id}", headers=AUTH).json()["turns"]
    return [(e["data"]["name"], e["data"]["value"]) for t in turns for e in t["events"] if e["kind"] == "slot"]


def test_the_chat_opens_with_one_welcome_even_after_a_reload(app: TestClient,
                                                             spec: tuple[BotSpec, DialogueSpec]) -> None:
    welcome = spec[1].welcome_for("web")
    assert welcome
    started = app.post("/bots/support/webhooks/web/conversations")
    assert started.status_code == 201, started.text
    conversation_id, token = started.json()["conversation_id"], started.json()["token"]

    def history() -> list[dict[str, Any]]:
        r = app.get("/bots/support/webhooks/web/history", params={"conversation_id": conversation_id},
                    headers={"X-Conversation-Token": token})
        assert r.status_code == 200, r.text
        return r.json()["messages"]

    assert [(m["role"], m["text"]) for m in history()] == [("bot", welcome)]  # nothing the customer typed
    assert [(m["role"], m["text"]) for m in history()] == [("bot", welcome)]  # the page reloaded
    # the widget's conversation goes on without a second welcome
    assert texts(say(app, conversation_id, "hi")) == [answer(spec[0], "greet")]
    assert [(m["role"], m["text"]) for m in history()] == [
        ("bot", welcome), ("user", "hi"), ("bot", answer(spec[0], "greet"))]
    turns = app.get(f"/bots/support/conversations/{conversation_id}", headers=AUTH).json()["turns"]
    assert [[e["data"]["text"] for e in t["events"] if e["kind"] == "bot"] for t in turns] == [
        [welcome], [answer(spec[0], "greet")]]


@pytest.mark.parametrize(("text", "intent"), [
    ("Hi there!", "greet"), ("hi", "greet"), ("hello?", "greet"), ("thank you", "thanks"),
    ("are you a bot?", "bot_challenge"), ("who are you?", "bot_challenge"), ("bye", "goodbye"),
    ("yes", "affirm"), ("no", "deny"), ("what's the weather like today?", "out_of_scope"),
])
def test_small_talk_gets_its_own_answer(app: TestClient, spec: tuple[BotSpec, DialogueSpec], text: str,
                                        intent: str) -> None:
    conversation_id = f"talk-{intent}"
    replies = say(app, conversation_id, text)
    assert texts(replies) == [answer(spec[0], intent)], replies
    summary = app.get(f"/bots/support/conversations/{conversation_id}", headers=AUTH).json()["summary"]
    assert summary["handoff"] is False
    assert not any(r["buttons"] for r in replies)  # never "Did you mean ...?"


def click(client: TestClient, conversation_id: str, title: str, payload: str) -> list[dict[str, Any]]:
    r = client.post("/bots/support/webhooks/web", json={"conversation_id": conversation_id, "text": title,
                                                         "message_id": f"m{time.monotonic_ns()}", "payload": payload})
    assert r.status_code == 200, r.text
    return r.json()["responses"]


@pytest.mark.parametrize("text", ["order 3707955617", "3707955617", "my order number is 3707955617"])
def test_an_order_number_alone_asks_what_to_do_with_it(app: TestClient, spec: tuple[BotSpec, DialogueSpec],
                                                       text: str) -> None:
    """A number alone says which order, not what to do with it: the bot asks, and the chosen button carries
    the number into its form (before, "order 55555" read as cancel_order and started a cancellation)."""
    bot, dialogue = spec
    conversation_id = f"number-{len(text)}"
    replies = say(app, conversation_id, text)
    assert texts(replies) == [answer(bot, "give_order_number", order_id="3707955617")], replies
    buttons = {b["title"]: b["payload"] for b in replies[0]["buttons"]}
    assert buttons == {"Where is it?": '/track_order{"order_id":"3707955617"}',
                       "Change it": '/change_order{"order_id":"3707955617"}',
                       "Cancel it": '/cancel_order{"order_id":"3707955617"}',
                       "Return it for a refund": '/get_refund{"order_id":"3707955617"}'}
    assert texts(click(app, conversation_id, "Where is it?", buttons["Where is it?"])) == [
        "Order 3707955617 is shipped. You can follow it under My orders."]
    # an order the shop does not know is said so by the form the customer chose, which asks again
    replies = say(app, f"{conversation_id}-unknown", "order 55555")
    assert texts(replies) == [answer(bot, "give_order_number", order_id="55555")], replies
    cancel = {b["title"]: b["payload"] for b in replies[0]["buttons"]}["Cancel it"]
    assert texts(click(app, f"{conversation_id}-unknown", "Cancel it", cancel)) == [
        "I couldn't find order 55555. Please check the number in your confirmation email.",
        ask(dialogue, "cancel_order_form", "order_id")]


def test_change_order_form_unhappy_paths(app: TestClient, spec: tuple[BotSpec, DialogueSpec]) -> None:
    bot, dialogue = spec
    ask_order = ask(dialogue, "change_order_form", "order_id")
    assert texts(say(app, "c1", "I'd like to modify my order")) == [ask_order]
    # an unknown order: the validation action's reason, the question again
    assert texts(say(app, "c1", "99999")) == [
        "I couldn't find order 99999. Please check the number in your confirmation email.", ask_order]
    # another question inside the form: answered, then the form asks again (not counted as an answer)
    assert texts(say(app, "c1", "what payment methods do you accept?")) == [
        answer(bot, "check_payment_methods"), ask_order]
    # the NLU reads order_id=blue here: never the order number, never reported as one. What the bot says depends
    # on the model: the message is either read as out of scope (answered, then the form asks again) or taken as
    # the second invalid answer (the form offers a way on instead of asking a third time)
    blue = texts(say(app, "c1", "replace the blue shirt with a red one"))
    assert not any("blue" in t for t in blue), blue
    assert ("order_id", "blue") not in slots_of(app, "c1")
    assert blue[-1] in (ask_order, GAVE_UP), blue


GAVE_UP = ("Sorry, I still can't use that as the order number. You can start again, or talk to a person from our "
           "support team.")  # (the slot's label: its name, "order id", was said before)


def test_change_order_form_gives_up_after_two_invalid_answers(app: TestClient,
                                                              spec: tuple[BotSpec, DialogueSpec]) -> None:
    bot, dialogue = spec
    ask_order = ask(dialogue, "change_order_form", "order_id")
    assert texts(say(app, "g1", "I'd like to modify my order")) == [ask_order]
    assert texts(say(app, "g1", "99999")) == [
        "I couldn't find order 99999. Please check the number in your confirmation email.", ask_order]
    gave_up = say(app, "g1", "A-12")
    assert texts(gave_up) == [
        "Order numbers contain digits only, like 3707955617; you'll find yours in the confirmation email.", GAVE_UP]
    assert [(b["title"], b["payload"]) for b in gave_up[-1]["buttons"]] == [
        ("Change an order", "/change_order"), ("Talk to a person", "/contact_human_agent")]
    # the form is over: small talk is small talk again
    assert texts(say(app, "g1", "thank you")) == [answer(bot, "thanks")]


def test_a_no_to_the_order_number_question_ends_the_form_with_a_way_on(app: TestClient,
                                                                       spec: tuple[BotSpec, DialogueSpec]) -> None:
    """"i don't know it" (deny) was told "Order numbers contain digits only" and asked again: a customer who says
    no to a question that is not yes/no is offered a way on at once (the form's ``declined``)."""
    dialogue = spec[1]
    assert texts(say(app, "n1", "I'd like to modify my order")) == [ask(dialogue, "change_order_form", "order_id")]
    declined = say(app, "n1", "no")
    assert texts(declined) == [dialogue.forms["change_order_form"].declined[0]]
    assert [(b["title"], b["payload"]) for b in declined[-1]["buttons"]] == [
        ("Change an order", "/change_order"), ("Talk to a person", "/contact_human_agent")]


def test_the_change_is_recorded_for_the_right_order(app: TestClient, spec: tuple[BotSpec, DialogueSpec]) -> None:
    dialogue = spec[1]
    assert texts(say(app, "c2", "I'd like to modify my order")) == [ask(dialogue, "change_order_form", "order_id")]
    assert texts(say(app, "c2", "12345")) == [ask(dialogue, "change_order_form", "order_change", order_id="12345")]
    assert texts(say(app, "c2", "replace the blue shirt with a red one")) == [
        "Thanks! I've asked our warehouse to change order 12345 (replace the blue shirt with a red one). You'll get "
        "an email as soon as the change is confirmed."]
    assert [v for name, v in slots_of(app, "c2") if name == "order_id"] == ["12345"]


@pytest.mark.parametrize("leave", ["never mind", "stop", "cancel that"])
def test_stop_leaves_a_form(app: TestClient, spec: tuple[BotSpec, DialogueSpec], leave: str) -> None:
    bot, dialogue = spec
    conversation_id = f"leave-{leave.replace(' ', '-')}"
    assert texts(say(app, conversation_id, "I'd like to modify my order")) == [
        ask(dialogue, "change_order_form", "order_id")]
    assert texts(say(app, conversation_id, leave)) == [answer(bot, "stop")]
    assert texts(say(app, conversation_id, "hi")) == [answer(bot, "greet")]  # no question about the order again


def test_delivery_options_answer_a_country_yes_or_no_and_never_reuse_an_old_one(app: TestClient) -> None:
    """"do you ship to canada?" was answered "…Switzerland and Norway. If canada is one of them, …", and the next
    shipping question was answered about the country kept in the slot: the action says yes or no, from this
    message only (a button's payload sets the entity as the NLU would)."""
    def ask_about(payload: str) -> list[str]:
        body = {"conversation_id": "d1", "message_id": f"m{time.monotonic_ns()}", "text": "delivery",
                "payload": payload}
        r = app.post("/bots/support/webhooks/web", json=body)
        assert r.status_code == 200, r.text
        return texts(r.json()["responses"])

    assert ask_about('/delivery_options{"delivery_country": "Canada"}') == [
        "Sorry, we don't ship to Canada: we deliver to all EU countries, the United Kingdom, Switzerland and Norway "
        "only."]
    assert ask_about('/delivery_options{"delivery_country": "us"}')[0].startswith("Sorry, we don't ship to the US: ")
    typed = ask_about('/delivery_options{"delivery_country": "canada"}')  # named as a sentence names it
    assert typed[0].startswith("Sorry, we don't ship to Canada: ")
    norway = ask_about('/delivery_options{"delivery_country": "Norway"}')
    assert norway[0].startswith("Yes, we ship to Norway. Standard delivery takes 3 to 5 business days and is free "
                                "for orders over 50 euros; express takes 1 to 2 business days and costs 9 euros.")
    assert ask_about("/delivery_options") == [
        "We deliver to all EU countries, the United Kingdom, Switzerland and Norway, with standard and express "
        "shipping and pick-up points in many areas. Standard delivery takes 3 to 5 business days and is free for "
        "orders over 50 euros; express takes 1 to 2 business days and costs 9 euros. The options for your address "
        "are shown at checkout."]


def test_cancel_checks_the_order_as_change_does(app: TestClient, spec: tuple[BotSpec, DialogueSpec]) -> None:
    _, dialogue = spec
    ask_cancel = ask(dialogue, "cancel_order_form", "order_id")
    assert texts(say(app, "k1", "I want to cancel order 99999")) == [
        "I couldn't find order 99999. Please check the number in your confirmation email.", ask_cancel]
    refused = say(app, "k1", "3707955617")  # a known order that has shipped: the form ends, with what can be done
    assert texts(refused) == ["Order 3707955617 has already shipped, so it can't be cancelled any more. Once it "
                              "arrives, you can return it for a refund."]
    assert [(b["title"], b["payload"]) for b in refused[0]["buttons"]] == [
        ("Where is it?", '/track_order{"order_id": "3707955617"}')]
    # a cancellation cannot be undone: it is confirmed first ("no" keeps the order, "yes please" cancels it)
    confirm = ask(dialogue, "cancel_order_form", "cancel_confirmed", order_id="12345")
    assert texts(say(app, "k2", "I want to cancel my order 12345")) == [confirm]
    assert texts(say(app, "k2", "no")) == [
        "OK, I won't cancel order 12345. Is there anything else I can help you with?"]
    assert texts(say(app, "k4", "I want to cancel my order 12345")) == [confirm]
    assert texts(say(app, "k4", "yes please")) == [
        "Done: order 12345 is cancelled. You'll get a confirmation email, and any payment goes back to your original "
        "payment method within 5 business days."]
    # and change refuses the same order for the same reason
    say(app, "k3", "I'd like to modify my order")
    assert texts(say(app, "k3", "99999"))[0] == (
        "I couldn't find order 99999. Please check the number in your confirmation email.")


def test_a_waiting_customer_hears_their_place_then_an_apology(app: TestClient,
                                                             spec: tuple[BotSpec, DialogueSpec]) -> None:
    bot, dialogue = spec

    def place(n: int, said: tuple[str, ...] = dialogue.handoff.waiting) -> str:
        filled = fill_template(said, {"position": str(n)})
        assert filled is not None
        return filled

    queued = dialogue.handoff.queued  # the hand-off's own notice does not thank for waiting
    assert "thank" not in place(1, queued).lower() and "thank" in place(1).lower()
    assert texts(say(app, "h1", "I want to talk to a human")) == [answer(bot, "contact_human_agent"), place(1, queued)]
    assert texts(say(app, "h2", "I want to talk to a human")) == [answer(bot, "contact_human_agent"),
                                                                   place(2, queued)]
    assert texts(say(app, "h2", "hello? anyone there?")) == [place(2)]
    # an agent takes h1: h2 moves up, h1's customer is not told about a queue any more (the agent answers)
    h = {"X-CSRF-Token": sign_in(app, "ann")}
    assert app.post("/review/api/bots/support/conversations/h1/takeover", headers=h).status_code == 200
    assert texts(say(app, "h2", "hello? anyone there?")) == [place(1)]
    assert texts(say(app, "h1", "hello? anyone there?")) == []
    # nobody took h2 within the timeout: the durable reminder fires and the bot apologises (once); h1's fires
    # too, but an agent has it: nothing is said there
    timeout = fill_template(dialogue.handoff.timeout, {})
    assert timeout is not None and "e-mail" in timeout

    def bot_texts(conversation_id: str) -> list[str]:
        turns = app.get(f"/bots/support/conversations/{conversation_id}", headers=AUTH).json()["turns"]
        return [e["data"]["text"] for t in turns for e in t["events"] if e["kind"] == "bot"]

    deadline = time.monotonic() + 20
    while timeout not in bot_texts("h2"):
        assert time.monotonic() < deadline, bot_texts("h2")
        time.sleep(0.1)
    time.sleep(0.5)
    assert bot_texts("h2").count(timeout) == 1
    assert timeout not in bot_texts("h1")
    # the e-mail address the apology asked for is acknowledged and the conversation tagged for staff (QA, issue 14:
    # it got the place in the queue)
    assert texts(say(app, "h2", "my email is jane@example.com")) == [
        fill_template(dialogue.handoff.email_received, {"email": "jane@example.com"})]
    summary = app.get("/bots/support/conversations/h2", headers=AUTH).json()["summary"]
    assert "email-reply" in summary["tags"] and summary["waiting_since"] is not None
    # a customer who no longer wants to wait leaves the queue (QA: "never mind, bye" got the place in the queue)
    assert texts(say(app, "h3", "I want to talk to a human"))[0] == answer(bot, "contact_human_agent")
    assert texts(say(app, "h3", "never mind, bye")) == [fill_template(dialogue.handoff.left, {})]
    summary = app.get("/bots/support/conversations/h3", headers=AUTH).json()["summary"]
    assert not summary["handoff"] and summary["waiting_since"] is None
    fired = [t for t in app.get("/bots/support/conversations/h1", headers=AUTH).json()["turns"]
             if (t["message_id"] or "").startswith("reminder:")]
    assert len(fired) == 1  # the firing is recorded, and says nothing


def test_a_waiting_customer_is_told_the_typical_wait_once_agents_have_answered(
        app: TestClient, spec: tuple[BotSpec, DialogueSpec], monkeypatch: pytest.MonkeyPatch) -> None:
    """QA (issue 14): "how long will it take" while waiting got the place in the queue only. Once agents have
    answered 3 customers in the last day, the place comes with their typical (median) wait for the first reply;
    before, nothing is claimed."""
    from bots import handoff

    monkeypatch.setattr(handoff, "WAIT_REFRESH_S", 0.0)  # read the store at every message (60 s when served)
    _, dialogue = spec
    h = {"X-CSRF-Token": sign_in(app, "ann")}
    for n, conversation_id in enumerate(("w1", "w2", "w3"), start=1):
        said = texts(say(app, conversation_id, "I want to talk to a human"))
        assert said[-1] == fill_template(dialogue.handoff.queued, {"position": "1"}), said  # no estimate yet
        r = app.post(f"/review/api/bots/support/conversations/{conversation_id}/reply", headers=h,
                     json={"text": f"Hi, Ann here ({n})"})
        assert r.status_code in (200, 502), r.text  # stored (a web conversation without a socket: not pushed)
    said = texts(say(app, "w4", "I want to talk to a human"))
    estimate = fill_template(dialogue.handoff.estimate, {"wait": "under a minute"})
    queued = fill_template(dialogue.handoff.queued, {"position": "1"})
    assert estimate is not None and said[-1] == f"{queued} {estimate}"
    assert texts(say(app, "w4", "how long will it take?")) == [
        f"{fill_template(dialogue.handoff.waiting, {'position': '1'})} {estimate}"]


def test_an_angry_customer_is_handed_to_a_person_at_the_second_frustrated_message(
        app: TestClient, spec: tuple[BotSpec, DialogueSpec]) -> None:
    """The example bot's frustration: {handoff_after: 2}: an angry message the bot understands is answered
    (a plain complaint it may solve) and the second hands the conversation to a person with the bot's apology;
    an angry message it does not understand is handed off at once (never "did you mean ...?")."""
    from bots.nlu.sentiment import Frustration

    frustration = Frustration.parse(spec[0].sections.get("frustration"), [])
    assert frustration.handoff_after == 2
    first = texts(say(app, "f1", "I was charged twice and I am furious"))
    assert first and not any("Did you mean" in t for t in first), first
    if frustration.message not in first:  # understood and answered, a person offered; the second hands off
        assert len(first) == 2 and first[-1] == frustration.offer, first
        second = texts(say(app, "f1", "this is the worst service ever, I want my money back"))
        assert frustration.message in second, second
    summary = app.get("/bots/support/conversations/f1", headers=AUTH).json()
    assert summary["summary"]["handoff"] is True
    assert summary["summary"]["frustration"] >= 1
    # a calm customer is never handed off by it
    assert frustration.message not in texts(say(app, "f2", "where is my order?"))
    assert app.get("/bots/support/conversations/f2", headers=AUTH).json()["summary"]["handoff"] is False
