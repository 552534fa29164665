"""N-gram features trained with the intent head and served beside the ONNX graph (bots/nlu/ngrams.py).

The fixture is a tiny Georgian bot whose intents differ by one word, asked about in inflected forms no example
has: the English encoder's tokenizer reads most of it as [UNK], so without character n-grams the model cannot
tell "password" from the others; with them it gets every test text. Then the artifact: the n-gram part on disk
and in the manifest, served as the graph's logits plus its own, per text (the same alone or in a batch), and an
artifact from before them (no ``ngrams`` in its manifest) loading and serving the graph alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bots.artifact import MANIFEST, latest_artifact, read_manifest
from bots.errors import ArtifactError
from bots.nlu.model import OnnxNLU
from bots.nlu.ngrams import NGRAMS_FILE, RASA_DEFAULT, NgramVectorizer
from training.linear import NGRAM_SCALE

FILLERS = ["ჩემი", "გთხოვთ", "დღეს", "სად არის", "მინდა", "როგორ", "ახალი", "ძველი"]
KEYWORDS = {"card": "ბარათი", "account": "ანგარიში", "password": "პაროლი"}
EXAMPLES = {intent: [f"{FILLERS[j]} {word}" if j % 2 else f"{word} {FILLERS[j]}" for j in range(8)]
            for intent, word in KEYWORDS.items()}
# the keyword's genitive (-ის) and instrumental (-ით), with words no example has
TESTS = [(f"{other} {word[:-1]}ის", intent) for intent, word in KEYWORDS.items() for other in ("სწრაფად", "ხვალ")] + \
        [(f"{word[:-1]}ით {other}", intent) for intent, word in KEYWORDS.items() for other in ("ძალიან", "კიდევ")]


def _train(out: Path, ngram_features: str, **config: object) -> Path:
    from training.config import TrainConfig
    from training.data import NluData, Sample
    from training.pipeline import train

    data = NluData(tuple(Sample(text, intent) for intent, texts in EXAMPLES.items() for text in texts))
    cfg = TrainConfig.from_dict({"mode": "fast", "ngram_features": ngram_features, "validation_fraction": 0.0,
                                 "seed": 0, **config})
    return train(data, cfg, bot_name="georgian", out_dir=out).directory


@pytest.fixture(scope="module")
def artifacts(module_tmp: Callable[[str], Path]) -> dict[str, Path]:
    root = module_tmp("ngrams")
    return {"ngrams": _train(root / "ngrams", "word,char_wb:1-4"), "plain": _train(root / "plain", "")}


def _right(directory: Path) -> list[bool]:
    nlu = OnnxNLU.load(directory)
    return [u.intent == want for u, (_, want) in zip(nlu.predict([t for t, _ in TESTS]), TESTS, strict=True)]


def test_character_ngrams_decide_the_intent(artifacts: dict[str, Path]) -> None:
    assert all(_right(artifacts["ngrams"]))
    plain = _right(artifacts["plain"])
    assert not all(plain[i] for i, (_, intent) in enumerate(TESTS) if intent == "password"), \
        "the fixture no longer needs the n-grams: the encoder alone gets the password texts"


def test_the_artifact_keeps_them_and_serves_the_sum(artifacts: dict[str, Path]) -> None:
    directory = artifacts["ngrams"]
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    texts = [t for texts in EXAMPLES.values() for t in texts]
    fitted = NgramVectorizer.fit(texts, RASA_DEFAULT)
    assert manifest["ngrams"] == {"file": NGRAMS_FILE, "analyzers": ["word:1-1", "char_wb:1-4"],
                                  "features": len(fitted.features), "scale": NGRAM_SCALE}
    assert manifest["training_config"]["ngram_features"] == "word,char_wb:1-4"
    nlu = OnnxNLU.load(directory)
    assert nlu.ngrams is not None and nlu.manifest.onnx_file == "model.int8.onnx"
    assert nlu.ngrams.vectorizer.features == fitted.features
    assert np.array_equal(nlu.ngrams.vectorizer.idf, fitted.idf)
    probe = [t for t, _ in TESTS]
    read = [nlu.speller.correct(t).text if nlu.speller else t for t in probe]  # as the model reads it (typos)
    graph = nlu._session.run(["intent_logits"], {
        "input_ids": np.array([nlu._tokenizer.encode(t).ids for t in read[:1]], dtype=np.int64),
        "attention_mask": np.array([nlu._tokenizer.encode(t).attention_mask for t in read[:1]], dtype=np.int64)})[0]
    logits = (graph + nlu.ngrams.logits(read[:1]))[0].astype(np.float64)
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert nlu.score(probe[:1])[0].understanding.confidence == pytest.approx(float(want.max()), abs=1e-5)
    assert np.allclose(nlu.intent_probabilities(probe[:1])[0], want, atol=1e-5)
    assert np.abs(nlu.ngrams.logits(probe)).max() > 0.5  # they weigh in


def test_a_text_scores_the_same_alone_and_in_a_batch(artifacts: dict[str, Path]) -> None:
    nlu = OnnxNLU.load(artifacts["ngrams"])
    texts = [t for t, _ in TESTS] + [t for texts in EXAMPLES.values() for t in texts] + ["", "??", "hello there"]
    together = nlu.score(texts)
    for text, batched in zip(texts, together, strict=True):
        alone = nlu.score([text])[0]
        assert alone.understanding.intent == batched.understanding.intent
        assert abs(alone.understanding.confidence - batched.understanding.confidence) < 1e-4
        assert all(abs(alone.scores[k] - batched.scores[k]) < 1e-4 for k in alone.scores)


def test_an_artifact_from_before_ngrams_still_loads_and_serves(artifacts: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(artifacts["plain"], old)
    manifest = json.loads((old / MANIFEST).read_text(encoding="utf-8"))
    assert manifest.pop("ngrams") == {}
    manifest["training_config"].pop("ngram_features")
    (old / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    nlu, plain = OnnxNLU.load(old), OnnxNLU.load(artifacts["plain"])
    assert nlu.ngrams is None
    texts = [t for t, _ in TESTS]
    assert [u.intent for u in nlu.predict(texts)] == [u.intent for u in plain.predict(texts)]
    assert np.array_equal(nlu.intent_probabilities(texts), plain.intent_probabilities(texts))


def test_a_missing_ngrams_file_is_an_artifact_error(artifacts: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifacts["ngrams"], broken)
    (broken / NGRAMS_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"missing {NGRAMS_FILE}"):
        OnnxNLU.load(broken)


def test_full_mode_refits_the_head_beside_them_after_fine_tuning(tmp_path: Path) -> None:
    directory = _train(tmp_path / "finetuned", "word,char_wb:1-4", mode="finetune", epochs=1)
    assert json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["ngrams"]["analyzers"] == [
        "word:1-1", "char_wb:1-4"]
    assert all(_right(directory))


def test_a_rasa_project_trains_the_featurizers_of_its_config(trained_rasa: Callable[[str], Path]) -> None:
    """moodbot's config.yml has no pipeline: Rasa's default one, whose two CountVectorsFeaturizers are these."""
    manifest = read_manifest(latest_artifact(trained_rasa("moodbot") / "models"))
    assert manifest.training_config["ngram_features"] == "word:1-1,char_wb:1-4"
    assert manifest.ngrams["analyzers"] == ["word:1-1", "char_wb:1-4"] and manifest.ngrams["features"] > 100


def test_a_bad_ngram_spec_is_a_message(tiny_bot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    assert main(["train", str(tiny_bot), "--fast", "--ngram-features", "chars"]) == 2
    assert "--ngram-features: training config: ngram_features: n-gram analyzer 'chars': expected word, char_wb or " \
        "char" in capsys.readouterr().err
    assert not (tiny_bot / "models").exists()
