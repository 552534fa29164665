"""The model artifact format: the one module ``training/`` writes and ``bots/`` reads.

An artifact is a folder ``BOT_DIR/models/<version>/``::

    manifest.json       what it is (see Manifest)
    model.onnx          fp32 ONNX graph: inputs input_ids, attention_mask (int64, [batch, seq]);
                        outputs intent_logits [batch, labels], entity_logits [batch, seq, tags],
                        sentence_embedding [batch, dim] (mean-pooled, L2-normalised)
    model.int8.onnx     optional dynamic-int8 twin; used when the manifest says so
    tokenizer.json      Hugging Face ``tokenizers`` file
    oos_index.npz       the training examples' sentence embeddings as the served model computes them
                        (``embeddings`` float16 [examples, dim], ``labels`` int [examples]: their intent's
                        index in ``labels``; ``floors`` float [labels]: each intent's own floor, absent in
                        indexes written before 2026-12-05) for the index out-of-scope scores (bots/nlu/oos.py),
                        and ``train_hashes`` / ``validation_hashes`` (uint64: the first 8 bytes of the
                        SHA-256 of each lower-cased, space-normalised text) that evaluate checks overlap against
    ngrams.npz          optional n-gram part of the intent classifier (bots/nlu/ngrams.py: vocabulary ``features``,
                        ``idf``, ``weights`` float32 [labels, features]) whose logits serving adds to the
                        graph's intent_logits; the manifest's ``ngrams`` names it (none: the graph's alone)
    spelling.json       optional training vocabulary, word -> count, that customers' messages are spelling-
                        corrected against before the model reads them (bots/nlu/spelling.py); the manifest's
                        ``spelling`` names it
    responses/          optional answer index (retrieval), written by training/answers
    policy.onnx         optional learned next-action model (training/policy.py): input features
                        (float32, [batch, max_history x features], the multi-hot frames of
                        bots.dialogue.policies.encode_window), output logits [batch, actions]
    policy.json         its features, actions and max_history, and the figures of its training

Versions sort by name (``YYYYMMDD-HHMMSS-<datahash8>``); the newest complete one (with a
manifest, written last) is served.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bots.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    bot: str
    version: str
    data_hash: str
    base_model: str
    labels: tuple[str, ...]
    created_at: str
    entity_tags: tuple[str, ...] = ("O",)  # BIO tags of the entity head
    max_length: int = 64
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out metrics
    onnx_file: str = "model.onnx"  # the graph to serve (fp32 or int8, see metrics)
    oos_threshold: float | None = None  # legacy (softmax threshold of artifacts before ``oos``); new ones: None
    # The calibrated out-of-scope operating point (bots/nlu/oos.py OperatingPoint.to_dict): method, threshold,
    # target, what it was calibrated on and the figures there. Empty: none calibrated.
    oos: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    # The intent classifier's n-gram features (bots/nlu/ngrams.py NgramHead.save): file, analyzers, number of
    # features, scale. Empty: none (an artifact from before them serves the graph's intent logits alone).
    ngrams: dict[str, Any] = field(default_factory=dict)
    # The spelling vocabulary (bots/nlu/spelling.py write_vocabulary): file, number of words. Empty: messages are
    # read as typed (artifacts from before it, or ``training: spelling: false``).
    spelling: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["entity_tags"] = list(self.entity_tags)
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ArtifactError(f"manifest has unknown keys {sorted(unknown)}: written by a newer Switchboard?")
        d = dict(d)
        d["labels"] = tuple(d["labels"])
        d["entity_tags"] = tuple(d.get("entity_tags", ("O",)))
        return cls(**d)


def new_version(data_hash: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{data_hash[:8]}"


def write_manifest(artifact_dir: Path, manifest: Manifest) -> None:
    """Written last, atomically: a folder without a manifest is an unfinished artifact."""
    tmp = artifact_dir / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    tmp.replace(artifact_dir / MANIFEST)


def read_manifest(artifact_dir: Path) -> Manifest:
    path = artifact_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{artifact_dir}: no {MANIFEST}; not a (finished) model artifact") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: incomplete manifest ({exc})") from None


def list_artifacts(models_dir: Path) -> list[Path]:
    """Finished artifacts, oldest first."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def latest_artifact(models_dir: Path) -> Path:
    found = list_artifacts(models_dir)
    if not found:
        raise ArtifactError(f"{models_dir}: no trained model; run `switchboard train {models_dir.parent}` first")
    return found[-1]


def resolve_artifact(path: Path) -> Path:
    """A bot folder (bot.yml, or a Rasa project: domain.yml or domain/, config.yml), its models folder,
    or an artifact folder → the artifact folder."""
    if (path / MANIFEST).is_file():
        return path
    if any((path / name).exists() for name in ("bot.yml", "domain.yml", "domain.yaml", "domain", "config.yml")):
        return latest_artifact(path / "models")
    return latest_artifact(path)
