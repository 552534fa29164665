"""bots.nlu.model serves a trained artifact with ONNX Runtime + tokenizers, never torch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bots.artifact import read_manifest, write_manifest
from bots.errors import ArtifactError
from bots.nlu.model import OUT_OF_SCOPE, OnnxNLU
from bots.nlu.oos import FLOOR_QUANTILE, METHODS, NOT_UNDERSTOOD, ExampleIndex, class_floors, in_scope_scores

ROOT = Path(__file__).resolve().parents[2]
_BOT = """\
name: nlu-test
synonyms:
  new york:
    - nyc
    - big apple
intents:
  greet:
    examples: [hello, hi there, good morning, hey, hey there, good evening]
  book_flight:
    examples:
      - book a flight to [Paris](city)
      - I need a flight to [London](city)
      - fly me to [Berlin](city) please
      - get me a ticket to [NYC](city)
      - flights to [Rome](city) tomorrow
      - book me to [Madrid](city)
  goodbye:
    examples: [bye, goodbye, see you later, bye bye, talk to you later, farewell]
"""


@pytest.fixture(scope="module")
def artifact(module_tmp: Callable[[str], Path]) -> Path:
    from training.cli import main

    bot = module_tmp("nlu_bot")
    (bot / "bot.yml").write_text(_BOT, encoding="utf-8")
    out = bot / "models" / "a1"
    assert main(["train", str(bot), "--fast", "--no-quantize", "--out", str(out)]) == 0
    return out


def test_predict_ranks_intents_and_extracts_entities(artifact: Path) -> None:
    nlu = OnnxNLU.load(artifact, threads=1)
    assert nlu.labels == ("book_flight", "goodbye", "greet") == nlu.manifest.labels
    hello, flight = nlu.predict(["hello", "book a flight to Paris"])
    assert hello.intent == "greet" and flight.intent == "book_flight"
    assert len(flight.ranking) == 3 and abs(sum(s.confidence for s in flight.ranking) - 1.0) < 1e-4
    assert flight.confidence == flight.ranking[0].confidence
    (city,) = flight.entities
    assert (city.entity, city.value, city.start, city.end) == ("city", "Paris", 17, 22)
    assert 0.0 < city.confidence <= 1.0


def test_synonyms_from_bot_and_from_caller(artifact: Path) -> None:
    (r,) = OnnxNLU.load(artifact).predict(["get me a ticket to NYC"])
    assert [(e.entity, e.value) for e in r.entities] == [("city", "new york")]
    (r,) = OnnxNLU.load(artifact, synonyms={"paris": "Paris, France"}).predict(["book a flight to paris"])
    assert [e.value for e in r.entities] == ["Paris, France"]


def test_dynamic_padding_does_not_change_results(artifact: Path) -> None:
    nlu = OnnxNLU.load(artifact)
    alone = nlu.intent_probabilities(["hi there"])
    padded = nlu.intent_probabilities(["hi there", "I need a flight to London tomorrow morning with my whole family"])
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_batches_of_mixed_lengths_keep_the_callers_order_and_results(artifact: Path) -> None:
    """Texts run in groups of similar length (the longest of a group sets its padding): 70 texts of
    varied lengths span several groups and two chunks; every result is in the caller's order and
    equals the text's result on its own."""
    nlu = OnnxNLU.load(artifact)
    words = "book a flight to Paris tomorrow morning with my whole family please".split()
    texts = [" ".join(words[: 1 + (i * 7) % len(words)]) + f" {i}" for i in range(70)]
    together = nlu.predict(texts)
    alone = [nlu.predict([t])[0] for t in texts]
    assert [u.intent for u in together] == [u.intent for u in alone]
    for a, b in zip(together, alone, strict=True):
        assert abs(a.confidence - b.confidence) < 1e-4
        assert [(e.entity, e.value, e.start, e.end) for e in a.entities] == [
            (e.entity, e.value, e.start, e.end) for e in b.entities]
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-4)
    np.testing.assert_allclose(nlu.embed(texts), np.stack([u.embedding for u in alone]), atol=1e-4)
    np.testing.assert_allclose(nlu.intent_probabilities(texts)[5], nlu.intent_probabilities([texts[5]])[0], atol=1e-4)


def test_embed_is_normalised_and_meaningful(artifact: Path) -> None:
    nlu = OnnxNLU.load(artifact)
    emb = nlu.embed(["book a flight", "reserve a plane ticket", "good morning"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    assert nlu.embed([]).shape == (0, 384) and nlu.predict([]) == [] and nlu.dimension == 384


def test_the_operating_point_decides_not_understood(artifact: Path, tmp_path: Path) -> None:
    texts = ["purple elephants dance", "book a flight to Oslo", "hello"]
    nlu = OnnxNLU.load(artifact)  # the trained artifact's calibrated point, every score computed
    scored = nlu.score(texts)
    assert nlu.point.source == "calibrated" and all(set(x.scores) == set(METHODS) for x in scored)
    assert nlu.predict(texts) == [nlu.decide(x) for x in scored]  # predict is score, then the one rule
    copy = tmp_path / "strict"
    copy.mkdir()
    for name in ("model.onnx", "tokenizer.json", "spelling.json"):
        os.symlink(artifact / name, copy / name)
    # An artifact from before calibration points: its softmax oos_threshold.
    write_manifest(copy, dataclasses.replace(read_manifest(artifact), oos={}, oos_threshold=0.999))
    (r,) = OnnxNLU.load(copy).predict(["purple elephants dance"])
    assert r.intent == NOT_UNDERSTOOD and r.ranking[0].name != OUT_OF_SCOPE and r.confidence < 0.999
    # The bot's fallback_threshold overrides whatever the artifact says.
    (r,) = OnnxNLU.load(copy, fallback_threshold=0.0).predict(["purple elephants dance"])
    assert r.intent == r.ranking[0].name
    write_manifest(copy, dataclasses.replace(read_manifest(artifact), oos={"method": "knn_softmax", "threshold": 0.5}))
    with pytest.raises(ArtifactError, match=r"needs oos_index\.npz"):
        OnnxNLU.load(copy)


def test_intent_knn_softmax_reads_the_best_intents_own_examples_against_its_own_floor() -> None:
    """Label 0 is tight (its examples nearly coincide), label 1 broad. A text as close to label 0's nearest
    example as label 1's examples are to each other passes label 1's floor but not label 0's."""
    def unit(*v: float) -> np.ndarray:
        a = np.array(v, dtype=np.float32)
        return a / np.linalg.norm(a)
    tight = [unit(1, 0.01 * i, 0) for i in range(5)]
    broad = [unit(0.3 * i, 1, 0.2 * (i % 2)) for i in range(5)]
    emb, labels = np.stack(broad + tight), np.array([1] * 5 + [0] * 5)
    floors = class_floors(emb, labels, 2)
    assert floors[0] > 0.99 > floors[1]
    ix = ExampleIndex.of(emb, labels, 2)
    np.testing.assert_allclose(ix.floors, floors)  # computed at load when the index does not keep them
    assert list(ix.starts) == [0, 5, 10] and np.allclose(ix.embeddings[:5], np.stack(tight))
    near_tight = unit(1, 0, float(np.sqrt(1 / floors[1] ** 2 - 1)))  # cos to tight's nearest = floors[1]
    for best, v in ((0, near_tight), (1, broad[2])):
        logits = np.array([2.0, 0.0]) if best == 0 else np.array([0.0, 2.0])
        s = in_scope_scores(logits, v, ix)
        own = float((ix.embeddings[ix.starts[best]:ix.starts[best + 1]] @ v).max())
        assert s["intent_knn_softmax"] == pytest.approx(own - floors[best] + 0.25 * s["softmax"])
    assert in_scope_scores(np.array([2.0, 0.0]), near_tight, ix)["intent_knn_softmax"] < 0.25
    # A label with one example (no neighbour of its own) takes the others' median floor.
    three = ExampleIndex.of(np.concatenate([emb, unit(0, 0, 1)[None]]), np.append(labels, 2), 3)
    assert three.floors[2] == pytest.approx(float(np.median(floors))) and 0 < FLOOR_QUANTILE < 0.5


def test_each_score_is_the_same_whichever_others_are_asked_for() -> None:
    """Serving asks only for its operating point's score (``methods``); evaluate and calibration ask for all.
    The value must be bit-identical either way, for a best intent with examples and one without (a learned
    ``out_of_scope``, which reads every example), and serving must not pay for the full index when its
    intent's own rows suffice."""
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(60, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ix = ExampleIndex.of(emb, rng.integers(0, 4, size=60), 5)  # label 4 has no examples
    for _ in range(50):
        logits, v = rng.normal(size=5), rng.normal(size=16).astype(np.float32)
        v /= np.linalg.norm(v)
        every = in_scope_scores(logits, v, ix, 0.5)
        assert set(every) == set(METHODS)
        for method in METHODS:
            alone = in_scope_scores(logits, v, ix, 0.5, (method,))
            assert alone[method] == every[method], method
    alone = in_scope_scores(np.array([3.0, 0, 0, 0, 0]), v, ix, None, ("intent_knn_softmax",))
    assert "knn" not in alone and "centroid" not in alone  # only label 0's rows were read
    assert "knn" in in_scope_scores(np.array([0, 0, 0, 0, 3.0]), v, ix, None, ("intent_knn_softmax",))


def test_an_index_written_without_floors_serves_the_same_scores(artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "old"
    copy.mkdir()
    for name in ("model.onnx", "tokenizer.json", "spelling.json"):
        os.symlink(artifact / name, copy / name)
    write_manifest(copy, read_manifest(artifact))
    with np.load(artifact / "oos_index.npz") as data:
        assert "floors" in data.files
        np.savez(copy / "oos_index.npz", **{k: data[k] for k in data.files if k != "floors"})
    texts = ["purple elephants dance", "book a flight to Oslo", "hello"]
    old, new = OnnxNLU.load(copy).score(texts), OnnxNLU.load(artifact).score(texts)
    assert [x.scores for x in old] == [x.scores for x in new]


def test_typos_are_read_as_the_bots_words_and_entities_keep_what_was_typed(artifact: Path, tmp_path: Path) -> None:
    nlu = OnnxNLU.load(artifact)
    assert nlu.manifest.spelling["file"] == "spelling.json" and nlu.speller is not None
    typed = "I neeed a fligth to Londn pleese"
    (r,) = nlu.predict([typed])
    assert nlu.speller.correct(typed).text == "I need a flight to london please"
    assert r.intent == "book_flight" and r.read_as == r.to_dict()["read_as"] == "I need a flight to london please"
    (city,) = r.entities
    assert (city.value, city.start, city.end) == ("Londn", 20, 25) and typed[city.start:city.end] == "Londn"
    (r,) = nlu.predict(["bokk a fligt to Paris"])  # offsets after two corrected words of other lengths
    assert [(e.value, e.start, e.end) for e in r.entities] == [("Paris", 16, 21)]
    # the same text alone or among others, corrected or not
    among, alone = nlu.predict(["hello", typed, "bye"])[1], nlu.predict([typed])[0]
    assert among.intent == alone.intent and among.entities == alone.entities
    assert abs(among.confidence - alone.confidence) < 1e-4
    # An artifact without a vocabulary (before spelling, or `training: spelling: false`) reads as typed.
    copy = tmp_path / "plain"
    copy.mkdir()
    for name in ("model.onnx", "tokenizer.json", "oos_index.npz"):
        os.symlink(artifact / name, copy / name)
    write_manifest(copy, dataclasses.replace(read_manifest(artifact), spelling={}))
    plain = OnnxNLU.load(copy)
    assert plain.speller is None and plain.predict([typed])[0].read_as is None
    assert "read_as" not in nlu.predict(["book a flight"])[0].to_dict()
    assert plain.score([typed])[0].understanding.confidence != nlu.score([typed])[0].understanding.confidence


def test_training_without_spelling_writes_no_vocabulary(module_tmp: Callable[[str], Path]) -> None:
    from training.cli import main

    bot = module_tmp("nlu_bot_plain")
    (bot / "bot.yml").write_text(_BOT + "training:\n  spelling: false\n", encoding="utf-8")
    out = bot / "models" / "a1"
    assert main(["train", str(bot), "--fast", "--no-quantize", "--out", str(out)]) == 0
    assert read_manifest(out).spelling == {} and not (out / "spelling.json").exists()
    assert OnnxNLU.load(out).speller is None


def test_missing_model_file_is_an_artifact_error(artifact: Path, tmp_path: Path) -> None:
    write_manifest(tmp_path, read_manifest(artifact))
    with pytest.raises(ArtifactError, match=r"missing model\.onnx"):
        OnnxNLU.load(tmp_path)
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        OnnxNLU.load(tmp_path / "nothing")
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ArtifactError, match="cannot load ONNX model"):
        OnnxNLU.load(tmp_path)


def test_serving_never_imports_torch(artifact: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from bots.nlu.model import OnnxNLU
        nlu = OnnxNLU.load(Path({str(artifact)!r}))
        assert nlu.predict(["book a flight to Rome"])[0].intent == "book_flight"
        nlu.embed(["hello"])
        banned = [m for m in ("torch", "transformers", "training", "sklearn") if m in sys.modules]
        assert not banned, banned
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_span_of_punctuation_alone_is_never_an_entity(artifact: Path) -> None:
    """Found with a public Rasa project (bench/RESULTS.md): "bye-bye!" came back with movie_name='!', which
    filled a slot and sent the story elsewhere. Rasa's tokenizers drop the punctuation before tagging."""
    nlu = OnnxNLU.load(artifact)
    tags = list(nlu.entity_tags)
    text = "fly to Rome !"
    offsets = [(0, 3), (4, 6), (7, 11), (12, 13)]
    probs = np.zeros((len(offsets), len(tags)), dtype=np.float32)
    for row, tag in enumerate(["O", "O", "B-city", "B-city"]):
        probs[row, tags.index(tag)] = 1.0
    entities = nlu._entities(text, probs, offsets, [False] * len(offsets))
    assert [(e.entity, e.value, e.start, e.end) for e in entities] == [("city", "Rome", 7, 11)]
