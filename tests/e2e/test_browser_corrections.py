"""Corrections that feed training and the analytics page in a real headless Chromium (issue 18 items 3
and 4): an agent labels a customer's message with a new intent, marks an entity by selecting its words,
marks the missed hand-off, saves the corrections on the server (under the data dir, confirmed first);
the team lead's analytics page draws the day's figures. Screens under ``test-artifacts/screenshots/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.e2e.test_browser_review import agent as agent  # the fixtures
from tests.e2e.test_browser_review import sign_in
from tests.e2e.test_browser_review import stack as stack
from tests.fixtures.browser import browser as browser
from tests.fixtures.browser import page_of, shot

_SELECT = """([start, end]) => {
  const box = document.querySelector('#correct-text');
  const range = document.createRange();
  range.setStart(box.firstChild, start);
  range.setEnd(box.firstChild, end);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}"""


def test_a_new_intent_an_entity_selected_in_the_text_and_a_missed_hand_off(stack: dict[str, Any],
                                                                             agent: Page) -> None:
    sign_in(agent, stack["url"])
    agent.goto(stack["url"] + "/review/bots/tiny/conversations/yday-lower")
    message = agent.locator(".msg.customer").first
    expect(message).to_contain_text("blorp the thing")
    agent.get_by_role("button", name="Correct message 1").click()
    dialog = agent.get_by_role("dialog", name="Correct this message")
    expect(dialog.get_by_label("New intent name")).to_be_hidden()
    dialog.get_by_label("Intent", exact=True).select_option(label="New intent\u2026")
    name = dialog.get_by_label("New intent name")
    expect(name).to_be_focused()
    name.fill("bad name!")
    agent.evaluate(_SELECT, [9, 15])  # " thing": the leading space is left out
    dialog.locator("#correct-text").dispatch_event("mouseup")
    expect(dialog.get_by_label("Entity value")).to_have_value("thing")
    expect(dialog.get_by_label("Entity name")).to_be_focused()
    dialog.get_by_label("Entity name").fill("item")
    dialog.get_by_label("The bot should have handed off").check()
    dialog.get_by_role("button", name="Save correction").click()
    expect(dialog.locator("#correct-error")).to_contain_text("a new intent's name starts with a letter")
    name.fill("blorp_request")
    shot(agent, "20-new-intent-correction")
    dialog.get_by_role("button", name="Save correction").click()
    expect(dialog).to_be_hidden()
    expect(message).to_contain_text("corrected → blorp_request (item=thing) by ann")
    expect(agent.locator(".sys").filter(has_text="(new intent); should have handed off")).to_have_count(1)
    expect(agent.locator("#tags")).to_contain_text("should-hand-off")

    agent.get_by_role("button", name="Export corrections").click()
    export = agent.get_by_role("dialog", name="Export corrections")
    export.get_by_role("button", name="Save on the server").click()
    written = stack["bot_dir"].parent / "data" / "exports" / "tiny" / "corrections.yml"
    expect(agent.locator("#notice")).to_contain_text(f"in {written}")
    text = Path(written).read_text()
    assert "- blorp the [thing](item)" in text and "# new intent 'blorp_request'" in text
    assert not (stack["bot_dir"] / "corrections.yml").exists()  # never the served bot folder
    shot(agent, "21-saved-on-the-server")


def test_the_analytics_page_draws_the_figures(stack: dict[str, Any], agent: Page) -> None:
    sign_in(agent, stack["url"])
    agent.get_by_role("link", name="Analytics").click()
    expect(agent.get_by_role("heading", name="Analytics")).to_be_visible()
    conversations = int(agent.locator("#kpi-conversations").inner_text())
    assert conversations >= 3  # yesterday's three at least
    expect(agent.locator("#kpi-containment")).to_contain_text("%")
    bars = agent.locator("#per-day g.day")
    expect(bars).to_have_count(30)  # every day of the default window has a slot
    drawn = sum(int(v) for v in agent.locator("#per-day g.day").evaluate_all(
        "gs => gs.map(g => g.dataset.conversations)"))
    assert drawn == conversations
    heights = agent.locator("#per-day rect").evaluate_all("rs => rs.map(r => r.getBBox().height)")
    assert max(heights) > 100  # the busiest day's bar fills most of the chart
    expect(agent.locator("#busiest-intents")).to_contain_text("greet")
    agent.get_by_label("Bot").select_option("tiny")
    agent.get_by_role("button", name="Show").click()
    expect(agent).to_have_url(f"{stack['url']}/review/analytics?bot=tiny&channel=&since="
                              + agent.locator("input[name=since]").input_value()
                              + "&until=" + agent.locator("input[name=until]").input_value())
    shot(agent, "22-analytics")


def test_the_analytics_page_fits_a_390px_phone(stack: dict[str, Any], browser: Browser) -> None:
    for page in page_of(browser, 390, 844):
        sign_in(page, stack["url"])
        page.goto(stack["url"] + "/review/analytics")
        expect(page.locator("#per-day")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "23-analytics-phone")
