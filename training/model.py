"""The joint model: one encoder, a sentence-level intent head and a token-level BIO entity head.

Its forward signature is the artifact's ONNX interface: (input_ids, attention_mask) →
(intent_logits, entity_logits, sentence_embedding). The intent head reads the L2-normalised
mean-pooled embedding, so the fast mode's logistic regression can be copied into it; the entity
head reads each token's state (with the previous token's when the bot's entities have roles or
groups: ``JointModel.token_features``), likewise.
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


def with_previous(hidden: torch.Tensor) -> torch.Tensor:
    """Each token's state and the previous token's ([batch, seq, 2 * hidden]; zeros before the first)."""
    previous = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)
    return torch.cat([hidden, previous], dim=-1)


class JointModel(nn.Module):
    """``context``: the entity head also reads the previous token. The word before an entity is what tells
    its role apart ("from [Paris]" is a city with role ``from``, "to [Paris]" one with role ``to``), which a
    linear head on the token's state alone cannot learn from a few examples; but without roles the previous
    word only teaches "whatever follows 'order' is an order id" (``order for me`` → ``for``), so it is on only
    for bots whose entities have roles or groups."""

    def __init__(self, encoder: nn.Module, n_intents: int, n_tags: int, *, context: bool = False) -> None:
        super().__init__()
        self.context = context
        self.encoder = encoder
        config: Any = getattr(encoder, "config")  # noqa: B009 - a transformers PreTrainedModel
        hidden = int(config.hidden_size)
        self.dropout = nn.Dropout(0.1)
        self.intent_head = nn.Linear(hidden, n_intents)
        self.entity_head = nn.Linear(2 * hidden if context else hidden, n_tags)  # reads token_features

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embedding = nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)
        intent_logits = self.intent_head(self.dropout(embedding))
        entity_logits = self.entity_head(self.dropout(self.token_features(hidden)))
        return intent_logits, entity_logits, embedding

    def token_features(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the entity head reads for each token."""
        return with_previous(hidden) if self.context else hidden
