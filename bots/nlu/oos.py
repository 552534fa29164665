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
              intents (the default: best of these on BANKING77's open-intent protocol, bench/RESULTS.md)

The operating point comes from, in this order:

* the bot's ``fallback_threshold`` (bot.yml) or its config.yml ``FallbackClassifier`` threshold, when set:
  an explicit override, method ``softmax`` at that value (what Rasa's FallbackClassifier does);
* the artifact's calibrated point (manifest ``oos``: method, threshold, the target it was calibrated for,
  on what, and the figures there), written by ``switchboard train --oos-target``;
* an artifact from before calibration points: its ``oos_threshold`` (softmax), else nothing is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OUT_OF_SCOPE = "out_of_scope"
NOT_UNDERSTOOD = "nlu_fallback"  # bots.dialogue.domain.NLU_FALLBACK_INTENT
METHODS = ("softmax", "energy", "centroid", "knn", "knn_softmax")
INDEX_METHODS = ("centroid", "knn", "knn_softmax")  # need the training examples' embeddings (oos_index.npz)
DEFAULT_METHOD = "knn_softmax"
KNN_K = 1
SOFTMAX_WEIGHT = 0.25


def as_label(intent: str) -> str:
    """The label a served intent is scored as: anything not understood is ``out_of_scope``."""
    return OUT_OF_SCOPE if intent == NOT_UNDERSTOOD else intent


def in_scope_scores(logits: np.ndarray, vector: np.ndarray | None, index: np.ndarray | None,
                    centroids: np.ndarray | None, confidence: float | None = None) -> dict[str, float]:
    """Every in-scope score this text has (``centroid``/``knn`` only with an index), from its intent
    logits [labels] and sentence embedding [dim]; ``confidence``: the served best-intent probability, which
    is then the softmax score exactly (a threshold on it decides as one on the stored confidence). One text
    at a time: the same value whatever else is in its batch."""
    z = logits.astype(np.float64)
    top = float(z.max())
    lse = top + float(np.log(np.exp(z - top).sum()))
    scores = {"softmax": float(np.exp(top - lse)) if confidence is None else float(confidence), "energy": lse}
    if vector is not None and index is not None and centroids is not None and len(index):
        v = vector.astype(np.float32)
        sims = index @ v
        k = min(KNN_K, len(sims))
        scores["knn"] = float(np.partition(sims, len(sims) - k)[len(sims) - k:].mean())
        scores["centroid"] = float((centroids @ v).max())
        scores["knn_softmax"] = scores["knn"] + SOFTMAX_WEIGHT * scores["softmax"]
    return scores


def centroids_of(index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """L2-normalised mean embedding of each label's training examples, [labels, dim]."""
    out = np.zeros((int(labels.max()) + 1 if len(labels) else 0, index.shape[1]), dtype=np.float32)
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
