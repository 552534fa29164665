"""Full fine-tuning of the joint model, top to bottom:
lr → forward → loss → backward → clip → step → log → validate → keep the best.

The model arrives with its heads fitted by the fast mode, and the validation score of that
starting point is the baseline: fine-tuning only keeps an epoch that beats it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.config import TrainConfig
from training.linear import length_batches, to_tensors
from training.model import JointModel
from training.tokens import IGNORE, Encoded


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    val_accuracy: float | None
    val_loss: float | None
    seconds: float


@dataclass(frozen=True)
class FitResult:
    best_epoch: int  # 0 = the linear heads on the frozen encoder were best
    history: tuple[EpochLog, ...]
    examples_per_second: float


def _loss(model: JointModel, enc: Encoded, idx: np.ndarray, intents: np.ndarray,
          cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, tags = to_tensors(enc, idx)
    intent_logits, entity_logits, _ = model(ids, mask)
    y = torch.from_numpy(intents[idx])
    loss = nn.functional.cross_entropy(intent_logits, y)
    if model.entity_head.out_features > 1 and cfg.entity_loss_weight > 0:
        ent = nn.functional.cross_entropy(entity_logits.reshape(-1, entity_logits.shape[-1]), tags.reshape(-1),
                                          ignore_index=IGNORE)
        loss = loss + cfg.entity_loss_weight * ent
    return loss, intent_logits


@torch.no_grad()
def validate(model: JointModel, enc: Encoded, intents: np.ndarray, cfg: TrainConfig) -> tuple[float, float]:
    """(intent accuracy, mean joint loss) on held-out data."""
    model.eval()
    order = np.argsort(enc.lengths, kind="stable")
    correct, total_loss, n = 0, 0.0, 0
    for idx in length_batches(enc, order, 64):
        loss, logits = _loss(model, enc, idx, intents, cfg)
        correct += int((logits.argmax(-1).numpy() == intents[idx]).sum())
        total_loss += loss.item() * len(idx)
        n += len(idx)
    return correct / max(n, 1), total_loss / max(n, 1)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def fine_tune(model: JointModel, train: Encoded, train_y: np.ndarray, val: Encoded | None,
              val_y: np.ndarray | None, cfg: TrainConfig) -> FitResult:
    rng = np.random.default_rng(cfg.seed)
    head_params = list(model.intent_head.parameters()) + list(model.entity_head.parameters())
    optimizer = torch.optim.AdamW([
        {"params": list(model.encoder.parameters()), "lr": cfg.lr_encoder},
        {"params": head_params, "lr": cfg.lr_head},
    ], weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = math.ceil(len(train_y) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(total * cfg.warmup_ratio))

    has_val = val is not None and val_y is not None and len(val_y) > 0
    history: list[EpochLog] = []
    best = (-1.0, -math.inf)
    best_state = None
    best_epoch = cfg.epochs
    if has_val:
        assert val is not None and val_y is not None
        acc, vloss = validate(model, val, val_y, cfg)
        best, best_state, best_epoch = (acc, -vloss), copy.deepcopy(model.state_dict()), 0
        history.append(EpochLog(0, math.nan, acc, vloss, 0.0))
    step, bad_epochs, seen, train_seconds = 0, 0, 0, 0.0
    best_tuned = (-1.0, -math.inf)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        # Bucket by length inside random chunks: little padding, still shuffled.
        perm = rng.permutation(len(train_y))
        chunk = cfg.batch_size * 20
        order = np.concatenate([c[np.argsort(train.lengths[c], kind="stable")]
                                for c in np.array_split(perm, max(1, math.ceil(len(perm) / chunk)))])
        batches = list(length_batches(train, order, cfg.batch_size))
        rng.shuffle(batches)  # type: ignore[arg-type]
        running = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
        for idx in bar:
            factor = _schedule(step, total, warmup)
            for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr * factor
            loss, _ = _loss(model, train, idx, train_y, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            step += 1
            seen += len(idx)
            value = loss.item()
            running += value * len(idx)
            bar.set_postfix(loss=f"{value:.3f}")
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        train_loss = running / max(1, len(train_y))
        if not has_val:
            history.append(EpochLog(epoch, train_loss, None, None, seconds))
            continue
        assert val is not None and val_y is not None
        acc, vloss = validate(model, val, val_y, cfg)
        history.append(EpochLog(epoch, train_loss, acc, vloss, seconds))
        tqdm.write(f"epoch {epoch}: train loss {train_loss:.4f}, validation accuracy {acc:.4f}, loss {vloss:.4f}")
        score = (acc, -vloss)
        if score > best:
            best, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
        # Patience counts from the first fine-tuned epoch: the linear baseline (epoch 0) is only a
        # floor for the final choice, or early epochs at a high learning rate would stop the run.
        if score > best_tuned:
            best_tuned, bad_epochs = score, 0
        else:
            bad_epochs += 1
            if cfg.patience and bad_epochs >= cfg.patience:
                tqdm.write(f"early stop: no validation improvement for {bad_epochs} epoch(s)")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, tuple(history), seen / train_seconds if train_seconds else 0.0)
