"""The web chat's welcome and a waiting customer's place in the queue, in a real headless Chromium: the
chat page of a bot with ``welcome:`` and ``handoff: waiting`` (tests/data/dialogue_bot, its NLU the
keyword model) served by the real app (uvicorn on 127.0.0.1). The chat opens with the welcome, a reload
shows it once (it is the stored first turn, not said again), and asking for a person answers with the
place in the queue, again when the customer writes. Screens under ``test-artifacts/screenshots/``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.bots.keyword_model import copy_bot, keyword_loader
from tests.connectors.test_review_api import PASSWORD
from tests.fixtures.browser import browser as browser  # the fixture
from tests.fixtures.browser import page_of, require_chromium, shot
from tests.fixtures.server import browser_app

WELCOME = "Hi! I'm the shop's assistant <b>bot</b>. How can I help?"  # shown as text, markup and all
PLACE = "You're number 1 in the queue. Please stay in this chat."


@pytest.fixture(scope="module")
def server(module_tmp: Callable[[str], Path]) -> Iterator[str]:
    require_chromium()
    root = module_tmp("welcome")
    bot_dir = copy_bot(root, extra_yaml=(f"welcome:\n  web: \"{WELCOME}\"\n"
                                         "handoff:\n  waiting: You're number {position} in the queue. Please stay "
                                         "in this chat.\n"))
    with browser_app(root / "data", [bot_dir], users={"ann": "agent"}, model_loader=keyword_loader) as url:
        yield url


@pytest.fixture
def customer(browser: Browser) -> Iterator[Page]:
    yield from page_of(browser, 900, 900)


def test_the_chat_opens_with_one_welcome_and_a_waiting_customer_hears_their_place(server: str, browser: Browser,
                                                                                  customer: Page) -> None:
    customer.goto(f"{server}/bots/shop/chat")
    bot = customer.locator(".msg.bot")
    expect(bot).to_have_count(1)
    expect(bot.first).to_have_text(WELCOME)
    assert bot.first.locator("b").count() == 0
    customer.reload()
    expect(customer.locator(".msg.bot")).to_have_count(1)  # the stored welcome, not a second one
    expect(customer.locator(".msg.user")).to_have_count(0)  # the opening is nothing the customer typed
    customer.locator("input").fill("hello")
    customer.locator("input").press("Enter")
    expect(bot).to_have_count(2)
    expect(bot.nth(1)).to_have_text("Hello! How can I help you today?")
    customer.locator("input").fill("I want to talk to a human")
    customer.locator("input").press("Enter")
    expect(bot).to_have_count(4)
    expect(bot.nth(3)).to_have_text(PLACE)
    customer.locator("input").fill("hello? anyone there?")
    customer.locator("input").press("Enter")
    expect(bot).to_have_count(5)
    expect(bot.nth(4)).to_have_text(PLACE)
    customer.reload()
    expect(customer.locator(".msg.bot")).to_have_count(5)
    expect(customer.locator(".msg.bot").first).to_have_text(WELCOME)
    shot(customer, "welcome-and-queue")
    # the review transcript shows the opening as what it is, not as an empty customer message
    conversation_id = customer.evaluate("window.SwitchboardWidget.conversationId()")
    for agent in page_of(browser, 1100, 900):
        agent.goto(f"{server}/review")
        agent.get_by_label("User name").fill("ann")
        agent.get_by_label("Password").fill(PASSWORD)
        agent.get_by_role("button", name="Sign in").click()
        expect(agent.get_by_role("heading", name="Conversations")).to_be_visible()
        agent.goto(f"{server}/review/bots/shop/conversations/{conversation_id}")
        first = agent.locator("li.turn").first
        expect(first.locator(".sys").first).to_have_text("chat opened")
        expect(first).to_contain_text(WELCOME)
        shot(agent, "welcome-in-review")


def test_another_visitor_gets_a_conversation_and_a_welcome_of_their_own(server: str, browser: Browser) -> None:
    for _ in range(2):  # two visitors: two conversations, each welcomed once
        for page in page_of(browser, 900, 900):
            page.goto(f"{server}/bots/shop/chat")
            expect(page.locator(".msg.bot")).to_have_count(1)
            expect(page.locator(".msg.user")).to_have_count(0)
