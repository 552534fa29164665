"""The intent classifier's n-gram features (bots/nlu/ngrams.py) without training: the features and their TF-IDF
against sklearn's, the head's file round trip, and how a Rasa config.yml's CountVectorsFeaturizer maps to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bots.dialogue.rasa_config import parse_config
from bots.dialogue.rasa_yaml import Findings
from bots.errors import ArtifactError
from bots.nlu.ngrams import (
    NGRAMS_FILE,
    RASA_DEFAULT,
    Analyzer,
    NgramHead,
    NgramVectorizer,
    ngram_counts,
    parse_analyzers,
)
from bots.nlu.pipeline import COUNT_VECTORS, ngram_features_of

TEXTS = ["Η κάρτα μου χάθηκε!",  # noqa: RUF001 - Greek on purpose
         "πού είναι η κάρτα μου;", "θέλω νέα κάρτα", "ξέχασα τον κωδικό μου",
         "Reset my PIN, please", "my card card card is lost", "42 is the answer", "", "?!"]


def test_analyzers_parse_and_refuse_with_a_reason() -> None:
    assert parse_analyzers("word, char_wb:1-4") == RASA_DEFAULT
    assert parse_analyzers("") == ()
    assert parse_analyzers("char:2-5") == (Analyzer("char", 2, 5),)
    assert [str(a) for a in RASA_DEFAULT] == ["word:1-1", "char_wb:1-4"]
    for bad, reason in (("words", "expected word, char_wb or char"), ("char_wb:4-1", "1 <= min_ngram <= max_ngram"),
                        ("char_wb:0-2", "1 <= min_ngram"), ("word,word:1-2", "word given twice")):
        with pytest.raises(ValueError, match=reason):
            parse_analyzers(bad)


def test_counts_are_words_and_padded_character_ngrams() -> None:
    counts = ngram_counts("Card, card!", RASA_DEFAULT)
    assert counts["w card"] == 2 and counts["ccard"] == 2 and counts["c c"] == 2 and counts["c "] == 4
    assert counts["cd "] == 2 and "cd," not in counts  # within word boundaries, punctuation not a word
    two = ngram_counts("new card now", (Analyzer("word", 1, 2), Analyzer("char", 3, 3)))
    assert two["w new card"] == 1 and two["w card now"] == 1 and two["Cw c"] == 1 and two["Cd n"] == 1


def _sklearn_tfidf(texts: list[str], test: list[str], kind: str) -> tuple[list[str], np.ndarray]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    prefix = "w " if kind == "word" else "c"

    def analyzer(text: str) -> list[str]:
        return [f for f, n in ngram_counts(text, RASA_DEFAULT).items() if f.startswith(prefix) and
                (kind != "char_wb" or not f.startswith("w ")) for _ in range(n)]

    v = TfidfVectorizer(analyzer=analyzer)
    v.fit(texts)
    return list(v.get_feature_names_out()), v.transform(test).toarray()


def test_vectors_are_sklearns_tfidf_per_analyzer() -> None:
    """Each analyzer's part of a text's vector is what sklearn's TfidfVectorizer (smoothed idf, L2 norm) gives."""
    v = NgramVectorizer.fit(TEXTS, RASA_DEFAULT)
    test = [*TEXTS, "η κάρτα του PIN", "unseen words only"]
    for kind in ("word", "char_wb"):
        names, want = _sklearn_tfidf(TEXTS, test, kind)
        columns = [v.index[n] for n in names]
        for row, text in enumerate(test):
            dense = np.zeros(len(v.features), dtype=np.float32)
            cols, vals = v.row(text)
            dense[cols] = vals
            assert np.allclose(dense[columns], want[row], atol=1e-6), (kind, text)
            assert np.all(np.diff(cols) > 0)


def test_a_words_cached_columns_do_not_change_a_vector() -> None:
    v = NgramVectorizer.fit(TEXTS, RASA_DEFAULT)
    first = [v.row(t) for t in TEXTS]
    again = [v.row(t) for t in reversed(TEXTS)][::-1]
    fresh = NgramVectorizer(v.analyzers, v.features, v.idf)
    for (c1, v1), (c2, v2), (c3, v3) in zip(first, again, [fresh.row(t) for t in TEXTS], strict=True):
        assert np.array_equal(c1, c2) and np.array_equal(c1, c3)
        assert np.array_equal(v1, v2) and np.array_equal(v1, v3)


def test_head_round_trip_and_bad_files(tmp_path: Path) -> None:
    v = NgramVectorizer.fit(TEXTS, RASA_DEFAULT)
    weights = np.random.default_rng(0).standard_normal((3, len(v.features))).astype(np.float32)
    head = NgramHead(v, weights, 0.5)
    entry = head.save(tmp_path)
    assert entry == {"file": NGRAMS_FILE, "analyzers": ["word:1-1", "char_wb:1-4"], "features": len(v.features),
                     "scale": 0.5}
    loaded = NgramHead.load(tmp_path, entry, 3)
    assert np.array_equal(loaded.logits(TEXTS), head.logits(TEXTS))
    dense = np.zeros((1, len(v.features)), dtype=np.float32)
    cols, vals = v.row(TEXTS[0])
    dense[0, cols] = vals
    assert np.allclose(head.logits(TEXTS[:1]), dense @ weights.T, atol=1e-5)
    assert np.array_equal(head.logits([""]), np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ArtifactError, match="n-gram weights for 3 intents, the model has 4"):
        NgramHead.load(tmp_path, entry, 4)
    with pytest.raises(ArtifactError, match=r"missing other\.npz"):
        NgramHead.load(tmp_path, {**entry, "file": "other.npz"}, 3)
    (tmp_path / NGRAMS_FILE).write_bytes(b"not a numpy file")
    with pytest.raises(ArtifactError, match="cannot load the n-gram features"):
        NgramHead.load(tmp_path, entry, 3)


CONFIG = """\
recipe: default.v1
language: el
pipeline:
- name: WhitespaceTokenizer
- name: CountVectorsFeaturizer
- name: CountVectorsFeaturizer
  analyzer: char_wb
  min_ngram: 2
  max_ngram: 5
  lowercase: false
- name: DIETClassifier
"""


def _config(tmp_path: Path, text: str) -> tuple[tuple, Findings]:
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    findings = Findings()
    return parse_config(path, findings).pipeline, findings


def test_rasa_count_vectors_featurizers_are_the_ngram_features(tmp_path: Path) -> None:
    pipeline, findings = _config(tmp_path, CONFIG)
    assert [(c.name, c.options) for c in pipeline] == [
        (COUNT_VECTORS, {}), (COUNT_VECTORS, {"analyzer": "char_wb", "min_ngram": 2, "max_ngram": 5,
                                              "lowercase": False})]
    assert pipeline[1].where == f"{tmp_path / 'config.yml'}:6"
    assert ngram_features_of(pipeline) == "word:1-1,char_wb:2-5"
    notes = "\n".join(findings.notes)
    assert f"{tmp_path / 'config.yml'}:10: not supported: CountVectorsFeaturizer: 'lowercase'" in notes
    assert "CountVectorsFeaturizer" not in notes.split("replaced by")[0].split("pipeline components")[-1]
    assert not findings.errors


def test_no_pipeline_is_rasas_default_featurizers(tmp_path: Path) -> None:
    pipeline, _ = _config(tmp_path, "recipe: default.v1\nlanguage: en\n")
    assert ngram_features_of(pipeline) == "word:1-1,char_wb:1-4"
    pipeline, _ = _config(tmp_path, "pipeline:\n- name: WhitespaceTokenizer\n- name: DIETClassifier\n")
    assert ngram_features_of(pipeline) == ""


def test_bad_featurizer_options_are_errors_at_their_line(tmp_path: Path) -> None:
    _, findings = _config(tmp_path, "pipeline:\n- name: CountVectorsFeaturizer\n  analyzer: chars\n"
                                    "- name: CountVectorsFeaturizer\n  analyzer: char_wb\n  max_ngram: four\n"
                                    "- name: CountVectorsFeaturizer\n  colour: blue\n")
    errors = "\n".join(findings.errors)
    assert f"{tmp_path / 'config.yml'}:2: CountVectorsFeaturizer: 'analyzer' must be one of word, char_wb, char" \
        in errors
    assert f"{tmp_path / 'config.yml'}:4: CountVectorsFeaturizer: 'max_ngram' must be a whole number" in errors
    assert f"{tmp_path / 'config.yml'}:8: CountVectorsFeaturizer: unknown key 'colour'" in errors
    pipeline, _ = _config(tmp_path, "pipeline:\n- name: CountVectorsFeaturizer\n- name: CountVectorsFeaturizer\n")
    with pytest.raises(ValueError, match="word given twice"):
        ngram_features_of(pipeline)
