"""``switchboard evaluate MODEL DATA...``: score what is served, write the reports, gate.

What is scored is what the runtime serves: the model, then the bot's NLU pipeline
(bots/nlu/pipeline.py: the regex, lookup and Duckling extractors and the synonym mapper its
config.yml lists), when MODEL is a bot folder or an artifact inside one (``BOT/models/VERSION``).
Entities of those rule extractors are scored for the entity types the data annotates; a type the
data never annotates (Duckling's ``time`` in data that only labels cities) cannot be judged by it
and is left out of the entity scores, and so is a rule extractor's entity on a span where the model
found the same type (the model's, with its role and group, is scored there).

With ``--cross-validation K`` the data is split into K stratified folds; K models are
trained with MODEL's training config (or fast mode) and each is scored on its held-out
fold, so every example is predicted by a model that never saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bots.artifact import read_manifest, resolve_artifact
from bots.errors import ConfigError
from bots.loader import is_bot_folder, load_bot_folder
from bots.nlu.model import OnnxNLU
from bots.nlu.pipeline import NluPipeline
from bots.types import Understanding
from training.config import TrainConfig
from training.data import NluData, Sample, clean, k_folds, merge
from training.importers import load_data
from training.reports import write_reports

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


def bot_pipeline(model: Path, artifact_dir: Path) -> NluPipeline:
    """The pipeline of the bot MODEL belongs to: MODEL itself as a bot folder, or the bot folder holding
    the artifact; none for an artifact outside a bot folder."""
    for folder in (Path(model), artifact_dir.parent.parent):
        if folder.is_dir() and is_bot_folder(folder):
            return NluPipeline.for_bot(load_bot_folder(folder)[0])
    return NluPipeline()


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
    if args.cross_validation is not None:
        cfg = TrainConfig.from_dict(manifest.training_config, where=f"{artifact_dir}/manifest.json")
        cfg = cfg.with_overrides(mode="fast" if args.fast else None, threads=args.threads)
        samples, results = cross_validate(data, cfg, args.cross_validation, bot_name=manifest.bot,
                                          pipeline=pipeline)
        title = f"{manifest.bot}: {args.cross_validation}-fold cross-validation ({cfg.mode})"
    else:
        unknown = sorted({s.intent for s in data.samples} - set(manifest.labels))
        if unknown:
            print(f"warning: the model was not trained on intent(s) {', '.join(unknown)}; their examples count "
                  "as errors", file=sys.stderr)
        nlu = OnnxNLU.load(artifact_dir, threads=args.threads, synonyms=data.synonyms)
        samples = list(data.samples)
        results = predict_all(nlu, samples, pipeline)
        title = f"{manifest.bot} model {manifest.version} ({manifest.onnx_file})"
    if pipeline.steps:
        title += f", with {', '.join(pipeline.names)}"
    metrics = write_reports(out, samples, judged(samples, results), title=title)
    print(f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} on {metrics['examples']} "
          f"examples ({metrics['errors']} misclassified)"
          + (f", entity F1 {metrics['entity_f1']:.4f}" if "entity_f1" in metrics else ""))
    print(f"reports in {out}")
    if args.min_accuracy is not None and metrics["accuracy"] < args.min_accuracy:
        print(f"accuracy {metrics['accuracy']:.4f} is below --min-accuracy {args.min_accuracy}", file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK
