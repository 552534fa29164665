"""The answer generation model: fine-tune a local causal LM, or train a small GPT-2 from scratch.

Each training example is the prompt the server will build (bots/answers/generation.py), then the
normalised answer template, then end-of-text; the loss is on the answer only::

    Context: <passage> | <passage>\\nQuestion: <question>\\nAnswer: <answer><eos>

The loop reads top to bottom: lr → forward → loss → backward → clip → step → log → eval.
It stops after ``train_steps`` or ``train_seconds``, whichever comes first, and keeps the
weights with the best held-out loss. The model is exported to ONNX with its KV cache
(training/export.py ``export_kv_generator``, served by bots/answers/decoding.py) so that serving
stays torch-free and pays one position per generated token, checked against torch.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from bots.answers.generation import prompt_ids  # one prompt format for training and serving
from bots.answers.retrieval import AnswerSelector
from bots.botspec import BotSpec
from bots.errors import ConfigError
from training.answers import AnswerIndex, QAPair, build_index, write_index
from training.answers_config import AnswersConfig, GenerationSettings
from training.answers_eval import evaluate_answers
from training.export import export_kv_generator, quantize_generator_int8

EOS = "<|endoftext|>"
IGNORE = -100
_MAX_ANSWER_TOKENS = 160


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    passages: tuple[str, ...]


@dataclass(frozen=True)
class GeneratorResult:
    directory: Path
    steps: int
    seconds: float
    parameters: int
    train_loss: float
    val_loss: float | None


def _train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    return Tokenizer.from_str(bpe.to_str())


def _load_base(settings: GenerationSettings, corpus: Sequence[str]) -> tuple[nn.Module, Tokenizer, int, int]:
    """(model, tokenizer, eos id, context size)."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    if settings.base_model:
        path = Path(settings.base_model).expanduser()
        if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
            raise ConfigError(f"{path}: generation.base_model must be a local Hugging Face causal LM folder with "
                              "config.json and tokenizer.json (nothing is downloaded)")
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, torch_dtype=torch.float32)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        eos = model.config.eos_token_id
        eos_id = int(eos[0] if isinstance(eos, list) else eos) if eos is not None else None
        if eos_id is None:
            raise ConfigError(f"{path}: the model config has no eos_token_id")
        limit = int(getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 1024))
        return model, tokenizer, eos_id, min(settings.context_tokens, limit)
    tokenizer = _train_tokenizer(corpus, settings.vocab_size)
    eos_id = tokenizer.token_to_id(EOS)
    config = GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=settings.context_tokens,
                        n_embd=settings.width, n_layer=settings.layers, n_head=settings.heads,
                        bos_token_id=eos_id, eos_token_id=eos_id, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    return GPT2LMHeadModel(config), tokenizer, eos_id, settings.context_tokens


def _encode(tokenizer: Tokenizer, examples: Sequence[Example], eos_id: int,
            context: int) -> list[tuple[list[int], list[int]]]:
    rows = []
    for ex in examples:
        answer = tokenizer.encode(" " + ex.answer.strip(), add_special_tokens=False).ids[:_MAX_ANSWER_TOKENS]
        answer = [*answer, eos_id]
        prompt = prompt_ids(tokenizer, ex.passages, ex.question, context - len(answer))
        rows.append((prompt + answer, [IGNORE] * len(prompt) + answer))
    return rows


def _batch(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    for r, (x, y) in enumerate(rows):
        ids[r, :len(x)] = torch.tensor(x)
        labels[r, :len(y)] = torch.tensor(y)
    return ids, labels


def _loss(model: nn.Module, rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    ids, labels = _batch(rows, pad_id)
    # Right padding needs no attention mask in a causal model: no real token attends to a later pad.
    logits = model(input_ids=ids, use_cache=False).logits
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                       ignore_index=IGNORE)


@torch.no_grad()
def _eval_loss(model: nn.Module, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, batch: int) -> float:
    model.eval()
    losses = [float(_loss(model, rows[i:i + batch], pad_id)) for i in range(0, len(rows), batch)]
    model.train()
    return float(np.mean(losses))


def train_generator(examples: Sequence[Example], settings: GenerationSettings, out_dir: Path, *,
                    held_out: Sequence[Example] = (), corpus: Sequence[str] = (),
                    log: Callable[[str], None] = print) -> GeneratorResult:
    """Train (or fine-tune) on ``examples`` and write ``out_dir`` (model.onnx, tokenizer.json, generator.json)."""
    if not examples:
        raise ConfigError("answers.generation: no question→answer pairs to train the generator on")
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    texts = [*corpus, *(e.question for e in examples), *(e.answer for e in examples),
             *(p for e in examples for p in e.passages)]
    model, tokenizer, eos_id, context = _load_base(settings, texts)
    rows = _encode(tokenizer, examples, eos_id, context)
    val_rows = _encode(tokenizer, held_out, eos_id, context) if held_out else []
    params = sum(p.numel() for p in model.parameters())
    log(f"generator: {params / 1e6:.2f}M parameters, {len(rows)} examples, context {context} tokens, "
        f"{'fine-tuning ' + settings.base_model if settings.base_model else 'from scratch'}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    warmup = max(1, settings.train_steps // 20)
    model.train()
    started = time.perf_counter()
    best_state: dict[str, torch.Tensor] | None = None
    best_val = math.inf
    running = float("nan")
    step = 0
    order: list[int] = []
    eval_every = max(20, settings.train_steps // 10)
    eval_seconds = max(30.0, settings.train_seconds / 10)  # time-bounded runs log and keep the best too
    last_eval = started
    while step < settings.train_steps and time.perf_counter() - started < settings.train_seconds:
        lr = settings.learning_rate * min(1.0, (step + 1) / warmup) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, step / settings.train_steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if len(order) < settings.batch_size:
            order += random.sample(range(len(rows)), len(rows))
        batch, order = [rows[i] for i in order[:settings.batch_size]], order[settings.batch_size:]
        loss = _loss(model, batch, eos_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if math.isnan(running) else 0.95 * running + 0.05 * value
        out_of_time = time.perf_counter() - started >= settings.train_seconds
        if (step % eval_every == 0 or step == settings.train_steps or out_of_time
                or time.perf_counter() - last_eval >= eval_seconds):
            last_eval = time.perf_counter()
            val = _eval_loss(model, val_rows, eos_id, settings.batch_size) if val_rows else None
            log(f"generator step {step}: loss {running:.3f}" + (f", held-out {val:.3f}" if val is not None else "")
                + f", {time.perf_counter() - started:.0f}s")
            if val is not None and val < best_val:
                best_val, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    spec, diff = export_kv_generator(model, out_dir)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    # int8 where it writes the same answers: judged on the held-out prompts (else the first training ones)
    budget = min(40, context // 2)
    prompts = [prompt_ids(tokenizer, e.passages, e.question, context - budget) for e in (held_out or examples)[:20]]
    int8 = quantize_generator_int8(out_dir, spec, prompts, eos_id, max_new_tokens=budget)
    log(f"generator int8: {int8['int8_agreement']:.0%} of {int8['int8_prompts']} greedy answers as fp32's → serving "
        f"{int8['decoder_file']}")
    meta: dict[str, Any] = {
        "decoder": asdict(spec), **int8,
        "eos_id": eos_id, "bos_id": None, "max_positions": context, "settings": asdict(settings),
        "parameters": params, "steps": step, "train_seconds": round(seconds, 1), "train_loss": round(running, 4),
        "val_loss": None if best_val == math.inf else round(best_val, 4), "export_max_diff": diff,
        "gate": {"passed": False, "reason": "not evaluated against retrieval yet"},
    }
    if settings.server_model:
        write_server_model(model, tokenizer, out_dir / "server", settings, eos_id, context)
        log(f"generator: Hugging Face folder for an OpenAI-compatible server → {out_dir / 'server'}")
    (out_dir / "generator.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return GeneratorResult(out_dir, step, seconds, params, running, None if best_val == math.inf else best_val)


_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def write_server_model(model: nn.Module, tokenizer: Tokenizer, folder: Path, settings: GenerationSettings,
                       eos_id: int, context: int) -> None:
    """The trained weights (merged: the whole model) as a Hugging Face folder that vLLM, TGI or
    llama.cpp's converter load (``vllm serve FOLDER``; k8s/overlays/generator mounts it): config.json,
    model.safetensors, tokenizer.json, and the base model's tokenizer settings (else minimal ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[operator]
    tokenizer.save(str(folder / "tokenizer.json"))
    copied: list[str] = []
    if settings.base_model:
        base = Path(settings.base_model).expanduser()
        copied = [n for n in _TOKENIZER_FILES if (base / n).is_file()]
        for name in copied:
            shutil.copyfile(base / name, folder / name)
    if "tokenizer_config.json" not in copied:
        eos = tokenizer.id_to_token(eos_id)
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": eos,
            "model_max_length": context}, indent=2), encoding="utf-8")


def set_gate(out_dir: Path, gate: dict[str, Any]) -> None:
    """Record the held-out comparison with retrieval that switches generation on (or not)."""
    path = out_dir / "generator.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["gate"] = gate
    path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def examples_from_pairs(pairs: Sequence[QAPair], passages_for: Callable[[int], Sequence[str]]) -> list[Example]:
    """Each pair with the passages retrieval would give its question (``passages_for(i)``)."""
    return [Example(p.question, p.answer, tuple(passages_for(i))) for i, p in enumerate(pairs)]


def _split(pairs: Sequence[QAPair], fraction: float, cap: int, seed: int) -> tuple[list[QAPair], list[QAPair]]:
    """Held-out pairs for the gate: ``fraction`` of each intent (at most ``cap`` in all), never a whole intent."""
    rng = random.Random(seed)  # noqa: S311 - reproducible choice, not security
    by_intent: dict[str, list[QAPair]] = {}
    for p in pairs:
        by_intent.setdefault(p.intent, []).append(p)
    held: list[QAPair] = []
    per_intent = max(1, cap // max(1, len(by_intent)))
    for group in by_intent.values():
        if len(group) < 3:
            continue
        shuffled = rng.sample(group, len(group))
        held.extend(shuffled[:min(per_intent, max(1, round(len(group) * fraction)))])
    held_questions = {p.question for p in held}
    return [p for p in pairs if p.question not in held_questions], held


def fit_generation(bot: BotSpec, cfg: AnswersConfig, index: AnswerIndex, artifact_dir: Path, nlu: Any, *,
                   extra_pairs: Sequence[QAPair] = (), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the generator on all but a held-out slice of the pairs, serve both answer paths on
    that slice, and switch generation on only if it beats retrieval (recorded as the gate)."""
    settings = cfg.generation or GenerationSettings()
    _, held = _split(index.pairs, 0.1, settings.gate_examples, settings.seed)
    with tempfile.TemporaryDirectory(prefix="switchboard-gen-") as tmp:
        work = Path(tmp)
        sub = build_index(bot, cfg, extra_pairs=extra_pairs, leave_out=frozenset(p.question for p in held))
        write_index(sub, nlu, work)
        selector = AnswerSelector.load(work, nlu, load_generator=False)
        assert selector is not None
        known = dict(cfg.values)

        def values_of(p: QAPair) -> dict[str, str]:
            return {**known, **{e.entity: e.value for e in p.entities}}

        examples = [Example(p.question, p.answer, tuple(selector.passages_for(p.question, values_of(p),
                                                                              exclude_question=i)))
                    for i, p in enumerate(sub.pairs)]
        held_examples = [Example(p.question, p.answer, tuple(selector.passages_for(p.question, values_of(p))))
                         for p in held]
        corpus = [c.text for c in index.chunks]
        result = train_generator(examples, settings, work / "responses" / "generator", held_out=held_examples,
                                 corpus=corpus, log=log)
        gate: dict[str, Any] = {"passed": False, "held_out": len(held)}
        if held:
            served = AnswerSelector.load(work, nlu)
            assert served is not None
            retrieval = evaluate_answers(served, nlu, held, mode="retrieval")
            generation = evaluate_answers(served, nlu, held, mode="generation")
            passed = (generation.sources.get("generation", 0) > 0  # a fallback to retrieval is no win
                      and generation.intent_consistency >= retrieval.intent_consistency
                      and generation.rouge_l > retrieval.rouge_l)
            gate = {"passed": passed, "held_out": len(held), "retrieval": retrieval.to_dict(),
                    "generation": generation.to_dict(),
                    "reason": "generation beat retrieval on held-out pairs" if passed else
                    "generation did not beat retrieval on held-out pairs (intent consistency and ROUGE-L)"}
        else:
            gate["reason"] = "no held-out pairs (too few examples per intent) to compare with retrieval"
        set_gate(result.directory, gate)
        target = artifact_dir / "responses" / "generator"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(result.directory, target)
    log(f"generator gate: {'ON' if gate['passed'] else 'off'} ({gate['reason']})")
    return gate
