"""Evaluation report files, named as Rasa names them where Rasa has one:

    intent_report.json          per intent precision/recall/f1-score/support/confused_with, averages
    intent_errors.json          misclassified examples with the predicted intent and confidence
    entity_report.json          exact-span scores per entity type (when the data has entities)
    entity_errors.json          examples whose entities differ
    intent_confusion_matrix.png
    intent_histogram.png        confidence of correct vs wrong predictions
    summary.md                  the headline figures for a pull request or a release note
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bots.types import Understanding
from training.data import Sample
from training.scoring import entity_report, intent_report, oos_scores


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def intent_errors(samples: Sequence[Sample], results: Sequence[Understanding]) -> list[dict[str, Any]]:
    return [{"text": s.text, "intent": s.intent, "intent_prediction": {"name": r.intent, "confidence": r.confidence},
             "source": s.source}
            for s, r in zip(samples, results, strict=True) if s.intent != r.intent]


def entity_errors(samples: Sequence[Sample], results: Sequence[Understanding]) -> list[dict[str, Any]]:
    out = []
    for s, r in zip(samples, results, strict=True):
        gold = sorted((e.entity, e.start, e.end, e.role or "", e.group or "") for e in s.entities)
        got = sorted((e.entity, e.start, e.end, e.role or "", e.group or "") for e in r.entities)
        if gold != got:
            out.append({"text": s.text, "entities": [e.to_dict() for e in s.entities],
                        "predicted_entities": [e.to_dict() for e in r.entities], "source": s.source})
    return out


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str]) -> tuple[list[str], np.ndarray]:
    labels = sorted(set(gold) | set(predicted))
    index = {name: i for i, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g], index[p]] += 1
    return labels, matrix


def plot_confusion(path: Path, labels: list[str], matrix: np.ndarray, *, what: str = "intent") -> None:
    """A confusion matrix PNG (rows: true ``what``, columns: predicted), sized and lettered so that a
    hundred labels stay readable; counts are written in the cells up to 30 labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(6.0, 0.28 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=max(4, 10 - len(labels) // 12))
    ax.set_yticks(range(len(labels)), labels, fontsize=max(4, 10 - len(labels) // 12))
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel(f"true {what}")
    ax.set_title(f"{what.capitalize()} confusion matrix")
    if len(labels) <= 30:
        top = matrix.max() or 1
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > top / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_histogram(path: Path, correct: list[float], wrong: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = [i / 20 for i in range(21)]
    ax.hist([correct, wrong], bins=bins, label=[f"correct ({len(correct)})", f"wrong ({len(wrong)})"],
            color=["#2b8a3e", "#c92a2a"], stacked=False)
    ax.set_xlabel("confidence of the predicted intent")
    ax.set_ylabel("examples")
    ax.set_title("Intent prediction confidence")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summary(report: dict[str, Any], extra: dict[str, Any], ents: dict[str, Any] | None, errors: int,
             title: str) -> str:
    lines = [f"# {title}", "", "| metric | value |", "| --- | --- |",
             f"| examples | {report['macro avg']['support']} |",
             f"| accuracy | {report['accuracy']:.4f} |",
             f"| macro F1 | {report['macro avg']['f1-score']:.4f} |",
             f"| weighted F1 | {report['weighted avg']['f1-score']:.4f} |"]
    for key in ("in_scope_accuracy", "oos_precision", "oos_recall"):
        if key in extra:
            lines.append(f"| {key.replace('_', ' ')} | {extra[key]:.4f} |")
    if ents is not None:
        lines.append(f"| entity F1 (exact span, micro) | {ents['micro avg']['f1-score']:.4f} |")
    lines.append(f"| misclassified | {errors} |")
    per_intent = [(k, v) for k, v in report.items() if isinstance(v, dict) and "confused_with" in v]
    worst = sorted(per_intent, key=lambda kv: (kv[1]["f1-score"], kv[0]))[:10]
    lines += ["", "## Weakest intents", "", "| intent | precision | recall | F1 | support | confused with |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, v in worst:
        confused = ", ".join(f"{k} ({n})" for k, n in v["confused_with"].items()) or "-"
        lines.append(f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1-score']:.3f} | {v['support']} "
                     f"| {confused} |")
    lines += ["", "Files: intent_report.json, intent_errors.json, intent_confusion_matrix.png, intent_histogram.png"
              + (", entity_report.json, entity_errors.json" if ents is not None else "") + "."]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, samples: Sequence[Sample], results: Sequence[Understanding], *,
                  title: str = "NLU evaluation") -> dict[str, Any]:
    """Write every report file into ``out``; returns the headline metrics."""
    out.mkdir(parents=True, exist_ok=True)
    gold = [s.intent for s in samples]
    predicted = [r.intent for r in results]
    report = intent_report(gold, predicted)
    _write_json(out / "intent_report.json", report)
    errors = intent_errors(samples, results)
    _write_json(out / "intent_errors.json", errors)
    ents = None
    if any(s.entities for s in samples) or any(r.entities for r in results):
        ents = entity_report([s.entities for s in samples], [r.entities for r in results])
        _write_json(out / "entity_report.json", ents)
        _write_json(out / "entity_errors.json", entity_errors(samples, results))
    labels, matrix = confusion_matrix(gold, predicted)
    plot_confusion(out / "intent_confusion_matrix.png", labels, matrix)
    _plot_histogram(out / "intent_histogram.png",
                    [r.confidence for g, r in zip(gold, results, strict=True) if g == r.intent],
                    [r.confidence for g, r in zip(gold, results, strict=True) if g != r.intent])
    extra = oos_scores(gold, predicted)
    (out / "summary.md").write_text(_summary(report, extra, ents, len(errors), title), encoding="utf-8")
    metrics: dict[str, Any] = {"accuracy": report["accuracy"], "macro_f1": report["macro avg"]["f1-score"],
                               "examples": len(samples), "errors": len(errors), **extra}
    if ents is not None:
        metrics["entity_f1"] = ents["micro avg"]["f1-score"]
    return metrics
