"""The web widget's rich replies in a real headless Chromium (Debian's ``chromium``, driven by playwright).

The Rasa fixture tests/data/rasa/rich is served by the real app (uvicorn on 127.0.0.1, its NLU a lookup of
its own examples: tests/bots/lookup_model.py) and the widget is embedded on a page of another origin.
A menu arrives with an image (a PNG the page's site serves), an attachment link, a payload button and a
link button, and a custom payload that reaches the page as a ``switchboard:custom`` event and is shown as
nothing; a click on the payload button answers with an inline ``data:`` image; a reply whose text, image,
attachment and link are script-bearing strings shows them as text and runs nothing; an image that does
not load is replaced by its link; after a reload the history shows it all again (the custom event marked
``replayed``). Screens are saved under ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import base64
import http.server
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from bots.botspec import BotSpec
from bots.settings import Settings
from connectors.app import create_app
from tests.bots.lookup_model import LookupModel, project
from tests.fixtures.browser import browser as browser  # the fixture
from tests.fixtures.browser import page_of, require_chromium, shot
from tests.fixtures.server import app_in_thread, free_port

MENU_TEXT = "Today's menu <b>fresh</b> & hot."
XSS_TEXT = '<img src=x onerror="window.pwned=1">Hi'


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG, blue."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"\x24\x57\xd6" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


MENU_PNG = png(40, 20)
DATA_IMAGE = "data:image/png;base64," + base64.b64encode(png(3, 2)).decode()


class _Site(http.server.ThreadingHTTPServer):
    files: dict[str, tuple[str, bytes]] = {}


class _SiteHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        kind, body = found
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def _bot(root: Path, site: str) -> Path:
    """The fixture with its images on the test site, and a greeting made of script-bearing strings."""
    bot_dir = project(root, "rich")
    domain = bot_dir / "domain.yml"
    text = domain.read_text(encoding="utf-8").replace("https://example.com/menu.png", f"{site}/menu.png")
    text = text.replace('  utter_greet:\n    - text: "Hi! What would you like?"\n', f"""  utter_greet:
    - text: '{XSS_TEXT}'
      image: 'javascript:window.pwned=2'
      attachment: 'javascript:window.pwned=3'
      buttons:
        - title: '<b onmouseover="window.pwned=4">Docs</b>'
          url: 'javascript:window.pwned=5'
        - title: Where are you?
          payload: /where
""")
    text = text.replace('    - text: "One {dish}, coming up."\n',
                        f'    - text: "One {{dish}}, coming up."\n      image: "{DATA_IMAGE}"\n')
    text = text.replace('    - text: "We are at Main Street 1, Berlin."\n',
                        f'    - text: "We are at Main Street 1, Berlin."\n      image: "{site}/missing.png"\n')
    domain.write_text(text, encoding="utf-8")
    return bot_dir


@pytest.fixture(scope="module")
def stack(module_tmp: Callable[[str], Path]) -> Iterator[dict[str, str]]:
    require_chromium()
    root = module_tmp("rich")
    site = _Site(("127.0.0.1", free_port()), _SiteHandler)
    site_url = f"http://127.0.0.1:{site.server_address[1]}"
    threading.Thread(target=site.serve_forever, daemon=True).start()
    settings = Settings(data_dir=root / "data", widget_origins=(site_url,), nlu_max_wait_ms=0.0,
                        rate_per_ip=0.0, rate_per_conversation=0.0, log_level="WARNING")

    def lookup(artifact: Path, spec: BotSpec, _: Settings) -> LookupModel:
        return LookupModel(spec, {})

    app = create_app(settings, [_bot(root, site_url)], model_loader=lookup)
    with app_in_thread(app) as bot_server:
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Pizzeria</title></head>'
                f'<body><h1>Pizzeria</h1><script>window.customs = [];'
                f'document.addEventListener("switchboard:custom", (e) => window.customs.push(e.detail));</script>'
                f'<script src="{bot_server}/widget.js" data-bot="rich" data-title="Pizzeria"></script></body></html>')
        site.files = {"/": ("text/html; charset=utf-8", page.encode()), "/menu.png": ("image/png", MENU_PNG)}
        try:
            yield {"site": site_url, "server": bot_server}
        finally:
            site.shutdown()


@pytest.fixture
def customer(browser: Browser) -> Iterator[Page]:
    yield from page_of(browser, 1100, 900)


def say(page: Page, text: str) -> Locator:
    """Type ``text``; the bot bubble that answers it."""
    before = page.locator(".msg.bot").count()
    page.get_by_label("Your message").fill(text)
    page.get_by_label("Your message").press("Enter")
    expect(page.locator(".msg.bot")).to_have_count(before + 1)
    return page.locator(".msg.bot").nth(before)


def test_widget_renders_rich_replies_and_hands_custom_payloads_to_the_page(stack: dict[str, str],
                                                                           customer: Page) -> None:
    customer.goto(stack["site"] + "/")
    customer.get_by_role("button", name="Open chat").click()
    menu = say(customer, "show me the menu")

    # Text as written (no markup parsed), the image loaded from the site, the attachment a new-tab link.
    expect(menu).to_contain_text(MENU_TEXT)
    assert menu.locator("b, i").count() == 0
    image = menu.locator("img.image")
    expect(image).to_have_attribute("src", f"{stack['site']}/menu.png")
    expect(image).to_have_js_property("naturalWidth", 40)
    attachment = menu.locator("a.attachment")
    expect(attachment).to_have_text("Attachment: menu.pdf")
    expect(attachment).to_have_attribute("href", "https://example.com/menu.pdf")
    expect(attachment).to_have_attribute("target", "_blank")
    expect(attachment).to_have_attribute("rel", "noopener noreferrer")
    hours = menu.get_by_role("link", name="Opening hours")
    expect(hours).to_have_attribute("href", "https://example.com/hours")
    expect(hours).to_have_attribute("rel", "noopener noreferrer")
    # The custom payload reached the page as an event, and the widget shows nothing of it.
    assert customer.evaluate("window.customs") == [{"bot": "rich", "custom": {"kind": "menu_card",
                                                                              "dishes": ["pizza", "soup"]},
                                                    "text": MENU_TEXT, "replayed": False}]
    assert "menu_card" not in customer.locator(".log").inner_text()
    shot(customer, "16-widget-rich-reply")

    # A payload button is the customer's next message; the answer carries an inline data: image.
    menu.get_by_role("button", name="Pizza <i>").click()
    expect(customer.locator(".msg.user").last).to_have_text("Pizza <i>")
    expect(customer.locator(".msg.bot").last).to_contain_text("One pizza, coming up.")
    inline = customer.locator(".msg.bot").last.locator("img.image")
    expect(inline).to_have_js_property("naturalWidth", 3)
    assert inline.get_attribute("src") == DATA_IMAGE

    # Script-bearing text, image, attachment and link: all shown as text, nothing runs, no javascript: link.
    greet = say(customer, "hello")
    expect(greet).to_contain_text(XSS_TEXT)
    expect(greet.locator(".link")).to_have_text([
        "Image: javascript:window.pwned=2", "Attachment: javascript:window.pwned=3",
        '<b onmouseover="window.pwned=4">Docs</b>: javascript:window.pwned=5'])
    assert greet.locator("img, a, b").count() == 0
    greet.locator(".link").last.hover()
    assert customer.evaluate("window.pwned") is None
    assert customer.locator("a[href^='javascript:' i], img[src^='javascript:' i]").count() == 0

    # An image that does not load is replaced by its link.
    where = say(customer, "where are you")
    expect(where.locator(".link")).to_have_text(f"Image: {stack['site']}/missing.png")
    assert where.locator("img").count() == 0
    shot(customer, "17-widget-rich-degraded")

    # After a reload the history shows the same; the custom payload's event says it is replayed.
    customer.reload()
    customer.get_by_role("button", name="Open chat").click()
    expect(customer.locator(".msg.bot")).to_have_count(4)
    expect(customer.locator(".msg.bot").first.locator("img.image")).to_have_js_property("naturalWidth", 40)
    assert customer.evaluate("window.customs.map((d) => [d.custom.kind, d.replayed])") == [["menu_card", True]]
    assert customer.evaluate("window.pwned") is None
