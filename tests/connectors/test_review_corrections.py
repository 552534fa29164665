"""Corrections become training data: agents fix misunderstood messages in the review API,
``switchboard export-corrections`` (and the UI's button) writes them to ``corrections.yml``,
and retraining with that file makes the model understand those messages."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from bots.artifact import resolve_artifact
from bots.botspec import load_bot
from bots.nlu.model import OnnxNLU
from bots.settings import Settings
from connectors.app import create_app
from connectors.cli import main as switchboard
from tests.connectors.test_review_api import add_users, say, sign_in
from training.cli import main as training_main

# Messages the tiny bot does not have examples like, with what they mean.
FIXES = {
    "sup bot": ("greet", []),
    "scrap order 4411": ("cancel_order", [{"entity": "order_id", "value": "4411"}]),
    "forget the order I placed": ("cancel_order", []),
}


def _predict(bot_dir: Path, texts: list[str]) -> list[str]:
    spec = load_bot(bot_dir)
    model = OnnxNLU.load(resolve_artifact(bot_dir), threads=1, synonyms=spec.synonyms)
    return [u.intent for u in model.predict(texts)]


def test_exported_corrections_fix_those_messages_after_retraining(
        tiny_bot_dir: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bot_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    add_users(settings.data_dir, ann="agent")
    with TestClient(create_app(settings, [bot_dir])) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        csrf = sign_in(client, "ann")
        wrong = 0
        for i, (text, (intent, entities)) in enumerate(FIXES.items()):
            say(client, text, f"fix{i}", "m1")
            turn = client.get(f"/review/api/bots/tiny/conversations/fix{i}").json()["turns"][0]
            understood = next(e["data"]["intent"] for e in turn["events"] if e["kind"] == "nlu")
            wrong += understood != intent
            r = client.post(f"/review/api/bots/tiny/conversations/fix{i}/corrections",
                            json={"seq": 1, "intent": intent, "entities": entities}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
        assert wrong >= 2, "the test needs messages the model gets wrong before it is corrected"
        # the UI's button
        r = client.post("/review/api/bots/tiny/export-corrections", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        assert r.json()["new"] == 3 and r.json()["skipped"] == []

    # the command line: same store (SWITCHBOARD_DATA_DIR), merges into the same file
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("SWITCHBOARD_MONGODB_URI", raising=False)
    assert switchboard(["export-corrections", str(bot_dir)]) == 0
    assert "3 example(s), 3 from 3 correction(s)" in capsys.readouterr().out
    exported = yaml.safe_load((bot_dir / "corrections.yml").read_text())
    assert exported["version"] == "3.1"
    by_intent = {item["intent"]: item["examples"] for item in exported["nlu"]}
    assert by_intent == {"cancel_order": ["scrap order [4411](order_id)", "forget the order I placed"],
                         "greet": ["sup bot"]}

    # BOT_DIR/corrections.yml is merged by `train` itself, always into the training split.
    assert training_main(["train", str(bot_dir), "--fast", "--seed", "0"]) == 0
    assert _predict(bot_dir, list(FIXES)) == [intent for intent, _ in FIXES.values()]


def test_export_names_what_it_cannot_write(tiny_bot_dir: Path, tmp_path: Path) -> None:
    from bots.corrections import CorrectedExample, export_corrections
    from bots.types import Entity

    bot_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir, ignore=shutil.ignore_patterns("models"))
    spec = load_bot(bot_dir)
    result = export_corrections(spec, [
        CorrectedExample("hello there", "greet", (), "c1#1"),
        CorrectedExample("refund please", "refund", (), "c2#1"),
        CorrectedExample("see [docs](link)", "greet", (), "c3#1"),
        CorrectedExample("cancel 12", "cancel_order", (Entity("order_id", "12", 7, 9),), "c4#1"),
    ])
    assert result.written == 2 and result.new == 2
    assert [s.split(":")[0] for s in result.skipped] == ["c2#1", "c3#1"]
    assert "not an intent of bot 'tiny'" in result.skipped[0]
    assert "markup" in result.skipped[1]
    again = export_corrections(spec, [CorrectedExample("Hello there", "track_order", (), "c5#1")])
    assert again.written == 2  # the same message: its latest label wins
    text = (bot_dir / "corrections.yml").read_text()
    assert "track_order" in text and "- hello there" not in text
