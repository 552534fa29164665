"""Evaluation report files, named as Rasa names them where Rasa has one:

    intent_report.json          per intent precision/recall/f1-score/support/confused_with, averages
    intent_errors.json          misclassified examples with the predicted intent and confidence
    entity_report.json          exact-span scores per entity type (when the data has entities)
    entity_errors.json          examples whose entities differ
    intent_confusion_matrix.png (with more than 40 intents: only the intents of the top confusions)
    intent_confusions.json      the most frequent confusions, ranked (true, predicted, count, share of the true)
    intent_histogram.png        confidence of correct vs wrong predictions
    oos_sweep.json              the served out-of-scope method at thresholds from accepting everything up
                                (in-scope accuracy, OOS recall/precision, accuracy), and the served point
    oos_curve.png               in-scope accuracy against OOS recall along the sweep, the served point (and
                                the calibrated one, where the bot overrides it) marked; needs OOS examples
    summary.md                  the headline figures for a pull request or a release note: these, the
                                operating point(s), the sweep table, latency, overlap with the training data
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bots.nlu.oos import OUT_OF_SCOPE, OperatingPoint, as_label
from bots.types import Understanding
from training.data import Sample
from training.scoring import entity_report, intent_report, oos_figures, oos_scores, oos_sweep

MATRIX_LABELS = 40  # more intents than this: the matrix shows those of the top confusions only
TOP_CONFUSIONS = 25


@dataclass(frozen=True)
class OosView:
    """What the out-of-scope reports need: gold labels (unknown intents as out_of_scope), the model's best
    intents, their in-scope scores, the served operating point, the calibrated one, overlap counts."""

    gold: list[str]
    top: list[str]
    scores: list[Mapping[str, float]]
    served: OperatingPoint
    calibrated: OperatingPoint | None = None
    overlap: dict[str, int] = field(default_factory=dict)

    def figures(self, point: OperatingPoint) -> dict[str, float]:
        return oos_figures(self.gold, self.top, [s[point.method] for s in self.scores], point)

    def sweep(self) -> list[dict[str, float]]:
        return oos_sweep(self.gold, self.top, [s[self.served.method] for s in self.scores], self.served)

    @property
    def has_oos(self) -> bool:
        """Both out-of-scope and in-scope examples: a curve of one against the other can be drawn."""
        return OUT_OF_SCOPE in self.gold and any(g != OUT_OF_SCOPE for g in self.gold)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def intent_errors(samples: Sequence[Sample], results: Sequence[Understanding]) -> list[dict[str, Any]]:
    return [{"text": s.text, "intent": s.intent, "intent_prediction": {"name": r.intent, "confidence": r.confidence},
             "source": s.source}
            for s, r in zip(samples, results, strict=True) if s.intent != as_label(r.intent)]


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


def top_confusions(gold: Sequence[str], predicted: Sequence[str], n: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The ``n`` most frequent (true, predicted) pairs that differ, with their share of the true intent."""
    support = Counter(gold)
    pairs = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p)
    return [{"intent": g, "predicted": p, "count": c, "share": c / support[g]}
            for (g, p), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def readable_confusion(gold: Sequence[str], predicted: Sequence[str],
                       confusions: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The confusion matrix, or with more than ``MATRIX_LABELS`` labels, its rows and columns of the labels
    that take part in the top confusions (a 150 x 150 matrix is unreadable)."""
    labels, matrix = confusion_matrix(gold, predicted)
    if len(labels) <= MATRIX_LABELS:
        return labels, matrix
    keep = sorted({c["intent"] for c in confusions} | {c["predicted"] for c in confusions})[:MATRIX_LABELS]
    idx = [labels.index(k) for k in keep]
    return keep, matrix[np.ix_(idx, idx)]


def _plot_curve(path: Path, sweep: Sequence[dict[str, float]], points: Sequence[tuple[str, dict[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot([r["oos_recall"] for r in sweep], [r["in_scope_accuracy"] for r in sweep], marker=".", color="#1c7ed6",
            label="threshold sweep (served method)")
    for (name, f), marker in zip(points, ("o", "s"), strict=False):
        ax.plot([f["oos_recall"]], [f["in_scope_accuracy"]], marker=marker, markersize=10, linestyle="none",
                label=f"{name}: in-scope {f['in_scope_accuracy']:.3f}, OOS recall {f['oos_recall']:.3f}")
    ax.set_xlabel("out-of-scope recall")
    ax.set_ylabel("in-scope accuracy (rejected = wrong)")
    ax.set_title("In-scope accuracy against out-of-scope recall")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _oos_section(view: OosView, out: Path) -> tuple[list[str], dict[str, Any]]:
    """The summary lines and metrics of the out-of-scope decision; writes oos_sweep.json and oos_curve.png."""
    served = view.figures(view.served)
    points = [(f"served ({view.served.describe()})", served)]
    lines = ["", "## Out of scope", "", f"Not understood when: **{view.served.describe()}**, or the model's best "
             "intent is a learned `out_of_scope` (bots/nlu/oos.py). Examples of intents the model does not know count "
             "as out of scope here.", "", "| operating point | in-scope accuracy | OOS recall | OOS precision | "
             "accuracy |", "| --- | --- | --- | --- | --- |"]
    rows = [("served: " + view.served.describe(), served)]
    if view.calibrated is not None and view.calibrated != view.served:
        calibrated = view.figures(view.calibrated)
        rows.append(("calibrated (overridden by the bot): " + view.calibrated.describe(), calibrated))
        points.append((f"calibrated ({view.calibrated.describe()})", calibrated))
    for name, f in rows:
        lines.append(f"| {name} | " + " | ".join(f"{f[k]:.4f}" if k in f else "-" for k in (
            "in_scope_accuracy", "oos_recall", "oos_precision", "accuracy")) + " |")
    sweep = view.sweep()
    _write_json(out / "oos_sweep.json", {"method": view.served.method, "served": view.served.to_dict(),
                                         "served_figures": served, "sweep": [
                                             {**r, "threshold": None if math.isinf(r["threshold"]) else r["threshold"]}
                                             for r in sweep]})
    lines += ["", f"Threshold sweep of `{view.served.method}` (oos_sweep.json"
              + (", oos_curve.png" if view.has_oos else "; the curve needs both in-scope and out-of-scope examples")
              + "):", "",
              "| threshold | in-scope accuracy | in-scope rejected | OOS recall | OOS precision |",
              "| --- | --- | --- | --- | --- |"]
    for r in sweep:
        t = "accept all" if math.isinf(r["threshold"]) else f"{r['threshold']:.4g}"
        lines.append(f"| {t} | " + " | ".join(f"{r[k]:.4f}" if k in r else "-" for k in (
            "in_scope_accuracy", "in_scope_rejected", "oos_recall", "oos_precision")) + " |")
    if view.has_oos:
        _plot_curve(out / "oos_curve.png", sweep, points)
    return lines, {k: v for k, v in served.items() if k != "accuracy"}


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
             title: str, confusions: Sequence[dict[str, Any]] = (), more: Sequence[str] = ()) -> str:
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
    lines += ["", f"## Top confusions ({len(confusions)}, intent_confusions.json)", "",
              "| true intent | predicted | count | share of the true intent |", "| --- | --- | --- | --- |"]
    lines += [f"| {c['intent']} | {c['predicted']} | {c['count']} | {c['share']:.3f} |" for c in confusions]
    lines += list(more)
    lines += ["", "Files: intent_report.json, intent_errors.json, intent_confusions.json, intent_confusion_matrix.png, "
              "intent_histogram.png" + (", entity_report.json, entity_errors.json" if ents is not None else "")
              + (", oos_sweep.json" if any(line.startswith("## Out of scope") for line in more) else "") + "."]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, samples: Sequence[Sample], results: Sequence[Understanding], *,
                  title: str = "NLU evaluation", oos: OosView | None = None,
                  latency: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Write every report file into ``out``; returns the headline metrics."""
    out.mkdir(parents=True, exist_ok=True)
    gold = [s.intent for s in samples]
    predicted = [as_label(r.intent) for r in results]
    report = intent_report(gold, predicted)
    _write_json(out / "intent_report.json", report)
    errors = intent_errors(samples, results)
    _write_json(out / "intent_errors.json", errors)
    ents = None
    if any(s.entities for s in samples) or any(r.entities for r in results):
        ents = entity_report([s.entities for s in samples], [r.entities for r in results])
        _write_json(out / "entity_report.json", ents)
        _write_json(out / "entity_errors.json", entity_errors(samples, results))
    confusions = top_confusions(gold, predicted)
    _write_json(out / "intent_confusions.json", confusions)
    labels, matrix = readable_confusion(gold, predicted, confusions)
    plot_confusion(out / "intent_confusion_matrix.png", labels, matrix)
    _plot_histogram(out / "intent_histogram.png",
                    [r.confidence for g, p, r in zip(gold, predicted, results, strict=True) if g == p],
                    [r.confidence for g, p, r in zip(gold, predicted, results, strict=True) if g != p])
    extra = oos_scores(gold, predicted)
    more: list[str] = []
    if oos is not None:
        lines, figures = _oos_section(oos, out)
        more += lines
        extra.update(figures)
    if latency:
        more += ["", f"Latency per query (each text alone, {latency.get('threads', 1):g} thread(s), tokenisation and "
                 f"the out-of-scope rule included): p50 {latency['p50_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms."]
    if oos is not None and any(oos.overlap.values()):
        more += ["", "**Warning**: " + ", ".join(f"{n} evaluation texts are in the model's {part} data"
                                               for part, n in oos.overlap.items() if n)
                 + " (the figures flatter the model)."]
    (out / "summary.md").write_text(_summary(report, extra, ents, len(errors), title, confusions, more),
                                    encoding="utf-8")
    metrics: dict[str, Any] = {"accuracy": report["accuracy"], "macro_f1": report["macro avg"]["f1-score"],
                               "examples": len(samples), "errors": len(errors), **extra}
    if latency:
        metrics.update({k: v for k, v in latency.items() if k.endswith("_ms")})
    if ents is not None:
        metrics["entity_f1"] = ents["micro avg"]["f1-score"]
    return metrics
