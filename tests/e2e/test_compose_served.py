"""``answers.compose`` served end to end: the answers bot trained with a generation endpoint (a fake
OpenAI-compatible server on 127.0.0.1) and compose on. Over the web channel a question no template
fits gets a composed answer sentence by sentence, a question a template fits gets retrieval without
a call to the server; the review API returns each sentence's source with the bot's turn, /metrics
counts the composed answer for the bot; and in a real Chromium a support agent expands the
transcript's attribution (passage text escaped, no markup run) on a 390 px phone without sideways
scrolling."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from bots.settings import Settings
from connectors.app import create_app
from tests.bots.test_compose import KNOWN, NEW, two_sources
from tests.conftest import ADMIN_TOKEN, ROOT
from tests.connectors.test_slack import _ready
from tests.e2e.test_browser_review import sign_in
from tests.e2e.test_generation_endpoint_served import _frames_until
from tests.fixtures.browser import browser as browser  # the fixture
from tests.fixtures.browser import page_of, require_chromium, shot
from tests.fixtures.fake_openai import FakeOpenAI, openai_server_thread
from tests.fixtures.server import browser_app
from tests.fixtures.web_widget import widget_socket

ANSWERS_BOT = ROOT / "tests" / "data" / "answers_bot"
MARKUP = 'Gift wrap <img src=x onerror="window.pwned=1"> costs 3 euros per item.'
GIFT = "how much does gift wrap cost?"


@pytest.fixture(scope="module")
def served(module_tmp: Callable[[str], Path]) -> Iterator[tuple[FakeOpenAI, Path]]:
    """The fake server (writing the first sentences of sources 1 and 2) and the bot trained against it."""
    from training.cli import main as training_main

    with openai_server_thread() as (fake, url):
        fake.reply = two_sources
        bot = module_tmp("compose") / "answers_bot"
        shutil.copytree(ANSWERS_BOT, bot)
        (bot / "kb" / "giftwrap.md").write_text(f"# Gift wrap\n\n{MARKUP} It is added at checkout.\n",
                                                encoding="utf-8")
        text = (bot / "bot.yml").read_text(encoding="utf-8")
        text = text.replace("  kb_min_similarity: 0.3\n", "  kb_min_similarity: 0.3\n  generation:\n    endpoint:\n"
                            f"      url: {url}\n      model: support-generator\n      retries: 0\n"
                            "      breaker_failures: 100\n  compose:\n    below: 0.5\n")
        (bot / "bot.yml").write_text(text, encoding="utf-8")
        assert training_main(["train", str(bot), "--fast", "--seed", "0"]) == 0
        yield fake, bot


def _metric(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + "{")
             and 'bot="answers_shop"' in line and 'result="composed"' in line]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_web_channel_gets_a_composed_answer_and_the_review_api_its_attribution(
        served: tuple[FakeOpenAI, Path], settings: Settings) -> None:
    fake, bot = served
    sent = len(fake.requests)
    with TestClient(create_app(settings, [bot])) as client:
        _ready(client)
        with widget_socket(client, settings, "w1", bot="answers_shop") as ws:
            ws.send_json({"type": "message", "id": "m1", "text": NEW})
            frames = _frames_until(ws, "reply")
            reply = frames[-1]["responses"][0]
            assert reply["source"] == "generation", reply
            partials = [f["text"] for f in frames if f["type"] == "partial"]
            assert len(partials) == 2 and partials[-1] == reply["text"]  # two sentences, one at a time
            ws.send_json({"type": "message", "id": "m2", "text": KNOWN})
            known = _frames_until(ws, "reply")[-1]["responses"][0]
        assert known["source"] == "retrieval" and "Delete account" in known["text"]
        assert len(fake.requests) == sent + 1  # the known question made no call
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        r = client.get("/review/api/bots/answers_shop/conversations/w1", headers=admin)
        assert r.status_code == 200, r.text
        bots = [e["data"] for t in r.json()["turns"] for e in t["events"] if e["kind"] == "bot"]
        composed = bots[0]["metadata"]["composed"]
        assert bots[0]["text"] == reply["text"] and "composed" not in bots[1]["metadata"]
        assert [s["source"] for s in composed["sentences"]] == [1, 2]
        assert " ".join(s["text"] for s in composed["sentences"]) == reply["text"]
        by_number = {s["n"]: s for s in composed["sources"]}
        for sentence in composed["sentences"]:  # each sentence is the start of the source it is attributed to
            assert by_number[sentence["source"]]["text"].startswith(sentence["text"].rstrip("."))
        assert _metric(client.get("/metrics").text, "switchboard_answers_composed_total") == 1


@pytest.fixture(scope="module")
def site(served: tuple[FakeOpenAI, Path], module_tmp: Callable[[str], Path]) -> Iterator[str]:
    require_chromium()
    with browser_app(module_tmp("compose-data"), [served[1]], users={"ann": "agent"}) as url:
        yield url


@pytest.fixture
def customer(browser: Browser) -> Iterator[Page]:
    yield from page_of(browser, 1100, 900)


def test_an_agent_reads_which_source_supported_each_sentence_on_a_phone(site: str, customer: Page,
                                                                        browser: Browser) -> None:
    customer.goto(site + "/bots/answers_shop/chat")
    log = customer.get_by_role("log", name="Conversation")
    customer.get_by_label("Your message").fill(GIFT)
    customer.get_by_label("Your message").press("Enter")
    expect(log.locator(".msg.bot").last).to_contain_text("Gift wrap <img")  # shown as text, not markup
    conversation_id = customer.evaluate("window.SwitchboardWidget.conversationId()")

    agent: Any = next(page_of(browser, 390, 844))
    sign_in(agent, site)
    agent.goto(f"{site}/review/bots/answers_shop/conversations/{conversation_id}")
    reply = agent.locator(".msg.bot").last
    expect(reply.locator(".badge.source")).to_have_text("generation")
    attribution = reply.locator("details.attribution")
    expect(attribution.locator("> summary")).to_contain_text("Composed from")
    attribution.locator("> summary").click()
    sentences = attribution.locator("ol > li")
    expect(sentences).to_have_count(2)
    first = sentences.nth(0)
    expect(first.locator("p.text")).to_contain_text(MARKUP)  # the chunk starts with its title
    expect(first.locator("details.source > summary")).to_contain_text("[1] passage giftwrap.md:")
    first.locator("details.source > summary").click()
    expect(first.locator("blockquote")).to_be_visible()
    expect(first.locator("blockquote")).to_contain_text(MARKUP + " It is added at checkout.")
    expect(sentences.nth(1).locator("details.source > summary")).to_contain_text("[2] ")
    assert agent.locator(".turns img").count() == 0  # the passage's markup is text, never an element
    assert agent.evaluate("window.pwned") is None and customer.evaluate("window.pwned") is None
    overflow = agent.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the transcript scrolls sideways by {overflow} px at 390 px"
    shot(agent, "40-composed-answer-attribution-phone")
    agent.context.close()
