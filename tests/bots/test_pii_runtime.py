"""PII redaction end to end: a bot with `pii:` on never stores (or logs) card numbers, e-mail
addresses or phone numbers a customer typed or an agent replied, nor the user id a channel sent
(a keyed pseudonym instead); the transcript shows placeholders, on both stores."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bots.errors import ConfigError
from bots.logs import JsonFormatter
from bots.pii import PSEUDONYM_PREFIX, RedactingFilter, Redactor
from bots.settings import Settings
from connectors.app import create_app
from tests.bots.test_pii_store import everything_stored
from tests.conftest import ADMIN_TOKEN
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus

SECRET_TEXT = "cancel order 123, my card is 4111 1111 1111 1111 and mail jo@example.com or call +44 20 7946 0958"
PII_KEY = "0123456789abcdef0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bot_with_pii(tiny_bot_dir: Path, tmp_path: Path, section: str) -> Path:
    bot = tmp_path / "bot"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as f:
        f.write(section)
    return bot


def test_customer_pii_is_redacted_before_it_is_stored(tiny_bot_dir: Path, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    bot = bot_with_pii(tiny_bot_dir, tmp_path, "pii:\n  patterns:\n    member_id: 'MBR-\\d{6}'\n")
    settings = dataclasses.replace(settings, pii_key=PII_KEY)
    with TestClient(create_app(settings, [bot])) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = client.post("/bots/tiny/webhooks/web", json={"conversation_id": "p", "message_id": "m",
                                                         "text": SECRET_TEXT + " member MBR-123456"})
        assert r.status_code == 200, r.text
        transcript = client.get("/bots/tiny/conversations/p", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    stored = json.dumps(transcript.json())
    for secret in ("4111", "jo@example.com", "7946", "MBR-123456"):
        assert secret not in stored
    user = transcript.json()["turns"][0]["events"][0]["data"]["text"]
    assert user == ("cancel order 123, my card is [CARD] and mail [EMAIL] or call [PHONE] member [MEMBER_ID]")
    raw = (settings.data_dir / "conversations.db").read_bytes()
    assert b"4111 1111" not in raw and b"jo@example.com" not in raw


@pytest.fixture(params=["sqlite", "mongodb"])
def pii_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    uri = request.getfixturevalue("mongo_uri") if request.param == "mongodb" else None
    return dataclasses.replace(settings, pii_key=PII_KEY, mongodb_uri=uri)


def test_user_ids_and_agent_replies_never_reach_the_store_raw(tiny_bot_dir: Path, tmp_path: Path,
                                                              pii_settings: Settings,
                                                              request: pytest.FixtureRequest) -> None:
    """The web channel's user id (an e-mail address here) becomes a pseudonym shared by that person's
    conversations; an agent's reply with personal data is redacted in the transcript and the index."""
    bot = bot_with_pii(tiny_bot_dir, tmp_path, "pii: true\n")
    with TestClient(create_app(pii_settings, [bot])) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        for conversation_id, user_id in (("a1", "zelda.quux@example.org"), ("a2", "zelda.quux@example.org"),
                                         ("b1", "otto.vexler@example.net")):
            r = client.post("/bots/tiny/webhooks/web", json={"conversation_id": conversation_id, "message_id": "m1",
                                                             "text": "hello", "user_id": user_id})
            assert r.status_code == 200, r.text
        r = client.post("/review/api/bots/tiny/conversations/a1/reply", headers=ADMIN,
                        json={"text": "Sent to zelda.quux@example.org, call us on +44 20 7946 0958"})
        assert r.status_code == 200, r.text
        users = {s["conversation_id"]: s["user_id"]
                 for s in client.get("/bots/tiny/conversations", headers=ADMIN).json()["items"]}
        transcript = client.get("/bots/tiny/conversations/a1", headers=ADMIN).json()
        found = client.get("/bots/tiny/conversations?text=zelda", headers=ADMIN).json()
        store = client.app.state.runtime.store  # type: ignore[attr-defined]
        stored = everything_stored(store, request, pii_settings.data_dir)
    assert users["a1"] == users["a2"] != users["b1"]  # a person's conversations group under one pseudonym
    assert users["a1"].startswith(PSEUDONYM_PREFIX) and users["b1"].startswith(PSEUDONYM_PREFIX)
    agent = [e["data"]["text"] for t in transcript["turns"] for e in t["events"] if e["kind"] == "agent"]
    assert agent == ["Sent to [EMAIL], call us on [PHONE]"]
    assert found["total"] == 0  # not in the search index either
    assert "[EMAIL]" in stored
    for raw in ("zelda", "quux", "vexler", "7946"):
        assert raw not in stored, raw


def test_pii_without_the_pseudonym_key_is_refused(tiny_bot_dir: Path, tmp_path: Path, settings: Settings) -> None:
    import asyncio

    from bots.runtime import Runtime
    from bots.store.sqlite import SQLiteStore

    bot = bot_with_pii(tiny_bot_dir, tmp_path, "pii: true\n")
    runtime = Runtime(settings, SQLiteStore(tmp_path / "x.db"))
    with pytest.raises(ConfigError, match=r"bot.yml:\d+: pii: set SWITCHBOARD_PII_KEY"):
        asyncio.run(runtime.load_bot(bot))
    with pytest.raises(ConfigError, match="SWITCHBOARD_PII_KEY: use at least 32 characters"):
        Settings.from_env({"SWITCHBOARD_PII_KEY": "short"})
    assert Settings.from_env({"SWITCHBOARD_PII_KEY": PII_KEY}).pii_key == PII_KEY
    assert PII_KEY not in repr(Settings.from_env({"SWITCHBOARD_PII_KEY": PII_KEY}))


def test_bad_pii_section_names_the_line(tiny_bot_dir: Path, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    bot = bot_with_pii(tiny_bot_dir, tmp_path, "pii:\n  patterns:\n    broken: '(['\n")
    import asyncio

    from bots.runtime import Runtime
    from bots.store.sqlite import SQLiteStore

    runtime = Runtime(settings, SQLiteStore(tmp_path / "x.db"))
    with pytest.raises(ConfigError, match=r"bot.yml:\d+: pii: pii pattern 'broken': invalid regular expression"):
        asyncio.run(runtime.load_bot(bot))


def test_logs_never_carry_pii(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("switchboard", logging.INFO, __file__, 1, "customer wrote %s", (SECRET_TEXT,), None)
    record.text = SECRET_TEXT
    assert RedactingFilter(Redactor()).filter(record)
    line = JsonFormatter().format(record)
    assert "4111" not in line and "jo@example.com" not in line
    assert "[CARD]" in json.loads(line)["msg"]
