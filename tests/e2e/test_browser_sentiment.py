"""An angry customer in a real headless Chromium (tests/fixtures/browser.py) against ``switchboard serve``:
they type into the web chat, the bot hands them to a person at their second frustrated message
(``frustration: {handoff_after: 2}``), and a support agent finds the conversation with the review UI's
frustration filter and sort and reads each turn's sentiment, with what the customer typed inert."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.connectors.test_review_api import add_users
from tests.e2e.test_browser_review import sign_in
from tests.fixtures.browser import browser as browser  # the fixture
from tests.fixtures.browser import page_of, require_chromium, shot
from tests.fixtures.server import ServeProcess

XSS = '<img src=x onerror="window.pwned=1">where is the damn order<script>window.pwned=2</script>'
HANDOFF = "Sorry for the trouble, a colleague takes over now."


@pytest.fixture(scope="module")
def server(tiny_bot_dir: Path, module_tmp: Callable[[str], Path]) -> Iterator[str]:
    require_chromium()
    root = module_tmp("sentiment")
    bot_dir = root / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    with (bot_dir / "bot.yml").open("a") as f:
        f.write(f"frustration:\n  handoff_after: 2\n  message: {HANDOFF!r}\n")
    data_dir = root / "data"
    data_dir.mkdir()
    add_users(data_dir, ann="agent")
    env = {"SWITCHBOARD_NLU_MAX_WAIT_MS": "0", "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    with ServeProcess([bot_dir], data_dir=data_dir, env=env) as serve:
        yield serve.url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from page_of(browser, 1280, 900)


def test_an_angry_customer_is_handed_off_and_found_by_frustration(server: str, page: Page,
                                                                   browser: Browser) -> None:
    page.goto(server + "/bots/tiny/chat")
    log = page.get_by_role("log", name="Conversation")
    box = page.get_by_label("Your message")
    # the angry message is one the tiny bot does not understand: handed off at once (handoff_after counts
    # frustrated messages the bot answers; an angry customer is never asked "did you mean")
    for text in ("hello", XSS):
        before = log.locator(".msg.bot").count()
        box.fill(text)
        box.press("Enter")
        expect(log.locator(".msg.user").last).to_have_text(text)
        expect(log.locator(".msg.bot")).not_to_have_count(before)
    expect(log.locator(".msg.bot").last).to_have_text(HANDOFF)
    # written while waiting for the person: stored and scored, the bot stays silent
    box.fill("I am furious")
    box.press("Enter")
    expect(log.locator(".msg.user").last).to_have_text("I am furious")
    shot(page, "20-frustrated-customer-handed-off")
    conversation_id = page.evaluate("window.SwitchboardWidget.conversationId()")

    agent: Any = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(agent, server)
    agent.get_by_label("Frustrated").select_option("yes")
    agent.get_by_label("Sort", exact=True).select_option("frustration")
    agent.get_by_role("button", name="Apply filters").click()
    expect(agent.locator(".conv-link")).to_have_text([conversation_id])
    expect(agent.locator("table.list")).to_contain_text("frustrated \u00d72")
    shot(agent, "21-frustrated-conversations")
    agent.get_by_label("Sentiment below").fill("-0.95")
    agent.get_by_role("button", name="Apply filters").click()
    expect(agent.locator("#result-count")).to_contain_text("0 conversations")

    agent.goto(f"{server}/review/bots/tiny/conversations/{conversation_id}")
    customers = agent.locator(".msg.customer")
    expect(customers).to_have_count(3)
    expect(customers.nth(0).locator(".mood")).to_have_text("sentiment 0.00")
    expect(customers.nth(1).locator(".text")).to_have_text(XSS)
    expect(customers.nth(1).locator(".mood.frustrated")).to_contain_text("· frustrated (profanity)")
    expect(customers.nth(2).locator(".mood.frustrated")).to_contain_text("· frustrated (negative)")
    expect(agent.locator(".sys").filter(has_text="Handed off")).to_have_text(
        "Handed off by the bot: the customer is frustrated")
    expect(agent.locator("#status-badges")).to_contain_text("frustrated \u00d72")
    expect(agent.locator("#live-state")).to_contain_text("the bot is paused")
    shot(agent, "22-transcript-sentiment")
    for p in (page, agent):
        assert p.evaluate("window.pwned") is None
        assert p.locator("img[src=x]").count() == 0
    agent.context.close()
