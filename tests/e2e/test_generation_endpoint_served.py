"""Generation by an OpenAI-compatible server, end to end: the answers bot trained with
``answers.generation.endpoint`` pointing at a fake server on 127.0.0.1, served by the app; the web
widget sees the generated answer sentence by sentence (``partial`` frames) before the reply, the
webhook gets the same answer whole, a failing server gives the retrieval answer, and /metrics
counts the generated tokens and the failure for the bot."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bots.settings import Settings
from connectors.app import create_app
from tests.conftest import ROOT
from tests.connectors.test_slack import _ready
from tests.fixtures.fake_openai import openai_server_thread
from tests.fixtures.web_widget import widget_socket

ANSWERS_BOT = ROOT / "tests" / "data" / "answers_bot"
QUESTION = "how long do I have to send an item back?"


def _frames_until(ws: Any, kind: str, limit: int = 20) -> list[dict[str, Any]]:
    seen = []
    for _ in range(limit):
        seen.append(ws.receive_json())
        if seen[-1]["type"] == kind:
            return seen
    raise AssertionError(f"no {kind!r} frame in {seen}")


def _metric(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + '{bot="answers_shop"}')]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_a_server_generated_answer_streams_to_the_widget(tmp_path: Path, settings: Settings) -> None:
    from training.cli import main as training_main

    with openai_server_thread() as (fake, url):
        # Two sentences of the first passage: grounded by construction.
        fake.reply = lambda prompt: " ".join(prompt.split("Context: ", 1)[1].split(" | ")[0].split(". ")[:2])
        bot = tmp_path / "answers_bot"
        shutil.copytree(ANSWERS_BOT, bot)
        text = (bot / "bot.yml").read_text(encoding="utf-8")
        text = text.replace("  default: retrieval\n", "  default: generation\n")
        text = text.replace("  kb_min_similarity: 0.3\n", "  kb_min_similarity: 0.3\n  generation:\n    endpoint:\n"
                            f"      url: {url}\n      model: support-generator\n      retries: 0\n"
                            "      breaker_failures: 100\n")
        (bot / "bot.yml").write_text(text, encoding="utf-8")
        assert training_main(["train", str(bot), "--fast", "--seed", "0"]) == 0
        with TestClient(create_app(settings, [bot])) as client:
            _ready(client)
            with widget_socket(client, settings, "g1", bot="answers_shop") as ws:
                ws.send_json({"type": "message", "id": "m1", "text": QUESTION})
                frames = _frames_until(ws, "reply")
            partials = [f["text"] for f in frames if f["type"] == "partial"]
            reply = frames[-1]["responses"][0]
            assert reply["source"] == "generation", reply
            assert partials and partials[-1] == reply["text"] and "30 days" in reply["text"]
            assert len(fake.requests) == 1 and fake.requests[0]["stream"] is True
            assert fake.requests[0]["messages"][1]["content"].endswith(f"Question: {QUESTION}")
            metrics = client.get("/metrics").text
            assert _metric(metrics, "switchboard_generation_tokens_total") > 0
            assert _metric(metrics, "switchboard_generation_first_sentence_seconds_count") == 1
            # The server fails: the retrieval answer, whole, and the failure counted.
            fake.plan = [500]
            r = client.post("/bots/answers_shop/webhooks/web",
                            json={"conversation_id": "g2", "message_id": "m1", "text": QUESTION})
            answer = r.json()["responses"][0]
            assert answer["source"] == "retrieval" and "30 days" in answer["text"]
            assert _metric(client.get("/metrics").text, "switchboard_generation_failures_total") == 1
