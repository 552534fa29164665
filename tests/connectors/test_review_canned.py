"""Canned replies through the app: admins manage them (validated, audited), agents read them filled from a
conversation's slots, viewers get nothing, CSRF holds, and customer-typed values stay text."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from bots.events import SLOT, Event
from bots.store.base import SummaryUpdate
from connectors.review.canned import fill, slots
from tests.connectors.test_review_api import XSS, sign_in
from tests.connectors.test_review_api import review as review


def _say(client: TestClient, conversation_id: str, text: str) -> None:
    r = client.post("/bots/tiny/webhooks/web", json={"conversation_id": conversation_id,
                                                      "message_id": f"m{time.monotonic_ns()}", "text": text})
    assert r.status_code == 200, r.text


def test_fill_uses_the_current_slots_and_leaves_unknown_variables() -> None:
    events = [Event(SLOT, {"name": "order_id", "value": "111"}), Event("restart", {}),
              Event(SLOT, {"name": "order_id", "value": "4411"}), Event(SLOT, {"name": "name", "value": "Jo"})]
    values = slots(events)
    assert values == {"order_id": "4411", "name": "Jo"}
    assert fill("Hi {customer_name}, order {order_id} ({carrier}) {{x}}", values) == \
        "Hi Jo, order 4411 ({carrier}) {{x}}"
    assert fill("Hi {customer_name}", {"customer_name": "Ann", "name": "Jo"}) == "Hi Ann"
    assert fill("{order_id}", {"order_id": None}) == "{order_id}"


def test_admins_manage_agents_insert_filled_viewers_cannot(review: TestClient) -> None:
    _say(review, "c1", "hello")
    runtime = review.app.state.runtime  # type: ignore[attr-defined]
    review.portal.call(runtime.store.append, "tiny", "c1",  # type: ignore[union-attr]
                       [Event(SLOT, {"name": "order_id", "value": XSS})], SummaryUpdate())
    ada = {"X-CSRF-Token": sign_in(review, "ada")}
    r = review.put("/review/api/canned", json={"name": "order", "text": "Hi {customer_name}, order {order_id}."},
                   headers=ada)
    assert r.status_code == 200 and r.json()["bot"] == "" and r.json()["updated_by"] == "ada"
    assert review.put("/review/api/canned", json={"bot": "tiny", "name": "bye", "text": " Bye! "},
                      headers=ada).json()["text"] == "Bye!"
    for body, field in (({"name": "Bad Name", "text": "x"}, "name:"), ({"name": "ok", "text": "   "}, "text:")):
        r = review.put("/review/api/canned", json=body, headers=ada)
        assert r.status_code == 422 and field in r.text
    assert review.put("/review/api/canned", json={"bot": "nope", "name": "x", "text": "x"},
                      headers=ada).status_code == 404
    assert review.put("/review/api/canned", json={"name": "x", "text": "x"}).status_code == 403  # no CSRF token
    page = review.get("/review/canned")
    assert page.status_code == 200 and "/order" in page.text and "{customer_name}" in page.text

    ann = {"X-CSRF-Token": sign_in(review, "ann")}
    assert [r["name"] for r in review.get("/review/api/canned?bot=tiny").json()["items"]] == ["bye", "order"]
    filled = review.get("/review/api/bots/tiny/conversations/c1/canned").json()["items"]
    assert [(r["name"], r["text"]) for r in filled] == [("bye", "Bye!"),
                                                        ("order", f"Hi {{customer_name}}, order {XSS}.")]
    r = review.put("/review/api/canned", json={"name": "mine", "text": "x"}, headers=ann)
    assert r.status_code == 403 and "needs 'admin'" in r.json()["detail"]
    assert review.delete("/review/api/canned?name=order", headers=ann).status_code == 403
    assert review.get("/review/canned", follow_redirects=False).status_code == 403

    sign_in(review, "vic")
    assert review.get("/review/api/canned").status_code == 403
    assert review.get("/review/api/bots/tiny/conversations/c1/canned").status_code == 403

    ada = {"X-CSRF-Token": sign_in(review, "ada")}
    assert review.delete("/review/api/canned?name=order", headers=ada).json() == {"deleted": True}
    r = review.delete("/review/api/canned?name=order", headers=ada)
    assert r.status_code == 404 and "no canned reply /order for every bot" in r.json()["detail"]
    actions = [(e["action"], e["detail"]) for e in review.get("/review/api/audit").json()["items"]]
    assert ("save_canned_reply", "/order") in actions and ("delete_canned_reply", "/order") in actions
