"""``switchboard evaluate MODEL DATA...``: score what is served, write the reports, gate.

What is scored is what the runtime serves: the model, then the bot's NLU pipeline
(bots/nlu/pipeline.py: the regex, lookup and Duckling extractors and the synonym mapper its
config.yml lists), when MODEL is a bot folder or an artifact inside one (``BOT/models/VERSION``).
Entities of those rule extractors are scored for the entity types the data annotates; a type the
data never annotates (Duckling's ``time`` in data that only labels cities) cannot be judged by it
and is left out of the entity scores, and so is a rule extractor's entity on a span where the model
found the same type (the model's, with its role and group, is scored there).

"Not understood" is decided as served: the artifact's calibrated operating point, or the bot's
``fallback_threshold`` where it overrides it (bots/nlu/oos.py), through ``OnnxNLU.score`` then
``OnnxNLU.decide``, the two steps of ``OnnxNLU.predict``; each text is scored alone, as a lone
customer's message is, and timed (latency p50/p95). Examples of ``out_of_scope``, and of intents
the model does not know, are the out-of-scope examples of the OOS figures, the threshold sweep and
its curve (training/reports.py). Evaluation texts the artifact was trained (or calibrated) on are
counted and warned about: the figures would flatter the model.

With ``--cross-validation K`` the data is split into K stratified folds; K models are
trained with MODEL's training config (or fast mode) and each is scored on its held-out
fold, so every example is predicted by a model that never saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bots.artifact import read_manifest, resolve_artifact
from bots.botspec import BotSpec
from bots.errors import ArtifactError, ConfigError
from bots.loader import is_bot_folder, load_bot_folder
from bots.nlu.model import OOS_INDEX, OnnxNLU, Scored
from bots.nlu.oos import OUT_OF_SCOPE, OperatingPoint
from bots.nlu.pipeline import NluPipeline
from bots.types import Understanding
from training.config import TrainConfig
from training.data import NluData, Sample, clean, k_folds, merge, text_hashes
from training.importers import load_data
from training.reports import OosView, write_reports

EXIT_OK, EXIT_GATE = 0, 1


def _load(paths: Sequence[Path]) -> NluData:
    data = clean(merge(load_data(p) for p in paths), min_examples=0)
    if not data.samples:
        raise ConfigError(f"{', '.join(map(str, paths))}: no labelled examples to evaluate on")
    for w in data.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return data


def predict_all(nlu: OnnxNLU, samples: Sequence[Sample], pipeline: NluPipeline | None = None) -> list[Understanding]:
    """The served understanding of every sample: the model's, then the bot's pipeline."""
    texts = [s.text for s in samples]
    results = nlu.predict(texts)
    if pipeline is None or not pipeline.steps:
        return results
    return asyncio.run(pipeline.process_many(texts, results))


def bot_of(model: Path, artifact_dir: Path) -> BotSpec | None:
    """The bot MODEL belongs to: MODEL itself as a bot folder, or the bot folder holding the artifact; none
    for an artifact outside a bot folder."""
    for folder in (Path(model), artifact_dir.parent.parent):
        if folder.is_dir() and is_bot_folder(folder):
            return load_bot_folder(folder)[0]
    return None


def bot_pipeline(model: Path, artifact_dir: Path) -> NluPipeline:
    """The NLU pipeline of the bot MODEL belongs to (``bot_of``); an empty one without a bot."""
    bot = bot_of(model, artifact_dir)
    return NluPipeline() if bot is None else NluPipeline.for_bot(bot)


@dataclass(frozen=True)
class Served:
    """Every sample as the bot serves it: the decided understanding, the model's own (before the rule),
    its in-scope scores, and the seconds it took alone."""

    results: list[Understanding]
    scored: list[Scored]
    seconds: list[float]


def serve_all(nlu: OnnxNLU, samples: Sequence[Sample], pipeline: NluPipeline | None = None) -> Served:
    """Each text scored alone (as a lone customer's message is), the operating point applied
    (``OnnxNLU.decide``, as ``predict`` does), then the bot's pipeline; with a progress bar."""
    scored: list[Scored] = []
    seconds: list[float] = []
    decided: list[Understanding] = []
    for s in tqdm(samples, desc="evaluating", unit="text", leave=False, mininterval=0.5):
        t0 = time.perf_counter()
        one = nlu.score([s.text])[0]
        decided.append(nlu.decide(one))
        seconds.append(time.perf_counter() - t0)
        scored.append(one)
    results = decided
    if pipeline is not None and pipeline.steps:
        results = asyncio.run(pipeline.process_many([s.text for s in samples], decided))
    return Served(results, scored, seconds)


def overlap(artifact_dir: Path, samples: Sequence[Sample]) -> dict[str, int]:
    """How many evaluation texts the artifact was trained on, or calibrated on (its text hashes)."""
    path = artifact_dir / OOS_INDEX
    if not path.is_file():
        return {}
    try:
        with np.load(path) as data:
            trained, held = set(data["train_hashes"].tolist()), set(data["validation_hashes"].tolist())
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path}: cannot read the training text hashes ({exc})") from None
    hashes = text_hashes([s.text for s in samples]).tolist()
    return {"training": sum(1 for h in hashes if h in trained), "validation": sum(1 for h in hashes if h in held)}


def judged(samples: Sequence[Sample], results: Sequence[Understanding]) -> list[Understanding]:
    """``results`` as the entity scores judge them: a rule extractor's entity (regex, lookup, Duckling) only
    of a type some sample annotates, and not where the model already found that type on the same span
    (the model's, with its role and group, is the one scored there)."""
    annotated = {e.entity for s in samples for e in s.entities}
    out = []
    for r in results:
        by_model = {(e.entity, e.start, e.end) for e in r.entities if not e.extractor}
        kept = tuple(e for e in r.entities if not e.extractor
                     or (e.entity in annotated and (e.entity, e.start, e.end) not in by_model))
        out.append(r if len(kept) == len(r.entities) else replace(r, entities=kept))
    return out


def cross_validate(data: NluData, cfg: TrainConfig, k: int, *, bot_name: str,
                   pipeline: NluPipeline | None = None) -> tuple[list[Sample], list[Understanding]]:
    from training.pipeline import train

    if k < 2:
        raise ConfigError(f"--cross-validation needs K >= 2, got {k}")
    # Folds are the test sets; each fold's model keeps the config's own validation split.
    samples: list[Sample] = []
    results: list[Understanding] = []
    with tempfile.TemporaryDirectory(prefix="switchboard-cv-") as tmp:
        for fold, (train_part, test_part) in enumerate(k_folds(data.samples, k, cfg.seed), 1):
            if not test_part:
                continue
            print(f"fold {fold}/{k}: training on {len(train_part)}, testing on {len(test_part)}", file=sys.stderr)
            fold_data = NluData(tuple(train_part), data.synonyms)
            artifact = train(fold_data, cfg, bot_name=f"{bot_name}-cv{fold}", out_dir=Path(tmp) / f"fold{fold}")
            nlu = OnnxNLU.load(artifact.directory, threads=cfg.threads)
            samples.extend(test_part)
            results.extend(predict_all(nlu, test_part, pipeline))
    return samples, results


def run_evaluation(args: argparse.Namespace) -> int:
    if args.min_accuracy is not None and not 0.0 <= args.min_accuracy <= 1.0:
        raise ConfigError(f"--min-accuracy must be a fraction between 0 and 1, got {args.min_accuracy}")
    artifact_dir = resolve_artifact(args.model)
    manifest = read_manifest(artifact_dir)
    data = _load(args.data)
    out: Path = args.out or artifact_dir / "reports"
    pipeline = bot_pipeline(args.model, artifact_dir)
    view: OosView | None = None
    latency: dict[str, float] = {}
    if args.cross_validation is not None:
        cfg = TrainConfig.from_dict(manifest.training_config, where=f"{artifact_dir}/manifest.json")
        cfg = cfg.with_overrides(mode="fast" if args.fast else None, threads=args.threads)
        samples, results = cross_validate(data, cfg, args.cross_validation, bot_name=manifest.bot,
                                          pipeline=pipeline)
        title = f"{manifest.bot}: {args.cross_validation}-fold cross-validation ({cfg.mode})"
    else:
        known = set(manifest.labels)
        unknown = sorted({s.intent for s in data.samples} - known - {OUT_OF_SCOPE})
        if unknown:
            print(f"warning: the model was not trained on intent(s) {', '.join(unknown)}; their examples count "
                  "as errors, and as out of scope in the out-of-scope figures", file=sys.stderr)
        bot = bot_of(args.model, artifact_dir)
        nlu = OnnxNLU.load(artifact_dir, threads=args.threads, synonyms=data.synonyms,
                           fallback_threshold=bot.fallback_threshold if bot is not None else None,
                           multi_intent=bot is not None and bot.two_requests)
        samples = list(data.samples)
        shared = overlap(artifact_dir, samples)
        for part, n in shared.items():
            if n:
                print(f"warning: {n} of {len(samples)} evaluation texts are in the model's {part} data: the figures "
                      "flatter it; evaluate on texts it has not seen", file=sys.stderr)
        served = serve_all(nlu, samples, pipeline)
        results = served.results
        calibrated = OperatingPoint.from_dict(manifest.oos) if manifest.oos else None
        view = OosView(gold=[s.intent if s.intent in known else OUT_OF_SCOPE for s in samples],
                       top=[x.understanding.intent for x in served.scored],
                       scores=[x.scores for x in served.scored], served=nlu.point, calibrated=calibrated,
                       overlap=shared)
        p50, p95 = _percentiles([1000 * t for t in served.seconds])
        latency = {"p50_ms": p50, "p95_ms": p95, "threads": args.threads}
        title = f"{manifest.bot} model {manifest.version} ({manifest.onnx_file})"
    if pipeline.steps:
        title += f", with {', '.join(pipeline.names)}"
    metrics = write_reports(out, samples, judged(samples, results), title=title, oos=view, latency=latency)
    print(f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} on {metrics['examples']} "
          f"examples ({metrics['errors']} misclassified)"
          + (f", entity F1 {metrics['entity_f1']:.4f}" if "entity_f1" in metrics else ""))
    if view is not None:
        print(f"not understood when: {view.served.describe()}; "
              + ", ".join(f"{k.replace('_', ' ')} {metrics[k]:.4f}" for k in ("in_scope_accuracy", "oos_recall",
                                                                                  "oos_precision") if k in metrics))
    if latency:
        print(f"latency per query (alone, {args.threads} thread(s)): p50 {latency['p50_ms']:.2f} ms, "
              f"p95 {latency['p95_ms']:.2f} ms")
    print(f"reports in {out}")
    if args.min_accuracy is not None and metrics["accuracy"] < args.min_accuracy:
        print(f"accuracy {metrics['accuracy']:.4f} is below --min-accuracy {args.min_accuracy}", file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK


def _percentiles(values_ms: list[float]) -> tuple[float, float]:
    if len(values_ms) < 2:
        return (values_ms[0], values_ms[0]) if values_ms else (0.0, 0.0)
    q = statistics.quantiles(values_ms, n=100, method="inclusive")
    return q[49], q[94]
