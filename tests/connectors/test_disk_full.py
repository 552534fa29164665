"""The embedded store's disk fills up while serving: the web channel answers 503 with Retry-After
(HTTP) or an error frame to retry (WebSocket), ``/readyz`` is 503 while it is full, and once space
returns the server is ready by itself, the refused messages are accepted and nothing is lost or
doubled. The disk is filled for real: SQLite's ``max_page_count`` on the store's connections."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from tests.bots.test_sqlite_disk_full import UNLIMITED, limit_pages
from tests.conftest import ADMIN_TOKEN
from tests.connectors.test_web_socket_failures import until
from tests.fixtures.web_widget import widget_socket

LONG = " ".join(f"word{i}" for i in range(400))  # a message that needs pages of its own


def post(client: TestClient, conversation_id: str, message_id: str) -> Any:
    return client.post("/bots/tiny/webhooks/web", json={"conversation_id": conversation_id,
                                                        "message_id": message_id, "text": f"hello {LONG}"})


def test_disk_full_is_503_with_retry_after_not_ready_and_nothing_lost(web_client: TestClient,
                                                                      settings: Settings) -> None:
    store = web_client.app.state.runtime.store  # type: ignore[attr-defined]
    assert isinstance(store, SQLiteStore)
    web_client.portal.call(limit_pages, store, 1)  # type: ignore[union-attr]

    sent: list[tuple[str, str]] = []
    for i in range(25):  # until the disk is full (the file's free space runs out within a few)
        r = post(web_client, f"full{i}", "m1")
        if r.status_code != 200:
            break
        sent.append((f"full{i}", "m1"))
    else:
        raise AssertionError("the store never filled up")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"].isdigit() and "store unavailable" in r.json()["detail"]
    refused = (f"full{len(sent)}", "m1")
    ready = web_client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert web_client.get("/readyz").status_code == 503  # stays so while writes fail
    with widget_socket(web_client, settings, "fullws") as ws:
        ws.send_json({"type": "message", "id": "w1", "text": f"hello {LONG}"})
        frame = until(ws, lambda f: f["type"] == "error")[-1]
    assert (frame["id"], frame["retry"]) == ("w1", True)  # the widget sends it again

    web_client.portal.call(limit_pages, store, UNLIMITED)  # type: ignore[union-attr]  # space returns
    assert web_client.get("/readyz").status_code == 200  # ready again by itself
    for conversation_id, message_id in [refused, ("fullws", "w1")]:  # the senders redeliver
        r = post(web_client, conversation_id, message_id)
        assert r.status_code == 200, r.text
        assert len(r.json()["responses"]) == 1
        sent.append((conversation_id, message_id))

    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for conversation_id, message_id in sent:  # each message stored once and answered once
        turns = web_client.get(f"/bots/tiny/conversations/{conversation_id}", headers=auth).json()["turns"]
        assert [(t["message_id"], t["status"]) for t in turns] == [(message_id, "done")], turns
        assert [e["kind"] for e in turns[0]["events"]].count("bot") == 1
