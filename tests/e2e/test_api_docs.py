"""/docs (Swagger UI) renders in a real headless Chromium with every host but the server blocked,
as on a cluster without internet. Before, the page loaded its script from a CDN and stayed blank
offline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Route, expect

from tests.fixtures.browser import browser as browser  # the fixture
from tests.fixtures.server import ServeProcess


@pytest.fixture(scope="module")
def server(tiny_bot_dir: Path, module_tmp: Callable[[str], Path]) -> Iterator[ServeProcess]:
    with ServeProcess([tiny_bot_dir], data_dir=module_tmp("docs") / "data",
                      env={"SWITCHBOARD_LOG_LEVEL": "WARNING"}) as running:
        yield running


def _offline_page(browser: Browser, server: ServeProcess) -> tuple[Any, list[str]]:
    """A page that can reach the server only; every other request is refused and recorded."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    elsewhere: list[str] = []

    def guard(route: Route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return context.new_page(), elsewhere


def test_swagger_ui_renders_offline(browser: Browser, server: ServeProcess) -> None:
    page, elsewhere = _offline_page(browser, server)
    page.goto(server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Switchboard")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible()
    paths = set(operations.all_text_contents())
    assert {"/bots/{bot}/webhooks/web", "/bots/{bot}/webhooks/web/conversations"} <= {p.replace("\u200b", "")
                                                                                       for p in paths}
    expect(page.get_by_text("Unable to render this definition")).to_have_count(0)
    assert elsewhere == []
    page.context.close()

