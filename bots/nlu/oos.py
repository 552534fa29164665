"""Out of scope: the one rule that decides "not understood", and the scores it reads.

A message is **not understood** when

1. the model's best intent is ``out_of_scope`` (an intent learned from examples, where the data has one), or
2. its *in-scope score* under the bot's operating point is below the point's threshold.

(A learned ``out_of_scope`` the model is unsure of is served as ``nlu_fallback`` rather than
``out_of_scope``: ``OperatingPoint.intent``; both are "not understood" and scored alike.)

Nothing else decides it. The runtime (``OnnxNLU.predict``, whose answer the dialogue engine and the
answer provider take as it is), ``switchboard evaluate`` and the training report all go through
``OperatingPoint.rejects``. A message rejected by 2. gets the intent ``nlu_fallback`` (the name Rasa's
FallbackClassifier gives it; a bot.yml bot answers it with ``action_default_fallback``), with the model's
own confidence and ranking kept; a learned ``out_of_scope`` stays ``out_of_scope`` (the bot may answer it).
Scored against labelled data, both count as the prediction ``out_of_scope`` (``as_label``).

In-scope scores (higher = more in scope), computed from what the model outputs anyway:

``softmax``   the best intent's probability
``energy``    logsumexp of the intent logits (the negative free energy, Liu et al. 2020)
``centroid``  cosine similarity of the sentence embedding to the nearest intent centroid of the training examples
``knn``       mean cosine similarity to the ``KNN_K`` nearest training example(s) (the artifact's ``oos_index.npz``)
``knn_softmax`` ``knn`` + ``SOFTMAX_WEIGHT`` x ``softmax``: far from every training example, or torn between
              intents
``intent_knn_softmax`` cosine similarity to the nearest training example *of the best intent*, less that
              intent's own floor (the ``FLOOR_QUANTILE`` quantile of its training examples' similarity to their
              nearest other example of the same intent: a tight intent such as "card arrival" needs a closer match
              than a broad one such as "other"), + ``SOFTMAX_WEIGHT`` x ``softmax`` (the default: best of these on
              BANKING77's open-intent protocol, bench/RESULTS.md). Floors are computed when the index is written
              (``class_floors``) and kept in ``oos_index.npz``; an index written before them gets them at load.

The operating point comes from, in this order:

* the bot's ``fallback_threshold`` (bot.yml) or its config.yml ``FallbackClassifier`` threshold, when set:
  an explicit override, method ``softmax`` at that value (what Rasa's FallbackClassifier does);
* the artifact's calibrated point (manifest ``oos``: method, threshold, the target it was calibrated for,
  on what, and the figures there), written by ``switchboard train --oos-target``;
* an artifact from before calibration points: its ``oos_threshold`` (softmax), else nothing is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OUT_OF_SCOPE = "out_of_scope"
NOT_UNDERSTOOD = "nlu_fallback"  # bots.dialogue.domain.NLU_FALLBACK_INTENT
METHODS = ("softmax", "energy", "centroid", "knn", "knn_softmax", "intent_knn_softmax")
INDEX_METHODS = ("centroid", "knn", "knn_softmax", "intent_knn_softmax")  # need oos_index.npz
DEFAULT_METHOD = "intent_knn_softmax"
KNN_K = 1
SOFTMAX_WEIGHT = 0.25
FLOOR_QUANTILE = 0.05
FLOOR_QUERIES = 1000  # training examples per intent whose nearest same-intent neighbour sets its floor (at most)


def as_label(intent: str) -> str:
    """The label a served intent is scored as: anything not understood is ``out_of_scope``."""
    return OUT_OF_SCOPE if intent == NOT_UNDERSTOOD else intent


@dataclass(frozen=True)
class ExampleIndex:
    """The training examples' embeddings (L2-normalised rows, float32) grouped by label id: rows
    ``starts[i]:starts[i + 1]`` are label ``i``'s; its centroids; and each label's floor (``class_floors``)."""

    embeddings: np.ndarray
    starts: np.ndarray
    centroids: np.ndarray
    floors: np.ndarray

    @classmethod
    def of(cls, embeddings: np.ndarray, labels: np.ndarray, labels_known: int,
           floors: np.ndarray | None = None) -> ExampleIndex:
        """``labels_known``: how many labels the model has (a label may have no example in the index)."""
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        emb = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32)[order])
        lab = labels[order]
        count = max(labels_known, int(lab.max()) + 1 if len(lab) else 0)
        starts = np.searchsorted(lab, np.arange(count + 1)).astype(np.int64)
        if floors is None or len(floors) != count:
            floors = class_floors(emb, lab, count)
        return cls(emb, starts, centroids_of(emb, lab, count), np.asarray(floors, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.embeddings)


def class_floors(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Each label's floor: the ``FLOOR_QUANTILE`` quantile, over (up to ``FLOOR_QUERIES`` of) its training
    examples, of the cosine similarity to their nearest *other* example of the same label. A label with a
    single example takes the median floor of the others (0 when there is none)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    floors = np.full(count, np.nan)
    for c in range(count):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue
        queries = rows[np.linspace(0, len(rows) - 1, min(len(rows), FLOOR_QUERIES)).round().astype(np.int64)]
        sims = emb[queries] @ emb[rows].T
        own = np.searchsorted(rows, queries)
        sims[np.arange(len(queries)), own] = -np.inf
        floors[c] = float(np.quantile(sims.max(axis=1), FLOOR_QUANTILE))
    known = floors[~np.isnan(floors)]
    return np.where(np.isnan(floors), float(np.median(known)) if len(known) else 0.0, floors)


def in_scope_scores(logits: np.ndarray, vector: np.ndarray | None, index: ExampleIndex | None,
                    confidence: float | None = None, methods: Collection[str] | None = None) -> dict[str, float]:
    """The in-scope scores this text has (the index methods only with an index), from its intent logits
    [labels] and sentence embedding [dim]; ``confidence``: the served best-intent probability, which is then
    the softmax score exactly (a threshold on it decides as one on the stored confidence). ``methods``: the
    index scores wanted (default: all; serving asks only for its operating point's). One text at a time: the
    same value whatever else is in its batch, and whichever other methods are asked for (each score is
    computed the same way in every case: ``intent_knn_softmax`` from its intent's own rows only, so serving
    reads a fifth of the index or less where ``knn`` reads all of it)."""
    z = logits.astype(np.float64)
    best = int(z.argmax())
    top = float(z[best])
    lse = top + float(np.log(np.exp(z - top).sum()))
    scores = {"softmax": float(np.exp(top - lse)) if confidence is None else float(confidence), "energy": lse}
    if vector is None or index is None or not len(index):
        return scores
    wanted = INDEX_METHODS if methods is None else methods
    v = vector.astype(np.float32)
    start, end = (int(index.starts[best]), int(index.starts[best + 1])) if best + 1 < len(index.starts) else (0, 0)
    need_knn = any(m in wanted for m in ("knn", "knn_softmax")) or ("intent_knn_softmax" in wanted and end <= start)
    if need_knn:
        sims = index.embeddings @ v
        k = min(KNN_K, len(sims))
        scores["knn"] = float(np.partition(sims, len(sims) - k)[len(sims) - k:].mean())
        scores["knn_softmax"] = scores["knn"] + SOFTMAX_WEIGHT * scores["softmax"]
    if "centroid" in wanted:
        scores["centroid"] = float((index.centroids @ v).max())
    if "intent_knn_softmax" in wanted:
        if end > start:  # the best intent's own examples, against its own floor
            near = float((index.embeddings[start:end] @ v).max()) - float(index.floors[best])
        else:  # an intent without examples in the index (a learned out_of_scope): every example, the median floor
            near = scores["knn"] - float(np.median(index.floors)) if len(index.floors) else scores["knn"]
        scores["intent_knn_softmax"] = near + SOFTMAX_WEIGHT * scores["softmax"]
    return scores


def centroids_of(index: np.ndarray, labels: np.ndarray, count: int | None = None) -> np.ndarray:
    """L2-normalised mean embedding of each label's training examples, [labels, dim]."""
    rows = int(labels.max()) + 1 if len(labels) else 0
    out = np.zeros((max(rows, count or 0), index.shape[1]), dtype=np.float32)
    np.add.at(out, labels, index)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True)
class OperatingPoint:
    """When a message is not understood: ``score[method] < threshold`` (or a learned ``out_of_scope``)."""

    method: str = "softmax"
    threshold: float = 0.0
    source: str = "none"  # "calibrated", "bot.yml fallback_threshold", "legacy oos_threshold", "none"
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # target, calibrated on, figures

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown out-of-scope method {self.method!r} (known: {', '.join(METHODS)})")

    def rejects(self, top: Sequence[str], scores: Sequence[float] | np.ndarray,
                threshold: float | None = None) -> np.ndarray:
        """THE rule, for many messages at once: which are not understood (``threshold``: another value of
        this point's method, for a sweep)."""
        t = self.threshold if threshold is None else threshold
        learned = np.array([name == OUT_OF_SCOPE for name in top], dtype=bool)
        return learned | (np.asarray(scores, dtype=np.float64) < t)

    def intent(self, top: str, scores: Mapping[str, float]) -> str:
        """The served intent of one message whose best intent is ``top``. A learned ``out_of_scope`` the
        model is not sure of (its probability under ``softmax_floor``) is not understood either, as Rasa's
        FallbackClassifier treats any best intent below its threshold: "I can't help with that" is said
        only when the model is sure; an unsure one gets the fallback's "did you mean"."""
        score = scores.get(self.method)
        if score is None:  # a point whose method the model cannot compute was refused at load
            raise ValueError(f"no {self.method} score")
        if top == OUT_OF_SCOPE:
            floor = self.softmax_floor
            unsure = floor is not None and scores.get("softmax", 1.0) < floor
            return NOT_UNDERSTOOD if unsure else OUT_OF_SCOPE
        return NOT_UNDERSTOOD if self.rejects([top], [score])[0] else top

    @property
    def softmax_floor(self) -> float | None:
        """The best-intent probability under which even a learned ``out_of_scope`` is not understood: this
        point's threshold when its method is ``softmax`` (a bot's ``fallback_threshold``, a Rasa project's
        FallbackClassifier), else the softmax threshold calibrated for the same target (``methods``), if any."""
        if self.method == "softmax":
            return self.threshold
        calibrated = self.details.get("methods", {}).get("softmax", {}).get("threshold")
        return float(calibrated) if isinstance(calibrated, int | float) else None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": self.threshold, "source": self.source, **self.details}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OperatingPoint:
        rest = {k: v for k, v in d.items() if k not in ("method", "threshold", "source")}
        return cls(str(d["method"]), float(d["threshold"]), str(d.get("source", "calibrated")), rest)

    def describe(self) -> str:
        return f"{self.method} < {self.threshold:.4g} ({self.source})"


def served_point(calibrated: Mapping[str, Any] | None, legacy_threshold: float | None,
                 fallback_threshold: float | None) -> OperatingPoint:
    """The operating point a bot serves (the order in the module docstring)."""
    if fallback_threshold is not None:
        return OperatingPoint("softmax", float(fallback_threshold), "bot fallback_threshold (override)")
    if calibrated:
        return OperatingPoint.from_dict(calibrated)
    if legacy_threshold is not None:
        return OperatingPoint("softmax", float(legacy_threshold), "legacy oos_threshold")
    return OperatingPoint("softmax", 0.0, "none")


# -- targets -------------------------------------------------------------------------------------------------
_TARGET = re.compile(r"^\s*(accuracy|in-scope|in-scope-drop)\s*(?:(>=|<=)\s*([0-9]*\.?[0-9]+)\s*(%?))?\s*$")
DEFAULT_TARGET = "in-scope-drop<=0.01"


@dataclass(frozen=True)
class Target:
    """What calibration aims at.

    ``accuracy``            maximise accuracy with out_of_scope counted as one more class (needs OOS examples)
    ``in-scope>=X``         the strictest threshold whose in-scope accuracy (rejected = wrong) is still >= X
    ``in-scope-drop<=X``    the strictest threshold that costs at most X of in-scope accuracy against accepting
                            everything (the default, 0.01: works on data nobody tuned for, with or without OOS
                            examples; without them it is a quantile of the held-out in-scope scores)
    """

    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        m = _TARGET.match(text)
        if m is None:
            raise ValueError(f"out-of-scope target {text!r}: expected accuracy, in-scope>=X or in-scope-drop<=X "
                             "(X a fraction like 0.96, or a percentage like 96%)")
        kind, op, number, percent = m.groups()
        if kind == "accuracy":
            if op is not None:
                raise ValueError(f"out-of-scope target {text!r}: 'accuracy' takes no value")
            return cls("accuracy")
        want = ">=" if kind == "in-scope" else "<="
        if op != want or number is None:
            raise ValueError(f"out-of-scope target {text!r}: write {kind}{want}X")
        value = float(number) / (100 if percent else 1)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"out-of-scope target {text!r}: X must be between 0 and 1 (or 0% and 100%)")
        return cls(kind, value)

    def __str__(self) -> str:
        if self.value is None:
            return self.kind
        return f"{self.kind}{'>=' if self.kind == 'in-scope' else '<='}{self.value:g}"
