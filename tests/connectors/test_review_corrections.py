"""Corrections become training data: agents fix misunderstood messages in the review API, the
UI's button downloads them (``corrections.yml`` or a Rasa ``nlu.yml``), ``switchboard
export-corrections`` writes them under the data dir or to ``--output``, never into the served bot
folder, and retraining with that file makes the model understand those messages."""

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
from tests.connectors.test_review_api import review as review  # the fixture
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
    served = _read_only(bot_dir)  # as in Kubernetes: the bot folder of a served bot is read-only
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
        # the UI's button: a download, nothing written on the server
        r = client.get("/review/api/bots/tiny/export-corrections")
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == 'attachment; filename="corrections.yml"'
        assert (r.headers["x-corrections-examples"], r.headers["x-corrections-skipped"]) == ("3", "0")
        downloaded = yaml.safe_load(r.text)
        rasa = client.get("/review/api/bots/tiny/export-corrections", params={"format": "rasa"})
        assert rasa.headers["content-disposition"] == 'attachment; filename="tiny-nlu.yml"'
        assert "- scrap order [4411](order_id)\n" in yaml.safe_load(rasa.text)["nlu"][0]["examples"]
        assert client.get("/review/api/bots/tiny/export-corrections", params={"format": "csv"}).status_code == 422
    assert served == _snapshot(bot_dir)

    # the command line: same store (SWITCHBOARD_DATA_DIR); writes under the data dir and says where
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("SWITCHBOARD_MONGODB_URI", raising=False)
    assert switchboard(["export-corrections", str(bot_dir)]) == 0
    out = capsys.readouterr().out
    written = settings.data_dir / "exports" / "tiny" / "corrections.yml"
    assert f"wrote {written}: 3 example(s), 3 from 3 correction(s)" in out
    assert served == _snapshot(bot_dir)
    assert written.stat().st_mode & 0o777 == 0o600 and written.parent.stat().st_mode & 0o777 == 0o700
    exported = yaml.safe_load(written.read_text())
    assert exported["version"] == "3.1" and exported == downloaded
    by_intent = {item["intent"]: item["examples"] for item in exported["nlu"]}
    assert by_intent == {"cancel_order": ["scrap order [4411](order_id)", "forget the order I placed"],
                         "greet": ["sup bot"]}

    # Where the bot is trained (its sources, writable), BOT_DIR/corrections.yml is merged by `train`
    # itself, always into the training split.
    _writable(bot_dir)
    assert switchboard(["export-corrections", str(bot_dir), "--output", str(bot_dir / "corrections.yml")]) == 0
    assert yaml.safe_load((bot_dir / "corrections.yml").read_text()) == exported
    assert training_main(["train", str(bot_dir), "--fast", "--seed", "0"]) == 0
    assert _predict(bot_dir, list(FIXES)) == [intent for intent, _ in FIXES.values()]


def test_export_names_what_it_cannot_write(tiny_bot_dir: Path, tmp_path: Path) -> None:
    from bots.corrections import CorrectedExample, export_corrections
    from bots.types import Entity

    bot_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir, ignore=shutil.ignore_patterns("models"))
    spec = load_bot(bot_dir)
    path = tmp_path / "out" / "corrections.yml"
    result = export_corrections(spec, [
        CorrectedExample("hello there", "greet", (), "c1#1"),
        CorrectedExample("refund please", "refund", (), "c2#1"),
        CorrectedExample("see [docs](link)", "greet", (), "c3#1"),
        CorrectedExample("cancel 12", "cancel_order", (Entity("order_id", "12", 7, 9),), "c4#1"),
    ], path)
    assert result.written == 2 and result.new == 2
    assert [s.split(":")[0] for s in result.skipped] == ["c2#1", "c3#1"]
    assert "not an intent of bot 'tiny'" in result.skipped[0]
    assert "markup" in result.skipped[1]
    assert "# skipped c2#1: intent 'refund' is not an intent of bot 'tiny'\n" in path.read_text()
    again = export_corrections(spec, [CorrectedExample("Hello there", "track_order", (), "c5#1")], path)
    assert again.written == 2  # the same message: its latest label wins
    text = path.read_text()
    assert "track_order" in text and "- hello there" not in text
    assert not (bot_dir / "corrections.yml").exists()


def test_the_rasa_export_is_rasa_nlu_and_merges_like_ours(tiny_bot_dir: Path, tmp_path: Path) -> None:
    from bots.corrections import CorrectedExample, export_corrections, read_corrections
    from bots.types import Entity

    spec = load_bot(tiny_bot_dir)
    path = tmp_path / "tiny-nlu.yml"
    export_corrections(spec, [CorrectedExample("cancel twelve", "cancel_order", (Entity("order_id", "12", 7, 13),)),
                              CorrectedExample("cancel 44 now", "cancel_order", (Entity("order_id", "44", 7, 9),))],
                       path, "rasa")
    data = yaml.safe_load(path.read_text())
    assert data == {"version": "3.1", "nlu": [{"intent": "cancel_order", "examples": (
        '- cancel [twelve]{"entity": "order_id", "value": "12"}\n- cancel [44](order_id) now\n')}]}
    assert "examples: |" in path.read_text()  # Rasa's block string
    export_corrections(spec, [CorrectedExample("hi bot", "greet")], path, "rasa")
    assert read_corrections(path) == [("cancel_order", "cancel [twelve](order_id:12)"),
                                      ("cancel_order", "cancel [44](order_id) now"), ("greet", "hi bot")]


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in sorted(folder.rglob("*"))}


def _read_only(folder: Path) -> dict[str, float]:
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    return _snapshot(folder)


def _writable(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)


def test_a_new_intent_a_missed_hand_off_and_saving_on_the_server(review: TestClient, tiny_bot_dir: Path,
                                                                  settings: Settings) -> None:
    client = review  # users ann (agent), vic (viewer), ada (admin)
    say(client, "sup  bot, gimme a human", "c1", "m1")
    csrf = sign_in(client, "ann")
    url = "/review/api/bots/tiny/conversations/c1/corrections"
    r = client.post(url, json={"seq": 1, "intent": "smalltalk"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "mark it as a new intent" in r.json()["detail"]
    for bad in ("small talk", "9lives", "a/b", "x" * 65):
        r = client.post(url, json={"seq": 1, "intent": bad, "new_intent": True}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 422, bad
    r = client.post(url, json={"seq": 1, "intent": "smalltalk", "new_intent": True, "handoff": True,
                               "entities": [{"entity": "who", "value": "human", "start": 18, "end": 23}]},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    event = next(e for e in r.json()["turn"]["events"] if e["kind"] == "correction")["data"]
    assert (event["intent"], event["new_intent"], event["handoff"]) == ("smalltalk", True, True)
    tags = client.get("/review/api/bots/tiny/conversations/c1").json()["summary"]["tags"]
    assert tags == ["corrected", "should-hand-off"]

    assert client.post("/review/api/bots/tiny/export-corrections", json={}).status_code == 403  # no CSRF token
    r = client.post("/review/api/bots/tiny/export-corrections", json={"format": "rasa"},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    path = settings.data_dir / "exports" / "tiny" / "tiny-nlu.yml"
    assert r.json()["path"] == str(path) and r.json()["written"] == 1
    text = path.read_text()
    assert "# new intent 'smalltalk'" in text
    assert "- sup bot, gimme a [human](who)\n" in yaml.safe_load(text)["nlu"][0]["examples"]  # one line
    assert path.stat().st_mode & 0o777 == 0o600
    assert client.post("/review/api/bots/tiny/export-corrections", json={"format": "csv"},
                       headers={"X-CSRF-Token": csrf}).status_code == 422

    csrf = sign_in(client, "vic")
    r = client.post("/review/api/bots/tiny/export-corrections", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    sign_in(client, "ada")
    log = [(e["actor"], e["action"], e["detail"]) for e in client.get("/review/api/audit").json()["items"]]
    assert ("ann", "correct", "turn 1 -> smalltalk (new intent), should have handed off") in log
    assert ("ann", "export_corrections", f"1 corrections -> {path} (rasa)") in log
    assert not (tiny_bot_dir / "corrections.yml").exists()
