"""Sparse word and character n-gram features of the intent classifier (Rasa's CountVectorsFeaturizer).

Rasa's default pipeline feeds its DIETClassifier, beside any dense features, bag-of-words counts
(``CountVectorsFeaturizer``) and character n-grams within word boundaries (``analyzer: char_wb,
min_ngram: 1, max_ngram: 4``). They carry what a sentence embedding trained on English misses: the exact
words and word pieces of a bot's examples in any language. Switchboard's intent score is

    logits(text) = intent head(sentence embedding)        (the ONNX graph)
                 + weights · ngram vector(text)           (this module, numpy, when the artifact has them)

both parts fitted together by training (training/linear.py: one logistic regression on the embedding
beside the n-gram vector). The n-gram vector is TF-IDF over the artifact's vocabulary (the n-grams of the
training examples; unseen ones are dropped): raw counts times sklearn's smoothed idf, L2-normalised per
analyzer, so that each analyzer weighs as much as the unit-length embedding.

Analyzers (``Analyzer.parse``; a bot's ``training: ngram_features``, or read from config.yml):
``word`` (word n-grams, default 1-1), ``char_wb`` (character n-grams of each word padded with a space, as
sklearn's ``char_wb``), ``char`` (character n-grams of the words joined by single spaces). Text is lower-
cased and cut into words as ``\\w+`` (letters and digits of any script). A text's vector depends on that text
only: the same scores alone or in any batch.

The artifact keeps them in ``ngrams.npz`` (``features``: the vocabulary, ``idf``, ``blocks``: each feature's
analyzer, ``weights`` [labels, features], the scale folded in) and the manifest's ``ngrams`` says so
(bots/artifact.py); an artifact without them serves the ONNX logits alone, as before.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bots.errors import ArtifactError

__all__ = ["ANALYZERS", "NGRAMS_FILE", "RASA_DEFAULT", "Analyzer", "NgramHead", "NgramVectorizer", "ngram_counts",
           "parse_analyzers"]

NGRAMS_FILE = "ngrams.npz"
ANALYZERS = ("word", "char_wb", "char")
_PREFIX = {"word": "w ", "char_wb": "c", "char": "C"}  # a feature's name: its analyzer's prefix + the n-gram
_WORD = re.compile(r"\w+")
_SPEC = re.compile(r"^\s*(word|char_wb|char)\s*(?::\s*(\d+)\s*-\s*(\d+)\s*)?$")
MAX_NGRAM = 10
_WORD_CACHE = 50_000  # words whose char_wb columns are kept (emptied when full)


@dataclass(frozen=True)
class Analyzer:
    """One CountVectorsFeaturizer: its ``analyzer`` and n-gram range (``min_ngram``..``max_ngram``)."""

    kind: str
    low: int = 1
    high: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ANALYZERS:
            raise ValueError(f"analyzer {self.kind!r}: expected one of {', '.join(ANALYZERS)}")
        if not 1 <= self.low <= self.high <= MAX_NGRAM:
            raise ValueError(f"analyzer {self.kind}: n-gram range {self.low}-{self.high} must satisfy "
                             f"1 <= min_ngram <= max_ngram <= {MAX_NGRAM}")

    @classmethod
    def parse(cls, text: str) -> Analyzer:
        """``word``, ``char_wb:1-4``, ``char:2-5``."""
        m = _SPEC.match(text)
        if m is None:
            raise ValueError(f"n-gram analyzer {text!r}: expected word, char_wb or char, optionally with a range "
                             "like char_wb:1-4")
        kind, low, high = m.groups()
        return cls(kind, int(low or 1), int(high or 1))

    def __str__(self) -> str:
        return f"{self.kind}:{self.low}-{self.high}"


def parse_analyzers(text: str) -> tuple[Analyzer, ...]:
    """A comma-separated list of analyzers (``word,char_wb:1-4``); ``""`` is none. ValueError with the reason."""
    found = tuple(Analyzer.parse(part) for part in text.split(",")) if text.strip() else ()
    kinds = [a.kind for a in found]
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise ValueError(f"n-gram analyzers {text!r}: {', '.join(twice)} given twice (one range per analyzer)")
    return found


RASA_DEFAULT = (Analyzer("word"), Analyzer("char_wb", 1, 4))  # Rasa's default pipeline's two featurizers


def _grams(piece: str, low: int, high: int, prefix: str) -> list[str]:
    return [prefix + piece[i:i + n] for n in range(low, high + 1) for i in range(len(piece) - n + 1)]


def _word_grams(words: Sequence[str], low: int, high: int) -> list[str]:
    return ["w " + " ".join(words[i:i + n]) for n in range(low, high + 1) for i in range(len(words) - n + 1)]


def ngram_counts(text: str, analyzers: Sequence[Analyzer] = RASA_DEFAULT) -> Counter[str]:
    """Each n-gram of ``text`` (named with its analyzer's prefix) and how often it occurs."""
    words = _WORD.findall(text.lower())
    found: list[str] = []
    for a in analyzers:
        if a.kind == "word":
            found += _word_grams(words, a.low, a.high)
        elif a.kind == "char_wb":
            for w in words:
                found += _grams(f" {w} ", a.low, a.high, _PREFIX[a.kind])
        else:
            found += _grams(" ".join(words), a.low, a.high, _PREFIX[a.kind])
    return Counter(found)


def _block_of(feature: str, analyzers: Sequence[Analyzer]) -> int:
    prefix = "w " if feature.startswith("w ") else feature[:1]
    return next(i for i, a in enumerate(analyzers) if _PREFIX[a.kind] == prefix)


class NgramVectorizer:
    """TF-IDF over a fixed vocabulary, L2-normalised per analyzer (sklearn's TfidfVectorizer per analyzer)."""

    def __init__(self, analyzers: Sequence[Analyzer], features: Sequence[str], idf: np.ndarray) -> None:
        self.analyzers = tuple(analyzers)
        self.features = tuple(features)
        self.index = {f: j for j, f in enumerate(self.features)}
        self.idf = np.asarray(idf, dtype=np.float32)
        self.blocks = np.array([_block_of(f, self.analyzers) for f in self.features], dtype=np.int64)
        if len(self.idf) != len(self.features):
            raise ValueError(f"{len(self.features)} n-gram features but {len(self.idf)} idf values")
        self._words: dict[str, np.ndarray] = {}  # a word's char_wb columns (the same for every text)

    @classmethod
    def fit(cls, texts: Iterable[str], analyzers: Sequence[Analyzer]) -> NgramVectorizer:
        """The vocabulary of ``texts`` (every n-gram, in first-seen order) and its smoothed idf
        (``ln((1 + n) / (1 + df)) + 1``)."""
        frequency: Counter[str] = Counter()
        n = 0
        for text in texts:
            frequency.update(ngram_counts(text, analyzers).keys())
            n += 1
        features = list(frequency)
        idf = np.array([math.log((1 + n) / (1 + frequency[f])) + 1.0 for f in features], dtype=np.float32)
        return cls(analyzers, features, idf)

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``text``'s non-zero features: their columns (ascending) and values; the n-grams of
        ``ngram_counts`` in the vocabulary, each word's ``char_wb`` columns looked up once and kept."""
        words = _WORD.findall(text.lower())
        parts: list[np.ndarray] = []
        for a in self.analyzers:
            if a.kind == "char_wb":
                parts += [self._word_columns(w, a) for w in words]
            else:
                grams = _word_grams(words, a.low, a.high) if a.kind == "word" else \
                    _grams(" ".join(words), a.low, a.high, _PREFIX[a.kind])
                parts.append(self._columns(grams))
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if not len(ids):
            return ids, np.zeros(0, dtype=np.float32)
        cols, counts = np.unique(ids, return_counts=True)
        vals = counts.astype(np.float32) * self.idf[cols]
        blocks = self.blocks[cols]
        norms = np.sqrt(np.bincount(blocks, vals * vals, minlength=len(self.analyzers))).astype(np.float32)
        return cols, vals / norms[blocks]

    def _columns(self, grams: Sequence[str]) -> np.ndarray:
        get = self.index.get
        return np.array([j for j in map(get, grams) if j is not None], dtype=np.int64)

    def _word_columns(self, word: str, a: Analyzer) -> np.ndarray:
        cols = self._words.get(word)
        if cols is None:
            if len(self._words) >= _WORD_CACHE:
                self._words.clear()
            cols = self._words[word] = self._columns(_grams(f" {word} ", a.low, a.high, _PREFIX[a.kind]))
        return cols


class NgramHead:
    """The n-gram part of the intent logits: ``weights`` [labels, features] times the text's vector."""

    def __init__(self, vectorizer: NgramVectorizer, weights: np.ndarray, scale: float = 1.0) -> None:
        self.vectorizer = vectorizer
        weights = np.asarray(weights, dtype=np.float32)  # [labels, features], the scale folded in
        if weights.ndim != 2 or weights.shape[1] != len(vectorizer.features):
            raise ValueError(f"n-gram weights of shape {weights.shape} for a vocabulary of "
                             f"{len(vectorizer.features)}")
        self.by_feature = np.ascontiguousarray(weights.T)  # [features, labels]: a text's rows are contiguous
        self.labels = weights.shape[0]
        self.scale = float(scale)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), labels] to add to the model's intent logits."""
        out = np.zeros((len(texts), self.labels), dtype=np.float32)
        for i, text in enumerate(texts):
            cols, vals = self.vectorizer.row(text)
            if len(cols):
                out[i] = vals @ self.by_feature[cols]
        return out

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``ngrams.npz``; returns the manifest's ``ngrams`` entry."""
        np.savez(directory / NGRAMS_FILE, features=np.array(self.vectorizer.features, dtype=np.str_),
                 idf=self.vectorizer.idf, weights=self.by_feature.T)
        return {"file": NGRAMS_FILE, "analyzers": [str(a) for a in self.vectorizer.analyzers],
                "features": len(self.vectorizer.features), "scale": self.scale}

    @classmethod
    def load(cls, directory: Path, entry: Mapping[str, Any], labels: int) -> NgramHead:
        """The head the manifest's ``ngrams`` entry describes; ArtifactError for a missing or bad file."""
        path = directory / str(entry.get("file", NGRAMS_FILE))
        if not path.is_file():
            raise ArtifactError(f"{directory}: missing {path.name} (the manifest lists n-gram features); "
                                "retrain the bot")
        try:
            analyzers = [Analyzer.parse(str(a)) for a in entry["analyzers"]]
            with np.load(path, allow_pickle=False) as z:
                head = cls(NgramVectorizer(analyzers, [str(f) for f in z["features"]], z["idf"]), z["weights"],
                           float(entry.get("scale", 1.0)))
        except (KeyError, ValueError, OSError) as exc:
            raise ArtifactError(f"{path}: cannot load the n-gram features ({exc}); retrain the bot") from None
        if head.labels != labels:
            raise ArtifactError(f"{path}: n-gram weights for {head.labels} intents, the model has "
                                f"{labels}; retrain the bot")
        return head
