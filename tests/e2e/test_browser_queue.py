"""The live queue and a live conversation in a real headless Chromium, against two ``switchboard serve``
replicas sharing one store on 127.0.0.1: two agents on different replicas see a customer join the queue
(count in the tab title, a desktop notification), both press "Assign to me", one wins and the other is
told who has it; the conversation reads top to bottom with the composer under it, customer messages keep
their numbers around an agent's reply, and the event lines say who did what; at 390 px nothing is wider
than the screen. Screens under ``test-artifacts/screenshots/``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from bots.events import SLOT, Event
from bots.store.base import SummaryUpdate
from bots.store.sqlite import SQLiteStore
from tests.connectors.test_review_api import XSS, add_users
from tests.e2e.test_browser_review import _Site, _SiteHandler, sign_in
from tests.fixtures.browser import TIMEOUT_MS, page_of, require_chromium, shot
from tests.fixtures.browser import browser as browser  # the fixture
from tests.fixtures.server import ServeProcess, free_port

NAME = '<img src=x onerror="window.pwned=3"> Zoë'  # the name the /named shop page gives the widget
REPLICAS_SITE: list[str] = []  # the shop page embedding the widget of the first replica (set by ``replicas``)

# records every desktop notification a page shows (the page's own Notification is kept underneath)
_RECORD_NOTIFICATIONS = """
window.__notes = [];
const Real = window.Notification;
window.Notification = function (title, options) { window.__notes.push([title, options && options.body]);
  return new Real(title, options); };
Object.defineProperty(window.Notification, "permission", { get: () => Real.permission });
window.Notification.requestPermission = (...a) => Real.requestPermission(...a);
"""


@pytest.fixture(scope="module")
def replicas(tiny_bot_dir: Path, module_tmp: Callable[[str], Path]) -> Iterator[tuple[str, str, Path]]:
    """Two replicas of the tiny bot (handing off when asked for a person) on one SQLite store (its folder)."""
    require_chromium()
    root = module_tmp("queue")
    bot_dir = root / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    with (bot_dir / "bot.yml").open("a") as f:
        f.write("rules:\n  - intent: contact_human_agent\n    handoff: true\n"
                "handoff:\n  satisfaction:\n    question: How did we do?\n    thanks: Thanks for rating us!\n")
    data_dir = root / "data"
    data_dir.mkdir()
    add_users(data_dir, ann="agent", bob="agent", ada="admin")
    site = _Site(("127.0.0.1", free_port()), _SiteHandler)
    site_url = f"http://127.0.0.1:{site.server_address[1]}"
    threading.Thread(target=site.serve_forever, daemon=True).start()
    env = {"SWITCHBOARD_NLU_MAX_WAIT_MS": "0", "SWITCHBOARD_LOG_LEVEL": "WARNING",
           "SWITCHBOARD_WIDGET_ORIGINS": site_url}
    with ServeProcess([bot_dir], data_dir=data_dir, env=env) as first, \
            ServeProcess([bot_dir], data_dir=data_dir, env=env) as second:
        def shop(name: str = "") -> bytes:
            return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title></head>'
                    f'<body><h1>Shop</h1><script src="{first.url}/widget.js" data-bot="tiny" '
                    f'data-title="Shop support"{name}></script></body></html>').encode()

        # /named: a signed-in shopper's page passes their name to the widget (one made to attack the review UI)
        site.pages = {"/": shop(), "/named": shop(f' data-name="{html.escape(NAME)}"')}
        REPLICAS_SITE[:] = [site_url]
        yield first.url, second.url, data_dir
    site.shutdown()


def _say(url: str, conversation_id: str, text: str) -> list[str]:
    body = json.dumps({"conversation_id": conversation_id, "message_id": f"m{time.monotonic_ns()}",
                       "text": text}).encode()
    request = urllib.request.Request(f"{url}/bots/tiny/webhooks/web", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return [x["text"] for x in json.loads(r.read())["responses"]]


def _agent_page(browser: Browser, width: int = 1280, height: int = 860) -> Iterator[Page]:
    for page in page_of(browser, width, height):
        page.context.grant_permissions(["notifications"])
        page.context.add_init_script(_RECORD_NOTIFICATIONS)
        yield page


@pytest.fixture
def ann(browser: Browser) -> Iterator[Page]:
    yield from _agent_page(browser)


@pytest.fixture
def bob(browser: Browser) -> Iterator[Page]:
    yield from _agent_page(browser)


def _open_queue(page: Page, url: str, username: str) -> None:
    sign_in(page, url, username)
    page.get_by_role("link", name="Live queue").click()
    expect(page.get_by_role("heading", name="Live queue")).to_be_visible()


def _asks_for_a_person(customer: Page, shop_url: str) -> tuple[Locator, str]:
    """A customer on the shop page opens the chat and asks for a person: the chat's log and conversation id."""
    customer.goto(shop_url)
    customer.get_by_role("button", name="Open chat").click()
    customer.get_by_label("Your message").fill("I want to talk to a human")
    customer.keyboard.press("Enter")
    log = customer.get_by_role("log", name="Conversation")
    expect(log.locator(".msg.bot")).to_have_text(["Let me get a colleague for you."])
    return log, str(customer.evaluate("window.SwitchboardWidget.conversationId()"))


def _fits(page: Page, width: int = 390) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_two_agents_on_two_replicas_claim_the_same_customer_one_wins(
        replicas: tuple[str, str, Path], ann: Page, bob: Page) -> None:
    first, second, _ = replicas
    _open_queue(ann, first, "ann")
    _open_queue(bob, second, "bob")
    ann.get_by_label("Desktop notification").check()
    expect(ann.get_by_label("Desktop notification")).to_be_checked()
    expect(ann).to_have_title("Live queue · Switchboard")

    conversation = f"q{time.monotonic_ns()}"
    assert _say(first, conversation, "I want to talk to a human") == ["Let me get a colleague for you."]
    _say(first, conversation, "my order " + XSS)  # while waiting: the queue's preview
    # both replicas' pages show the customer: the count in the title, a notification, a ticking wait
    for page in (ann, bob):
        expect(page).to_have_title("(1) Live queue · Switchboard", timeout=TIMEOUT_MS)
        item = page.locator(".queue-item", has_text=conversation)
        expect(item).to_contain_text("my order " + XSS)
        expect(item.locator(".q-wait")).to_contain_text("waiting")
    ann.wait_for_function("window.__notes.length >= 1", timeout=TIMEOUT_MS)
    assert ann.evaluate("window.__notes")[0] == ["Customer is waiting", "my order " + XSS]
    assert ann.evaluate("window.pwned") is None and bob.evaluate("window.pwned") is None
    before = ann.locator(".q-wait").first.text_content()
    ann.wait_for_timeout(1100)
    assert ann.locator(".q-wait").first.text_content() != before  # the wait ticks
    shot(ann, "30-queue-waiting")

    # both press "Assign to me" at once: one wins, the other is told who has it
    ann_claim = ann.locator(".queue-item", has_text=conversation).get_by_role("button", name="Assign to me")
    bob_claim = bob.locator(".queue-item", has_text=conversation).get_by_role("button", name="Assign to me")
    ann_claim.dispatch_event("click")
    bob_claim.dispatch_event("click")
    expect(ann.locator(".queue-item", has_text=conversation)).to_contain_text("assigned to you")
    expect(bob.locator("#notice")).to_have_text("ann has this conversation already")
    expect(bob.locator(".queue-item", has_text=conversation)).to_contain_text("assigned to ann")
    bob_item = bob.locator(".queue-item", has_text=conversation)
    expect(bob_item.get_by_role("button", name="Assign to me")).to_have_count(0)
    for page in (ann, bob):
        expect(page).to_have_title("Live queue · Switchboard")  # nobody unassigned waits
    shot(bob, "31-queue-claimed-by-another")

    # the conversation: events say who did what, customer numbers stay in order, the composer is below
    ann.locator(".queue-item", has_text=conversation).get_by_role("link").click()
    expect(ann.locator(".sys", has_text="Handed off")).to_have_text(["Handed off by the bot: asked for a human"])
    expect(ann.locator(".sys", has_text="Taken over")).to_have_text(["Taken over by ann"])  # her claim
    ann.get_by_label("Reply to the customer").fill("Hi, Ann here.")
    ann.get_by_role("button", name="Send reply").click()
    expect(ann.locator(".msg.agent")).to_contain_text("Hi, Ann here.")
    _say(first, conversation, "thanks Ann")
    expect(ann.locator(".msg.customer .who")).to_have_text(["Customer · #1", "Customer · #2", "Customer · #3"],
                                                           timeout=TIMEOUT_MS)
    turns = ann.locator("#turns").bounding_box()
    composer = ann.locator("#reply-form").bounding_box()
    assert turns is not None and composer is not None and composer["y"] > turns["y"] + turns["height"] - 1
    # the newest message is on screen (the page followed it: the reader was at the bottom)
    expect(ann.locator(".msg.customer").last).to_be_in_viewport()
    shot(ann, "32-live-conversation")
    # bob cannot take it over: ann has it
    bob.goto(f"{second}/review/bots/tiny/conversations/{conversation}")
    bob.get_by_label("Reply to the customer").fill("Bob here")
    bob.get_by_role("button", name="Send reply").click()
    expect(bob.locator("#notice")).to_have_text("ann has this conversation already")


def test_queue_and_conversation_fit_a_390px_phone(replicas: tuple[str, str, Path], browser: Browser) -> None:
    first, _, _ = replicas
    conversation = f"phone-{time.monotonic_ns()}-" + "x" * 40
    _say(first, conversation, "I want to talk to a human")
    _say(first, conversation, "a long message " * 30)
    for page in page_of(browser, 390, 844):
        sign_in(page, first, "ada")
        _fits(page)
        shot(page, "33-phone-conversations")
        page.get_by_role("link", name="Live queue").click()
        item = page.locator(".queue-item", has_text=conversation)
        expect(item.get_by_role("button", name="Assign to me")).to_be_visible()
        expect(item.get_by_role("button", name="Reassign")).to_be_visible()
        _fits(page)
        shot(page, "34-phone-queue")
        item.get_by_role("link").click()
        expect(page.locator(".msg.customer").first).to_be_visible()
        expect(page.get_by_label("Reply to the customer")).to_be_visible()
        _fits(page)
        shot(page, "35-phone-conversation")


def _set_slot(data_dir: Path, conversation_id: str, name: str, value: str) -> None:
    """A slot the bot set, written into the replicas' shared store as the runtime writes it."""
    async def run() -> None:
        store = SQLiteStore(data_dir / "conversations.db")
        await store.start()
        await store.append("tiny", conversation_id, [Event(SLOT, {"name": name, "value": value})], SummaryUpdate())
        await store.aclose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # playwright's loop runs in this thread
        pool.submit(asyncio.run, run()).result()


def test_an_admin_adds_a_canned_reply_and_an_agent_inserts_it_with_slash(
        replicas: tuple[str, str, Path], ann: Page, bob: Page) -> None:
    first, second, data_dir = replicas
    admin = bob  # a second browser context, signed in as the admin
    sign_in(admin, second, "ada")
    admin.get_by_role("link", name="Canned replies").click()
    admin.get_by_label("Name").fill("order")
    admin.get_by_label("Text").fill("Hi {customer_name}, order {order_id} is being looked at.")
    admin.get_by_role("button", name="Save reply").click()
    expect(admin.locator("#canned-table")).to_contain_text("/order")
    admin.get_by_label("Name").fill("bye")
    admin.get_by_label("Text").fill("Thanks for waiting, bye!")
    admin.get_by_role("button", name="Save reply").click()
    expect(admin.locator("#canned-table")).to_contain_text("/bye")
    shot(admin, "36-canned-replies")

    conversation = f"c{time.monotonic_ns()}"
    _say(first, conversation, "I want to talk to a human")
    _set_slot(data_dir, conversation, "order_id", XSS)
    sign_in(ann, first, "ann")
    ann.goto(f"{first}/review/bots/tiny/conversations/{conversation}")
    box = ann.get_by_label("Reply to the customer")
    box.press_sequentially("/or")
    menu = ann.get_by_role("listbox", name="Canned replies")
    expect(menu.get_by_role("option")).to_have_count(1)
    expect(menu.get_by_role("option")).to_contain_text("/order")
    shot(ann, "37-canned-menu")
    box.press("Enter")
    expect(box).to_have_value(f"Hi {{customer_name}}, order {XSS} is being looked at.")
    expect(menu).to_be_hidden()
    box.fill("")
    box.press_sequentially("/")
    expect(menu.get_by_role("option")).to_have_count(2)
    box.press("ArrowDown")
    box.press("Tab")
    expect(box).to_have_value("Hi {customer_name}, order " + XSS + " is being looked at.")
    box.fill("/b")
    box.press("Enter")
    expect(box).to_have_value("Thanks for waiting, bye!")
    ann.get_by_role("button", name="Send reply").click()
    expect(ann.locator(".msg.agent")).to_contain_text("Thanks for waiting, bye!")
    assert ann.evaluate("window.pwned") is None


def test_the_web_customer_sees_the_agent_typing_and_rates_with_buttons(
        replicas: tuple[str, str, Path], ann: Page, browser: Browser) -> None:
    """The widget is served by one replica, the agent works on the other: typing and the rating question
    reach the customer through the store."""
    _, second, _ = replicas
    for customer in page_of(browser, 1024, 760):
        log, conversation = _asks_for_a_person(customer, REPLICAS_SITE[0])

        sign_in(ann, second, "ann")
        ann.goto(f"{second}/review/bots/tiny/conversations/{conversation}")
        box = ann.get_by_label("Reply to the customer")
        box.press_sequentially("Hi, Ann here")
        expect(customer.locator(".typing")).to_be_visible(timeout=TIMEOUT_MS)
        shot(customer, "38-widget-agent-typing")
        ann.get_by_role("button", name="Send reply").click()
        expect(log.locator(".msg.agent")).to_contain_text(["Hi, Ann here"], timeout=TIMEOUT_MS)
        expect(customer.locator(".typing")).to_be_hidden()

        ann.get_by_role("button", name="Hand back to bot").click()
        expect(log.locator(".msg.bot").last).to_contain_text("How did we do?", timeout=TIMEOUT_MS)
        shot(customer, "39-widget-satisfaction-question")
        log.get_by_role("button", name="4", exact=True).click()
        expect(log.locator(".msg.bot").last).to_have_text("Thanks for rating us!")
        expect(ann.locator(".sys", has_text="rated")).to_have_text(["Customer rated the conversation 4/5"],
                                                                    timeout=TIMEOUT_MS)
        expect(ann.locator("#status-badges")).to_contain_text("rated 4/5")


def test_the_customers_name_from_the_widget_is_shown_as_text_everywhere(
        replicas: tuple[str, str, Path], ann: Page, browser: Browser) -> None:
    """The shop page passes the customer's name to the widget (``data-name``); agents on the other replica see
    it in the queue, the conversation list (searched by it) and the transcript, inert, also at 390 px."""
    first, second, _ = replicas
    for customer in page_of(browser, 1024, 760):
        _, conversation = _asks_for_a_person(customer, REPLICAS_SITE[0] + "/named")

    _open_queue(ann, second, "ann")
    item = ann.locator(".queue-item", has_text=conversation)
    expect(item.locator(".q-name strong")).to_have_text(NAME, timeout=TIMEOUT_MS)
    shot(ann, "40-queue-customer-name")
    ann.goto(f"{second}/review?customer=zo")
    expect(ann.locator("td.customer")).to_have_text([NAME])
    ann.goto(f"{second}/review/bots/tiny/conversations/{conversation}")
    expect(ann.locator("#customer-name")).to_have_text(NAME)
    expect(ann.locator(".msg.customer .who")).to_have_text([f"{NAME} · #1"])
    shot(ann, "41-transcript-customer-name")
    assert ann.evaluate("window.pwned") is None and ann.locator("img[src='x']").count() == 0
    for phone in page_of(browser, 390, 844):
        sign_in(phone, first, "ada")
        phone.goto(f"{first}/review/queue")
        expect(phone.locator(".queue-item", has_text=conversation).locator(".q-name strong")).to_have_text(NAME)
        _fits(phone)
        phone.goto(f"{first}/review?customer=zo")
        expect(phone.locator("td.customer")).to_have_text([NAME])
        _fits(phone)
        assert phone.evaluate("window.pwned") is None


def test_the_canned_replies_and_audit_pages_fit_a_390px_phone(replicas: tuple[str, str, Path],
                                                               browser: Browser) -> None:
    """Admins' pages on a phone: a long canned reply and the audit log's wide rows stay inside the screen (the
    tables scroll inside themselves)."""
    first, _, _ = replicas
    for page in page_of(browser, 390, 844):
        sign_in(page, first, "ada")
        page.get_by_role("link", name="Canned replies").click()
        page.get_by_label("Name").fill("long-reply")
        page.get_by_label("Text").fill("Thanks for waiting! " * 12 + "{order_id} " + "x" * 120)
        page.get_by_role("button", name="Save reply").click()
        expect(page.locator("#canned-table")).to_contain_text("/long-reply")
        expect(page.get_by_role("button", name="Save reply")).to_be_visible()
        _fits(page)
        shot(page, "42-phone-canned-replies")
        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
        expect(page.locator("table.list")).to_contain_text("save_canned_reply")
        _fits(page)
        shot(page, "43-phone-audit-log")
