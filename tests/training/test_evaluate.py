"""`switchboard evaluate`: report files with the stated shapes, the accuracy gate, cross-validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bots.botspec import load_bot
from bots.nlu.model import OnnxNLU
from training.cli import main
from training.data import from_bot


@pytest.fixture(scope="module")
def fast_artifact(tiny_bot: Path, module_tmp: Callable[[str], Path]) -> Path:
    out = module_tmp("eval") / "fast"
    assert main(["train", str(tiny_bot), "--fast", "--no-quantize", "--out", str(out)]) == 0
    return out


def test_evaluate_writes_rasa_shaped_reports(fast_artifact: Path, tiny_bot: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    assert main(["evaluate", str(fast_artifact), str(tiny_bot), "--out", str(out)]) == 0
    for name in ("intent_report.json", "intent_errors.json", "entity_report.json", "entity_errors.json",
                 "intent_confusion_matrix.png", "intent_histogram.png", "summary.md"):
        assert (out / name).is_file(), name
    report = json.loads((out / "intent_report.json").read_text())
    for intent in ("greet", "cancel_order", "track_order", "shipping_speed"):
        assert set(report[intent]) == {"precision", "recall", "f1-score", "support", "confused_with"}
        assert report[intent]["support"] == 8
    assert report["macro avg"]["support"] == report["weighted avg"]["support"] == 32
    # The report agrees with what the served model predicts.
    samples = from_bot(load_bot(tiny_bot)).samples
    predicted = OnnxNLU.load(fast_artifact).predict([s.text for s in samples])
    correct = sum(1 for s, r in zip(samples, predicted) if s.intent == r.intent)
    assert report["accuracy"] == pytest.approx(correct / 32)
    errors = json.loads((out / "intent_errors.json").read_text())
    assert len(errors) == 32 - correct
    assert all(e["intent"] != e["intent_prediction"]["name"] for e in errors)
    assert (out / "intent_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    ents = json.loads((out / "entity_report.json").read_text())
    assert ents["order_id"]["support"] == 8 and ents["shipping"]["support"] == 8
    assert f"| accuracy | {report['accuracy']:.4f} |" in (out / "summary.md").read_text()


def test_min_accuracy_gate(fast_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("text,intent\nhello,greet\ncancel order 12345,cancel_order\nwhat is the weather,weather\n")
    assert main(["evaluate", str(fast_artifact), str(data), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "intent_report.json").read_text())
    assert report["weather"]["recall"] == 0.0  # an intent the model does not know is an error
    assert main(["evaluate", str(fast_artifact), str(data), "--out", str(tmp_path / "r"),
                 "--min-accuracy", "0.9"]) == 1
    assert "below --min-accuracy" in capsys.readouterr().err
    assert main(["evaluate", str(fast_artifact), str(data), "--min-accuracy", "90"]) == 2


def test_evaluate_bad_data_names_file_and_line(fast_artifact: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("text,intent\nhello,greet\n,greet\n")
    assert main(["evaluate", str(fast_artifact), str(data)]) == 2
    assert f"{data}:3: both text and intent are required" in capsys.readouterr().err


def test_cross_validation_predicts_every_example_once(fast_artifact: Path, tiny_bot: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    assert main(["evaluate", str(fast_artifact), str(tiny_bot), "--cross-validation", "2", "--fast",
                 "--out", str(out)]) == 0
    report = json.loads((out / "intent_report.json").read_text())
    assert report["macro avg"]["support"] == 32
    assert "2-fold cross-validation (fast)" in (out / "summary.md").read_text()
