"""Scores of predictions against gold labels, in Rasa's report shapes.

``intent_report`` matches Rasa's ``intent_report.json``: one entry per intent with
precision, recall, f1-score, support and confused_with, plus accuracy, macro avg and
weighted avg. ``entity_report`` scores exact spans (type, start, end, role, group) per entity type.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

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
    return [r.intent for r in results]


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


def calibrate_threshold(gold: Sequence[str], top_labels: Sequence[str], top_conf: Sequence[float]) -> float | None:
    """The confidence threshold that maximises accuracy when anything below it is out_of_scope.

    Needs out-of-scope examples to calibrate against; without them returns None (the bot's
    fallback_threshold applies at run time)."""
    if OUT_OF_SCOPE not in gold:
        return None
    candidates = sorted({0.0, *top_conf})
    best_t, best_acc = 0.0, -1.0
    for t in candidates:
        acc = sum(1 for g, p, c in zip(gold, top_labels, top_conf, strict=True)
                  if g == (OUT_OF_SCOPE if c < t else p)) / len(gold)
        if acc > best_acc:
            best_t, best_acc = t, acc
    return float(best_t)
