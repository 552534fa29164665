"""Scores of predictions against gold labels, in Rasa's report shapes.

``intent_report`` matches Rasa's ``intent_report.json``: one entry per intent with
precision, recall, f1-score, support and confused_with, plus accuracy, macro avg and
weighted avg. ``entity_report`` scores exact spans (type, start, end, role, group) per entity type.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

from bots.errors import ConfigError
from bots.nlu.oos import OperatingPoint, Target, as_label
from bots.types import Entity, Understanding
from training.data import OUT_OF_SCOPE, Sample


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def intent_report(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    labels = sorted(set(gold) | set(predicted))
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    report: dict[str, Any] = {}
    support_total = len(gold)
    macro = [0.0, 0.0, 0.0]
    weighted = [0.0, 0.0, 0.0]
    for label in labels:
        tp = confusion[label][label]
        fn = sum(confusion[label].values()) - tp
        fp = sum(confusion[g][label] for g in labels if g != label)
        support = tp + fn
        precision, recall, f1 = _prf(tp, fp, fn)
        wrong = {p: n for p, n in confusion[label].most_common() if p != label}
        report[label] = {"precision": precision, "recall": recall, "f1-score": f1, "support": support,
                         "confused_with": dict(list(wrong.items())[:3])}
        for i, v in enumerate((precision, recall, f1)):
            macro[i] += v / len(labels)
            weighted[i] += v * support / max(support_total, 1)
    correct = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p)
    report["accuracy"] = correct / support_total if support_total else 0.0
    for name, vals in (("macro avg", macro), ("weighted avg", weighted)):
        report[name] = {"precision": vals[0], "recall": vals[1], "f1-score": vals[2], "support": support_total}
    return report


def oos_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """In-scope accuracy and out-of-scope precision/recall (empty when there is no OOS at all)."""
    in_scope = [(g, p) for g, p in zip(gold, predicted, strict=True) if g != OUT_OF_SCOPE]
    tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p == OUT_OF_SCOPE)
    fp = sum(1 for g, p in zip(gold, predicted, strict=True) if p == OUT_OF_SCOPE and g != OUT_OF_SCOPE)
    fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g == OUT_OF_SCOPE and p != OUT_OF_SCOPE)
    out: dict[str, float] = {}
    if OUT_OF_SCOPE not in gold and OUT_OF_SCOPE not in predicted:
        return out
    if in_scope:
        out["in_scope_accuracy"] = sum(1 for g, p in in_scope if g == p) / len(in_scope)
    if tp + fp + fn:
        precision, recall, _ = _prf(tp, fp, fn)
        out["oos_precision"], out["oos_recall"] = precision, recall
    return out


def entity_report(gold: Sequence[Sequence[Entity]], predicted: Sequence[Sequence[Entity]]) -> dict[str, Any]:
    """Exact-span scores per entity type, plus micro avg over all types. An entity annotated with a role
    or group is right only with the same role and group."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # tp, fp, fn
    for g_list, p_list in zip(gold, predicted, strict=True):
        g_set = {(e.entity, e.start, e.end, e.role, e.group) for e in g_list}
        p_set = {(e.entity, e.start, e.end, e.role, e.group) for e in p_list}
        for e in p_set:
            counts[e[0]][0 if e in g_set else 1] += 1
        for e in g_set - p_set:
            counts[e[0]][2] += 1
    report: dict[str, Any] = {}
    total = [0, 0, 0]
    for kind in sorted(counts):
        tp, fp, fn = counts[kind]
        precision, recall, f1 = _prf(tp, fp, fn)
        report[kind] = {"precision": precision, "recall": recall, "f1-score": f1, "support": tp + fn}
        total = [a + b for a, b in zip(total, counts[kind], strict=True)]
    precision, recall, f1 = _prf(*total)
    report["micro avg"] = {"precision": precision, "recall": recall, "f1-score": f1, "support": total[0] + total[2]}
    return report


def served_labels(results: Sequence[Understanding]) -> list[str]:
    return [as_label(r.intent) for r in results]


def summary_metrics(samples: Sequence[Sample], results: Sequence[Understanding]) -> dict[str, Any]:
    """The headline figures for a manifest or a report."""
    gold = [s.intent for s in samples]
    predicted = served_labels(results)
    intents = intent_report(gold, predicted)
    metrics: dict[str, Any] = {"accuracy": intents["accuracy"], "macro_f1": intents["macro avg"]["f1-score"],
                               "examples": len(samples)}
    metrics.update(oos_scores(gold, predicted))
    if any(s.entities for s in samples) or any(r.entities for r in results):
        ents = entity_report([s.entities for s in samples], [r.entities for r in results])
        metrics["entity_f1"] = ents["micro avg"]["f1-score"]
    return metrics


_MIN_EXPECTED_REJECTIONS = 5


def _candidates(scores: np.ndarray) -> np.ndarray:
    """Thresholds worth trying: accept everything, then each distinct score (at most 2,000 quantiles)."""
    unique = np.unique(scores)
    if len(unique) > 2000:
        unique = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, 2000)))
    return np.concatenate([[-math.inf], unique])


def oos_figures(gold: Sequence[str], top: Sequence[str], scores: Sequence[float] | np.ndarray,
                point: OperatingPoint, threshold: float | None = None) -> dict[str, float]:
    """In-scope accuracy (a rejected in-scope message is wrong), out-of-scope recall and precision,
    accuracy with out_of_scope as one class, and the share of in-scope messages rejected, when ``point``
    (at ``threshold``, default its own) decides."""
    rejected = point.rejects(top, scores, threshold)
    predicted = [OUT_OF_SCOPE if r else t for r, t in zip(rejected, top, strict=True)]
    in_scope = [i for i, g in enumerate(gold) if g != OUT_OF_SCOPE]
    oos = [i for i, g in enumerate(gold) if g == OUT_OF_SCOPE]
    out = {"accuracy": sum(1 for g, p in zip(gold, predicted, strict=True) if g == p) / max(len(gold), 1)}
    if in_scope:
        out["in_scope_accuracy"] = sum(1 for i in in_scope if predicted[i] == gold[i]) / len(in_scope)
        out["in_scope_rejected"] = sum(1 for i in in_scope if rejected[i]) / len(in_scope)
    if oos:
        out["oos_recall"] = sum(1 for i in oos if rejected[i]) / len(oos)
        flagged = int(rejected.sum())
        out["oos_precision"] = sum(1 for i in oos if rejected[i]) / flagged if flagged else 0.0
    return out


def oos_sweep(gold: Sequence[str], top: Sequence[str], scores: Sequence[float] | np.ndarray, point: OperatingPoint,
              steps: int = 21) -> list[dict[str, float]]:
    """``oos_figures`` at ``steps`` thresholds (quantiles of the scores, from accepting everything up),
    for the sweep table and curve of ``switchboard evaluate``."""
    values = np.asarray(scores, dtype=np.float64)
    grid = np.unique(np.quantile(values, np.linspace(0.0, 0.5, steps))) if len(values) else np.array([])
    rows = []
    for t in [-math.inf, *grid.tolist()]:
        rows.append({"threshold": t, **oos_figures(gold, top, values, point, t)})
    return rows


def calibrate(gold: Sequence[str], top: Sequence[str], scores: Sequence[float] | np.ndarray, method: str,
              target: Target, *, calibrated_on: str) -> OperatingPoint:
    """The operating point of ``method`` that meets ``target`` on held-out data (``gold`` its labels,
    ``top`` the model's best intents, ``scores`` their in-scope scores), with what it was calibrated on
    and the figures there in its details. Thresholds sit halfway between two held-out scores."""
    values = np.asarray(scores, dtype=np.float64)
    n_oos = sum(1 for g in gold if g == OUT_OF_SCOPE)
    n_in = len(gold) - n_oos
    details: dict[str, Any] = {"target": str(target), "calibrated_on": calibrated_on,
                               "in_scope_examples": n_in, "oos_examples": n_oos}
    probe = OperatingPoint(method, -math.inf, "calibrated")
    if target.kind == "accuracy" and not n_oos:
        raise ConfigError(f"out-of-scope target 'accuracy' needs out_of_scope examples in the validation data "
                          f"({calibrated_on} has none); give --validation FILE with some, or use "
                          f"--oos-target in-scope-drop<=X")
    if not n_in:
        raise ConfigError(f"{calibrated_on}: no in-scope examples to calibrate the out-of-scope threshold on")
    candidates = _candidates(values)
    figures = [oos_figures(gold, top, values, probe, float(t)) for t in candidates]
    if target.kind == "accuracy":
        best = max(range(len(figures)), key=lambda i: (figures[i]["accuracy"], -i))
    else:
        assert target.value is not None
        floor = (figures[0]["in_scope_accuracy"] - target.value if target.kind == "in-scope-drop"
                 else target.value)
        ok = [i for i, f in enumerate(figures) if f["in_scope_accuracy"] >= floor - 1e-12]
        best = max(ok) if ok else 0
        if not ok:
            details["note"] = (f"in-scope accuracy {figures[0]['in_scope_accuracy']:.4f} is below the target even "
                               "when nothing is rejected; nothing is rejected")
    threshold = float(candidates[best])
    if best > 0:  # halfway to the next lower held-out score: the point does not sit on one example
        threshold = float((candidates[best] + candidates[best - 1]) / 2) if best > 1 else float(candidates[best] - 1e-6)
    if target.kind == "in-scope-drop" and target.value and n_in * target.value < _MIN_EXPECTED_REJECTIONS:
        # Too few held-out examples to read a quantile that low (the budget is under 5 examples): the one-sided
        # normal prediction bound of the correctly understood examples' scores, where a new in-scope message's
        # score falls below it with probability target.value (Student's t with n - 1 degrees of freedom, widened
        # by sqrt(1 + 1/n): the mean and spread are themselves estimated from n scores), if lower (never
        # stricter). From 2 scores the bound is far below both, from 300 it is the normal quantile; from fewer
        # than 2 there is no spread to read and the score rejects nothing.
        right = [v for v, g, t in zip(values, gold, top, strict=True) if g == t and g != OUT_OF_SCOPE]
        folds = " (--calibration-folds 5 calibrates on every training example instead)"
        if len(right) >= 2:
            n = len(right)
            k = float(scipy.stats.t.ppf(1 - target.value, n - 1)) * math.sqrt(1 + 1 / n)
            threshold = min(threshold, statistics.fmean(right) - k * statistics.stdev(right))
            details["note"] = (f"{n_in} held-out in-scope examples are too few to read a {target.value:g} quantile: "
                               f"the normal prediction bound of the {n} correctly read ones' scores was used{folds}")
        else:
            threshold = -math.inf
            details["note"] = (f"{n_in} held-out in-scope examples, {len(right)} of them read correctly: too few to "
                               f"calibrate on, so the score rejects nothing{folds}")
    details["figures"] = {k: round(v, 6) for k, v in oos_figures(gold, top, values, probe, threshold).items()}
    return OperatingPoint(method, threshold, "calibrated", details)


def format_figures(figures: dict[str, float]) -> str:
    names = (("in_scope_accuracy", "in-scope accuracy"), ("oos_recall", "OOS recall"),
             ("oos_precision", "OOS precision"), ("accuracy", "accuracy"), ("in_scope_rejected", "in-scope rejected"))
    return ", ".join(f"{label} {figures[key]:.4f}" for key, label in names if key in figures)
