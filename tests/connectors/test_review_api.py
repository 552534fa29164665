"""The review UI's server side through the real app: sign-in, roles, CSRF, API tokens, audit,
filters (and that they cannot inject operators), transcripts, corrections, escaping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots.settings import Settings
from bots.staff.accounts import Accounts
from bots.staff.sqlite import STAFF_FILE, SQLiteStaffStore
from connectors.app import create_app
from tests.conftest import ADMIN_TOKEN
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus

PASSWORD = "correct horse battery"
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def add_users(data_dir: Path, **roles: str) -> None:
    async def run() -> None:
        store = SQLiteStaffStore(data_dir / STAFF_FILE)
        accounts = Accounts(store)
        for name, role in roles.items():
            await accounts.add_user(name, PASSWORD, role)
        await store.aclose()

    asyncio.run(run())


def login_token(client: TestClient) -> str:
    page = client.get("/review/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Signs in through the form; returns the session's CSRF token (from a page's meta tag)."""
    page = client.get("/review/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    r = client.post("/review/login", content=f"csrf_token={token.group(1)}&next=%2Freview&username={username}"
                    f"&password={password.replace(' ', '+')}",
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get("/review")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf, page.text
    return csrf.group(1)


def say(client: TestClient, text: str, conversation_id: str, message_id: str) -> dict[str, Any]:
    r = client.post("/bots/tiny/webhooks/web",
                    json={"conversation_id": conversation_id, "message_id": message_id, "text": text})
    assert r.status_code == 200, r.text
    return dict(r.json())


@contextlib.contextmanager
def serving(settings: Settings, bot_dirs: list[Path], **options: Any) -> Iterator[TestClient]:
    """The app of ``bot_dirs`` (``create_app``'s ``options``) in a test client, once it is ready (its bots loaded)."""
    with TestClient(create_app(settings, bot_dirs, **options)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield client


@pytest.fixture
def review(tiny_bot_dir: Path, settings: Settings) -> Iterator[TestClient]:
    add_users(settings.data_dir, ann="agent", vic="viewer", ada="admin")
    with serving(settings, [tiny_bot_dir]) as client:
        yield client


def test_sign_in_sets_a_strict_http_only_cookie_and_pages_need_it(review: TestClient) -> None:
    r = review.get("/review", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/review/login?next=/review"
    r = review.post("/review/login", content=f"csrf_token={login_token(review)}&username=ann&password=wrong-pass",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = review.post("/review/login", content=f"csrf_token=forged&username=ann&password={PASSWORD}",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 403  # login CSRF: the form token must match its cookie
    r = review.post("/review/login", content=f"csrf_token={login_token(review)}&username=ann&password={PASSWORD}",
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("sb_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/review" in cookie
    assert "Secure" not in cookie  # plain http here; behind https it is set (next test)
    page = review.get("/review")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_cookie_is_secure_behind_https(review: TestClient) -> None:
    # behind a TLS-terminating proxy that says so
    page = review.get("/review/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in page.headers["set-cookie"]
    # served over https directly
    page = review.get("https://testserver/review/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = review.post("https://testserver/review/login",
                    content=f"csrf_token={token}&username=ann&password={PASSWORD}",
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert "Secure" in next(c for c in r.headers.get_list("set-cookie") if c.startswith("sb_session="))


def test_repeated_failures_are_throttled(review: TestClient) -> None:
    for _ in range(5):
        review.post("/review/login", content=f"csrf_token={login_token(review)}&username=ann&password=nope-nope",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    r = review.post("/review/login", content=f"csrf_token={login_token(review)}&username=ann&password={PASSWORD}",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 429 and "Too many failed attempts" in r.text


def test_state_changes_need_the_csrf_token_and_a_same_origin(review: TestClient) -> None:
    say(review, "hello", "c1", "m1")
    csrf = sign_in(review, "ann")
    url = "/review/api/bots/tiny/conversations/c1/flag"
    assert review.post(url, json={"flagged": True}).status_code == 403
    assert review.post(url, json={"flagged": True}, headers={"X-CSRF-Token": "guess"}).status_code == 403
    r = review.post(url, json={"flagged": True}, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    r = review.post(url, json={"flagged": True}, headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"})
    assert r.status_code == 200 and r.json()["flagged"] is True
    # signing out ends the session for good
    page = review.get("/review")
    form_token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = review.post("/review/logout", content=f"csrf_token={form_token}",
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code == 303
    assert review.get("/review/api/me").status_code == 401


def test_roles(review: TestClient) -> None:
    say(review, "hello", "c1", "m1")
    csrf = sign_in(review, "vic")
    assert review.get("/review/api/bots/tiny/conversations/c1").status_code == 200
    r = review.post("/review/api/bots/tiny/conversations/c1/flag", json={"flagged": True},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403 and "needs 'agent'" in r.json()["detail"]
    assert review.get("/review/queue", follow_redirects=False).status_code == 403
    assert review.get("/review/api/audit").status_code == 403
    sign_in(review, "ada")
    assert review.get("/review/api/audit").status_code == 200
    assert review.get("/review/audit").status_code == 200


def test_api_tokens_for_scripts_and_the_audit_log(review: TestClient, settings: Settings) -> None:
    say(review, "where is my order 42", "c1", "m1")

    async def make_token() -> tuple[str, list[str]]:
        store = SQLiteStaffStore(settings.data_dir / STAFF_FILE)
        token = await Accounts(store).create_token("ann", "nightly-export")
        rows = await asyncio.to_thread(lambda: [r[0] for r in __import__("sqlite3").connect(
            settings.data_dir / STAFF_FILE).execute("SELECT token_hash FROM staff_tokens")])
        await store.aclose()
        return token, rows

    token, stored = asyncio.run(make_token())
    assert token not in stored and len(stored) == 1  # only the hash is kept
    auth = {"Authorization": f"Bearer {token}"}
    assert review.get("/review/api/conversations?bot=tiny").status_code == 401  # no cookie, no token
    r = review.get("/review/api/conversations?bot=tiny", headers=auth)
    assert r.status_code == 200 and r.json()["items"][0]["conversation_id"] == "c1"
    assert review.get("/review/api/bots/tiny/conversations/c1", headers=auth).status_code == 200
    r = review.get("/review/api/bots/tiny/conversations/c1/download", headers=auth)
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    # a token carries no ambient credentials: no CSRF token needed
    r = review.post("/review/api/bots/tiny/conversations/c1/tags", json={"add": ["billing"]}, headers=auth)
    assert r.status_code == 200 and r.json()["tags"] == ["billing"]
    assert review.get("/review/api/conversations", headers={"Authorization": "Bearer sbt_forged"}).status_code == 401
    # the plain admin API is audited too
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert review.get("/bots/tiny/conversations/c1", headers=admin).status_code == 200

    sign_in(review, "ada")
    review.get("/review/bots/tiny/conversations/c1")
    log = review.get("/review/api/audit").json()["items"]
    actions = [(e["actor"], e["action"], e["conversation_id"]) for e in log]
    assert ("ada", "view_transcript", "c1") in actions
    assert ("ann (token nightly-export)", "export_transcript", "c1") in actions
    assert sum(1 for a in actions if a[1] == "export_transcript") == 3  # JSON read, download, admin API
    assert ("admin-token", "export_transcript", "c1") in actions
    assert ("ada", "sign_in", "") in actions
    assert ("ann (token nightly-export)", "tag", "c1") in actions


def _ids(client: TestClient, query: str) -> list[str]:
    r = client.get("/review/api/conversations?" + query)
    assert r.status_code == 200, r.text
    return [i["conversation_id"] for i in r.json()["items"]]


def test_filters_sorting_and_pages(review: TestClient) -> None:
    csrf = sign_in(review, "ann")
    say(review, "I want to cancel my order 123", "cancel1", "m1")
    say(review, "where is my order 4567", "track1", "m1")
    say(review, "zxq vbnm qwpo", "gibberish", "m1")
    say(review, "hello", "hello1", "m1")
    review.post("/review/api/bots/tiny/conversations/hello1/flag", json={"flagged": True},
                headers={"X-CSRF-Token": csrf})
    review.post("/review/api/bots/tiny/conversations/track1/tags", json={"add": ["vip"]},
                headers={"X-CSRF-Token": csrf})
    review.post("/review/api/bots/tiny/conversations/cancel1/takeover", headers={"X-CSRF-Token": csrf})
    review.post("/review/api/bots/tiny/conversations/track1/reviewed", json={"reviewed": True},
                headers={"X-CSRF-Token": csrf})

    assert set(_ids(review, "bot=tiny")) == {"cancel1", "track1", "gibberish", "hello1"}
    assert _ids(review, "intent=cancel_order") == ["cancel1"]
    assert _ids(review, "fallback=yes") == ["gibberish"]
    assert "gibberish" not in _ids(review, "fallback=no")
    assert _ids(review, "handoff=yes") == ["cancel1"]
    assert _ids(review, "flagged=yes") == ["hello1"]
    assert _ids(review, "reviewed=yes") == ["track1"]
    assert _ids(review, "tag=vip") == ["track1"]
    assert _ids(review, "q=4567") == ["track1"]
    assert _ids(review, "q=ORDER+123") == ["cancel1"]  # case-insensitive text search
    assert _ids(review, "channel=web&bot=tiny&intent=greet") == ["hello1"]
    confidence = {i["conversation_id"]: i["min_confidence"]
                  for i in review.get("/review/api/conversations").json()["items"]}
    for threshold in (0.2, 0.5, 0.8, 0.95, 1.0):
        expected = {c for c, v in confidence.items() if v < threshold}
        assert set(_ids(review, f"confidence_below={threshold}")) == expected
    lowest = min(confidence, key=confidence.__getitem__)
    assert lowest == "gibberish"
    assert _ids(review, f"confidence_below={confidence[lowest] + 1e-6}") == ["gibberish"]
    by_conf = review.get("/review/api/conversations?sort=min_confidence&order=asc").json()["items"]
    confidences = [i["min_confidence"] for i in by_conf]
    assert confidences == sorted(confidences)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    assert len(_ids(review, f"since={today}&until={today}&tz=0")) == 4
    assert _ids(review, f"since={yesterday}&until={yesterday}&tz=0") == []
    page1 = review.get("/review/api/conversations?limit=3&page=1").json()
    page2 = review.get("/review/api/conversations?limit=3&page=2").json()
    assert page1["total"] == 4 and len(page1["items"]) == 3 and len(page2["items"]) == 1
    assert not {i["conversation_id"] for i in page1["items"]} & {i["conversation_id"] for i in page2["items"]}
    # newest activity first by default
    activity = [i["last_activity"] for i in page1["items"]]
    assert activity == sorted(activity, reverse=True)
    # the same filters on the server-rendered list
    page = review.get("/review?bot=tiny&tag=vip")
    assert page.status_code == 200 and "track1" in page.text and "cancel1" not in page.text
    assert "1 conversation" in page.text


@pytest.mark.parametrize("query, field", [
    ("confidence_below=2", "confidence_below"), ("since=yesterday", "since"), ("fallback=maybe", "fallback"),
    ("sort=password", "sort"), ("limit=100000", "limit"), ("intent=%7B%22%24gt%22%3A%22%22%7D", "intent"),
    ("bot=nobot", "bot"),
])
def test_bad_filters_are_rejected_with_the_field_named(review: TestClient, query: str, field: str) -> None:
    sign_in(review, "vic")
    r = review.get("/review/api/conversations?" + query)
    if field == "bot":
        assert r.status_code == 404 and "nobot" in r.json()["detail"]
    else:
        assert r.status_code == 422 and r.json()["detail"].startswith(field), r.text


def test_filters_cannot_inject_query_operators(review: TestClient) -> None:
    sign_in(review, "vic")
    say(review, "hello", "c1", "m1")
    for q in ['{"$gt": ""}', "' OR 1=1 --", "%", "_", ".*", '{"$where": "1"}']:
        r = review.get("/review/api/conversations", params={"q": q})
        assert r.status_code == 200 and r.json()["total"] == 0, q
        r = review.get("/review/api/conversations", params={"tag": q})
        assert r.status_code in (200, 422) and (r.status_code == 422 or r.json()["total"] == 0), q
    r = review.get("/review/api/conversations", params={"q": "hello"})
    assert r.json()["total"] == 1


def test_customer_text_is_escaped_in_pages(review: TestClient) -> None:
    say(review, XSS, "xss1", "m1")
    review.post("/bots/tiny/webhooks/web", json={"conversation_id": "xss1", "message_id": "m2", "text": "hello"})
    sign_in(review, "ann")
    listing = review.get("/review?q=script")
    assert "xss1" in listing.text
    page = review.get("/review/bots/tiny/conversations/xss1")
    assert page.status_code == 200
    assert "<script>window.pwned" not in page.text and "<img src=x" not in page.text
    data = re.search(r'<script type="application/json" id="transcript-data">(.*?)</script>', page.text, re.S)
    assert data, "the transcript data island is missing"
    payload = json.loads(data.group(1))  # the island is valid JSON whose text round-trips exactly
    assert payload["turns"][0]["events"][0]["data"]["text"] == XSS


def test_corrections_are_validated_and_stored_as_events(review: TestClient) -> None:
    say(review, "zxq vbnm order 77 qwpo", "c1", "m1")
    csrf = sign_in(review, "ann")
    url = "/review/api/bots/tiny/conversations/c1/corrections"
    h = {"X-CSRF-Token": csrf}
    r = review.post(url, json={"seq": 1, "intent": "no_such_intent"}, headers=h)
    assert r.status_code == 422 and "not an intent" in r.json()["detail"]
    r = review.post(url, json={"seq": 9, "intent": "track_order"}, headers=h)
    assert r.status_code == 422 and "no turn 9" in r.json()["detail"]
    r = review.post(url, json={"seq": 1, "intent": "track_order", "entities": [{"entity": "order_id", "value": "99"}]},
                    headers=h)
    assert r.status_code == 422 and "does not occur" in r.json()["detail"]
    r = review.post(url, json={"seq": 1, "intent": "track_order", "entities": [{"entity": "order_id", "value": "77"}]},
                    headers=h)
    assert r.status_code == 200, r.text
    t = review.get("/review/api/bots/tiny/conversations/c1").json()
    [correction] = [e for turn in t["turns"] for e in turn["events"] if e["kind"] == "correction"]
    assert correction["data"] == {"seq": 1, "intent": "track_order", "by": "ann",
                                  "entities": [{"entity": "order_id", "value": "77", "start": 15, "end": 17,
                                                "confidence": 1.0}]}
    assert "corrected" in t["summary"]["tags"]
    assert review.post("/review/api/bots/tiny/conversations/nope/corrections",
                       json={"seq": 1, "intent": "greet"}, headers=h).status_code == 404


def test_filters_cannot_inject_operators_into_mongodb(tiny_bot_dir: Path, tmp_path: Path, mongo_uri: str) -> None:
    """The same attempts through the endpoints of an app whose conversations and staff live in MongoDB."""
    from bots.staff.mongo import MongoStaffStore

    async def add_viewer() -> None:
        store = MongoStaffStore(mongo_uri)
        await Accounts(store).add_user("vic", PASSWORD, "viewer")
        await store.aclose()

    asyncio.run(add_viewer())
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, nlu_max_wait_ms=0.0)
    with TestClient(create_app(settings, [tiny_bot_dir])) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        say(client, "hello", "c1", "m1")
        sign_in(client, "vic")
        assert client.get("/review/api/conversations").json()["total"] == 1
        for attack in ['{"$gt": ""}', '{"$ne": null}', "$where", ".*", "^", '{"$regex": ".*"}']:
            for field in ("q", "tag", "channel", "intent"):
                r = client.get("/review/api/conversations", params={field: attack})
                assert r.status_code == 422 or r.json()["total"] == 0, (field, attack, r.text)
        # bracket syntax is just an unknown parameter name here, never an operator
        assert client.get("/review/api/conversations?intent[$ne]=greet").json()["total"] == 1
        assert client.get("/review/api/conversations", params={"q": "hello"}).json()["total"] == 1
