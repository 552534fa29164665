"""The fast mode's heads: logistic regression on frozen encoder features.

Encoding once and fitting linear models takes seconds after the forward pass; the result is
copied into the JointModel's heads, so the fast model exports through the same ONNX
interface, and full fine-tuning starts from it.

With n-gram features (bots/nlu/ngrams.py; ``TrainConfig.ngram_features``) the intent regression reads the
embedding times ``EMBEDDING_SCALE`` beside the text's TF-IDF n-gram vector (each analyzer L2-normalised) times
``NGRAM_SCALE``: one model, whose embedding columns (the scale folded in) go into the intent head (the ONNX
graph) and whose n-gram columns are the ``NgramHead`` served beside it. The two scales weigh each block
against the regression's L2 penalty (``linear_c``): a block scaled by k is penalised as with C x k^2.
bench/RESULTS.md, "Sparse n-gram features", measured them (C 10: the embedding x sqrt(3), the n-grams x
sqrt(3)/2, the same as C 30 on the embedding and n-grams at half its weight).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from bots.nlu.ngrams import NgramHead, NgramVectorizer
from training.model import JointModel, mean_pool
from training.tokens import IGNORE, Encoded

_MAX_TOKEN_ROWS = 200_000  # cap on token rows fed to the entity regression
EMBEDDING_SCALE = 3 ** 0.5  # the unit-length embedding's weight in the joint regression with n-grams
NGRAM_SCALE = EMBEDDING_SCALE / 2  # the n-gram vector's (each analyzer unit-length)


def length_batches(enc: Encoded, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Index batches in the given order, each to be trimmed to its own longest row."""
    for i in range(0, len(indices), batch_size):
        yield indices[i:i + batch_size]


def to_tensors(enc: Encoded, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seq = int(enc.lengths[idx].max())
    return (torch.from_numpy(enc.input_ids[idx, :seq]), torch.from_numpy(enc.attention_mask[idx, :seq]),
            torch.from_numpy(enc.tag_ids[idx, :seq]))


@dataclass(frozen=True)
class Features:
    embeddings: np.ndarray  # [n, hidden], L2-normalised mean pool
    token_states: np.ndarray  # [m, width] for labelled tokens (JointModel.token_features; empty without entities)
    token_tags: np.ndarray  # [m]


@torch.no_grad()
def extract(model: JointModel, enc: Encoded, *, batch_size: int = 64, tokens: bool = True,
            desc: str = "encoding") -> Features:
    model.eval()
    n = len(enc.lengths)
    order = np.argsort(enc.lengths, kind="stable")
    emb = np.zeros((n, model.intent_head.in_features), dtype=np.float32)
    states: list[np.ndarray] = []
    tags: list[np.ndarray] = []
    for idx in tqdm(list(length_batches(enc, order, batch_size)), desc=desc, unit="batch", leave=False):
        ids, mask, tag = to_tensors(enc, idx)
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        emb[idx] = torch.nn.functional.normalize(mean_pool(hidden, mask), dim=-1).numpy()
        if tokens:
            keep = tag != IGNORE
            states.append(model.token_features(hidden)[keep].numpy())
            tags.append(tag[keep].numpy())
    width = model.entity_head.in_features
    return Features(emb, np.concatenate(states) if states else np.zeros((0, width), np.float32),
                    np.concatenate(tags) if tags else np.zeros((0,), np.int64))


def ngram_matrix(vectorizer: NgramVectorizer, texts: list[str]) -> sp.csr_matrix:
    """The texts' n-gram vectors as served (``NgramVectorizer.row``), [len(texts), features]."""
    rows = [vectorizer.row(t) for t in texts]
    indptr = np.cumsum([0] + [len(cols) for cols, _ in rows])
    indices = np.concatenate([cols for cols, _ in rows]) if rows else np.zeros(0, np.int64)
    data = np.concatenate([vals for _, vals in rows]) if rows else np.zeros(0, np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(texts), len(vectorizer.features)))


def _fit(x: np.ndarray | sp.csr_matrix, y: np.ndarray, n_classes: int, c: float,
         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression → (weights [n_classes, dim], bias [n_classes])."""
    weight = np.zeros((n_classes, x.shape[1]), dtype=np.float32)
    bias = np.full((n_classes,), -20.0, dtype=np.float32)  # classes never seen stay improbable
    present = np.unique(y)
    if len(present) == 1:
        bias[present[0]] = 0.0
        return weight, bias
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    coef, intercept = clf.coef_, clf.intercept_
    if len(present) == 2:  # sklearn's binary form: one row for the positive class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    for row, cls in enumerate(clf.classes_):
        weight[cls] = coef[row]
        bias[cls] = intercept[row]
    return weight, bias


def fit_intent_head(model: JointModel, embeddings: np.ndarray, intent_ids: np.ndarray, *, c: float, seed: int,
                    texts: list[str] | None = None, ngrams: NgramVectorizer | None = None) -> NgramHead | None:
    """Fit the intent regression on ``embeddings`` (beside the ``texts``' n-gram vectors when ``ngrams`` is
    given) and copy its embedding part into ``model``'s intent head; returns the n-gram part."""
    n_classes = model.intent_head.out_features
    if ngrams is None or texts is None:
        w, b = _fit(embeddings, intent_ids, n_classes, c, seed)
        _set(model.intent_head, w, b)
        return None
    x = sp.hstack([sp.csr_matrix(EMBEDDING_SCALE * embeddings), NGRAM_SCALE * ngram_matrix(ngrams, texts)],
                  format="csr")
    w, b = _fit(x, intent_ids, n_classes, c, seed)
    dim = embeddings.shape[1]
    _set(model.intent_head, w[:, :dim] * EMBEDDING_SCALE, b)
    return NgramHead(ngrams, w[:, dim:] * NGRAM_SCALE, NGRAM_SCALE)


def fit_heads(model: JointModel, feats: Features, intent_ids: np.ndarray, *, c: float, seed: int,
              texts: list[str] | None = None, ngrams: NgramVectorizer | None = None) -> NgramHead | None:
    """Fit both heads on frozen features and copy them into ``model`` (the intent head as
    ``fit_intent_head``: its n-gram part is returned)."""
    head = fit_intent_head(model, feats.embeddings, intent_ids, c=c, seed=seed, texts=texts, ngrams=ngrams)
    n_tags = model.entity_head.out_features
    if n_tags > 1 and len(feats.token_tags):
        x, y = feats.token_states, feats.token_tags
        if len(y) > _MAX_TOKEN_ROWS:
            keep = np.random.default_rng(seed).choice(len(y), _MAX_TOKEN_ROWS, replace=False)
            x, y = x[keep], y[keep]
        w, b = _fit(x, y, n_tags, c, seed)
    else:
        w = np.zeros((n_tags, model.entity_head.in_features), np.float32)
        b = np.zeros((n_tags,), np.float32)
    _set(model.entity_head, w, b)
    return head


def _set(layer: torch.nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
