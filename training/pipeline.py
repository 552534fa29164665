"""From clean training data to a finished artifact folder.

split → tokenise → encode (frozen) → fit linear heads → [fine-tune] → export ONNX (fp32,
int8) → score what is served on the held-out split → index the training examples' embeddings →
calibrate the out-of-scope operating point → manifest.

With ``TrainConfig.ngram_features`` the intent head is fitted beside the texts' n-gram vectors
(training/linear.py; fast mode: the linear head; full mode: the head refitted on the fine-tuned embeddings
once fine-tuning ends) and its n-gram part is written as ``ngrams.npz`` before anything is scored, so the
guard, the calibration and the figures all score the served sum (bots/nlu/ngrams.py).

The held-out data is a stratified split of the training data, or ``validation`` (``switchboard train
--validation FILE``), which may hold ``out_of_scope`` examples and intents the model does not know (both
count as out of scope there). The operating point (bots/nlu/oos.py) is calibrated on it for
``TrainConfig.oos_target`` with ``TrainConfig.oos_method``; the other methods' figures at their own
calibrated points are kept beside it (manifest ``oos.methods``) so that the choice can be checked.
With ``TrainConfig.calibration_folds`` K (and no ``validation``) nothing is held out: K fold models, trained
and exported as the served one is, each score the examples they were not trained on, the point is
calibrated on those out-of-fold scores, and the served model is trained on every example.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bots.artifact import MANIFEST, Manifest, new_version, write_manifest
from bots.nlu.model import OOS_INDEX, OnnxNLU
from bots.nlu.ngrams import NgramHead, NgramVectorizer, parse_analyzers
from bots.nlu.oos import METHODS, OUT_OF_SCOPE, OperatingPoint, Target, class_floors
from bots.nlu.spelling import write_vocabulary
from training.config import TrainConfig
from training.data import NluData, Sample, k_folds, stratified_split, text_hashes
from training.export import export_onnx, quantize_int8
from training.linear import extract, fit_heads, fit_intent_head
from training.model import JointModel, load_encoder
from training.scoring import calibrate, summary_metrics
from training.tokens import base_model_path, bio_tags, encode, load_tokenizer
from training.trainer import fine_tune, validate

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class TrainedArtifact:
    directory: Path
    manifest: Manifest
    model: JointModel  # the trained torch model (eval mode), e.g. for benchmarks against ONNX


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(data: NluData, cfg: TrainConfig) -> tuple[JointModel, Any, tuple[str, ...], tuple[str, ...]]:
    model_dir = base_model_path(cfg.base_model)
    labels = tuple(data.intents)
    tags = bio_tags(data.entity_types)
    tokenizer = load_tokenizer(model_dir, cfg.max_length)
    roles = any("#role=" in tag or "#group=" in tag for tag in tags)
    model = JointModel(load_encoder(model_dir), len(labels), len(tags), context=roles)
    return model, tokenizer, labels, tags


def fit(model: JointModel, tokenizer: Any, labels: tuple[str, ...], tags: tuple[str, ...], train: list[Sample],
        val: list[Sample], cfg: TrainConfig) -> tuple[dict[str, Any], NgramHead | None]:
    """Train ``model`` in place; returns training facts for the manifest and the intent head's n-gram part
    (None without ``cfg.ngram_features``)."""
    index = {name: i for i, name in enumerate(labels)}
    train_enc = encode(tokenizer, train, tags)
    train_y = np.array([index[s.intent] for s in train], dtype=np.int64)
    val_enc = encode(tokenizer, val, tags) if val else None
    val_y = np.array([index[s.intent] for s in val], dtype=np.int64) if val else None
    analyzers = parse_analyzers(cfg.ngram_features)
    texts = [s.text for s in train]
    ngrams = NgramVectorizer.fit(texts, analyzers) if analyzers else None
    head: NgramHead | None = None
    facts: dict[str, Any] = {}
    t0 = time.perf_counter()
    if cfg.mode == "fast" or cfg.init_head_from_linear:
        feats = extract(model, train_enc, tokens=len(tags) > 1, desc="encoding (frozen)")
        # the head fine-tuning starts from is the embedding's alone: n-grams join once it ends (below)
        head = fit_heads(model, feats, train_y, c=cfg.linear_c, seed=cfg.seed, texts=texts,
                         ngrams=ngrams if cfg.mode == "fast" else None)
        if val_enc is not None and val_y is not None and head is None:
            facts["linear_accuracy"] = validate(model, val_enc, val_y, cfg)[0]
    if cfg.mode == "finetune":
        result = fine_tune(model, train_enc, train_y, val_enc, val_y, cfg)
        facts["best_epoch"] = result.best_epoch
        facts["examples_per_second"] = round(result.examples_per_second, 2)
        facts["history"] = [{"epoch": h.epoch, "train_loss": None if np.isnan(h.train_loss) else h.train_loss,
                             "val_accuracy": h.val_accuracy, "val_loss": h.val_loss, "seconds": round(h.seconds, 2)}
                            for h in result.history]
        if ngrams is not None:
            tuned = extract(model, train_enc, tokens=False, desc="encoding (fine-tuned)")
            head = fit_intent_head(model, tuned.embeddings, train_y, c=cfg.linear_c, seed=cfg.seed, texts=texts,
                                   ngrams=ngrams)
    facts["train_seconds"] = round(time.perf_counter() - t0, 2)
    model.eval()
    return facts, head


def int8_is_good_enough(fp32_accuracy: float, int8_accuracy: float, max_loss_points: float) -> bool:
    """Serve int8 only when it loses less than ``max_loss_points`` accuracy points (0-100 scale)."""
    return (fp32_accuracy - int8_accuracy) * 100 < max_loss_points


def _score(directory: Path, manifest: Manifest, onnx_file: str, samples: list[Sample]) -> dict[str, Any]:
    nlu = OnnxNLU.from_manifest(directory, manifest, onnx_file=onnx_file)
    return summary_metrics(samples, nlu.predict([s.text for s in samples]))


def write_oos_index(directory: Path, manifest: Manifest, onnx_file: str, train_set: list[Sample],
                    val_set: list[Sample], threads: int) -> None:
    """``oos_index.npz``: the served model's embeddings of the in-scope training examples, their label ids,
    each label's floor (bots/nlu/oos.py ``class_floors``), and the hashes of the training and held-out texts
    (bots/artifact.py)."""
    nlu = OnnxNLU.from_manifest(directory, manifest, onnx_file=onnx_file, threads=threads)
    index = {name: i for i, name in enumerate(manifest.labels)}
    kept = [s for s in train_set if s.intent != OUT_OF_SCOPE]
    vectors = nlu.embed([s.text for s in kept]) if kept else np.zeros((0, nlu.dimension or 0), np.float32)
    stored = vectors.astype(np.float16)
    labels = np.array([index[s.intent] for s in kept], dtype=np.int64)
    np.savez(directory / OOS_INDEX, embeddings=stored, labels=labels,
             floors=class_floors(stored.astype(np.float32), labels, len(manifest.labels)),
             train_hashes=text_hashes([s.text for s in train_set]),
             validation_hashes=text_hashes([s.text for s in val_set]))


@dataclass(frozen=True)
class HeldOutScores:
    """Labelled texts a model was not trained on, scored by it: each one's gold label (``out_of_scope`` for an
    intent the model does not know), the model's best intent, and its in-scope scores."""

    gold: list[str]
    top: list[str]
    scores: list[dict[str, float]]

    @classmethod
    def of(cls, directory: Path, manifest: Manifest, samples: list[Sample], threads: int) -> HeldOutScores:
        nlu = OnnxNLU.from_manifest(directory, manifest, threads=threads)
        scored = nlu.score([s.text for s in samples])
        known = set(manifest.labels)
        return cls([s.intent if s.intent in known else OUT_OF_SCOPE for s in samples],
                   [x.understanding.intent for x in scored], [x.scores for x in scored])

    def __add__(self, other: HeldOutScores) -> HeldOutScores:
        return HeldOutScores(self.gold + other.gold, self.top + other.top, self.scores + other.scores)


def out_of_fold_scores(data: NluData, cfg: TrainConfig, bot_name: str) -> HeldOutScores:
    """K-fold cross-validation: each fold model (trained, exported and quantised as the served one is, with its
    own held-out split for model selection) scores the fold it was not trained on."""
    k = cfg.calibration_folds
    fold_cfg = dataclasses.replace(cfg, calibration_folds=0)
    total = HeldOutScores([], [], [])
    with tempfile.TemporaryDirectory(prefix="switchboard-folds-") as tmp:
        for i, (train_part, test_part) in enumerate(k_folds(data.samples, k, cfg.seed), 1):
            tqdm.write(f"calibration fold {i}/{k}: {len(train_part)} examples to train, {len(test_part)} to score")
            fold = train(NluData(tuple(train_part)), fold_cfg, bot_name=f"{bot_name}-fold{i}",
                         out_dir=Path(tmp) / f"fold{i}")
            total = total + HeldOutScores.of(fold.directory, fold.manifest, test_part, cfg.threads)
            shutil.rmtree(fold.directory, ignore_errors=True)
    return total


def calibrate_oos(directory: Path, manifest: Manifest, val_set: list[Sample], cfg: TrainConfig,
                  calibrated_on: str, held: HeldOutScores | None = None) -> dict[str, Any]:
    """The manifest's ``oos``: the operating point of ``cfg.oos_method`` for ``cfg.oos_target`` on
    ``val_set`` scored by the model in ``directory`` (or on ``held``, scores made elsewhere: out of fold),
    and every method's figures at its own point; empty when there is nothing held out."""
    if held is None:
        if not val_set:
            return {}
        held = HeldOutScores.of(directory, manifest, val_set, cfg.threads)
    gold, top = held.gold, held.top
    target = Target.parse(cfg.oos_target)
    points: dict[str, OperatingPoint] = {}
    for method in METHODS:
        if all(method in x for x in held.scores):
            points[method] = calibrate(gold, top, [x[method] for x in held.scores], method, target,
                                       calibrated_on=calibrated_on)
    chosen = points[cfg.oos_method]
    return {**chosen.to_dict(), "methods": {m: {"threshold": p.threshold, **p.details["figures"]}
                                            for m, p in points.items()}}


def train(data: NluData, cfg: TrainConfig, *, bot_name: str, out_dir: Path | None = None,
          models_dir: Path | None = None, validation: NluData | None = None,
          before_manifest: Callable[[Path, Manifest], dict[str, Any] | None] | None = None) -> TrainedArtifact:
    """Train on ``data`` and write an artifact to ``out_dir`` (or a new version under ``models_dir``).
    ``validation``: the held-out data (else a stratified split of ``data``).

    ``before_manifest(artifact_dir, manifest)`` runs once the model files are in place and before
    the manifest marks the artifact finished (e.g. to fit the answer index with the served model, or
    to write the learned dialogue policy); what it returns is added to the manifest's ``extra``."""
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    data_hash = data.data_hash()
    if out_dir is None:
        if models_dir is None:
            raise ValueError("give out_dir or models_dir")
        out_dir = models_dir / new_version(data_hash)
    held: HeldOutScores | None = None
    if validation is not None:
        train_set, val_set = list(data.samples), list(validation.samples)
        calibrated_on = f"validation data ({validation.samples[0].source.rsplit(':', 1)[0] or 'given'})"
    elif cfg.calibration_folds >= 2:
        held = out_of_fold_scores(data, cfg, bot_name)
        seed_everything(cfg.seed)
        train_set, val_set = list(data.samples), []
        calibrated_on = (f"out-of-fold scores ({cfg.calibration_folds}-fold cross-validation of the training data, "
                         f"seed {cfg.seed})")
    else:
        train_set, val_set = stratified_split(data.samples, cfg.validation_fraction, cfg.seed)
        calibrated_on = f"held-out split ({cfg.validation_fraction:g} of the training data, seed {cfg.seed})"
    tqdm.write(f"training {bot_name}: {len(train_set)} examples, {len(val_set)} held out, "
               f"{len(data.intents)} intents, {len(data.entity_types)} entity types, mode {cfg.mode}"
               + (f", n-gram features {cfg.ngram_features}" if cfg.ngram_features else ""))
    model, tokenizer, labels, tags = build_model(data, cfg)
    known_val = [s for s in val_set if s.intent in labels]  # what model selection can score
    facts, ngram_head = fit(model, tokenizer, labels, tags, train_set, known_val, cfg)

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # retraining into a folder: unfinished until the end
    try:
        export_onnx(model, tokenizer, out_dir / "model.onnx")
        tokenizer.save(str(out_dir / "tokenizer.json"))
        manifest = Manifest(
            bot=bot_name, version=out_dir.name, data_hash=data_hash,
            base_model=cfg.base_model or DEFAULT_BASE_MODEL, labels=labels,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), entity_tags=tags,
            max_length=cfg.max_length, training_config=cfg.to_dict(),
            extra={"synonyms": data.annotation_synonyms(), "train_examples": len(train_set),
                   "validation_examples": len(val_set), "warnings": list(data.warnings), **facts},
            ngrams=ngram_head.save(out_dir) if ngram_head is not None else {},
            spelling=write_vocabulary(out_dir, (s.text for s in train_set)) if cfg.spelling else {},
        )
        guard_set = known_val or train_set
        metrics: dict[str, Any] = {"evaluated_on": "validation" if known_val else "training data (no held-out split)"}
        fp32 = _score(out_dir, manifest, "model.onnx", guard_set)
        metrics.update(fp32)
        metrics["fp32_accuracy"] = fp32["accuracy"]
        onnx_file = "model.onnx"
        if cfg.quantize:
            quantize_int8(out_dir / "model.onnx", out_dir / "model.int8.onnx", tokenizer,
                          [s.text for s in train_set])
            int8 = _score(out_dir, manifest, "model.int8.onnx", guard_set)
            metrics["int8_accuracy"] = int8["accuracy"]
            if int8_is_good_enough(fp32["accuracy"], int8["accuracy"], cfg.int8_max_loss):
                onnx_file = "model.int8.onnx"
                metrics.update(int8)
        metrics["served"] = onnx_file
        manifest = dataclasses.replace(manifest, onnx_file=onnx_file)
        write_oos_index(out_dir, manifest, onnx_file, train_set, val_set, cfg.threads)
        oos = calibrate_oos(out_dir, manifest, val_set, cfg, calibrated_on, held)
        manifest = dataclasses.replace(manifest, oos=oos)
        if held is not None:  # the fold models' figures: what a model trained this way does on unseen examples
            in_scope = [(g, t) for g, t in zip(held.gold, held.top, strict=True) if g != OUT_OF_SCOPE]
            metrics["cross_validation"] = {
                "folds": cfg.calibration_folds, "examples": len(held.gold),
                "closed_set_accuracy": round(sum(g == t for g, t in in_scope) / max(1, len(in_scope)), 6),
                **oos["figures"]}
        if oos and val_set:  # the held-out figures of what is served, the operating point applied
            known = set(labels)
            served = [s if s.intent in known else dataclasses.replace(s, intent=OUT_OF_SCOPE) for s in val_set]
            after = _score(out_dir, manifest, onnx_file, served)
            metrics.update({k: v for k, v in after.items() if k != "examples"})
        manifest = dataclasses.replace(manifest, metrics=metrics)
        if before_manifest is not None:
            added = before_manifest(out_dir, manifest)
            if added:
                manifest = dataclasses.replace(manifest, extra={**manifest.extra, **added})
        write_manifest(out_dir, manifest)
    except BaseException:
        if created:  # never delete a folder the user pointed at that already held something
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return TrainedArtifact(out_dir, manifest, model)
