"""Scoring answers on held-out question→answer pairs, the way they are served.

* intent consistency: the served NLU model classifies the chosen answer; it should give the
  question's intent;
* ROUGE-L (F1 of the longest common word subsequence) against the reference answer;
* ungrounded answers caught: generated answers the grounding guard rejected, and the guard's
  catch rate on answers made wrong on purpose (a changed number, a flipped negation, another
  intent's answer) next to its false-rejection rate on the unchanged ones;
* latency per answer (NLU + selection).

Like training/pipeline.py this module loads the served runtime (bots.nlu.model, bots.answers.retrieval) to
score exactly what will be served.
"""

from __future__ import annotations

import csv
import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bots.answers.grounding import check_support
from bots.answers.retrieval import AnswerSelector
from bots.artifact import resolve_artifact
from bots.botspec import fill_template
from bots.nlu.model import OnnxNLU
from training.answers import QAPair, normalise_answer, read_pairs_csv

_WORD = re.compile(r"\w+")
_FLIP = re.compile(r"\b(is|are|can|will|do|does|was|were|should|may)\b(?! not)", re.IGNORECASE)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (LCS, O(n·m) time, O(m) memory)."""
    a, b = _WORD.findall(candidate.lower()), _WORD.findall(reference.lower())
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class ResponseEval:
    mode: str
    examples: int
    answered: float  # share with an answer (else the dialogue falls back)
    intent_consistency: float  # over all examples (no answer counts as wrong)
    source_intent: float  # the chosen template's own intent label is the question's (no NLU on the answer)
    rouge_l: float  # mean over answered examples
    latency_ms_mean: float
    latency_ms_p95: float
    sources: dict[str, int] = field(default_factory=dict)
    generation_rejected: int = 0  # generated answers the guard (or confidence check) turned down
    wrong_intent_generated: int = 0  # generated answers of the wrong intent (before the guard)
    wrong_intent_caught: int = 0  # ... of which the guard rejected

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def reference_text(pair: QAPair, values: dict[str, str]) -> str:
    """The reference answer as a customer would see it: its placeholders filled like ours."""
    template = normalise_answer(pair.question, pair.entities, pair.answer)
    known = {**values, **{e.entity: e.value for e in pair.entities}}
    return fill_template([template], known) or pair.answer


def evaluate_answers(selector: AnswerSelector, nlu: OnnxNLU, pairs: Sequence[QAPair], *,
                     mode: str | None = None) -> ResponseEval:
    """Answer each held-out question (in ``mode``, or as configured) and score the answers."""
    answers: list[str] = []
    latencies: list[float] = []
    sources: Counter[str] = Counter()
    labelled = 0
    rejected = wrong_generated = caught = 0
    gen_texts: list[tuple[int, str, bool]] = []  # (pair index, generated text, accepted)
    for i, pair in enumerate(pairs):
        started = time.perf_counter()
        understanding = nlu.predict([pair.question])[0]
        answer = selector.answer(pair.question, understanding, {}, mode=mode)
        latencies.append((time.perf_counter() - started) * 1000)
        answers.append(answer.text if answer is not None else "")
        sources[answer.source if answer is not None else "none"] += 1
        labelled += 1 if answer is not None and answer.intent == pair.intent else 0
        if answer is not None:
            if answer.source == "generation":
                gen_texts.append((i, answer.text, True))
            elif isinstance(answer.detail.get("generation_rejected"), dict):
                rejected += 1
                text = answer.detail["generation_rejected"].get("text", "")
                if text:
                    gen_texts.append((i, text, False))
    predicted = _intents(nlu, answers)
    if gen_texts:
        gen_intents = _intents(nlu, [t for _, t, _ in gen_texts])
        for (i, _, accepted), got in zip(gen_texts, gen_intents, strict=True):
            if got != pairs[i].intent:
                wrong_generated += 1
                caught += 0 if accepted else 1
    answered = [i for i, a in enumerate(answers) if a]
    rouge = [rouge_l(answers[i], reference_text(pairs[i], selector.values)) for i in answered]
    return ResponseEval(
        mode=mode or "configured", examples=len(pairs), answered=len(answered) / max(1, len(pairs)),
        intent_consistency=sum(1 for i in answered if predicted[i] == pairs[i].intent) / max(1, len(pairs)),
        source_intent=labelled / max(1, len(pairs)),
        rouge_l=float(np.mean(rouge)) if rouge else 0.0,
        latency_ms_mean=float(np.mean(latencies)) if latencies else 0.0,
        latency_ms_p95=float(np.percentile(latencies, 95)) if latencies else 0.0,
        sources=dict(sources), generation_rejected=rejected, wrong_intent_generated=wrong_generated,
        wrong_intent_caught=caught)


def _intents(nlu: OnnxNLU, texts: Sequence[str]) -> list[str]:
    keep = [i for i, t in enumerate(texts) if t]
    out = [""] * len(texts)
    for i, u in zip(keep, nlu.predict([texts[i] for i in keep]), strict=True):
        out[i] = u.ranking[0].name if u.ranking else u.intent
    return out


@dataclass(frozen=True)
class GuardEval:
    answers: int
    false_rejections: float  # unchanged retrieved answers the guard rejected
    caught: dict[str, float]  # perturbation → share rejected

    def to_dict(self) -> dict[str, Any]:
        return {"answers": self.answers, "false_rejections": round(self.false_rejections, 4),
                "caught": {k: round(v, 4) for k, v in self.caught.items()}}


def perturb_number(text: str, rng: random.Random) -> str | None:
    numbers = list(re.finditer(r"\d+", text))
    if not numbers:
        return None
    m = rng.choice(numbers)
    return text[:m.start()] + str(int(m.group(0)) * 3 + 7) + text[m.end():]


def perturb_negation(text: str) -> str | None:
    if re.search(r"\b(not|never|cannot)\b", text):
        return re.sub(r"\s*\b(not|never)\b", "", text, count=1).replace("cannot", "can", 1)
    m = _FLIP.search(text)
    return None if m is None else text[:m.end()] + " not" + text[m.end():]


def evaluate_guard(selector: AnswerSelector, nlu: OnnxNLU, pairs: Sequence[QAPair], *,
                   min_support: float = 0.7, seed: int = 13) -> GuardEval:
    """The guard on each question's retrieved answer (grounded by construction) and on broken copies."""
    rng = random.Random(seed)  # noqa: S311 - reproducible choice, not security
    by_intent: dict[str, list[str]] = {}
    for t in selector.templates:
        by_intent.setdefault(t.intent, []).append(t.variants[-1])
    kept = wrong = 0
    caught: Counter[str] = Counter()
    tried: Counter[str] = Counter()
    n = 0
    for pair in pairs:
        understanding = nlu.predict([pair.question])[0]
        answer = selector.answer(pair.question, understanding, {}, mode="retrieval")
        if answer is None or answer.detail.get("knowledge_base"):
            continue
        known = {**selector.values, **{e.entity: e.value for e in understanding.entities}}
        passages = selector.passages_for(pair.question, known)
        n += 1
        kept += 0 if check_support(answer.text, passages, pair.question, values=known,
                                   min_support=min_support).grounded else 1
        others = [t for name, ts in by_intent.items() if name != answer.intent for t in ts
                  if fill_template([t], known) is not None]
        broken = {"number": perturb_number(answer.text, rng), "negation": perturb_negation(answer.text),
                  "other_intent": fill_template([rng.choice(others)], known) if others else None}
        for kind, text in broken.items():
            if text is None or text == answer.text:
                continue
            tried[kind] += 1
            verdict = check_support(text, passages, pair.question, values=known, min_support=min_support)
            caught[kind] += 0 if verdict.grounded else 1
            wrong += 1
    return GuardEval(answers=n, false_rejections=kept / max(1, n),
                     caught={k: caught[k] / tried[k] for k in sorted(tried)})


def _answer_pairs(paths: Sequence[Path]) -> list[QAPair]:
    """Question→answer pairs among the evaluation data: CSV files with an answer/response column."""
    pairs: list[QAPair] = []
    for path in paths:
        if path.suffix.lower() != ".csv" or not path.is_file():
            continue
        with path.open(encoding="utf-8", newline="") as f:
            header = set(next(csv.reader(f), []))
        if {"answer", "response"} & header:
            pairs.extend(read_pairs_csv(path))
    return pairs


def report_answers(model: Path, data: Sequence[Path], out: Path | None, *, threads: int = 1) -> dict[str, Any] | None:
    """``switchboard evaluate``: score the artifact's answers on the question→answer pairs in ``data``
    (CSV with answer/response columns) and write ``answers.json`` next to the NLU reports. ``None`` when
    the artifact has no answer index or the data has no answers."""
    artifact_dir = resolve_artifact(model)
    pairs = _answer_pairs(data)
    if not pairs or not (artifact_dir / "responses" / "index.json").is_file():
        return None
    nlu = OnnxNLU.load(artifact_dir, threads=threads)
    selector = AnswerSelector.load(artifact_dir, nlu)
    assert selector is not None
    report: dict[str, Any] = {"configured": evaluate_answers(selector, nlu, pairs).to_dict()}
    if selector.generator is not None:
        report["retrieval"] = evaluate_answers(selector, nlu, pairs, mode="retrieval").to_dict()
        report["generation"] = evaluate_answers(selector, nlu, pairs, mode="generation").to_dict()
        report["generation_gate"] = selector.generator.gate
    report["guard"] = evaluate_guard(selector, nlu, pairs[:500]).to_dict()
    target = out or artifact_dir / "reports"
    target.mkdir(parents=True, exist_ok=True)
    (target / "answers.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for name in ("configured", "retrieval", "generation"):
        if name in report:
            r = report[name]
            print(f"answers ({name}): intent consistency {r['intent_consistency']:.4f}, ROUGE-L {r['rouge_l']:.4f}, "
                  f"answered {r['answered']:.4f}, {r['latency_ms_mean']:.1f} ms/answer (p95 "
                  f"{r['latency_ms_p95']:.1f}) on {r['examples']} pairs"
                  + (f", generated answers rejected {r['generation_rejected']}" if name == "generation" else ""))
    g = report["guard"]
    print(f"grounding guard: false rejections {g['false_rejections']:.4f}, caught "
          + ", ".join(f"{k} {v:.4f}" for k, v in g["caught"].items()) + f" on {g['answers']} answers")
    return report
