"""The review UI and the web widget in a real headless Chromium (Debian's ``chromium``, driven by
playwright; never a downloaded browser) against ``switchboard serve`` on 127.0.0.1.

A support agent signs in, finds yesterday's low-confidence conversations, corrects one, takes
over a live web chat whose widget is embedded on a page of another origin, replies, and hands
it back; an XSS payload typed by a customer stays inert everywhere. Each screen is saved under
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from bots.events import BOT, NLU, USER, Event
from bots.store.base import SummaryUpdate
from bots.store.sqlite import SQLiteStore
from tests.connectors.test_review_api import PASSWORD, add_users
from tests.fixtures.browser import TIMEOUT_MS, page_of, require_chromium, shot
from tests.fixtures.browser import browser as browser  # the fixture
from tests.fixtures.server import ServeProcess, free_port

XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def _seed_yesterday(data_dir: Path) -> None:
    """Conversations that started yesterday, stored the way the runtime stores them."""
    yesterday = time.time() - 86_400

    async def run() -> None:
        store = SQLiteStore(data_dir / "conversations.db")
        await store.start()
        for cid, text, intent, confidence, answer in [
            ("yday-low", "scrap ordr 4411", "track_order", 0.34, "Order 4411 is on its way."),
            ("yday-lower", "blorp the thing", "greet", 0.21, "Hello! How can I help you today?"),
            ("yday-sure", "hello there", "greet", 0.97, "Hello! How can I help you today?"),
        ]:
            result = await store.enqueue("tiny", cid, "web", "", {}, "m1",
                                         Event(USER, {"text": text, "message_id": "m1", "channel": "web"},
                                               timestamp=yesterday))
            await store.complete("tiny", cid, result.turn.seq, [
                Event(NLU, {"intent": intent, "confidence": confidence, "ranking": [], "entities": [],
                            **({"read_as": text.replace("ordr", "order"),
                                "also": [{"name": "greet", "confidence": 0.95}]} if "ordr" in text else {})},
                      timestamp=yesterday),
                Event(BOT, {"text": answer, "buttons": [], "source": "template", "metadata": {}}, timestamp=yesterday),
            ], SummaryUpdate(last_intent=intent, confidence=confidence))
        await store.aclose()

    asyncio.run(run())


class _Site(http.server.ThreadingHTTPServer):
    pages: dict[str, bytes] = {}


class _SiteHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.pages.get(self.path, b"")  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


class _Proxy:
    """A TCP proxy on 127.0.0.1 that the test can cut, like a dropped mobile connection."""

    def __init__(self, upstream_port: int) -> None:
        import socket

        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = False
        self._open: list[Any] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: Any, target: Any) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for s in (source, target):
            try:
                s.close()
            except OSError:
                pass

    def drop(self) -> None:
        import socket

        self.cut = True
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.drop()
        self.listener.close()


@pytest.fixture(scope="module")
def stack(tiny_bot_dir: Path, module_tmp: Callable[[str], Path]) -> Iterator[dict[str, Any]]:
    """A served copy of the tiny bot, users, yesterday's conversations, and a shop page on a
    second origin embedding the widget."""
    require_chromium()
    root = module_tmp("browser")
    bot_dir = root / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    with (bot_dir / "bot.yml").open("a") as f:  # the bot hands off when asked for a person
        f.write("rules:\n  - intent: contact_human_agent\n    handoff: true\n")
    data_dir = root / "data"
    data_dir.mkdir()
    add_users(data_dir, ann="agent", ada="admin")
    _seed_yesterday(data_dir)
    site = _Site(("127.0.0.1", free_port()), _SiteHandler)
    site_url = f"http://127.0.0.1:{site.server_address[1]}"
    threading.Thread(target=site.serve_forever, daemon=True).start()
    env = {"SWITCHBOARD_WIDGET_ORIGINS": site_url, "SWITCHBOARD_NLU_MAX_WAIT_MS": "0",
           "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    with ServeProcess([bot_dir], data_dir=data_dir, env=env) as server:
        proxy = _Proxy(server.port)

        def shop(bot_server: str) -> bytes:
            # A strict shop: no inline styles or scripts, only the bot server's script and connections.
            csp = (f"default-src 'self'; script-src {bot_server}; style-src 'self'; "
                   f"connect-src {bot_server} {bot_server.replace('http', 'ws')}")
            return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme shop</title>'
                    f'<meta http-equiv="Content-Security-Policy" content="{csp}"></head>'
                    f'<body><h1>Acme shop</h1><p>Our products.</p>'
                    f'<script src="{bot_server}/widget.js" data-bot="tiny" data-title="Acme support"></script>'
                    f'</body></html>').encode()

        site.pages = {"/": shop(server.url), "/flaky-network": shop(f"http://127.0.0.1:{proxy.port}")}
        yield {"url": server.url, "site": site_url, "bot_dir": bot_dir, "proxy": proxy}
        proxy.close()
    site.shutdown()


@pytest.fixture
def agent(browser: Browser) -> Iterator[Page]:
    yield from page_of(browser, 1280, 860)


@pytest.fixture
def customer(browser: Browser) -> Iterator[Page]:
    yield from page_of(browser, 1280, 860)


def sign_in(page: Page, url: str, username: str = "ann") -> None:
    page.goto(url + "/review")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Conversations")).to_be_visible()


def test_find_yesterdays_low_confidence_conversations_and_correct_one(stack: dict[str, Any], agent: Page) -> None:
    agent.goto(stack["url"] + "/review")
    expect(agent).to_have_url(f"{stack['url']}/review/login?next=/review")
    shot(agent, "01-sign-in")
    sign_in(agent, stack["url"])
    shot(agent, "02-conversations")

    agent.get_by_label("Confidence below").fill("0.5")
    agent.get_by_label("Sort", exact=True).select_option("min_confidence")
    agent.get_by_label("Order", exact=True).select_option("asc")
    agent.get_by_role("button", name="Yesterday").click()
    expect(agent.locator("#result-count")).to_contain_text("2 conversations")
    rows = agent.locator("table.list tbody tr")
    expect(rows).to_have_count(2)
    expect(agent.locator(".conv-link")).to_have_text(["yday-lower", "yday-low"])  # lowest first
    expect(agent.locator("table.list")).not_to_contain_text("yday-sure")
    shot(agent, "03-filtered-yesterday-low-confidence")

    agent.get_by_role("link", name="yday-low", exact=True).click()
    message = agent.locator(".msg.customer").first
    expect(message).to_contain_text("scrap ordr 4411")  # as typed, and as the model read it
    expect(message.locator(".read-as")).to_have_text("read as “scrap order 4411”")
    expect(message.locator(".also")).to_have_text("also asked greet")  # its second request (bots/nlu/multi.py)
    expect(message).to_contain_text("intent track_order")
    expect(message).to_contain_text("confidence 0.34")
    expect(agent.locator(".msg.bot .badge.source").first).to_have_text("template")
    shot(agent, "04-transcript")

    agent.get_by_role("button", name="Correct message 1").click()
    dialog = agent.get_by_role("dialog", name="Correct this message")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Intent", exact=True).select_option("cancel_order")
    dialog.get_by_role("button", name="Add entity").click()
    dialog.get_by_label("Entity name").fill("order_id")
    dialog.get_by_label("Entity value").fill("4411")
    shot(agent, "05-correct-dialog")
    dialog.get_by_role("button", name="Save correction").click()
    expect(message).to_contain_text("corrected → cancel_order (order_id=4411) by ann")
    expect(agent.locator("#tags")).to_contain_text("corrected")

    agent.get_by_role("button", name="Mark reviewed").click()
    expect(agent.locator("#status-badges")).to_contain_text("reviewed")
    agent.get_by_role("button", name="Export corrections").click()
    export = agent.get_by_role("dialog", name="Export corrections")
    expect(export).to_contain_text("never into the bot folder")  # a confirmation step, then a download
    with agent.expect_download() as downloading:
        export.get_by_role("button", name="Download").click()
    download = downloading.value
    expect(agent.locator("#notice")).to_contain_text("Exported 1 correction(s) as corrections.yml")
    shot(agent, "06-corrected-and-exported")
    assert download.suggested_filename == "corrections.yml"
    assert "scrap ordr [4411](order_id)" in Path(download.path()).read_text()  # the customer's own words
    assert not (stack["bot_dir"] / "corrections.yml").exists()  # nothing written into the served bot folder

    agent.goto(stack["url"] + "/review?reviewed=yes")
    expect(agent.locator("table.list")).to_contain_text("yday-low")

    # an admin sees who looked at what
    agent.get_by_role("button", name="Sign out").click()
    expect(agent.get_by_role("heading", name="Sign in")).to_be_visible()
    sign_in(agent, stack["url"], "ada")
    agent.get_by_role("link", name="Audit log").click()
    rows = agent.locator("table.list tbody tr")
    expect(rows.filter(has_text="view_transcript").filter(has_text="yday-low").first).to_contain_text("ann")
    expect(rows.filter(has_text="export_corrections").first).to_contain_text("ann")
    expect(rows.filter(has_text="correct").filter(has_text="turn 1 -> cancel_order").first).to_be_visible()
    shot(agent, "15-audit-log")


def test_take_over_a_web_chat_embedded_on_another_origin_and_hand_back(
        stack: dict[str, Any], agent: Page, customer: Page) -> None:
    sign_in(agent, stack["url"])
    agent.get_by_role("link", name="Live queue").click()  # the agent waits on the live queue

    customer.goto(stack["site"])
    launcher = customer.get_by_role("button", name="Open chat")
    # styled and working under the shop's strict Content-Security-Policy
    assert launcher.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(36, 87, 214)"
    launcher.focus()
    customer.keyboard.press("Enter")  # keyboard only
    box = customer.get_by_label("Your message")
    expect(box).to_be_focused()
    box.fill("I want to talk to a human")
    customer.keyboard.press("Enter")
    log = customer.get_by_role("log", name="Conversation")
    expect(log.locator(".msg.bot")).to_have_text(["Let me get a colleague for you."])
    shot(customer, "07-widget-on-another-origin")
    customer.keyboard.press("Escape")
    expect(customer.get_by_role("dialog")).to_be_hidden()
    expect(customer.get_by_role("button", name="Open chat")).to_be_focused()
    conversation_id = customer.evaluate("window.SwitchboardWidget.conversationId()")

    # the bot handed off: the conversation shows up in the open queue without a reload
    expect(agent.locator("#queue-table")).to_contain_text(conversation_id, timeout=TIMEOUT_MS)
    shot(agent, "08-live-queue")
    agent.get_by_role("link", name=conversation_id).click()
    expect(agent.locator("#live-state")).to_contain_text("the bot is paused")
    expect(agent.get_by_role("button", name="Take over")).to_be_disabled()

    agent.get_by_label("Reply to the customer").fill("Hi, this is Ann from support. How can I help?")
    agent.get_by_role("button", name="Send reply").click()
    expect(agent.locator(".msg.agent")).to_contain_text("Hi, this is Ann from support")

    # the customer sees the reply (the launcher shows an unread mark while closed)
    customer.get_by_role("button", name="Open chat (new message)").click()
    expect(log.locator(".msg.agent")).to_contain_text("Hi, this is Ann from support. How can I help?")
    box.fill("My parcel 8080 is late")
    box.press("Enter")
    # ... and their message appears in the agent's open transcript without a reload
    expect(agent.locator(".msg.customer").last).to_contain_text("My parcel 8080 is late", timeout=TIMEOUT_MS)
    expect(log.locator(".msg.bot")).to_have_count(1)  # the bot stays silent while paused
    shot(agent, "09-agent-transcript-live")
    shot(customer, "10-widget-agent-reply")

    agent.get_by_role("button", name="Hand back to bot").click()
    expect(agent.locator("#live-state")).to_contain_text("The bot is answering")
    box.fill("hello")
    box.press("Enter")
    expect(log.locator(".msg.bot").last).to_have_text("Hello! How can I help you today?")

    customer.reload()  # history survives a reload
    customer.get_by_role("button", name="Open chat").click()
    expect(log.locator(".msg")).to_have_count(6)
    expect(log.locator(".msg.agent")).to_contain_text("Hi, this is Ann")
    shot(customer, "11-widget-history-after-reload")


def test_a_customers_xss_payload_is_inert(stack: dict[str, Any], agent: Page, customer: Page) -> None:
    customer.goto(stack["site"])
    customer.get_by_role("button", name="Open chat").click()
    box = customer.get_by_label("Your message")
    box.fill(XSS)
    box.press("Enter")
    log = customer.get_by_role("log", name="Conversation")
    expect(log.locator(".msg.bot")).to_have_count(1)
    expect(log.locator(".msg.user")).to_have_text(XSS)
    conversation_id = customer.evaluate("window.SwitchboardWidget.conversationId()")

    sign_in(agent, stack["url"])
    agent.get_by_label("Text in messages").fill("window.pwned")
    agent.get_by_role("button", name="Apply filters").click()
    agent.get_by_role("link", name=conversation_id).click()
    expect(agent.locator(".msg.customer .text")).to_have_text(XSS)
    shot(agent, "12-xss-inert-transcript")
    # an agent may also take over a conversation the bot did not hand off, and give it back
    agent.get_by_role("button", name="Take over").click()
    expect(agent.locator("#live-state")).to_contain_text("the bot is paused")
    expect(agent.locator(".sys").last).to_have_text("Taken over by ann: the bot is paused")
    agent.get_by_role("button", name="Hand back to bot").click()
    expect(agent.locator("#live-state")).to_contain_text("The bot is answering")
    customer.reload()
    customer.get_by_role("button", name="Open chat").click()
    expect(log.locator(".msg.user")).to_have_text(XSS)
    for page in (agent, customer):
        assert page.evaluate("window.pwned") is None
        assert page.locator("img[src=x]").count() == 0


def test_chat_page_buttons_by_keyboard(stack: dict[str, Any], customer: Page) -> None:
    customer.goto(stack["url"] + "/bots/tiny/chat")
    log = customer.get_by_role("log", name="Conversation")
    box = customer.get_by_label("Your message")
    box.fill("zxq vbnm qwpo")
    box.press("Enter")
    choices = customer.get_by_role("group", name="Suggested replies").get_by_role("button")
    expect(choices.first).to_be_visible()
    title = choices.first.text_content()
    assert title
    shot(customer, "13-chat-page-suggested-replies")
    choices.first.focus()
    customer.keyboard.press("Enter")
    expect(log.locator(".msg.user").last).to_have_text(title)
    expect(log.locator(".msg.bot")).to_have_count(2)
    assert not log.locator(".msg.bot").last.text_content().startswith("Sorry")  # type: ignore[union-attr]


def test_widget_reconnects_and_resends_what_was_not_answered(stack: dict[str, Any], customer: Page) -> None:
    proxy: _Proxy = stack["proxy"]
    customer.goto(stack["site"] + "/flaky-network")  # the widget talks to the bot through a proxy we can cut
    customer.get_by_role("button", name="Open chat").click()
    log = customer.get_by_role("log", name="Conversation")
    box = customer.get_by_label("Your message")
    box.fill("hello")
    box.press("Enter")
    expect(log.locator(".msg.bot")).to_have_count(1)
    proxy.drop()  # the connection drops and stays down for a moment
    expect(customer.locator(".status")).to_contain_text("retrying")
    box.fill("where is my order 8080")
    box.press("Enter")
    expect(log.locator(".msg.user.sending")).to_have_count(1)  # kept in the outbox
    shot(customer, "14-widget-offline")
    proxy.cut = False
    expect(log.locator(".msg.bot")).to_have_count(2, timeout=20_000)  # reconnected and resent
    expect(log.locator(".msg.bot").last).to_have_text("Order 8080 is on its way.")
    expect(log.locator(".msg.user.sending")).to_have_count(0)
    expect(customer.locator(".status")).to_have_text("")
    conversation_id = customer.evaluate("window.SwitchboardWidget.conversationId()")
    url = f"{stack['url']}/bots/tiny/webhooks/web/history?conversation_id={conversation_id}"
    assert customer.request.get(url).status == 403  # the id alone reads nothing
    # the token the server gave the widget when the conversation started (kept with the id)
    token = customer.evaluate(f"localStorage.getItem('switchboard:http://127.0.0.1:{proxy.port}:tiny:token')")
    assert token
    history = customer.request.get(url, headers={"X-Conversation-Token": token})
    users = [m["text"] for m in history.json()["messages"] if m["role"] == "user"]
    assert users == ["hello", "where is my order 8080"]  # stored once each


def test_widget_shows_a_generated_answer_as_it_is_written(stack: dict[str, Any], customer: Page) -> None:
    """The widget's side of streaming, in the browser: partial frames grow one bubble (marked busy for
    screen readers), the reply replaces it. The socket is answered by the test (Playwright's WebSocket
    routing), which sends the frames the server sends for a generated answer (tests/connectors cover
    the server side)."""
    sockets: list[Any] = []
    ids: list[str] = []

    def on_socket(ws: Any) -> None:
        sockets.append(ws)

        def on_message(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") != "message":
                return
            mid = frame["id"]
            ids.append(mid)
            ws.send(json.dumps({"type": "ack", "id": mid, "seq": 1}))
            ws.send(json.dumps({"type": "typing", "id": mid, "on": True}))
            for text in ("Your parcel", "Your parcel left our warehouse"):
                ws.send(json.dumps({"type": "partial", "id": mid, "text": text}))

        ws.on_message(on_message)

    customer.route_web_socket(re.compile(r".*/webhooks/web/ws.*"), on_socket)
    customer.goto(stack["site"] + "/")
    customer.get_by_role("button", name="Open chat").click()
    log = customer.get_by_role("log", name="Conversation")
    box = customer.get_by_label("Your message")
    box.fill("where is my parcel?")
    box.press("Enter")
    streaming = log.locator(".msg.bot.streaming")
    expect(streaming).to_have_text("Your parcel left our warehouse")
    expect(streaming).to_have_attribute("aria-busy", "true")
    shot(customer, "15-widget-streaming")
    sockets[-1].send(json.dumps({"type": "reply", "id": ids[-1], "seq": 2, "responses": [
        {"text": "Your parcel left our warehouse this morning.", "buttons": [], "source": "generation"}]}))
    expect(streaming).to_have_count(0)
    expect(log.locator(".msg.bot")).to_have_count(1)
    expect(log.locator(".msg.bot")).to_have_text("Your parcel left our warehouse this morning.")
