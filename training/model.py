"""The joint model: one encoder, a sentence-level intent head and a token-level BIO entity head.

Its forward signature is the artifact's ONNX interface: (input_ids, attention_mask) →
(intent_logits, entity_logits, sentence_embedding). The intent head reads the L2-normalised
mean-pooled embedding, so the fast mode's logistic regression can be copied into it; the entity
head reads each token's state with the previous token's (``token_features``), likewise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_encoder(model_dir: Path) -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir), local_files_only=True)  # type: ignore[no-any-return]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def token_features(hidden: torch.Tensor) -> torch.Tensor:
    """What the entity head reads for each token: its own state and the previous token's ([batch, seq,
    2 * hidden]; zeros before the first). The word before an entity is what tells its role apart
    ("from [Paris]" is a city with role ``from``, "to [Paris]" one with role ``to``): a linear head on the
    token's state alone, which the city's identity dominates, cannot learn that from a few examples."""
    previous = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)
    return torch.cat([hidden, previous], dim=-1)


class JointModel(nn.Module):
    def __init__(self, encoder: nn.Module, n_intents: int, n_tags: int) -> None:
        super().__init__()
        self.encoder = encoder
        config: Any = getattr(encoder, "config")  # noqa: B009 - a transformers PreTrainedModel
        hidden = int(config.hidden_size)
        self.dropout = nn.Dropout(0.1)
        self.intent_head = nn.Linear(hidden, n_intents)
        self.entity_head = nn.Linear(2 * hidden, n_tags)  # reads token_features: the token and the one before

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embedding = nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)
        intent_logits = self.intent_head(self.dropout(embedding))
        entity_logits = self.entity_head(self.dropout(token_features(hidden)))
        return intent_logits, entity_logits, embedding
