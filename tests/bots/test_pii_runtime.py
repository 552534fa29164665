"""PII redaction end to end: a bot with `pii:` on never stores (or logs) card numbers, e-mail
addresses or phone numbers a customer typed; the transcript shows placeholders."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bots.errors import ConfigError
from bots.logs import JsonFormatter
from bots.pii import RedactingFilter, Redactor
from connectors.app import create_app
from tests.conftest import ADMIN_TOKEN

SECRET_TEXT = "cancel order 123, my card is 4111 1111 1111 1111 and mail jo@example.com or call +44 20 7946 0958"


def bot_with_pii(tiny_bot_dir: Path, tmp_path: Path, section: str) -> Path:
    bot = tmp_path / "bot"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as f:
        f.write(section)
    return bot


def test_customer_pii_is_redacted_before_it_is_stored(tiny_bot_dir: Path, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    bot = bot_with_pii(tiny_bot_dir, tmp_path, "pii:\n  patterns:\n    member_id: 'MBR-\\d{6}'\n")
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
