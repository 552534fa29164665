"""Bulk export of the conversation list and the analytics page/API through the real app: the list's
filters, streamed pages, roles, audit, CSV formula escaping, escaping in the page."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient

from connectors.review import exports
from connectors.review.exports import csv_cell
from tests.connectors.test_review_api import XSS, say, sign_in
from tests.connectors.test_review_api import review as review  # the fixture
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus


def _tag(client: TestClient, csrf: str, conversation_id: str, *tags: str) -> None:
    r = client.post(f"/review/api/bots/tiny/conversations/{conversation_id}/tags", json={"add": list(tags)},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text


def test_export_streams_the_filtered_list_in_pages_as_csv_and_json_lines(
        review: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "EXPORT_PAGE", 2)  # 5 conversations: three pages
    for i in range(5):
        say(review, f"hello {i}", f"c{i}", f"m{i}")
    csrf = sign_in(review, "ann")
    _tag(review, csrf, "c1", "@evil", "billing")
    _tag(review, csrf, "c3", "-risky", "billing")

    r = review.get("/review/api/conversations/export?format=jsonl&bot=tiny")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in r.headers["content-disposition"]
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [row["conversation_id"] for row in rows] == ["c0", "c1", "c2", "c3", "c4"]  # oldest first, every page

    r = review.get("/review/api/conversations/export?format=csv&bot=tiny&tag=billing")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["conversation_id"] for row in table] == ["c1", "c3"]  # the list's filters
    assert table[0]["tags"] == "'@evil billing" and table[1]["tags"] == "'-risky billing"  # never a formula
    assert table[0]["channel"] == "web" and table[0]["started_at"].endswith("+00:00")

    r = review.get("/review/api/conversations/export?format=csv&since=2020-13-01")
    assert r.status_code == 422 and "since" in r.json()["detail"]
    assert review.get("/review/api/conversations/export?format=xlsx").status_code == 422
    assert review.get("/review/api/conversations/export?bot=nobody").status_code == 404

    sign_in(review, "ada")
    log = review.get("/review/api/audit").json()["items"]
    exported = [e for e in log if e["action"] == "export_conversations"]
    assert len(exported) == 2 and {e["actor"] for e in exported} == {"ann"}
    assert any("csv" in e["detail"] and "billing" in e["detail"] for e in exported)


def test_viewers_cannot_export(review: TestClient) -> None:
    say(review, "hello", "c1", "m1")
    assert review.get("/review/api/conversations/export").status_code == 401
    sign_in(review, "vic")
    r = review.get("/review/api/conversations/export?format=csv")
    assert r.status_code == 403 and "needs 'agent'" in r.json()["detail"]


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+2", "'=1+2"), ("+cmd", "'+cmd"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("-0.25", "-0.25"), ("plain", "plain"), (None, ""), (True, "true"), (["a", "=b"], "a =b"), (-3, "-3"),
])
def test_csv_cells_never_start_a_formula(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


def test_analytics_page_and_api(review: TestClient) -> None:
    say(review, "hello", "c1", "m1")
    say(review, XSS, "c2", "m2")
    assert review.get("/review/analytics", follow_redirects=False).status_code == 303  # sign in first
    sign_in(review, "vic")  # read-only figures: viewers may see them
    r = review.get("/review/api/analytics?bot=tiny")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"]["conversations"] == 2 and body["bot"] == "tiny"
    assert body["total"]["containment_rate"] == 1.0 and len(body["by_day"]) == 1
    page = review.get("/review/analytics")
    assert page.status_code == 200 and 'id="per-day"' in page.text and "<svg" in page.text
    assert "<script>window.pwned" not in page.text
    assert "content-security-policy" in page.headers
    assert review.get("/review/api/analytics?since=yesterday").status_code == 422
    assert review.get("/review/api/analytics?bot=nobody").status_code == 404
