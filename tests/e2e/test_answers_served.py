"""Retrieval answers served end to end: a bot with an `answers:` section and a knowledge base,
trained, then asked over the web channel a paraphrase and a question only its documents answer."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from bots.settings import Settings
from connectors.app import create_app
from tests.conftest import ROOT
from tests.connectors.test_slack import _ready

ANSWERS_BOT = ROOT / "tests" / "data" / "answers_bot"


def test_knowledge_base_question_gets_a_grounded_composed_answer(tmp_path: Path, settings: Settings) -> None:
    from training.cli import main as training_main

    bot = tmp_path / "answers_bot"
    shutil.copytree(ANSWERS_BOT, bot)
    assert training_main(["train", str(bot), "--fast", "--seed", "0"]) == 0
    assert (next((bot / "models").iterdir()) / "responses").is_dir()
    with TestClient(create_app(settings, [bot])) as client:
        _ready(client)

        def ask(text: str, mid: str) -> dict:  # type: ignore[type-arg]
            r = client.post("/bots/answers_shop/webhooks/web",
                            json={"conversation_id": "kb", "message_id": mid, "text": text})
            assert r.status_code == 200, r.text
            return r.json()["responses"][0]  # type: ignore[no-any-return]

        kb = ask("how long do I have to send an item back?", "m1")
        assert kb["source"] == "retrieval" and "30 days" in kb["text"]
        hello = ask("hello", "m2")
        assert hello["source"] == "template"
